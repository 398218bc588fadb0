"""Contract v1: every sample against the model and the published schema; the schema is current."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from order_processor.cli import SCHEMAS, schema_texts
from order_processor.contract import MAX_BODY_BYTES, EventType, InvalidMessage, parse_order
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
