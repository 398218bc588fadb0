"""Contract v1: every sample against the model and the published schema; the schema is current."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from order_processor.cli import SCHEMAS, schema_texts
from order_processor.contract import MAX_BODY_BYTES, EventType, InvalidMessage, parse_order
from order_processor.model import event_key
from tests.conftest import ROOT, SAMPLES

SCHEMA_PATH = SCHEMAS / "order-message.v1.schema.json"
VALID = sorted((SAMPLES / "valid").glob("*.json"))
INVALID = sorted((SAMPLES / "invalid").glob("*.json"))

# What each invalid sample must be rejected for: the field the description names.
EXPECTED_FIELD = {
    "created-without-lines": "lines",
    "currency-not-iso-4217": "currency",
    "customer-without-identifier": "customer",
    "missing-order-id": "orderId",
    "negative-total": "total",
    "naive-order-date": "orderDate",
    "not-an-object": "(body)",
    "not-json": "(body)",
    "total-not-a-number": "total",
    "unknown-event-type": "eventType",
    "unsupported-schema-version": "schemaVersion",
    "zero-quantity": "lines[0].quantity",
}


@pytest.fixture(scope="module")
def schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def test_committed_schema_is_generated_from_the_model() -> None:
    expected = schema_texts()["order-message.v1.schema.json"]
    assert SCHEMA_PATH.read_text() == expected, "run: python -m order_processor schema"


def test_every_event_type_has_a_valid_sample() -> None:
    types = {parse_order(p.read_bytes()).event_type for p in VALID}
    assert types == set(EventType)


def test_every_invalid_sample_is_explained() -> None:
    assert {p.stem for p in INVALID} == set(EXPECTED_FIELD)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_samples_pass_model_and_schema(
    path: Path, schema: jsonschema.Draft202012Validator
) -> None:
    parse_order(path.read_bytes())
    schema.validate(json.loads(path.read_text()))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_samples_are_rejected_naming_the_field(path: Path) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_order(path.read_bytes())
    assert caught.value.description.startswith(EXPECTED_FIELD[path.stem])


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in INVALID
        if p.stem not in {"not-json", "created-without-lines", "unsupported-schema-version"}
    ],
    ids=lambda p: p.stem,
)
def test_schema_rejects_the_invalid_samples_it_can_express(
    path: Path, schema: jsonschema.Draft202012Validator
) -> None:
    # Cross-field rules (lines for OrderCreated, the major version) live in the model only.
    assert not schema.is_valid(json.loads(path.read_text()))


def _order(**changes: object) -> bytes:
    document = json.loads((SAMPLES / "valid" / "order-created.json").read_text())
    document.update(changes)
    return json.dumps(document).encode()


def test_money_keeps_every_digit_from_numbers_and_strings() -> None:
    body = _order(total=1.5, subTotal="0.10").replace(
        b'"total": 1.5', b'"total": 12345678901234.1234'
    )
    order = parse_order(body)
    assert order.total == Decimal("12345678901234.1234")
    assert order.sub_total == Decimal("0.10")


def test_defaults_and_unknown_fields() -> None:
    document = json.loads(_order())
    for name in ("eventType", "schemaVersion", "shipping", "discount", "lang"):
        document.pop(name)
    document["somethingNew"] = {"ignored": True}
    order = parse_order(json.dumps(document).encode())
    assert order.event_type is EventType.ORDER_CREATED
    assert (order.shipping, order.discount, order.lang) == (Decimal(0), Decimal(0), "en-gb")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"total": "NaN"}, "total"),
        ({"total": True}, "total"),
        ({"lines": [{"sku": "A", "quantity": 1.5, "unitPrice": 1}]}, "lines[0].quantity"),
        ({"schemaVersion": "one"}, "schemaVersion"),
        ({"orderId": ""}, "orderId"),
        ({"store": {"name": "no id"}}, "store.id"),
        ({"customer": {"email": "not-an-email"}}, "customer.email"),
    ],
)
def test_rejections_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_order(_order(**changes))
    assert caught.value.description.startswith(field)


def test_descriptions_never_echo_personal_data() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_order(_order(customer={"email": "ann shopper@example.com", "loyaltyCardNumber": "x"}))
    assert "ann" not in caught.value.description


def test_body_over_256_kb_is_rejected_before_parsing() -> None:
    body = _order(attributes={"padding": "x" * 1000}) + b" " * MAX_BODY_BYTES
    with pytest.raises(InvalidMessage, match="over ORDERS_MAX_MESSAGE_BYTES"):
        parse_order(body)


def test_not_utf8_and_deep_nesting() -> None:
    with pytest.raises(InvalidMessage, match="UTF-8"):
        parse_order(b"\xff\xfe{}")
    with pytest.raises(InvalidMessage, match=r"\(body\)"):
        parse_order(b"[" * 100_000 + b"]" * 100_000)


def test_the_size_limit_is_the_setting_and_names_it() -> None:
    body = _order(attributes={"padding": "x" * 900})
    parse_order(body, max_bytes=len(body))
    with pytest.raises(InvalidMessage, match=r"over ORDERS_MAX_MESSAGE_BYTES \(1024\)"):
        parse_order(body, max_bytes=1024)


def test_the_published_schema_states_the_default_size_limit() -> None:
    schema = (ROOT / "schemas" / "order-message.v1.schema.json").read_text()
    assert f"default {MAX_BODY_BYTES} bytes" in schema


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total", "-0.01"),
        ("total", -90),
        ("subTotal", "-1"),
        ("shipping", -4.95),
    ],
)
def test_negative_amounts_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_order(_order(**{field: value}))
    assert caught.value.description == f"{field}: must not be negative"


def test_a_negative_unit_price_names_the_line() -> None:
    document = json.loads(_order())
    document["lines"][1]["unitPrice"] = "-20.00"
    with pytest.raises(InvalidMessage) as caught:
        parse_order(json.dumps(document).encode())
    assert caught.value.description == "lines[1].unitPrice: must not be negative"


@pytest.mark.parametrize("field", ["total", "subTotal", "shipping"])
def test_zero_amounts_are_fine(field: str) -> None:
    order = parse_order(_order(**{field: "0.00"}))
    assert getattr(order, {"subTotal": "sub_total"}.get(field, field)) == Decimal(0)


def test_discounts_may_still_be_negative_as_before() -> None:
    # Only the amounts that can never be below zero are checked (issue 13); discounts are
    # left as contract 1.0 had them.
    assert parse_order(_order(discount="-1.00")).discount == Decimal("-1.00")


def test_schema_states_the_non_negative_amounts(schema: jsonschema.Draft202012Validator) -> None:
    for field, value in (("total", -1), ("total", "-1.00"), ("shipping", "-0.5")):
        document = json.loads(_order())
        document[field] = value
        assert not schema.is_valid(document), (field, value)


def _with_line_links(**links: object) -> bytes:
    document = json.loads(_order(schemaVersion="1.1"))
    document["lines"][0].update(links)
    return json.dumps(document).encode()


def test_version_1_1_reads_line_urls() -> None:
    order = parse_order(
        _with_line_links(url="https://shop.example/p/1", imageUrl="http://cdn.example/1.jpg")
    )
    assert order.schema_version == "1.1"
    assert (order.lines[0].url, order.lines[0].image_url) == (
        "https://shop.example/p/1",
        "http://cdn.example/1.jpg",
    )
    assert (order.lines[1].url, order.lines[1].image_url) == (None, None)


def test_version_1_0_messages_stay_valid_and_have_no_urls() -> None:
    order = parse_order((SAMPLES / "valid" / "order-created.json").read_bytes())
    assert order.schema_version == "1.0"
    assert all(line.url is None and line.image_url is None for line in order.lines)


def test_a_1_0_order_serialises_and_keys_as_before_1_1() -> None:
    # The event key hashes the order: the optional 1.1 fields must not change it, or a message
    # published before the upgrade and redelivered after would not be recognised as sent.
    order = parse_order((SAMPLES / "valid" / "order-created-with-email.json").read_bytes())
    assert "url" not in order.model_dump(by_alias=True)["lines"][0]
    assert "imageUrl" not in order.model_dump(mode="json", by_alias=True)["lines"][0]
    assert event_key(order) == "100246:OrderCreated:9307724d67e40c0d"  # its key under 1.0
    linked = parse_order(_with_line_links(url="https://shop.example/p/1"))
    assert linked.model_dump(mode="json", by_alias=True)["lines"][0]["url"] == (
        "https://shop.example/p/1"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "/p/1"),
        ("url", "shop.example/p/1"),
        ("url", "ftp://shop.example/p/1"),
        ("url", "javascript:alert(1)"),
        ("url", "https://"),
        ("url", "https://user:secret@shop.example/p/1"),
        ("url", "https://shop.example/a b"),
        ("url", "https://shop.example:99999/p/1"),
        ("url", 42),
        ("imageUrl", "data:image/png;base64,AAAA"),
        ("imageUrl", "https://cdn.example/" + "x" * 2048),
    ],
)
def test_line_urls_must_be_absolute_http_urls(field: str, value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_order(_with_line_links(**{field: value}))
    assert caught.value.description.startswith(f"lines[0].{field}: ")
    assert "secret" not in caught.value.description


def test_a_url_of_the_maximum_length_is_accepted() -> None:
    url = "https://cdn.example/" + "x" * (2048 - len("https://cdn.example/"))
    assert parse_order(_with_line_links(imageUrl=url)).lines[0].image_url == url


def test_schema_describes_line_urls(schema: jsonschema.Draft202012Validator) -> None:
    good = json.loads(_with_line_links(url="https://shop.example/p/1"))
    assert schema.is_valid(good)
    for value in ("/p/1", "ftp://shop.example/p/1", "https://cdn.example/" + "x" * 2048):
        assert not schema.is_valid(json.loads(_with_line_links(url=value))), value
