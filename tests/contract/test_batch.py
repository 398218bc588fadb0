"""The batch path (ORDERS_BATCH_ENABLED) through the real core to all four loopback fakes: bulk
requests where the vendor has a bulk form, one Outcome per message, and one bad event never
failing the rest of the batch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from order_processor.handler import OrderHandler
from order_processor.ledger import MemoryLedger
from order_processor.model import DeliveryStatus, MessageMetadata, Outcome, Settlement
from order_processor.processor import Processor
from order_processor.redelivery import RecordingRetryQueue
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
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    outcomes = await processor.process_batch(created(12))
    assert settlements(outcomes) == ["complete"] * 12
    assert business_requests(fakes["profile_store"]) == ["/api/v1.0/TrackBulk"]
    assert [r.method for r in _business(fakes["richrelevance"])] == ["POST"]
    assert business_requests(fakes["esputnik"]) == ["/api/v1/orders"]
    # Product Recommendations has no bulk form: one request per order.
    assert len(business_requests(fakes["product_recs"])) == 12
    expected = sorted(f"B{i}" for i in range(12))
    assert sorted(ids_in(fakes["profile_store"], "payload.orderId")) == expected
    assert sorted(ids_in(fakes["richrelevance"], "externalOrderId")) == expected
    assert sorted(ids_in(fakes["esputnik"], "externalOrderId")) == expected
    for outcome in outcomes:
        assert {r.status for r in outcome.results} == {DeliveryStatus.DELIVERED}


async def test_each_message_gets_its_own_outcome(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    messages = batch(
        order("G1"),
        b'{"not": "an order"}',
        sample("order-delivered.json"),
        order("G2", "order-created-with-email.json"),
    )
    outcomes = await processor.process_batch(messages)
    assert settlements(outcomes) == ["complete", "dead-letter", "complete", "complete"]
    assert outcomes[1].reason == "InvalidMessage"
    delivered = outcomes[2]
    assert delivered.result_for("product_recs").status is DeliveryStatus.SKIPPED  # type: ignore[union-attr]
    assert delivered.result_for("esputnik").status is DeliveryStatus.DELIVERED  # type: ignore[union-attr]
    # The email-only order has no loyalty customer id: RichRelevance skips it, as one by one.
    skipped = outcomes[3].result_for("richrelevance")
    assert skipped is not None
    assert skipped.status is DeliveryStatus.SKIPPED
    assert sorted(ids_in(fakes["richrelevance"], "externalOrderId")) == ["G1"]


@pytest.mark.parametrize(
    ("destination", "marker"),
    [
        ("profile_store", "orderId"),
        ("richrelevance", "externalOrderId"),
        ("esputnik", "externalOrderId"),
    ],
)
async def test_one_refused_event_is_split_out_and_the_rest_are_delivered(
    processor: Processor, fakes: dict[str, FakeServer], destination: str, marker: str
) -> None:
    server = fakes[destination]
    server.chaos = refuse_order("B5", marker)
    outcomes = await processor.process_batch(created(10))
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
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    fakes["esputnik"].inject(Reply(401, None, headers={"WWW-Authenticate": "Basic"}))
    outcomes = await processor.process_batch(created(8))
    assert settlements(outcomes) == ["dead-letter"] * 8
    assert business_requests(fakes["esputnik"]) == ["/api/v1/orders"]


async def test_a_destination_that_stays_down_owes_only_its_own_events(
    handler: OrderHandler,
    fakes: dict[str, FakeServer],
    retry_queue: RecordingRetryQueue,
) -> None:
    fakes["richrelevance"].chaos = lambda r: Reply(503) if "/orders" in r.path else None
    outcomes = await handler.handle_batch(created(6))
    assert settlements(outcomes) == ["complete"] * 6
    assert all(o.retry_at is not None for o in outcomes)
    assert {c.application_properties["owedDestinations"] for c in retry_queue.copies} == {
        "richrelevance"
    }
    assert [c.message_id for c in retry_queue.copies] == [f"m-{i}:retry-1" for i in range(6)]
    assert len(ids_in(fakes["profile_store"], "payload.orderId")) == 6


async def test_a_redelivered_batch_sends_nothing_twice(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    messages = created(7)
    first = await processor.process_batch(messages)
    before = {name: len(server.accepted) for name, server in fakes.items()}
    again = await processor.process_batch(messages)
    assert settlements(first) == settlements(again) == ["complete"] * 7
    assert {name: len(server.accepted) for name, server in fakes.items()} == before
    assert all(r.previously for o in again for r in o.results if r.status.value == "delivered")


async def test_a_batch_larger_than_the_bulk_limit_is_chunked(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    outcomes = await processor.process_batch(created(101))
    assert settlements(outcomes) == ["complete"] * 101
    sizes = sorted(len(r.json()) for r in fakes["profile_store"].accepted)
    assert sizes == [1, 100]
    assert len(ids_in(fakes["richrelevance"], "externalOrderId")) == 101


async def test_a_batch_of_one_is_sent_as_a_single_event(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    (outcome,) = await processor.process_batch(created(1))
    assert outcome.settlement is Settlement.COMPLETE
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
        esputnik={"mode": "events"},
    )
    rules.contacts.add(rules._contact_key("ann.shopper@example.com"))
    built = Processor.from_settings(settings, clock=clock, now=clock.utc, ledger=MemoryLedger())
    try:
        outcomes = await built.process_batch(created(3))
    finally:
        await built.aclose()
    assert settlements(outcomes) == ["complete"] * 3
    assert business_requests(server) == ["/api/v1/event"] * 3


async def test_an_event_refused_before_sending_fails_alone(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    # eSputnik's totals rule is checked before any call: that order is never in the bulk body.
    bad = order("B1", total="91.00")
    outcomes = await processor.process_batch(batch(order("B0"), bad, order("B2")))
    assert settlements(outcomes) == ["complete", "dead-letter", "complete"]
    refused = outcomes[1].result_for("esputnik")
    assert refused is not None
    assert refused.status is DeliveryStatus.PERMANENT_ERROR
    assert refused.vendor_code == "TotalsMismatch"
    assert sorted(ids_in(fakes["esputnik"], "externalOrderId")) == ["B0", "B2"]
    assert business_requests(fakes["esputnik"]) == ["/api/v1/orders"]


async def test_a_duplicate_in_the_same_batch_is_sent_once(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    body = order("D1")
    outcomes = await processor.process_batch(batch(body, body, order("D2")))
    first, duplicate, _ = outcomes
    assert first.settlement is Settlement.COMPLETE
    # The second copy finds the ledger claim held: it retries later, sending nothing now.
    assert duplicate.settlement is Settlement.RETRY
    assert {r.vendor_code for r in duplicate.results if r.status.value == "transient-error"} == {
        "InFlight"
    }
    assert sorted(ids_in(fakes["profile_store"], "payload.orderId")) == ["D1", "D2"]
