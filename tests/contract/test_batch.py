"""The batch lanes (ORDERS_BATCH_ENABLED) through the real stages to all four loopback fakes:
bulk requests where the vendor has a bulk form, one Outcome per message, and one bad event never
failing the rest of the batch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from order_processor.local import received
from order_processor.model import DeliveryStatus, MessageMetadata, Outcome, Settlement
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from tests.conftest import FakeClock, business_requests, sample, settings_for
from tests.fakes.base import FakeServer, Recorded, Reply

Batch = list[tuple[bytes, MessageMetadata]]


def order(order_id: str, name: str = "order-created.json", **changes: Any) -> bytes:
    document = json.loads(sample(name))
    document.update(orderId=order_id, **changes)
    return json.dumps(document).encode()


def batch(*bodies: bytes) -> Batch:
    return [(body, MessageMetadata(message_id=f"m-{i}")) for i, body in enumerate(bodies)]


def created(count: int, prefix: str = "B") -> Batch:
    return batch(*(order(f"{prefix}{i}") for i in range(count)))


def settlements(outcomes: list[Outcome]) -> list[str]:
    return [o.settlement.value for o in outcomes]


Lanes = dict[str, list[Outcome]]


async def through_lanes(pipeline: Pipeline, outbox: MemoryOutbox, messages: Batch) -> Lanes:
    """Accept each message, then hand each lane its delivery messages as one batch (as a
    cardinality-many trigger would): the lane's outcomes, in order."""
    for body, metadata in messages:
        await pipeline.accept.accept(body, metadata)
    by_lane: dict[str, list[tuple[bytes, MessageMetadata]]] = {}
    for message in outbox.take():
        by_lane.setdefault(message.destination, []).append((message.body, received(message)))
    return {
        name: await pipeline.lanes[name].deliver_batch(delivered)
        for name, delivered in by_lane.items()
    }


def ids_in(server: FakeServer, field: str) -> list[str]:
    """Every order id the vendor accepted, whatever the request shape."""
    found: list[str] = []
    for request in _business(server):
        document = request.json()
        elements = document.get("orders", [document]) if isinstance(document, dict) else document
        found += [str(_read(element, field)) for element in elements]
    return found


def _business(server: FakeServer) -> list[Recorded]:
    return [r for r in server.accepted if not r.path.endswith("/oauth2/token")]


