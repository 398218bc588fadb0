"""eSputnik mapping: status and event key per event type, items (cost, links), keyValue, totals sent
as the order has them, the phone, the events-mode date, the link templates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from loyalty_client.customer import Customer
from order_processor import docgen, jsonbody
from order_processor.contract import EventType, parse_order
from order_processor.destinations import DESTINATIONS
from order_processor.destinations.base import Skip
from order_processor.destinations.esputnik import Esputnik, EsputnikMode, EsputnikSettings
from order_processor.destinations.esputnik.mapping import EVENT, ITEM, ORDER
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from order_processor.routing import route
from order_processor.settings import SettingsError, load_settings
from tests.conftest import ROOT, sample

ANN = Customer(
    customer_id="C-000123",
    email="ann.shopper@example.com",
    phone="+447700900123",
    first_name="Ann",
    last_name="Shopper",
)


def event_for(document: dict[str, Any] | bytes, customer: Customer = ANN) -> TrackingEvent:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return TrackingEvent(order=parse_order(body), customer=customer, customer_known=True, key="k")


def created(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(sample("order-created.json"))
    document.update(changes)
    return document


#: link templates for ERPs whose lines carry no url/imageUrl (events mode needs both)
TEMPLATES = {
    "item_url_template": "https://shop.example/p/{sku}",
    "item_image_url_template": "https://shop.example/img/{productId}.jpg",
}


def make(mode: EsputnikMode, **settings: Any) -> Iterator[Esputnik]:
    timeouts = Timeouts()
    client = new_client(timeouts=timeouts)
    values = EsputnikSettings(base_url="http://127.0.0.1:9", api_key="k", mode=mode, **settings)
    yield Esputnik(values, client=client, timeouts=timeouts)
    asyncio.run(client.aclose())


@pytest.fixture
def orders() -> Iterator[Esputnik]:
    yield from make(EsputnikMode.ORDERS)


@pytest.fixture
def events() -> Iterator[Esputnik]:
    """Events mode with link templates, so every sample's items are complete."""
    yield from make(EsputnikMode.EVENTS, **TEMPLATES)


@pytest.fixture
def bare_events() -> Iterator[Esputnik]:
    """Events mode without templates: only contract 1.1 lines with url and imageUrl suffice."""
    yield from make(EsputnikMode.EVENTS)


def body_of(destination: Esputnik, event: TrackingEvent, route: str) -> dict[str, Any]:
    body = destination.event_body(event, route)
    assert not isinstance(body, Skip), body
    return body


def params_of(destination: Esputnik, event: TrackingEvent, route: str) -> dict[str, str]:
    return {p["name"]: p["value"] for p in body_of(destination, event, route)["params"]}


def cell(event_type: EventType) -> str:
    target = route("esputnik", event_type)
    assert target is not None
    return target


@pytest.mark.parametrize(
    ("sample_name", "status", "event_type_key"),
    [
        ("order-created.json", "DELIVERED", "orderCreated"),
        ("order-created-with-email.json", "DELIVERED", "orderCreated"),
        ("order-updated.json", "DELIVERED", "orderUpdated"),
        ("order-delivered.json", "DELIVERED", "orderDelivered"),
        ("order-cancelled.json", "CANCELLED", "orderCancelled"),
    ],
)
def test_status_and_event_key_per_event_type(
    orders: Esputnik, events: Esputnik, sample_name: str, status: str, event_type_key: str
) -> None:
    event = event_for(sample(sample_name))
    target = cell(event.event_type)
    assert orders.order(event, target)["status"] == status
    body = body_of(events, event, target)
    assert body["eventTypeKey"] == event_type_key
    assert {"name": "status", "value": status} in body["params"]


@pytest.mark.parametrize(
    ("sample_name", "total_cost", "costs"),
    [
        ("order-created.json", Decimal("90.0"), [Decimal("50.00"), Decimal("40.0")]),
        ("order-created-with-email.json", Decimal("80.00"), [Decimal("40.00"), Decimal("40.0")]),
        ("order-updated.json", Decimal("70.00"), [Decimal("50.00"), Decimal("20.0")]),
        ("order-delivered.json", Decimal("90.0"), None),
        ("order-cancelled.json", Decimal("90.0"), None),
    ],
)
def test_order_document(
    orders: Esputnik, sample_name: str, total_cost: Decimal, costs: list[Decimal] | None
) -> None:
    event = event_for(sample(sample_name))
    order = orders.order(event, cell(event.event_type))
    assert order["totalCost"] == total_cost
    assert order["externalOrderId"] == event.order.order_id
    assert order["externalCustomerId"] == "C-000123"
    assert order["source"] == "offline"
    assert order["date"] == event.order.order_date
    assert (order["firstName"], order["lastName"]) == ("Ann", "Shopper")
    if costs is None:
        assert "items" not in order
    else:
        assert [item["cost"] for item in order["items"]] == costs


