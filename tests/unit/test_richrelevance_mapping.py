"""RichRelevance's declarative mapping, data-driven: contract v1 sample -> Omnichannel order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from order_processor import routing
from order_processor.contract import EventType
from order_processor.destinations.base import Skip
from order_processor.destinations.richrelevance import (
    EmailHash,
    RichRelevance,
    RichRelevanceSettings,
    mapping,
)
from order_processor.destinations.richrelevance.mapping import (
    INT32_MAX,
    PAYMENT_METHODS,
    hash_email,
    integer_id,
    order_id_to_int,
)
from order_processor.mapping import MappingError
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from tests.events import tracking_event as event

EMAIL = "ann.shopper@example.com"
SHA = hashlib.sha256(EMAIL.encode()).hexdigest()
ROUTE = "order-import"


def settings(**values: Any) -> RichRelevanceSettings:
    base: dict[str, Any] = {"api_key": "k", "client_id": "c", "client_secret": "s"}
    return RichRelevanceSettings(**{**base, **values})


Make = Callable[..., RichRelevance]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """RichRelevance with these settings (never sends: the tests read what it would)."""
    made: list[RichRelevance] = []

    def build(**values: Any) -> RichRelevance:
        timeouts = Timeouts()
        destination = RichRelevance(
            settings(**{"base_url": "https://qa-gateway.richrelevance.com/", **values}),
            client=new_client(timeouts=timeouts),
            timeouts=timeouts,
        )
        made.append(destination)
        return destination

    yield build
    for destination in made:
        await destination.client.aclose()


def body_of(make: Make, tracking: TrackingEvent, **values: Any) -> dict[str, Any]:
    built = make(**values).order(tracking, ROUTE)
    assert not isinstance(built, Skip), built
    return built[0]


def line(product_id: str | None, sku: str = "A-1", **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"sku": sku, "quantity": 1, "unitPrice": "10.00", **extra}
    if product_id is not None:
        found["productId"] = product_id
    return found


# --- field by field, from the samples -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_name", "field", "expected"),
    [
        ("order-created.json", "id", 100245),
        ("order-created.json", "externalOrderId", "100245"),
        ("order-created.json", "channel", "store"),
        ("order-created.json", "userId", "C-000123"),
        ("order-created.json", "dateTime", "2026-11-20T14:25:00+00:00"),
        ("order-created.json", "paymentMethod", "credit"),  # the ERP's "card"
        ("order-created.json", "emailHash", SHA),
        ("order-created.json", "storeId", "S042"),
        ("order-created.json", "regionId", 7),
        ("order-created.json", "currency", "GBP"),
        ("order-created-with-email.json", "id", 100246),
        ("order-created-with-email.json", "couponCode", "WINTER10"),
        ("order-created-with-email.json", "couponValue", Decimal("10.00")),
        (
            "order-created.json",
            "lineItems",
            [
                {"productId": 4551, "skuId": "CB4551-M", "quantity": 1, "unitPrice": 50},
                {"productId": 2020, "skuId": "SK-2020", "quantity": 2, "unitPrice": 20},
            ],
        ),
        (
            "order-updated.json",
            "lineItems",
            [
                {"productId": 4551, "skuId": "CB4551-M", "quantity": 1, "unitPrice": 50},
                {"productId": 2020, "skuId": "SK-2020", "quantity": 1, "unitPrice": 20},
            ],
        ),
    ],
)
def test_field_from_sample(make: Make, sample_name: str, field: str, expected: Any) -> None:
    assert body_of(make, event(sample_name))[field] == expected


@pytest.mark.parametrize(
    ("changes", "absent"),
    [
        ({}, "couponCode"),
        ({}, "couponValue"),
        ({"paymentMethod": None}, "paymentMethod"),
        ({"paymentMethod": "  "}, "paymentMethod"),
        ({"store": {"id": "S001"}}, "regionId"),
    ],
)
def test_missing_optional_fields_are_left_out(
    make: Make, changes: dict[str, Any], absent: str
) -> None:
    assert absent not in body_of(make, event(**changes))


def test_body_keys_follow_the_declarative_mapping(make: Make) -> None:
    body = body_of(make, event("order-created-with-email.json"))
    assert list(body) == [f.target for f in mapping.ORDER]
    assert list(body["lineItems"][0]) == [f.target for f in mapping.LINE_ITEM]
    assert RichRelevance.mappings == {"Order": mapping.ORDER, "Line item": mapping.LINE_ITEM}


def test_no_personal_data_beyond_the_hash(make: Make) -> None:
    text = json.dumps(body_of(make, event("order-created-with-email.json")), default=str)
    for value in (EMAIL, "6330001234567890", "+447700900123"):
        assert value not in text


@pytest.mark.parametrize(
    ("order_date", "expected"),
    [
        ("2026-11-20T14:25:00+00:00", "2026-11-20T14:25:00+00:00"),
        ("2026-11-20T14:25:00Z", "2026-11-20T14:25:00+00:00"),
        ("2022-04-25T14:30:00+09:00", "2022-04-25T14:30:00+09:00"),
        ("2026-03-29T01:30:00.123456-05:30", "2026-03-29T01:30:00-05:30"),
    ],
)
def test_date_time_keeps_the_offset(make: Make, order_date: str, expected: str) -> None:
    assert body_of(make, event(orderDate=order_date))["dateTime"] == expected


def test_unit_price_is_an_exact_decimal(make: Make) -> None:
    item = body_of(make, event(lines=[line("9", unitPrice="256.678")]))["lineItems"][0]
    assert item["unitPrice"] == Decimal("256.678")
    assert str(item["unitPrice"]) == "256.678"


# --- productId: integers only, never the SKU ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4551", 4551),
        ("0", 0),
        ("004551", 4551),  # an integer key has no leading zeros
        (str(INT32_MAX), INT32_MAX),
        (str(INT32_MAX + 1), None),  # does not fit the documented integer
        ("CB4551-M", None),
        ("P9", None),
        ("-5", None),
        ("4 551", None),
        ("١٢٣", None),  # Arabic-Indic digits are not ASCII digits
        ("", None),
        (None, None),
    ],
)
def test_integer_id(value: str | None, expected: int | None) -> None:
    assert integer_id(value) == expected


def test_a_line_without_an_integer_product_id_is_left_out_by_default(make: Make) -> None:
    tracking = event(lines=[line("P9", sku="A-1"), line("42", sku="B-2"), line(None, sku="77")])
    built = make().order(tracking, ROUTE)
    assert not isinstance(built, Skip)
    body, note = built
    # Never the SKU as a fallback, even a numeric one ("77").
    assert [i["productId"] for i in body["lineItems"]] == [42]
    assert note == "2 of 3 lines left out (no integer productId): lines 0, 2"


def test_an_order_with_no_integer_product_id_is_skipped(make: Make) -> None:
    prepared = make().prepare(event(lines=[line("P9"), line(None)]), ROUTE)
    assert isinstance(prepared, Skip)
    assert prepared.reason == (
        "no line has an integer productId (2 left out, RICHRELEVANCE_NON_NUMERIC_PRODUCT=skip-line)"
    )


def test_reject_refuses_the_order_naming_the_line(make: Make) -> None:
    rr = make(non_numeric_product="reject")
    with pytest.raises(DeliveryError) as caught:
        rr.prepare(event(lines=[line("42"), line("P9", sku="CB4551-M")]), ROUTE)
    assert caught.value.kind is FailureKind.PERMANENT
    assert "lines[1] has no integer productId (sku CB4551-M)" in str(caught.value)
    assert "RICHRELEVANCE_NON_NUMERIC_PRODUCT=reject" in str(caught.value)
    # the same check decides the bulk form's element
    with pytest.raises(DeliveryError):
        rr.encode(event(lines=[line("P9")]), ROUTE)


def test_reject_sends_an_all_numeric_order_as_usual(make: Make) -> None:
    body = body_of(make, event(), non_numeric_product="reject")
    assert [i["productId"] for i in body["lineItems"]] == [4551, 2020]


def test_the_single_request_records_which_lines_were_left_out(make: Make) -> None:
    rr = make()
    request = rr.prepare(event(lines=[line("P9"), line("42")]), ROUTE)
    assert isinstance(request, httpx.Request)
    sent = rr.interpret(httpx.Response(200), request)
    assert sent.note == "1 of 2 lines left out (no integer productId): lines 0"
    assert sent.response_id == "100245"


# --- skuId --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "sku", "expected"),
    [
        ("string", "CB4551-M", "CB4551-M"),
        ("string", "123", "123"),  # as the API's own example: "skuId": "123"
        ("integer", "123", 123),
        ("integer", "CB4551-M", None),  # left out: the field is optional
    ],
)
def test_sku_id_form(make: Make, form: str, sku: str, expected: str | int | None) -> None:
    item = body_of(make, event(lines=[line("9", sku=sku)]), sku_id=form)["lineItems"][0]
    assert item.get("skuId") == expected


# --- paymentMethod ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("erp", "expected"),
    [
        ("cash", "cash"),
        ("CASH", "cash"),
        ("card", "credit"),
        ("Credit card", "credit"),  # the API's own examples' spelling
        ("credit_card", "credit"),
        ("debit-card", "credit"),
        ("cheque", "check"),
        ("check", "check"),
        ("digital", "digital"),
        ("Apple Pay", "digital"),
        ("wallet", "digital"),
        ("gift-card", "other"),
        ("voucher", "other"),
        ("other", "other"),
    ],
)
def test_payment_method_values(make: Make, erp: str, expected: str) -> None:
    assert body_of(make, event(paymentMethod=erp))["paymentMethod"] == expected


def test_payment_methods_are_only_the_documented_values() -> None:
    assert set(PAYMENT_METHODS) == {"cash", "credit", "check", "digital", "other"}
    note = next(f.note for f in mapping.ORDER if f.target == "paymentMethod")
    for erp_values in PAYMENT_METHODS.values():
        for value in erp_values:
            assert value in note  # the generated docs table lists every mapped value


# --- order id -----------------------------------------------------------------------------------


def _hashed(order_id: str, bits: int) -> int:
    digest = hashlib.sha256(order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << bits) - 1)


@pytest.mark.parametrize("bits", [31, 53])
@pytest.mark.parametrize(
    ("order_id", "numeric"),
    [
        ("100245", True),
        ("0", True),
        ("1", True),
        ("00123", False),  # hashed, so it cannot take the ERP's order "123"
        ("ST042-0001", False),
        ("١٢٣", False),  # Arabic-Indic digits are not ASCII digits
        ("ORD 7", False),
        ("+7", False),
    ],
)
def test_order_id_to_int(order_id: str, numeric: bool, bits: int) -> None:
    value = order_id_to_int(order_id, bits)
    assert value == (int(order_id) if numeric else _hashed(order_id, bits))
    assert 0 <= value < 2**bits
    assert value == order_id_to_int(order_id, bits)


@pytest.mark.parametrize(("bits", "largest"), [(31, 2_147_483_647), (53, 9_007_199_254_740_991)])
def test_numeric_ids_up_to_the_range_pass_through_and_above_it_are_refused(
    bits: int, largest: int
) -> None:
    assert order_id_to_int(str(largest), bits) == largest
    with pytest.raises(MappingError, match=f"RICHRELEVANCE_ORDER_ID_BITS={bits}: 0 to {largest}"):
        order_id_to_int(str(largest + 1), bits)


def test_the_53_bit_hash_is_the_earlier_formula() -> None:
    # Tenants that sent hashed ids before the setting existed keep them with 53.
    assert order_id_to_int("ST042-0001", 53) == _hashed("ST042-0001", 53)
    assert order_id_to_int("ST042-0001", 31) == _hashed("ST042-0001", 53) & (2**31 - 1)
    assert order_id_to_int("ST042-0001", 31) != order_id_to_int("ST042-0002", 31)


def test_an_id_above_the_range_is_refused_before_sending(make: Make) -> None:
    with pytest.raises(DeliveryError) as caught:
        make().prepare(event(orderId="3000000000"), ROUTE)
    assert caught.value.kind is FailureKind.PERMANENT
    assert "above the integer id range" in str(caught.value)
    body = body_of(make, event(orderId="3000000000"), order_id_bits=53)
    assert body["id"] == 3_000_000_000


# --- email hash ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "algorithm", "expected"),
    [
        (EMAIL, EmailHash.SHA256, SHA),
        ("  Ann.Shopper@Example.COM\t", EmailHash.SHA256, SHA),
        (EMAIL, EmailHash.MD5, hashlib.md5(EMAIL.encode(), usedforsecurity=False).hexdigest()),
        (EMAIL, EmailHash.OFF, None),
        (None, EmailHash.SHA256, None),
        ("   ", EmailHash.SHA256, None),
    ],
)
def test_hash_email(email: str | None, algorithm: EmailHash, expected: str | None) -> None:
    assert hash_email(email, algorithm) == expected


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({}, "base_url", "https://gateway.richrelevance.com"),
        ({}, "mode", "offline"),
        ({}, "channel", "store"),
        ({}, "email_hash", "sha256"),
        ({}, "enabled", True),
        ({}, "order_id_bits", 31),
        ({}, "non_numeric_product", "skip-line"),
        ({}, "sku_id", "string"),
        ({"mode": "online"}, "mode", "online"),
        ({"email_hash": "md5"}, "email_hash", "md5"),
        ({"channel": "POS"}, "channel", "POS"),
        ({"order_id_bits": "53"}, "order_id_bits", 53),
        ({"non_numeric_product": "reject"}, "non_numeric_product", "reject"),
        ({"sku_id": "integer"}, "sku_id", "integer"),
    ],
)
def test_settings(values: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(settings(**values), field) == expected


@pytest.mark.parametrize(
    "values",
    [
        {"mode": "batch"},
        {"email_hash": "sha1"},
        {"channel": ""},
        {"order_id_bits": 32},
        {"order_id_bits": 64},
        {"non_numeric_product": "sku"},
        {"sku_id": "long"},
    ],
)
def test_invalid_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**values)


@pytest.mark.parametrize("missing", ["api_key", "client_id", "client_secret"])
def test_required_settings_are_named(missing: str) -> None:
    values: dict[str, Any] = {"api_key": "k", "client_id": "c", "client_secret": "s"}
    del values[missing]
    with pytest.raises(ValidationError, match=f"RICHRELEVANCE_{missing.upper()}"):
        RichRelevanceSettings(**values)


def test_disabled_needs_nothing() -> None:
    assert RichRelevanceSettings(enabled=False).enabled is False


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RICHRELEVANCE_API_KEY": "env-key",
        "RICHRELEVANCE_CLIENT_ID": "env-client",
        "RICHRELEVANCE_CLIENT_SECRET": "env-secret",
        "RICHRELEVANCE_MODE": "online",
        "RICHRELEVANCE_EMAIL_HASH": "off",
        "RICHRELEVANCE_BASE_URL": "https://staging-gateway.richrelevance.com",
        "RICHRELEVANCE_ORDER_ID_BITS": "53",
        "RICHRELEVANCE_NON_NUMERIC_PRODUCT": "reject",
        "RICHRELEVANCE_SKU_ID": "integer",
    }.items():
        monkeypatch.setenv(name, value)
    loaded = RichRelevanceSettings()
    assert loaded.secret("api_key") == "env-key"
    assert loaded.mode == "online"
    assert loaded.email_hash == "off"
    assert loaded.order_id_bits == 53
    assert loaded.non_numeric_product == "reject"
    assert loaded.sku_id == "integer"
    assert "env-secret" not in repr(loaded)


# --- the destination ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", [EventType.ORDER_CREATED, EventType.ORDER_UPDATED])
def test_routing_row(event_type: EventType) -> None:
    assert routing.route("richrelevance", event_type) == "order-import"


def test_prepare_builds_one_put(make: Make) -> None:
    request = make().prepare(event(), ROUTE)
    assert isinstance(request, httpx.Request)
    assert request.method == "PUT"
    assert str(request.url) == (
        "https://qa-gateway.richrelevance.com/omnichannel/api/v1/k/orders?mode=offline"
    )
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content)["id"] == 100245


def test_prepare_bulk_posts_an_array_of_the_encoded_orders(make: Make) -> None:
    rr = make()
    elements = [rr.encode(event(orderId=str(n)), ROUTE) for n in (1, 2)]
    assert all(isinstance(e, bytes) for e in elements)
    request = rr.prepare_bulk([e for e in elements if isinstance(e, bytes)])
    assert request.method == "POST"
    assert [o["id"] for o in json.loads(request.content)] == [1, 2]
    sent = rr.interpret(httpx.Response(200), request)
    assert (sent.response_id, sent.response_ids) == (None, ("1", "2"))


@pytest.mark.parametrize(
    ("tracking", "reason"),
    [
        (lambda: event(customer_id=None), "customer id"),
        (lambda: event(customer_id=""), "customer id"),
        (lambda: event("order-updated.json", lines=[]), "no lines"),
    ],
    ids=["no-customer-id", "empty-customer-id", "update-without-lines"],
)
def test_prepare_skips(make: Make, tracking: Any, reason: str) -> None:
    prepared = make().prepare(tracking(), ROUTE)
    assert isinstance(prepared, Skip)
    assert reason in prepared.reason