def _read(element: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        element = element[part]
    return element


def refuse_order(order_id: str, marker: str) -> Any:
    """A vendor rule this app cannot see in advance: any request carrying `order_id` is refused
    as a whole, as the real bulk endpoints do for one bad element."""
    needle = f'"{marker}":"{order_id}"'.encode()

    def rule(request: Recorded) -> Reply | None:
        if needle in request.body.replace(b" ", b""):
            return Reply(400, {"message": f"order {order_id} refused"})
        return None

    return rule


async def test_a_batch_goes_out_in_one_request_per_bulk_destination(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    lanes = await through_lanes(pipeline, outbox, created(12))
    assert {name: settlements(o) for name, o in lanes.items()} == {
        name: ["complete"] * 12 for name in fakes
    }
    assert business_requests(fakes["profile_store"]) == ["/api/v1.0/TrackBulk"]
    assert [r.method for r in _business(fakes["richrelevance"])] == ["POST"]
    assert business_requests(fakes["esputnik"]) == ["/api/v1/orders"]
    # Product Recommendations has no bulk form: one request per order.
    assert len(business_requests(fakes["product_recs"])) == 12
    expected = sorted(f"B{i}" for i in range(12))
    assert sorted(ids_in(fakes["profile_store"], "payload.orderId")) == expected
    assert sorted(ids_in(fakes["richrelevance"], "externalOrderId")) == expected
    assert sorted(ids_in(fakes["esputnik"], "externalOrderId")) == expected
    for outcomes in lanes.values():
        assert {r.status for o in outcomes for r in o.results} == {DeliveryStatus.DELIVERED}


async def test_each_message_gets_its_own_outcome(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    lane = pipeline.lanes["profile_store"]
    for body in (order("G1"), order("G2", "order-created-with-email.json")):
        await pipeline.accept.accept(body, MessageMetadata(message_id="m"))
    published = [m for m in outbox.take() if m.destination == "profile_store"]
    messages = [
        (published[0].body, received(published[0])),
        (b'{"not": "a delivery"}', MessageMetadata(message_id="x")),
        (published[1].body, received(published[1])),
    ]
    outcomes = await lane.deliver_batch(messages)
    assert settlements(outcomes) == ["complete", "dead-letter", "complete"]
    assert outcomes[1].reason == "InvalidMessage"
    assert sorted(ids_in(fakes["profile_store"], "payload.orderId")) == ["G1", "G2"]


@pytest.mark.parametrize(
    ("destination", "marker"),
    [
        ("profile_store", "orderId"),
        ("richrelevance", "externalOrderId"),
        ("esputnik", "externalOrderId"),
    ],
)
async def test_one_refused_event_is_split_out_and_the_rest_are_delivered(
    pipeline: Pipeline,
    outbox: MemoryOutbox,
    fakes: dict[str, FakeServer],
    destination: str,
    marker: str,
) -> None:
    server = fakes[destination]
    server.chaos = refuse_order("B5", marker)
    outcomes = (await through_lanes(pipeline, outbox, created(10)))[destination]
    assert settlements(outcomes) == ["complete"] * 5 + ["dead-letter"] + ["complete"] * 4
    refused = outcomes[5]
    assert refused.reason == "DestinationRejected"
    assert f"{destination} HTTP 400" in (refused.description or "")
    assert "order B5 refused" in (refused.description or "")
    field = "payload.orderId" if destination == "profile_store" else "externalOrderId"
    assert sorted(ids_in(server, field)) == sorted(f"B{i}" for i in range(10) if i != 5)
    # Halving isolates one bad element in at most 2 * log2(n) + 1 requests.
    assert len(business_requests(server)) <= 2 * 4 + 1


async def test_a_refusal_that_is_not_about_the_content_is_not_split(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    fakes["esputnik"].inject(Reply(401, None, headers={"WWW-Authenticate": "Basic"}))
    lanes = await through_lanes(pipeline, outbox, created(8))
    assert settlements(lanes["esputnik"]) == ["dead-letter"] * 8
    assert settlements(lanes["profile_store"]) == ["complete"] * 8
    assert business_requests(fakes["esputnik"]) == ["/api/v1/orders"]


async def test_a_destination_that_stays_down_owes_only_its_own_events(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    fakes["richrelevance"].chaos = lambda r: Reply(503) if "/orders" in r.path else None
    lanes = await through_lanes(pipeline, outbox, created(6))
    assert all(o.retry_at is not None for o in lanes["richrelevance"])
    assert all(
        o.retry_at is None for name, os in lanes.items() if name != "richrelevance" for o in os
    )
    copies = outbox.take()
    assert {c.destination for c in copies} == {"richrelevance"}
    assert len(copies) == 6
    assert len(ids_in(fakes["profile_store"], "payload.orderId")) == 6


async def test_a_redelivered_batch_sends_nothing_twice(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    for body, metadata in created(7):
        await pipeline.accept.accept(body, metadata)
    published = outbox.take()
    lane = pipeline.lanes["esputnik"]
    batch_of = [(m.body, received(m)) for m in published if m.destination == "esputnik"]
    first = await lane.deliver_batch(batch_of)
    before = len(fakes["esputnik"].accepted)
    again = await lane.deliver_batch(batch_of)
    assert settlements(first) == settlements(again) == ["complete"] * 7
    assert len(fakes["esputnik"].accepted) == before
    assert all(o.results[0].previously for o in again)


async def test_a_batch_larger_than_the_bulk_limit_is_chunked(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    lanes = await through_lanes(pipeline, outbox, created(101))
    assert settlements(lanes["profile_store"]) == ["complete"] * 101
    sizes = sorted(len(r.json()) for r in fakes["profile_store"].accepted)
    assert sizes == [1, 100]
    assert len(ids_in(fakes["richrelevance"], "externalOrderId")) == 101


async def test_a_batch_of_one_is_sent_as_a_single_event(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    lanes = await through_lanes(pipeline, outbox, created(1))
    assert settlements(lanes["profile_store"]) == ["complete"]
    assert business_requests(fakes["profile_store"]) == ["/api/v1.0/Track"]
    assert [r.method for r in _business(fakes["richrelevance"])] == ["PUT"]


async def test_events_mode_esputnik_has_no_bulk_form(
    profile_store: tuple[FakeServer, Any],
    esputnik: tuple[FakeServer, Any],
    loyalty: FakeServer,
    clock: FakeClock,
) -> None:
    server, rules = esputnik
    settings = settings_for(
        profile_store[0].url,
        loyalty.url,
        others={"esputnik": server.url},
        # events mode needs each item's page and image: these orders' lines have none
        esputnik={
            "mode": "events",
            "item_url_template": "https://shop.example/p/{sku}",
            "item_image_url_template": "https://shop.example/img/{sku}.jpg",
        },
    )
    rules.contacts.add(rules._contact_key("ann.shopper@example.com"))
    outbox = MemoryOutbox()
    built = Pipeline.from_settings(settings, clock=clock, now=clock.utc, outbox=outbox)
    try:
        assert not built.lanes["esputnik"].takes_batches
        lanes = await through_lanes(built, outbox, created(3))
    finally:
        await built.aclose()
    assert settlements(lanes["esputnik"]) == ["complete"] * 3
    assert business_requests(server) == ["/api/v1/event"] * 3


async def test_a_duplicate_in_the_same_batch_is_sent_once(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    for body in (order("D1"), order("D2")):
        await pipeline.accept.accept(body, MessageMetadata(message_id="m"))
    d1, d2 = [m for m in outbox.take() if m.destination == "profile_store"]
    outcomes = await pipeline.lanes["profile_store"].deliver_batch(
        [(d1.body, received(d1)), (d1.body, received(d1)), (d2.body, received(d2))]
    )
    first, duplicate, _ = outcomes
    assert first.settlement is Settlement.COMPLETE
    # The second copy finds the ledger claim held: it retries later, sending nothing now.
    assert duplicate.retry_at is not None
    assert duplicate.results[0].vendor_code == "InFlight"
    assert sorted(ids_in(fakes["profile_store"], "payload.orderId")) == ["D1", "D2"]