def test_items_are_a_json_string_with_exact_money(events: Esputnik) -> None:
    event = event_for(sample("order-created-with-email.json"))
    body = body_of(events, event, "DELIVERED")
    assert all(isinstance(p["value"], str) for p in body["params"])
    params = {p["name"]: p["value"] for p in body["params"]}
    assert params["items"] == (
        '[{"externalItemId":"4551","name":"Merino jumper","category":"knitwear","quantity":1,'
        '"cost":40.00,"url":"https://shop.example/p/CB4551-M",'
        '"imageUrl":"https://shop.example/img/4551.jpg"},'
        '{"externalItemId":"2020","name":"Wool socks","category":"accessories","quantity":2,'
        '"cost":40.0,"url":"https://shop.example/p/SK-2020",'
        '"imageUrl":"https://shop.example/img/2020.jpg"}]'
    )
    assert params["totalCost"] == "80.00"
    assert params["date"] == "2026-11-20T14:25:00"
    assert params["currency"] == "GBP"


def test_item_id_falls_back_to_sku(orders: Esputnik) -> None:
    document = created()
    del document["lines"][0]["productId"]
    order = orders.order(event_for(document), "DELIVERED")
    assert [item["externalItemId"] for item in order["items"]] == ["CB4551-M", "2020"]


@pytest.mark.parametrize(
    ("customer", "key_value"),
    [
        (ANN, "ann.shopper@example.com"),
        (Customer(customer_id="C-1", phone="+447700900123"), "447700900123"),
        (Customer(customer_id="C-1", phone="+44 7700 900123"), "447700900123"),
        (Customer(customer_id="C-1", phone="+1 (23)"), "C-1"),  # not a phone number
        (Customer(customer_id="C-1"), "C-1"),
        (Customer(email="a@example.com", customer_id="C-1"), "a@example.com"),
    ],
)
def test_key_value_is_email_then_phone_then_customer_id(
    events: Esputnik, customer: Customer, key_value: str
) -> None:
    request = events.prepare(event_for(sample("order-created.json"), customer), "DELIVERED")
    assert not isinstance(request, Skip)
    assert json.loads(request.content)["keyValue"] == key_value


@pytest.mark.parametrize(
    ("mode", "customer", "skipped"),
    [
        (EsputnikMode.EVENTS, Customer(), True),
        (EsputnikMode.EVENTS, Customer(customer_id="C-1"), False),
        (EsputnikMode.ORDERS, Customer(customer_id="C-1"), True),
        (EsputnikMode.ORDERS, Customer(phone="+447700900123"), False),
        (EsputnikMode.ORDERS, Customer(phone="+44 12"), True),  # 4 digits: no phone
        (EsputnikMode.ORDERS, Customer(email="a@example.com"), False),
    ],
)
def test_skips_when_no_contact_identifier(
    orders: Esputnik, events: Esputnik, mode: EsputnikMode, customer: Customer, skipped: bool
) -> None:
    destination = orders if mode is EsputnikMode.ORDERS else events
    prepared = destination.prepare(event_for(sample("order-created.json"), customer), "DELIVERED")
    assert isinstance(prepared, Skip) is skipped
    if isinstance(prepared, Skip):
        assert "@" not in prepared.reason


@pytest.mark.parametrize(
    ("changes", "line_changes"),
    [
        ({}, {}),
        ({"total": "90.01"}, {}),
        ({"total": "89.99"}, {}),
        ({"total": "90.0001"}, {}),
        ({"total": "94.95", "shipping": "4.95"}, {}),  # shipping is part of the order total
        ({"total": "80.00", "discount": "10.00"}, {}),  # order discount not in the lines
        (
            {"total": "258.0"},
            {"unitPrice": "990"},
        ),  # the event guide's own example does not add up[S]
        ({"total": "0"}, {}),
    ],
)
def test_totals_are_sent_as_the_order_has_them_and_never_refused(
    orders: Esputnik,
    events: Esputnik,
    changes: dict[str, Any],
    line_changes: dict[str, Any],
) -> None:
    document = created(**changes)
    document["lines"][0].update(line_changes)
    event = event_for(document)
    order = orders.order(event, "DELIVERED")
    assert order["totalCost"] == event.order.total  # the order total, shipping included
    assert isinstance(orders.prepare(event, "DELIVERED"), httpx.Request)
    assert params_of(events, event, "DELIVERED")["totalCost"] == str(event.order.total)


