"""Routing and fan-out through both stages to all four fakes, for every event type: the accept
stage publishes one delivery per routed destination, and each lane delivers on its own."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from order_processor.contract import EventType, parse_order
from order_processor.local import LocalRun
from order_processor.model import DeliveryStatus, Outcome, Settlement
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from order_processor.routing import ROUTES, route
from tests.conftest import FakeClock, business_requests, metadata, sample, settings_for
from tests.fakes.base import FakeServer, Reply

SAMPLE_FOR = {
    EventType.ORDER_CREATED: "order-created.json",
    EventType.ORDER_UPDATED: "order-updated.json",
    EventType.ORDER_DELIVERED: "order-delivered.json",
    EventType.ORDER_CANCELLED: "order-cancelled.json",
}

# The routing table as the product's users read it (docs/destinations/README.md).
DESIGN_TABLE = {
    EventType.ORDER_CREATED: {"profile_store", "product_recs", "richrelevance", "esputnik"},
    EventType.ORDER_UPDATED: {"profile_store", "richrelevance", "esputnik"},
    EventType.ORDER_DELIVERED: {"profile_store", "esputnik"},
    EventType.ORDER_CANCELLED: {"profile_store", "esputnik"},
}


def test_routing_table_matches_the_design() -> None:
    for event_type, destinations in DESIGN_TABLE.items():
        assert {name for name in ROUTES if route(name, event_type)} == destinations


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda e: e.value)
async def test_every_event_type_reaches_exactly_its_routed_destinations(
    local: LocalRun, fakes: dict[str, FakeServer], event_type: EventType
) -> None:
    run = await local.run(sample(SAMPLE_FOR[event_type]), metadata())
    assert run.settlement is Settlement.COMPLETE, run.description
    assert set(run.accept.routed) == DESIGN_TABLE[event_type]
    assert set(run.lanes) == DESIGN_TABLE[event_type]  # one delivery message per routed lane
    for name, server in fakes.items():
        result = run.result_for(name)
        assert result is not None
        routed = name in DESIGN_TABLE[event_type]
        assert result.status is (DeliveryStatus.DELIVERED if routed else DeliveryStatus.SKIPPED), (
            name
        )
        assert len(business_requests(server)) == (1 if routed else 0), name


async def test_a_permanent_failure_is_dead_lettered_on_its_own_lane_only(
    local: LocalRun, fakes: dict[str, FakeServer]
) -> None:
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    run = await local.run(sample("order-created.json"), metadata())
    assert run.accept.settlement is Settlement.COMPLETE
    rejected = run.lanes["richrelevance"]
    assert (rejected.settlement, rejected.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert (rejected.description or "").startswith("rejected by richrelevance: ")
    others = {name: o.settlement for name, o in run.lanes.items() if name != "richrelevance"}
    assert others == dict.fromkeys(
        ("profile_store", "product_recs", "esputnik"), Settlement.COMPLETE
    )


async def test_a_transient_failure_schedules_a_retry_for_that_lane_only(
    local: LocalRun, fakes: dict[str, FakeServer]
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    run = await local.run(sample("order-created.json"), metadata())
    esputnik = run.lanes["esputnik"]
    assert (esputnik.settlement, esputnik.reason) == (Settlement.COMPLETE, "DestinationUnavailable")
    assert esputnik.retry_at is not None
    (copy,) = run.scheduled
    assert (copy.destination, copy.application_properties["destination"]) == ("esputnik",) * 2
    assert all(o.retry_at is None for name, o in run.lanes.items() if name != "esputnik")


async def test_disabled_destinations_get_no_delivery_message_and_are_never_called(
    fakes: dict[str, FakeServer], loyalty: FakeServer
) -> None:
    settings = settings_for(
        fakes["profile_store"].url, loyalty.url, others={"esputnik": fakes["esputnik"].url}
    )
    pipeline = Pipeline.from_settings(settings, outbox=MemoryOutbox())
    run = await LocalRun(pipeline).run(sample("order-created.json"), metadata())
    await pipeline.aclose()
    assert run.settlement is Settlement.COMPLETE
    assert set(run.accept.routed) == {"profile_store", "esputnik"}
    for name in ("product_recs", "richrelevance"):
        result = run.result_for(name)
        assert result is not None
        assert (result.status, result.detail) == (DeliveryStatus.SKIPPED, "disabled")
        assert fakes[name].requests == []


async def test_lanes_do_not_wait_for_each_other(loyalty: FakeServer, clock: FakeClock) -> None:
    """Profile Store answers only once eSputnik has been called: lanes that waited would hang."""
    esputnik_called = asyncio.Event()

    async def profile_store(request: httpx.Request) -> httpx.Response:
        await esputnik_called.wait()
        return httpx.Response(202)

    async def esputnik(request: httpx.Request) -> httpx.Response:
        esputnik_called.set()
        return httpx.Response(200, json={})

    transports = {
        "profile_store": httpx.MockTransport(profile_store),
        "esputnik": httpx.MockTransport(esputnik),
    }
    settings = settings_for(
        "https://ps.example", loyalty.url, others={"esputnik": "https://es.example"}
    )
    pipeline = Pipeline.from_settings(
        settings, transports=transports.get, clock=clock, outbox=MemoryOutbox()
    )
    run = await asyncio.wait_for(
        LocalRun(pipeline).run(sample("order-created.json"), metadata()), 10
    )
    await pipeline.aclose()
    assert run.settlement is Settlement.COMPLETE


async def test_a_slow_destination_is_bounded_by_its_own_timeout(loyalty: FakeServer) -> None:
    never = asyncio.Event()

    async def hangs(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    async def answers(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={})

    transports = {
        "profile_store": httpx.MockTransport(hangs),
        "esputnik": httpx.MockTransport(answers),
    }
    settings = settings_for(
        "https://ps.example",
        loyalty.url,
        others={"esputnik": "https://es.example"},
        core={"destination_timeout_seconds": 0.05, "destination_max_attempts": 1},
    )
    pipeline = Pipeline.from_settings(settings, transports=transports.get, outbox=MemoryOutbox())
    run = await asyncio.wait_for(
        LocalRun(pipeline).run(sample("order-created.json"), metadata()), 10
    )
    await pipeline.aclose()
    slow, fast = run.result_for("profile_store"), run.result_for("esputnik")
    assert slow is not None
    assert fast is not None
    assert (slow.status, fast.status) == (DeliveryStatus.TRANSIENT_ERROR, DeliveryStatus.DELIVERED)
    assert "no answer within 0.05s" in slow.detail
    assert run.lanes["profile_store"].retry_at is not None


def test_dead_letter_texts_are_truncated_to_service_bus_limits() -> None:
    outcome = Outcome(
        settlement=Settlement.DEAD_LETTER, reason="R" * 5000, description="d" * 10_000
    )
    assert len(outcome.reason or "") == 4096
    assert len(outcome.description or "") == 4096


def test_event_key_is_stable_and_content_derived() -> None:
    from order_processor.model import event_key

    created = parse_order(sample("order-created.json"))
    again = parse_order(json.dumps(json.loads(sample("order-created.json")), indent=4).encode())
    changed = parse_order(sample("order-created.json").replace(b'"total": 90.0', b'"total": 91.0'))
    assert event_key(created) == event_key(again)
    assert event_key(created) != event_key(changed)
    assert event_key(created).startswith("100245:OrderCreated:")
