"""eSputnik against its documented contract (the loopback fake in tests/fakes/esputnik.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from loyalty_client.customer import Customer
from order_processor import jsonbody
from order_processor.contract import parse_order
from order_processor.destinations.base import Sent, Skip
from order_processor.destinations.esputnik import Esputnik, EsputnikMode, EsputnikSettings
from order_processor.local import LocalRun
from order_processor.model import Settlement, TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from order_processor.routing import route
from tests.conftest import FakeClock, metadata, sample
from tests.fakes.base import FakeServer, Reply
from tests.fakes.esputnik import API_KEY, EsputnikRules, esputnik_server

EMAIL = "ann.shopper@example.com"
ANN = Customer(customer_id="C-000123", email=EMAIL, phone="+447700900123")
SAMPLES = (
    "order-created.json",
    "order-created-with-email.json",
    "order-updated.json",
    "order-delivered.json",
    "order-cancelled.json",
)


def tracking(name_or_document: str | dict[str, Any], customer: Customer = ANN) -> TrackingEvent:
    body = (
        sample(name_or_document)
        if isinstance(name_or_document, str)
        else json.dumps(name_or_document).encode()
    )
    return TrackingEvent(order=parse_order(body), customer=customer, customer_known=True, key="k")


def cell(event: TrackingEvent) -> str:
    target = route("esputnik", event.event_type)
    assert target is not None
    return target


@pytest.fixture
def fake() -> Iterator[tuple[FakeServer, EsputnikRules]]:
    server, rules = esputnik_server()
    with server:
        yield server, rules


#: link templates for the samples' contract 1.0 lines (events mode needs url and imageUrl)
TEMPLATES = {
    "item_url_template": "https://shop.example/p/{sku}",
    "item_image_url_template": "https://shop.example/img/{sku}.jpg",
}


class Build:
    def __init__(self, url: str) -> None:
        self.url = url
        self.timeouts = Timeouts(connect=2, read=2, total=5)
        self.client = new_client(timeouts=self.timeouts)

    def __call__(
        self, mode: EsputnikMode = EsputnikMode.ORDERS, *, links: bool = True, **settings: Any
    ) -> Esputnik:
        """The destination at the fake; in events mode with TEMPLATES unless `links=False`."""
        values: dict[str, Any] = {"base_url": self.url, "api_key": API_KEY, "mode": mode}
        if mode is EsputnikMode.EVENTS and links:
            values.update(TEMPLATES)
        values.update(settings)
        return Esputnik(EsputnikSettings(**values), client=self.client, timeouts=self.timeouts)


@pytest.fixture
async def build(fake: tuple[FakeServer, EsputnikRules]) -> AsyncIterator[Build]:
    builder = Build(fake[0].url)
    yield builder
    await builder.client.aclose()


async def deliver(destination: Esputnik, event: TrackingEvent) -> Sent:
    request = destination.prepare(event, cell(event))
    assert not isinstance(request, Skip)
    return await destination.send(request)


@pytest.mark.parametrize("name", SAMPLES)
async def test_orders_mode_every_event_type(
    fake: tuple[FakeServer, EsputnikRules], build: Build, name: str
) -> None:
    server, rules = fake
    event = tracking(name)
    assert isinstance(await deliver(build(), event), Sent)
    (recorded,) = server.requests
    assert (recorded.method, recorded.path) == ("POST", "/api/v1/orders")
    (order,) = recorded.json()["orders"]
    assert order["source"] == "offline"
    assert rules.sources == ["offline"]
    expected = "CANCELLED" if event.event_type.value == "OrderCancelled" else "DELIVERED"
    assert rules.orders[event.order.order_id]["status"] == expected
    assert EMAIL in rules.contacts  # v1/orders created the contact


async def test_orders_mode_sends_exact_money_and_discounted_items(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, _ = fake
    await deliver(build(), tracking("order-created-with-email.json"))
    order = json.loads(server.requests[0].body, parse_float=Decimal)["orders"][0]
    assert order["totalCost"] == Decimal("80.00")
    assert order["discount"] == Decimal("10.00")
    assert [i["cost"] for i in order["items"]] == [Decimal("40.00"), Decimal("40.0")]
    assert order["externalCustomerId"] == "C-000123"
    assert order["date"] == "2026-11-20T14:25:00+00:00"


@pytest.mark.parametrize("name", SAMPLES)
async def test_events_mode_every_event_type_for_an_existing_contact(
    fake: tuple[FakeServer, EsputnikRules], build: Build, name: str
) -> None:
    server, rules = fake
    # The contact and the order exist already (created through v1/orders, as the v1/event guide
    # requires: https://esputnik.com/en/support/how-send-events-resource-v1event).
    await deliver(build(), tracking("order-created.json"))
    event = tracking(name)
    assert isinstance(await deliver(build(EsputnikMode.EVENTS), event), Sent)
    recorded = server.requests[-1]
    assert recorded.path == "/api/v1/event"
    body = recorded.json()
    assert (
        body["eventTypeKey"]
        == {
            "OrderCreated": "orderCreated",
            "OrderUpdated": "orderUpdated",
            "OrderDelivered": "orderDelivered",
            "OrderCancelled": "orderCancelled",
        }[event.event_type.value]
    )
    assert body["keyValue"] == EMAIL
    assert rules.ignored == []
    assert rules.accepted_events == [body]
    params = {p["name"]: p["value"] for p in body["params"]}
    assert params["date"] == "2026-11-20T14:25:00"  # the event guide's form[S], in UTC by default
    if event.order.lines:
        items = json.loads(params["items"])
        assert [i["url"] for i in items] == [
            f"https://shop.example/p/{line.sku}" for line in event.order.lines
        ]
    else:
        assert "items" not in params
    expected = "CANCELLED" if event.event_type.value == "OrderCancelled" else "DELIVERED"
    assert rules.orders[event.order.order_id]["status"] == expected


async def test_events_for_an_unknown_contact_are_accepted_but_ignored(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    sent = await deliver(build(EsputnikMode.EVENTS), tracking("order-created.json"))
    assert isinstance(sent, Sent)  # eSputnik answers 200; the event is not saved
    assert [i.reason for i in rules.ignored] == ["unknown contact"]
    assert rules.accepted_events == []


async def test_events_mode_with_a_preset_contact_by_customer_id(build: Build) -> None:
    server, rules = esputnik_server(contacts=("C-9",))
    with server:
        destination = build(EsputnikMode.EVENTS, base_url=server.url)
        await deliver(destination, tracking("order-created.json", Customer(customer_id="C-9")))
    assert server.requests[0].json()["keyValue"] == "C-9"
    assert len(rules.accepted_events) == 1


async def test_orders_mode_sends_payment_method_store_and_a_digits_only_phone(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, rules = fake
    event = tracking("order-created.json", Customer(phone="+44 7700 900123"))
    assert isinstance(await deliver(build(), event), Sent)
    (order,) = server.requests[0].json()["orders"]
    assert (order["paymentMethod"], order["storeId"], order["phone"]) == (
        "card",
        "S042",
        "447700900123",
    )
    assert "447700900123" in rules.contacts
    assert "+447700900123" not in rules.contacts


async def test_a_contact_created_by_phone_in_orders_mode_is_the_one_events_mode_names(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    phone_only = Customer(phone="+44 7700 900123")
    await deliver(build(), tracking("order-created.json", phone_only))
    assert isinstance(
        await deliver(build(EsputnikMode.EVENTS), tracking("order-delivered.json", phone_only)),
        Sent,
    )
    assert rules.ignored == []  # with "+447700900123" eSputnik would not know the contact
    assert rules.orders["100245"]["status"] == "DELIVERED"


async def test_the_fake_refuses_a_documented_string_field_that_is_not_a_string(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    destination = build()
    order = destination.order(tracking("order-created.json"), "DELIVERED")
    order["storeId"] = 42
    with pytest.raises(DeliveryError) as caught:
        await destination.send(destination.prepare_bulk([jsonbody.dumps(order)]))
    assert (caught.value.kind, caught.value.status) == (FailureKind.PERMANENT, 400)
    assert "storeId must be a string" in caught.value.message


@pytest.mark.parametrize("mode", list(EsputnikMode))
async def test_orders_whose_items_do_not_add_up_are_delivered_with_the_order_total(
    fake: tuple[FakeServer, EsputnikRules], build: Build, mode: EsputnikMode
) -> None:
    server, rules = fake
    await deliver(build(), tracking("order-created.json"))  # the contact exists for events
    document = json.loads(sample("order-created-with-email.json"))
    del document["lines"][0]["discount"]  # items now add up to 90.00, the total is 80.00
    document["shipping"], document["total"] = "4.95", "84.95"
    event = tracking(document)
    assert isinstance(await deliver(build(mode), event), Sent)
    body = json.loads(server.requests[-1].body, parse_float=Decimal)
    if mode is EsputnikMode.ORDERS:
        (order,) = body["orders"]
        assert order["totalCost"] == Decimal("84.95")
        assert [item["cost"] for item in order["items"]] == [Decimal("50.00"), Decimal("40.0")]
    else:
        params = {p["name"]: p["value"] for p in body["params"]}
        assert params["totalCost"] == "84.95"
        assert rules.ignored == []
    assert rules.orders["100246"]["totalCost"] in (Decimal("84.95"), "84.95")


async def test_the_fake_accepts_the_event_guides_own_example_which_does_not_add_up(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    destination = build()
    order = destination.order(tracking("order-created.json"), "DELIVERED")
    order["totalCost"] = Decimal("258.0")
    order["items"] = [
        {"externalItemId": "200600", "name": "Super Device", "quantity": 1, "cost": 990}
    ]
    request = destination.prepare_bulk([jsonbody.dumps(order)])
    assert isinstance(await destination.send(request), Sent)
    assert rules.orders["100245"]["totalCost"] == Decimal("258.0")


async def test_the_fake_refuses_a_total_that_is_not_a_number(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    destination = build()
    order = destination.order(tracking("order-created.json"), "DELIVERED")
    order["totalCost"] = "ninety"
    with pytest.raises(DeliveryError) as caught:
        await destination.send(destination.prepare_bulk([jsonbody.dumps(order)]))
    assert (caught.value.kind, caught.value.status) == (FailureKind.PERMANENT, 400)
    assert "totalCost must be a number" in caught.value.message


async def test_a_negative_total_is_refused_at_the_door_and_never_reaches_esputnik(
    local: LocalRun, fakes: dict[str, FakeServer]
) -> None:
    run = await local.run(sample("negative-total.json"), metadata())
    assert (run.settlement, run.accept.reason) == (Settlement.DEAD_LETTER, "InvalidMessage")
    assert run.accept.description == "total: must not be negative"
    assert run.lanes == {}
    assert fakes["esputnik"].requests == []


async def test_basic_auth_header_is_exact(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, _ = fake
    await deliver(build(user_name="till-sync"), tracking("order-created.json"))
    expected = base64.b64encode(f"till-sync:{API_KEY}".encode()).decode()
    assert server.requests[0].header("authorization") == f"Basic {expected}"
    assert server.requests[0].header("content-type") == "application/json"


async def test_wrong_key_is_permanent(
    fake: tuple[FakeServer, EsputnikRules], build: Build, retry: RetryPolicy, clock: FakeClock
) -> None:
    server, _ = fake
    destination = build(api_key="not-the-key")
    event = tracking("order-created.json")

    async def attempt() -> Sent:
        return await deliver(destination, event)

    with pytest.raises(DeliveryError) as caught:
        await call_with_retries(attempt, policy=retry, deadline=clock.now + 60)
    assert (caught.value.kind, caught.value.status) == (FailureKind.PERMANENT, 401)
    assert len(server.requests) == 1  # not retried
    assert "not-the-key" not in str(caught.value)


async def test_server_error_is_transient_and_retried(
    fake: tuple[FakeServer, EsputnikRules], build: Build, retry: RetryPolicy, clock: FakeClock
) -> None:
    server, rules = fake
    server.inject(Reply(500, {"message": "Internal Server Error"}))
    destination = build()
    event = tracking("order-created.json")

    async def attempt() -> Sent:
        return await deliver(destination, event)

    assert isinstance(await call_with_retries(attempt, policy=retry, deadline=clock.now + 60), Sent)
    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1
    assert len(rules.accepted_orders) == 1


async def test_server_errors_until_attempts_run_out_stay_transient(
    fake: tuple[FakeServer, EsputnikRules], build: Build, retry: RetryPolicy, clock: FakeClock
) -> None:
    server, _ = fake
    server.inject(*[Reply(500, None)] * 3)
    destination = build(EsputnikMode.EVENTS)
    event = tracking("order-delivered.json")

    async def attempt() -> Sent:
        return await deliver(destination, event)

    with pytest.raises(DeliveryError) as caught:
        await call_with_retries(attempt, policy=retry, deadline=clock.now + 60)
    assert (caught.value.kind, caught.value.status) == (FailureKind.TRANSIENT, 500)
    assert len(server.requests) == 3


async def test_no_contact_identifier_is_skipped_without_a_call(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, _ = fake
    event = tracking("order-created.json", Customer(customer_id="C-1"))
    assert isinstance(build().prepare(event, "DELIVERED"), Skip)
    assert isinstance(
        build(EsputnikMode.EVENTS).prepare(tracking("order-created.json", Customer()), "DELIVERED"),
        Skip,
    )
    assert server.requests == []


async def test_bulk_request_is_accepted(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    destination = build()
    elements = [destination.encode(tracking(name), cell(tracking(name))) for name in SAMPLES]
    assert all(isinstance(e, bytes) for e in elements)
    request = destination.prepare_bulk(elements)  # type: ignore[arg-type]
    assert isinstance(await destination.send(request), Sent)
    assert len(rules.accepted_orders) == len(SAMPLES)


# --- events mode: item links and date (issue 13) ----------------------------------------------


async def test_events_mode_delivers_a_1_1_order_with_its_own_links_without_templates(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, rules = fake
    await deliver(build(), tracking("order-created.json"))  # the contact exists
    event = tracking("order-created-with-urls.json")
    assert isinstance(await deliver(build(EsputnikMode.EVENTS, links=False), event), Sent)
    params = {p["name"]: p["value"] for p in server.requests[-1].json()["params"]}
    items = json.loads(params["items"])
    assert [(i["url"], i["imageUrl"]) for i in items] == [
        (line.url, line.image_url) for line in event.order.lines
    ]
    assert params["date"] == "2026-11-21T10:05:30"
    assert params["totalCost"] == "94.95"
    assert rules.ignored == []
    assert rules.orders["100247"]["status"] == "DELIVERED"


async def test_events_mode_skips_an_order_it_cannot_give_links_instead_of_sending_it(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, rules = fake
    await deliver(build(), tracking("order-created.json"))
    prepared = build(EsputnikMode.EVENTS, links=False).prepare(
        tracking("order-created-with-email.json"), "DELIVERED"
    )
    assert isinstance(prepared, Skip)
    assert "lines[0] has no url, imageUrl" in prepared.reason
    assert [r.path for r in server.requests] == ["/api/v1/orders"]  # nothing sent to be ignored
    assert rules.ignored == []


async def test_the_fake_ignores_an_event_whose_items_lack_links_as_esputnik_does(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    await deliver(build(), tracking("order-created.json"))
    destination = build(EsputnikMode.EVENTS)
    body = destination.event_body(tracking("order-created-with-email.json"), "DELIVERED")
    assert not isinstance(body, Skip)
    for param in body["params"]:
        if param["name"] == "items":
            items = json.loads(param["value"])
            del items[1]["imageUrl"]
            param["value"] = json.dumps(items)
    await destination.send(destination._post("event", jsonbody.dumps(body)))  # 200, as eSputnik
    assert [i.reason for i in rules.ignored] == ["items[1] lacks imageUrl"]
    assert "100246" not in rules.orders


@pytest.mark.parametrize("date", ["2026-11-20T14:25:00+00:00", "2026-11-20 14:25:00", "20/11/2026"])
async def test_the_fake_ignores_an_event_date_not_in_the_event_guides_form(
    fake: tuple[FakeServer, EsputnikRules], build: Build, date: str
) -> None:
    _, rules = fake
    await deliver(build(), tracking("order-created.json"))
    destination = build(EsputnikMode.EVENTS)
    body = destination.event_body(tracking("order-created-with-email.json"), "DELIVERED")
    assert not isinstance(body, Skip)
    for param in body["params"]:
        if param["name"] == "date":
            param["value"] = date
    await destination.send(destination._post("event", jsonbody.dumps(body)))
    assert [i.reason for i in rules.ignored] == ["date is not YYYY-MM-ddTHH:mm:ss"]


async def test_events_mode_writes_the_date_in_the_accounts_time_zone(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, rules = fake
    await deliver(build(), tracking("order-created.json"))
    destination = build(EsputnikMode.EVENTS, event_time_zone="Europe/Kyiv")
    await deliver(destination, tracking("order-created-with-email.json"))
    params = {p["name"]: p["value"] for p in server.requests[-1].json()["params"]}
    assert params["date"] == "2026-11-20T16:25:00"  # 14:25 UTC is 16:25 in Kyiv
    assert rules.ignored == []


async def test_status_events_for_orders_without_links_still_change_the_status(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    _, rules = fake
    await deliver(build(), tracking("order-created.json"))
    document = json.loads(sample("order-created.json"))
    document["eventType"] = "OrderCancelled"  # an ERP repeating the lines on a cancellation
    event = tracking(document)
    assert isinstance(await deliver(build(EsputnikMode.EVENTS, links=False), event), Sent)
    assert rules.ignored == []
    assert rules.orders["100245"]["status"] == "CANCELLED"


async def test_orders_mode_sends_links_when_it_has_them_and_orders_without_them_too(
    fake: tuple[FakeServer, EsputnikRules], build: Build
) -> None:
    server, rules = fake
    await deliver(build(**TEMPLATES), tracking("order-created.json"))
    await deliver(build(), tracking("order-created-with-email.json"))
    with_links, without = (r.json()["orders"][0]["items"] for r in server.requests)
    assert with_links[0]["url"] == "https://shop.example/p/CB4551-M"
    assert with_links[0]["imageUrl"] == "https://shop.example/img/CB4551-M.jpg"
    assert all("url" not in item for item in without)  # undocumented either way: sent as is
    assert len(rules.accepted_orders) == 2