@pytest.mark.parametrize(
    ("line", "cost"),
    [
        ({"quantity": 1, "unitPrice": "50.00"}, Decimal("50.00")),
        ({"quantity": 3, "unitPrice": "10.00"}, Decimal("30.00")),  # a line total, not unit
        ({"quantity": 3, "unitPrice": "10.00", "discount": "5.00"}, Decimal("25.00")),
        ({"quantity": 2, "unitPrice": "0.3333"}, Decimal("0.6666")),  # exact, never a float
        ({"quantity": 1, "unitPrice": "0"}, Decimal("0")),  # a free item
    ],
)
def test_item_cost_is_the_line_total_after_the_line_discount(
    orders: Esputnik, line: dict[str, Any], cost: Decimal
) -> None:
    document = created()
    document["lines"] = [{"sku": "A-1", "name": "Thing", **line}]
    (item,) = orders.order(event_for(document), "DELIVERED")["items"]
    assert item["cost"] == cost
    assert item["quantity"] == line["quantity"]


def test_unknown_route_is_a_permanent_error(orders: Esputnik) -> None:
    with pytest.raises(DeliveryError) as caught:
        orders.prepare(event_for(sample("order-created.json")), "StorePurchase")
    assert caught.value.kind is FailureKind.PERMANENT


def test_settings_defaults_and_required_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ESPUTNIK_BASE_URL", "ESPUTNIK_API_KEY"):  # the suite's baseline environment
        monkeypatch.delenv(name, raising=False)
    settings = EsputnikSettings(api_key="s3cret-value")
    assert (settings.base_url, settings.mode, settings.user_name, settings.enabled) == (
        "https://esputnik.com",
        EsputnikMode.ORDERS,
        "instore-order-sync",
        True,
    )
    assert (settings.item_url_template, settings.item_image_url_template) == (None, None)
    assert settings.event_time_zone == "UTC"
    with pytest.raises(ValueError, match="ESPUTNIK_API_KEY"):
        EsputnikSettings()
    assert EsputnikSettings(enabled=False).api_key is None
    assert "s3cret-value" not in repr(settings)


def test_bulk_takes_1_to_1000_orders(orders: Esputnik, events: Esputnik) -> None:
    event = event_for(sample("order-created.json"))
    element = orders.encode(event, "DELIVERED")
    assert isinstance(element, bytes)
    request = orders.prepare_bulk([element] * 1000)
    document = json.loads(request.content)
    assert document["orders"] == [json.loads(element)] * 1000
    assert request.url.path == "/api/v1/orders"
    for count in (0, 1001):
        with pytest.raises(ValueError, match="1 to 1000"):
            orders.prepare_bulk([element] * count)
    with pytest.raises(ValueError, match="orders mode"):
        events.prepare_bulk([element])
    with pytest.raises(ValueError, match="orders mode"):
        events.encode(event, "DELIVERED")


def test_the_docs_show_the_generated_mapping_tables() -> None:
    doc = (ROOT / "docs" / "destinations" / "esputnik.md").read_text()
    assert docgen.mapping_section(Esputnik) in doc, "run: python -m order_processor docs"
    for table in (ORDER, EVENT, ITEM):
        for row in table:
            assert f"`{row.target}`" in doc, row.target
    for setting in (
        "ESPUTNIK_MODE",
        "ESPUTNIK_ITEM_URL_TEMPLATE",
        "ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE",
        "ESPUTNIK_EVENT_TIME_ZONE",
    ):
        assert setting in doc


@pytest.mark.parametrize(
    ("phone", "sent"),
    [
        ("+447700900123", "447700900123"),
        ("+44 (0) 7700-900 123", "4407700900123"),
        ("07700 900123", "07700900123"),  # national form stays national (see Open questions)
        ("380501234567", "380501234567"),  # the event guide's form[S], unchanged
        ("12345", "12345"),
        ("1234", None),
        ("1234567890123456", None),  # 16 digits: longer than E.164 allows
        ("+٤٤٧٧٠٠٩٠٠١٢٣", None),  # non-ASCII digits are not digits here
        ("", None),
    ],
)
def test_phone_is_sent_as_digits_only_in_both_modes(
    orders: Esputnik, events: Esputnik, phone: str, sent: str | None
) -> None:
    event = event_for(sample("order-created.json"), Customer(email="a@example.com", phone=phone))
    assert orders.order(event, "DELIVERED").get("phone") == sent
    assert params_of(events, event, "DELIVERED").get("phone") == sent


