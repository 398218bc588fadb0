"""Contract v1 -> Product Recommendations offline order: the declarative mapping
(order_processor/destinations/product_recs/mapping.py), case by case, and `interpret`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from loyalty_client.customer import Customer
from order_processor.contract import EventType, parse_order
from order_processor.destinations.base import Sent, Skip
from order_processor.destinations.product_recs import (
    ANONYMOUS,
    CANCEL_OFFLINE_ORDER,
    ProductRecs,
    ProductRecsSettings,
    cancellation_url,
    mapping,
)
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from tests.conftest import sample

URL = "https://uat.peerius.com/tracker/smart-api/orders/offline"
ANN = Customer(customer_id="C-000123", email="ann.shopper@example.com")


def order_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(sample("order-created.json"))
    document.update(changes)
    return document


def build(**changes: Any) -> ProductRecs:
    timeouts = Timeouts()
    settings = ProductRecsSettings(url=URL, site="retailsite", site_token="t0ken", **changes)
    return ProductRecs(settings, client=new_client(timeouts=timeouts), timeouts=timeouts)


@pytest.fixture
async def recs() -> AsyncIterator[ProductRecs]:
    built = build()
    yield built
    await built.client.aclose()


@pytest.fixture
async def recs_anonymous() -> AsyncIterator[ProductRecs]:
    """PRODUCT_RECS_SEND_ANONYMOUS=true: orders without `user` are sent too."""
    built = build(send_anonymous=True)
    yield built
    await built.client.aclose()


def prepared(
    recs: ProductRecs,
    document: dict[str, Any] | None = None,
    *,
    customer: Customer = ANN,
    known: bool = True,
) -> httpx.Request:
    order = parse_order(json.dumps(document or order_document()).encode())
    event = TrackingEvent(order=order, customer=customer, customer_known=known, key="k")
    request = recs.prepare(event, "offline-order")
    assert isinstance(request, httpx.Request)
    return request


def body(request: httpx.Request) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(request.content, parse_float=Decimal)
    return document


def test_the_mapping_covers_the_documented_fields_it_uses() -> None:
    assert [f.target for f in mapping.USER] == ["id", "email"]
    assert [f.target for f in mapping.ORDER] == [
        "lang",
        "user",
        "order.refCode",
        "order.customerId",
        "order.orderDate",
        "order.currency",
        "order.shipping",
        "order.subTotal",
        "order.total",
        "order.items",
        "order.attributes",
    ]
    assert [f.target for f in mapping.ITEM] == ["refCode", "qty", "price", "attributes"]
    assert ProductRecs.mappings == {
        "Offline order (the body)": mapping.ORDER,
        "`user`": mapping.USER,
        "`order.items[]`": mapping.ITEM,
        "Cancellation (`DELETE` URL)": mapping.CANCELLATION,
    }


def test_request_line_and_headers(recs: ProductRecs) -> None:
    request = prepared(recs)

    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["site"] == "retailsite"
    assert request.headers["siteToken"] == "t0ken"
    assert request.headers["channel"] == "store"
    assert request.headers["Content-Type"] == "application/json"
    assert body(request)["lang"] == "en-gb"


@pytest.mark.parametrize(
    ("order_date", "expected"),
    [
        ("2026-11-20T14:25:00+00:00", "2026-11-20T14:25:00 GMT"),
        ("2026-11-20T14:25:00Z", "2026-11-20T14:25:00 GMT"),
        ("2026-11-20T15:25:00+01:00", "2026-11-20T14:25:00 GMT"),
        ("2026-11-20T09:25:00.789-05:00", "2026-11-20T14:25:00 GMT"),
        ("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00 GMT"),
    ],
)
def test_order_date_is_utc_in_the_documented_form(
    recs: ProductRecs, order_date: str, expected: str
) -> None:
    request = prepared(recs, order_document(orderDate=order_date))

    assert body(request)["order"]["orderDate"] == expected


@pytest.mark.parametrize(
    ("customer", "known", "expected"),
    [
        (ANN, True, {"id": "C-000123"}),
        (Customer(customer_id="C-9"), True, {"id": "C-9"}),
        (Customer(email="bo.buyer@example.com"), True, {"email": "bo.buyer@example.com"}),
        (Customer(phone="+447700900123"), True, None),
        (Customer(), True, None),
        (ANN, False, None),
    ],
    ids=["id-wins-over-email", "id-only", "email-only", "phone-only", "nothing", "unknown"],
)
def test_user_is_the_id_else_the_email_else_absent(
    recs_anonymous: ProductRecs,
    customer: Customer,
    known: bool,
    expected: dict[str, str] | None,
) -> None:
    sent = body(prepared(recs_anonymous, customer=customer, known=known))

    assert sent.get("user") == expected
    if expected is None:
        assert "user" not in sent


@pytest.mark.parametrize(
    ("customer", "known", "expected"),
    [
        (ANN, True, "C-000123"),
        (Customer(customer_id="C-9"), True, "C-9"),
        (Customer(email="bo.buyer@example.com"), True, None),
        (ANN, False, None),
    ],
    ids=["known", "id-only", "email-only", "unknown"],
)
def test_order_customer_id_is_the_known_customers_id(
    recs_anonymous: ProductRecs, customer: Customer, known: bool, expected: str | None
) -> None:
    order = body(prepared(recs_anonymous, customer=customer, known=known))["order"]

    assert order.get("customerId") == expected
    assert ("customerId" in order) is (expected is not None)


@pytest.mark.parametrize(
    ("customer", "known"),
    [
        (ANN, False),
        (Customer(), False),
        (Customer(phone="+447700900123"), True),
        (Customer(), True),
    ],
    ids=["unknown-card", "nothing", "phone-only", "known-but-empty"],
)
def test_an_order_that_would_have_no_user_is_skipped_by_default(
    recs: ProductRecs, customer: Customer, known: bool
) -> None:
    event = TrackingEvent(
        order=parse_order(json.dumps(order_document()).encode()),
        customer=customer,
        customer_known=known,
        key="k",
    )

    assert recs.prepare(event, "offline-order") == Skip(ANONYMOUS)


def test_an_order_without_lines_is_refused_before_sending(recs_anonymous: ProductRecs) -> None:
    # The contract already requires lines for OrderCreated: this is the mapping's own guard.
    order = parse_order(json.dumps(order_document()).encode()).model_copy(update={"lines": []})
    event = TrackingEvent(
        order=order,
        customer=ANN,
        customer_known=True,
        key="k",
    )

    with pytest.raises(DeliveryError, match="at least one item"):
        recs_anonymous.prepare(event, "offline-order")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            {"sku": "CB4551-M", "productId": "4551", "quantity": 1, "unitPrice": "50.00"},
            {"refCode": "4551", "qty": 1, "price": Decimal("50.00"), "attributes": {}},
        ),
        (
            {"sku": "CB4551-M", "quantity": 3, "unitPrice": 6.5},
            {"refCode": "CB4551-M", "qty": 3, "price": Decimal("6.5"), "attributes": {}},
        ),
        (
            {
                "sku": "SK-1",
                "productId": "1",
                "quantity": 1,
                "unitPrice": "10.00",
                "discount": "2.00",
            },
            {
                "refCode": "1",
                "qty": 1,
                "price": Decimal("10.00"),
                "attributes": {"discount": "true"},
            },
        ),
        (
            {
                "sku": "SK-1",
                "quantity": 2,
                "unitPrice": "10.00",
                "discount": "0.00",
                "attributes": {"size": "M", "colour": "yellow"},
            },
            {
                "refCode": "SK-1",
                "qty": 2,
                "price": Decimal("10.00"),
                "attributes": {"size": "M", "colour": "yellow"},
            },
        ),
        (
            {
                "sku": "SK-1",
                "quantity": 2,
                "unitPrice": "10.00",
                "discount": "1",
                "attributes": {"size": "M"},
            },
            {
                "refCode": "SK-1",
                "qty": 2,
                "price": Decimal("10.00"),
                "attributes": {"size": "M", "discount": "true"},
            },
        ),
    ],
    ids=["product-id", "sku-fallback", "discounted", "attributes", "attributes-and-discount"],
)
def test_items(recs: ProductRecs, line: dict[str, Any], expected: dict[str, Any]) -> None:
    sent = body(prepared(recs, order_document(lines=[line], subTotal=None)))

    assert sent["order"]["items"] == [expected]


@pytest.mark.parametrize(
    ("store", "attributes", "expected"),
    [
        (
            {"id": "S042", "name": "Regent Street", "postcode": "W1B 4HX"},
            {"till": "12"},
            {"till": "12", "store": "Regent Street", "storePostcode": "W1B 4HX", "storeId": "S042"},
        ),
        ({"id": "S042"}, {}, {"storeId": "S042"}),
        (
            {"id": "S042", "name": "Regent Street"},
            {"store": "typed by hand", "storeId": "old"},
            {"store": "Regent Street", "storeId": "S042"},
        ),
    ],
    ids=["documented-example", "store-id-only", "store-fields-win"],
)
def test_order_attributes_carry_the_store(
    recs: ProductRecs,
    store: dict[str, Any],
    attributes: dict[str, str],
    expected: dict[str, str],
) -> None:
    sent = body(prepared(recs, order_document(store=store, attributes=attributes)))

    assert sent["order"]["attributes"] == expected


@pytest.mark.parametrize(
    ("sub_total", "lines", "expected"),
    [
        ("90.00", None, Decimal("90.00")),
        (None, None, Decimal("90.00")),  # 1 x 50.00 + 2 x 20.0
        (
            None,
            [
                {"sku": "A", "quantity": 1, "unitPrice": "50.00", "discount": "5.00"},
                {"sku": "B", "quantity": 3, "unitPrice": "0.10"},
            ],
            Decimal("45.30"),
        ),
        ("0", None, Decimal("0")),
    ],
    ids=["given", "sum-of-lines", "sum-less-line-discounts", "zero-is-given"],
)
def test_sub_total_is_given_or_the_sum_of_lines(
    recs: ProductRecs, sub_total: str | None, lines: list[dict[str, Any]] | None, expected: Decimal
) -> None:
    changes: dict[str, Any] = {"subTotal": sub_total}
    if lines is not None:
        changes["lines"] = lines
    request = prepared(recs, order_document(**changes))

    assert body(request)["order"]["subTotal"] == expected


def test_money_and_identifiers_are_exact(recs: ProductRecs) -> None:
    request = prepared(recs, order_document(total="90.10", shipping="4.95", currency="EUR"))
    order = body(request)["order"]

    assert (order["refCode"], order["currency"]) == ("100245", "EUR")
    assert b'"total":90.10' in request.content
    assert b'"shipping":4.95' in request.content


@pytest.mark.parametrize(
    ("status", "answer", "note"),
    [
        (200, {"status": "OK"}, ""),
        (200, {"status": "ok"}, ""),
        (201, {"status": "OK"}, ""),
        (200, {"status": "warning", "errors": [{"code": "W1", "message": "x"}]}, "warning: W1"),
        (200, {"status": "warning"}, "warning: no code"),
    ],
)
def test_interpret_success(
    recs: ProductRecs, status: int, answer: dict[str, Any], note: str
) -> None:
    assert recs.interpret(httpx.Response(status, json=answer)) == Sent(note=note)


@pytest.mark.parametrize(
    ("status", "content", "kind", "code"),
    [
        (
            200,
            b'{"status":"fail","errors":[{"code":"MalformedJson","message":"m"}]}',
            "p",
            "MalformedJson",
        ),
        (200, b'{"status":"fail"}', "p", None),
        (200, b"<html></html>", "t", None),
        (200, b'["OK"]', "t", None),
        (204, b"", "t", None),
        (400, b"Bad Request", "p", None),
        (
            401,
            b'{"status":"fail","errors":[{"code":"InvalidSiteToken","message":"m"}]}',
            "p",
            "InvalidSiteToken",
        ),
        (404, b"", "p", None),
        (408, b"", "t", None),
        (429, b"", "t", None),
        (502, b"<html>Bad gateway</html>", "t", None),
    ],
)
def test_interpret_failures(
    recs: ProductRecs, status: int, content: bytes, kind: str, code: str | None
) -> None:
    with pytest.raises(DeliveryError) as caught:
        recs.interpret(httpx.Response(status, content=content))

    expected = FailureKind.PERMANENT if kind == "p" else FailureKind.TRANSIENT
    assert caught.value.kind is expected
    assert caught.value.status == status
    assert caught.value.vendor_code == code


def test_settings_read_the_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_RECS_URL", URL)
    monkeypatch.setenv("PRODUCT_RECS_SITE", "retailsite")
    monkeypatch.setenv("PRODUCT_RECS_SITE_TOKEN", "t0ken")

    settings = ProductRecsSettings()

    assert settings.enabled is True
    assert settings.channel == "store"
    assert settings.secret("site_token") == "t0ken"
    assert "t0ken" not in repr(settings)


def test_settings_name_the_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRODUCT_RECS_URL", URL)

    with pytest.raises(ValidationError, match="PRODUCT_RECS_SITE, PRODUCT_RECS_SITE_TOKEN"):
        ProductRecsSettings()
    monkeypatch.setenv("PRODUCT_RECS_ENABLED", "false")
    assert ProductRecsSettings().enabled is False


def test_dry_run_answer_is_the_documented_success(recs: ProductRecs) -> None:
    answer = httpx.Response(ProductRecs.dry_run_status, json=ProductRecs.dry_run_body)

    assert recs.interpret(answer) == Sent()
    assert ProductRecsSettings.model_validate(ProductRecsSettings.example).url == URL


# Cancellations (PRODUCT_RECS_CANCELLATIONS_ENABLED)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, "https://uat.peerius.com/smart-api/orders/offline/100245"),
        (
            "https://acme.peerius.com/tracker/smart-api/orders/offline",
            "https://acme.peerius.com/smart-api/orders/offline/100245",
        ),
        (
            "https://acme.peerius.episerver.net/tracker/smart-api/orders/offline/",
            "https://acme.peerius.episerver.net/smart-api/orders/offline/100245",
        ),
        (
            "https://proxy.example:8443/recs/tracker/smart-api/orders/offline",
            "https://proxy.example:8443/recs/smart-api/orders/offline/100245",
        ),
        (
            "https://acme.peerius.com/smart-api/orders/offline",
            "https://acme.peerius.com/smart-api/orders/offline/100245",
        ),
    ],
    ids=["uat", "peerius.com", "episerver.net-trailing-slash", "proxy-prefix", "no-tracker"],
)
def test_the_cancellation_url_is_the_offline_url_without_tracker(url: str, expected: str) -> None:
    assert cancellation_url(url, "100245") == expected


@pytest.mark.parametrize(
    ("order_number", "segment"),
    [("A/B", "A%2FB"), ("7 ?#&=", "7%20%3F%23%26%3D"), ("100%", "100%25"), ("é", "%C3%A9")],
)
def test_the_order_number_is_percent_encoded(order_number: str, segment: str) -> None:
    assert cancellation_url(URL, order_number).endswith(f"/smart-api/orders/offline/{segment}")


@pytest.mark.parametrize(
    "url",
    [
        "https://uat.peerius.com/tracker/smart-api/orders",
        "https://uat.peerius.com/",
        "https://uat.peerius.com/tracker/smart-api/orders/offline/extra",
    ],
)
def test_cancellations_refuse_a_url_they_cannot_be_derived_from(url: str) -> None:
    with pytest.raises(ValidationError, match="PRODUCT_RECS_URL must end with"):
        ProductRecsSettings(
            url=url, site="retailsite", site_token="t0ken", cancellations_enabled=True
        )
    # Without cancellations the URL is the operator's business (a proxy, a new path).
    assert ProductRecsSettings(url=url, site="retailsite", site_token="t0ken").url == url


def test_cancellations_are_routed_only_when_enabled() -> None:
    default = ProductRecsSettings(url=URL, site="retailsite", site_token="t0ken")
    enabled = default.model_copy(update={"cancellations_enabled": True})

    assert default.cancellations_enabled is False
    assert ProductRecs.routes_for(default) == {EventType.ORDER_CREATED: "offline-order"}
    assert ProductRecs.routes_for(enabled) == {
        EventType.ORDER_CREATED: "offline-order",
        EventType.ORDER_CANCELLED: CANCEL_OFFLINE_ORDER,
    }
    assert ProductRecs.routes == ProductRecs.routes_for(default)


def test_the_cancellation_request(recs: ProductRecs) -> None:
    order = parse_order(sample("order-cancelled.json"))
    event = TrackingEvent(order=order, customer=ANN, customer_known=True, key="k")

    request = recs.prepare(event, CANCEL_OFFLINE_ORDER)

    assert isinstance(request, httpx.Request)
    assert (request.method, str(request.url)) == (
        "DELETE",
        "https://uat.peerius.com/smart-api/orders/offline/100245",
    )
    assert request.headers["site"] == "retailsite"
    assert request.headers["siteToken"] == "t0ken"
    assert request.headers["channel"] == "store"
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == b""


@pytest.mark.parametrize(
    ("method", "status", "content", "outcome"),
    [
        ("DELETE", 204, b"", "sent"),
        ("DELETE", 200, b"", "sent"),
        ("DELETE", 200, b'{"status":"OK"}', "sent"),
        ("DELETE", 200, b'{"status":"fail","errors":[{"code":"X","message":"m"}]}', "permanent"),
        ("DELETE", 200, b"<html>maintenance</html>", "transient"),
        ("DELETE", 404, b"", "permanent"),
        ("POST", 204, b"", "transient"),  # an offline order is always answered with a body
    ],
)
def test_interpret_a_delete_answer(
    recs: ProductRecs, method: str, status: int, content: bytes, outcome: str
) -> None:
    request = httpx.Request(method, "https://uat.peerius.com/smart-api/orders/offline/1")
    response = httpx.Response(status, content=content, request=request)

    if outcome == "sent":
        assert recs.interpret(response) == Sent()
        return
    with pytest.raises(DeliveryError) as caught:
        recs.interpret(response)
    expected = FailureKind.PERMANENT if outcome == "permanent" else FailureKind.TRANSIENT
    assert caught.value.kind is expected
