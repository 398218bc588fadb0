"""RichRelevance field mapping, data-driven: contract v1 sample -> Omnichannel order body."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from order_processor import routing
from order_processor.contract import EventType
from order_processor.destinations.base import Skip
from order_processor.destinations.richrelevance import (
    LINE_ITEM_FIELDS,
    ORDER_FIELDS,
    EmailHash,
    RichRelevance,
    RichRelevanceSettings,
    hash_email,
    order_body,
    order_id_to_int,
)
from order_processor.outbound.http import Timeouts, new_client
from tests.events import tracking_event as event

EMAIL = "ann.shopper@example.com"


def settings(**values: Any) -> RichRelevanceSettings:
    base: dict[str, Any] = {"api_key": "k", "client_id": "c", "client_secret": "s"}
    return RichRelevanceSettings(**{**base, **values})


@pytest.fixture
async def rr() -> AsyncIterator[RichRelevance]:
    timeouts = Timeouts()
    destination = RichRelevance(
        settings(base_url="https://qa-gateway.richrelevance.com/"),
        client=new_client(timeouts=timeouts),
        timeouts=timeouts,
    )
    yield destination
    await destination.client.aclose()


SHA = hashlib.sha256(EMAIL.encode()).hexdigest()


@pytest.mark.parametrize(
    ("sample_name", "field", "expected"),
    [
        ("order-created.json", "id", 100245),
        ("order-created.json", "externalOrderId", "100245"),
        ("order-created.json", "channel", "store"),
        ("order-created.json", "userId", "C-000123"),
        ("order-created.json", "dateTime", "2026-11-20T14:25:00+00:00"),
        ("order-created.json", "paymentMethod", "card"),
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
                {"productId": "4551", "skuId": "CB4551-M", "quantity": 1, "unitPrice": 50},
                {"productId": "2020", "skuId": "SK-2020", "quantity": 2, "unitPrice": 20},
            ],
        ),
        (
            "order-updated.json",
            "lineItems",
            [
                {"productId": "4551", "skuId": "CB4551-M", "quantity": 1, "unitPrice": 50},
                {"productId": "2020", "skuId": "SK-2020", "quantity": 1, "unitPrice": 20},
            ],
        ),
    ],
)
def test_field_from_sample(sample_name: str, field: str, expected: Any) -> None:
    assert order_body(event(sample_name), settings())[field] == expected


@pytest.mark.parametrize(
    ("changes", "absent"),
    [
        ({}, "couponCode"),
        ({}, "couponValue"),
        ({"paymentMethod": None}, "paymentMethod"),
        ({"store": {"id": "S001"}}, "regionId"),
    ],
)
def test_missing_optional_fields_are_left_out(changes: dict[str, Any], absent: str) -> None:
    assert absent not in order_body(event(**changes), settings())


def test_body_keys_follow_the_mapping_tables() -> None:
    body = order_body(event("order-created-with-email.json"), settings())
    assert list(body) == [f.target for f in ORDER_FIELDS] + ["lineItems"]
    assert list(body["lineItems"][0]) == [f.target for f in LINE_ITEM_FIELDS]


def test_no_personal_data_beyond_the_hash() -> None:
    body = order_body(event("order-created-with-email.json"), settings())
    text = json.dumps(body, default=str)
    for value in (EMAIL, "6330001234567890", "+447700900123"):
        assert value not in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"sku": "A-1", "productId": "P9", "quantity": 3, "unitPrice": "256.678"}, "P9"),
        ({"sku": "A-1", "quantity": 3, "unitPrice": "256.678"}, "A-1"),
    ],
    ids=["product-id", "falls-back-to-sku"],
)
def test_line_item_product_id(line: dict[str, Any], expected: str) -> None:
    item = order_body(event(lines=[line]), settings())["lineItems"][0]
    assert item["productId"] == expected
    assert item["unitPrice"] == Decimal("256.678")
    assert str(item["unitPrice"]) == "256.678"


@pytest.mark.parametrize(
    ("order_date", "expected"),
    [
        ("2026-11-20T14:25:00+00:00", "2026-11-20T14:25:00+00:00"),
        ("2026-11-20T14:25:00Z", "2026-11-20T14:25:00+00:00"),
        ("2022-04-25T14:30:00+09:00", "2022-04-25T14:30:00+09:00"),
        ("2026-03-29T01:30:00.123456-05:30", "2026-03-29T01:30:00-05:30"),
    ],
)
def test_date_time_keeps_the_offset(order_date: str, expected: str) -> None:
    assert order_body(event(orderDate=order_date), settings())["dateTime"] == expected


def _hashed(order_id: str) -> int:
    digest = hashlib.sha256(order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**53 - 1)


@pytest.mark.parametrize(
    ("order_id", "expected"),
    [
        ("100245", 100245),
        ("0", 0),
        ("1", 1),
        (str(2**53 - 1), 2**53 - 1),
        (str(2**53), _hashed(str(2**53))),
        ("00123", _hashed("00123")),
        ("ST042-0001", _hashed("ST042-0001")),
        ("١٢٣", _hashed("١٢٣")),  # Arabic-Indic digits are not ASCII digits
        ("ORD 7", _hashed("ORD 7")),
    ],
)
def test_order_id_to_int(order_id: str, expected: int) -> None:
    assert order_id_to_int(order_id) == expected
    assert 0 <= order_id_to_int(order_id) < 2**53
    assert order_id_to_int(order_id) == order_id_to_int(order_id)


def test_known_hash_value_is_pinned() -> None:
    # A change here would re-key every non-numeric order already imported: never change it.
    assert order_id_to_int("ST042-0001") == _hashed("ST042-0001")
    assert order_id_to_int("ST042-0001") != order_id_to_int("ST042-0002")


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


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({}, "base_url", "https://gateway.richrelevance.com"),
        ({}, "mode", "offline"),
        ({}, "channel", "store"),
        ({}, "email_hash", "sha256"),
        ({}, "enabled", True),
        ({"mode": "online"}, "mode", "online"),
        ({"email_hash": "md5"}, "email_hash", "md5"),
        ({"channel": "POS"}, "channel", "POS"),
    ],
)
def test_settings(values: dict[str, Any], field: str, expected: Any) -> None:
    assert getattr(settings(**values), field) == expected


@pytest.mark.parametrize(
    "values",
    [{"mode": "batch"}, {"email_hash": "sha1"}, {"channel": ""}],
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
    }.items():
        monkeypatch.setenv(name, value)
    loaded = RichRelevanceSettings()
    assert loaded.secret("api_key") == "env-key"
    assert loaded.mode == "online"
    assert loaded.email_hash == "off"
    assert "env-secret" not in repr(loaded)


@pytest.mark.parametrize("event_type", [EventType.ORDER_CREATED, EventType.ORDER_UPDATED])
def test_routing_row(event_type: EventType) -> None:
    assert routing.route("richrelevance", event_type) == "order-import"


async def test_prepare_builds_one_put(rr: RichRelevance) -> None:
    request = rr.prepare(event(), "order-import")
    assert isinstance(request, httpx.Request)
    assert request.method == "PUT"
    assert str(request.url) == (
        "https://qa-gateway.richrelevance.com/omnichannel/api/v1/k/orders?mode=offline"
    )
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content)["id"] == 100245


@pytest.mark.parametrize(
    ("tracking", "reason"),
    [
        (lambda: event(customer_id=None), "customer id"),
        (lambda: event(customer_id=""), "customer id"),
        (lambda: event("order-updated.json", lines=[]), "no lines"),
    ],
    ids=["no-customer-id", "empty-customer-id", "update-without-lines"],
)
async def test_prepare_skips(rr: RichRelevance, tracking: Any, reason: str) -> None:
    prepared = rr.prepare(tracking(), "order-import")
    assert isinstance(prepared, Skip)
    assert reason in prepared.reason