def test_orders_mode_passes_payment_method_and_store(orders: Esputnik) -> None:
    order = orders.order(event_for(sample("order-created.json")), "DELIVERED")
    assert (order["paymentMethod"], order["storeId"]) == ("card", "S042")
    document = created()
    del document["paymentMethod"]
    assert "paymentMethod" not in orders.order(event_for(document), "DELIVERED")


# --- events mode: date ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_date", "zone", "sent"),
    [
        ("2026-11-20T14:25:00+00:00", "UTC", "2026-11-20T14:25:00"),
        ("2026-11-20T14:25:00+01:00", "UTC", "2026-11-20T13:25:00"),
        ("2026-11-20T14:25:00.987+00:00", "UTC", "2026-11-20T14:25:00"),  # seconds, no fraction
        ("2026-11-20T14:25:00+00:00", "Europe/Kyiv", "2026-11-20T16:25:00"),
        ("2026-07-20T14:25:00Z", "Europe/Kyiv", "2026-07-20T17:25:00"),  # summer time
        ("2026-11-20T23:30:00-05:00", "Europe/London", "2026-11-21T04:30:00"),
        ("0002-01-01T00:00:00+00:00", "UTC", "0002-01-01T00:00:00"),  # four-digit year
    ],
)
def test_events_date_is_the_event_guides_form_in_the_accounts_time_zone(
    order_date: str, zone: str, sent: str
) -> None:
    for destination in make(EsputnikMode.EVENTS, event_time_zone=zone, **TEMPLATES):
        event = event_for(created(orderDate=order_date))
        assert params_of(destination, event, "DELIVERED")["date"] == sent


def test_orders_mode_keeps_the_date_with_its_offset(orders: Esputnik) -> None:
    event = event_for(created(orderDate="2026-11-20T14:25:00+01:00"))
    element = orders.encode(event, "DELIVERED")
    assert isinstance(element, bytes)
    assert json.loads(element)["date"] == "2026-11-20T14:25:00+01:00"


def test_a_date_the_time_zone_cannot_hold_is_a_permanent_error() -> None:
    for destination in make(EsputnikMode.EVENTS, event_time_zone="Asia/Tokyo", **TEMPLATES):
        event = event_for(created(orderDate="9999-12-31T23:59:59+00:00"))
        with pytest.raises(DeliveryError) as caught:
            destination.prepare(event, "DELIVERED")
        assert caught.value.kind is FailureKind.PERMANENT
        assert "ESPUTNIK_EVENT_TIME_ZONE" in caught.value.message


# --- item links -------------------------------------------------------------------------------


def test_items_carry_the_lines_own_links_first(orders: Esputnik, bare_events: Esputnik) -> None:
    event = event_for(sample("order-created-with-urls.json"))
    items = orders.order(event, "DELIVERED")["items"]
    assert [(i["url"], i["imageUrl"]) for i in items] == [
        ("https://shop.example/p/CB4551-M", "https://cdn.shop.example/img/CB4551-M.jpg"),
        ("https://shop.example/p/SK-2020", "https://cdn.shop.example/img/SK-2020.jpg"),
    ]
    for destination in make(EsputnikMode.ORDERS, **TEMPLATES):  # a line's own link wins
        assert destination.order(event, "DELIVERED")["items"] == items
    assert json.loads(params_of(bare_events, event, "DELIVERED")["items"]) == json.loads(
        jsonbody.dumps(items)
    )


def test_templates_fill_the_links_of_lines_without_url_encoded() -> None:
    document = created()
    document["lines"][0]["sku"] = "CB 45/51?M"
    for destination in make(EsputnikMode.ORDERS, **TEMPLATES):
        items = destination.order(event_for(document), "DELIVERED")["items"]
        assert [(i["url"], i["imageUrl"]) for i in items] == [
            ("https://shop.example/p/CB%2045%2F51%3FM", "https://shop.example/img/4551.jpg"),
            ("https://shop.example/p/SK-2020", "https://shop.example/img/2020.jpg"),
        ]


def test_orders_mode_leaves_out_links_it_cannot_build(orders: Esputnik) -> None:
    items = orders.order(event_for(sample("order-created.json")), "DELIVERED")["items"]
    assert all("url" not in item and "imageUrl" not in item for item in items)
    document = created()
    del document["lines"][1]["productId"]  # the image template needs {productId}
    for destination in make(EsputnikMode.ORDERS, **TEMPLATES):
        items = destination.order(event_for(document), "DELIVERED")["items"]
        assert "imageUrl" in items[0]
        assert "imageUrl" not in items[1]
        assert items[1]["url"] == "https://shop.example/p/SK-2020"


@pytest.mark.parametrize("sample_name", ["order-created.json", "order-updated.json"])
def test_events_mode_skips_an_order_whose_items_lack_links(
    bare_events: Esputnik, sample_name: str
) -> None:
    event = event_for(sample(sample_name))
    skipped = bare_events.prepare(event, cell(event.event_type))
    assert isinstance(skipped, Skip)
    assert "lines[0] has no url, imageUrl; lines[1] has no url, imageUrl" in skipped.reason
    assert "ESPUTNIK_ITEM_URL_TEMPLATE" in skipped.reason
    assert "ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE" in skipped.reason
    assert "@" not in skipped.reason


def test_events_mode_skips_when_a_template_cannot_fill_a_line() -> None:
    document = created()
    del document["lines"][1]["productId"]
    for destination in make(EsputnikMode.EVENTS, **TEMPLATES):
        skipped = destination.prepare(event_for(document), "DELIVERED")
        assert isinstance(skipped, Skip)
        assert "(lines[1] has no imageUrl)" in skipped.reason


def test_events_mode_names_a_missing_item_name_and_a_few_lines_only(events: Esputnik) -> None:
    document = created()
    document["lines"] = [
        {"sku": f"S-{n}", "productId": str(n), "quantity": 1, "unitPrice": "1"} for n in range(5)
    ]
    skipped = events.prepare(event_for(document), "DELIVERED")
    assert isinstance(skipped, Skip)
    assert "lines[2] has no name; and 2 more lines" in skipped.reason
    assert "name from lines[].name" in skipped.reason
    assert "lines[3]" not in skipped.reason


def test_events_mode_sends_a_1_1_order_without_any_template(bare_events: Esputnik) -> None:
    request = bare_events.prepare(event_for(sample("order-created-with-urls.json")), "DELIVERED")
    assert isinstance(request, httpx.Request)
    assert request.url.path == "/api/v1/event"


@pytest.mark.parametrize("route", ["orderDelivered", "orderCancelled"])
def test_status_events_send_no_incomplete_items(bare_events: Esputnik, route: str) -> None:
    document = created(eventType={"orderDelivered": "OrderDelivered"}.get(route, "OrderCancelled"))
    params = params_of(bare_events, event_for(document), route)
    assert "items" not in params  # a status change needs none; incomplete ones are left out
    assert params["status"] == ("CANCELLED" if route == "orderCancelled" else "DELIVERED")
    linked = event_for(sample("order-created-with-urls.json"))
    assert "items" in params_of(bare_events, linked, route)  # complete ones are kept


# --- settings: templates and time zone, checked at start-up -----------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("http://shop.example/p/{sku}", "absolute https://"),
        ("/p/{sku}", "absolute https://"),
        ("https://shop.example/p/", "needs a {sku} or {productId} slot"),
        ("https://shop.example/p/{name}", "unknown slot {name}"),
        ("https://shop.example/p/{sku!r}", "takes no format"),
        ("https://shop.example/p/{sku", "unmatched"),
        ("https://{sku}.shop.example/", "absolute https://"),
        ("https://shop.example{sku}", "path or query"),
        ("https://shop.example/p/ {sku}", "spaces"),
        ("https://shop.example/" + "p" * 1024 + "/{sku}", "at most 1024"),
    ],
)
def test_bad_link_templates_fail_start_up_naming_the_setting(template: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            overrides={
                **{name: {"enabled": False} for name in DESTINATIONS if name != "esputnik"},
                "esputnik": {"api_key": "k", "item_image_url_template": template},
                "loyalty": {"file": ROOT / "samples" / "loyalty" / "customers.json"},
                "ledger": {"enabled": False},
            }
        )
    (line,) = caught.value.problems
    assert line.startswith("ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE: ")
    assert problem in line


@pytest.mark.parametrize(
    "template",
    [
        "https://shop.example/p/{sku}",
        "HTTPS://shop.example/p/{productId}/{sku}",
        "https://shop.example/p?id={productId}&sku={sku}",
        "https://shop.example:8443/{{literal}}/{sku}",
    ],
)
def test_good_link_templates_load(template: str) -> None:
    settings = EsputnikSettings(api_key="k", item_url_template=template)
    assert settings.item_url_template == template


def test_an_unknown_time_zone_fails_start_up() -> None:
    with pytest.raises(ValueError, match=r"event_time_zone"):
        EsputnikSettings(api_key="k", event_time_zone="Mars/Olympus_Mons")
    assert EsputnikSettings(api_key="k", event_time_zone="Europe/Kyiv").event_time_zone
