"""Routing and fan-out through the real core to all four fakes, for every event type."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from order_processor.contract import EventType, parse_order
from order_processor.model import DeliveryStatus, Outcome, Settlement
from order_processor.processor import Processor
from order_processor.routing import ROUTES, route
from tests.conftest import FakeClock, business_requests, metadata, sample, settings_for
from tests.fakes.base import FakeServer, Reply

SAMPLE_FOR = {
    EventType.ORDER_CREATED: "order-created.json",
    EventType.ORDER_UPDATED: "order-updated.json",
    EventType.ORDER_DELIVERED: "order-delivered.json",
    EventType.ORDER_CANCELLED: "order-cancelled.json",
}

# DESIGN.md's "which event goes where", as the product's users read it.
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
    processor: Processor, fakes: dict[str, FakeServer], event_type: EventType
) -> None:
    outcome = await processor.process(sample(SAMPLE_FOR[event_type]), metadata())
    assert outcome.settlement is Settlement.COMPLETE, outcome.description
    for name, server in fakes.items():
        result = outcome.result_for(name)
        assert result is not None
        routed = name in DESIGN_TABLE[event_type]
        assert result.status is (DeliveryStatus.DELIVERED if routed else DeliveryStatus.SKIPPED), (
            name
        )
        assert len(business_requests(server)) == (1 if routed else 0), name


async def test_a_permanent_failure_does_not_stop_the_others(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    outcome = await processor.process(sample("order-created.json"), metadata())
    assert outcome.settlement is Settlement.DEAD_LETTER
    assert outcome.reason == "DestinationRejected"
    statuses = {r.destination: r.status for r in outcome.results}
    assert statuses == {
        "profile_store": DeliveryStatus.DELIVERED,
        "product_recs": DeliveryStatus.DELIVERED,
        "richrelevance": DeliveryStatus.PERMANENT_ERROR,
        "esputnik": DeliveryStatus.DELIVERED,
    }
    description = outcome.description or ""
    assert description.startswith("rejected by richrelevance.")
    for name in fakes:
        assert name in description


async def test_transient_failure_anywhere_asks_for_a_retry(
    processor: Processor, fakes: dict[str, FakeServer]
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    outcome = await processor.process(sample("order-created.json"), metadata())
    assert (outcome.settlement, outcome.reason) == (Settlement.RETRY, "DestinationUnavailable")
    esputnik = outcome.result_for("esputnik")
    assert esputnik is not None
    assert esputnik.status is DeliveryStatus.TRANSIENT_ERROR


async def test_disabled_destinations_are_never_called_and_recorded_as_skipped(
    fakes: dict[str, FakeServer], loyalty: FakeServer
) -> None:
    settings = settings_for(
        fakes["profile_store"].url, loyalty.url, others={"esputnik": fakes["esputnik"].url}
    )
    processor = Processor.from_settings(settings)
    outcome = await processor.process(sample("order-created.json"), metadata())
    await processor.aclose()
    assert outcome.settlement is Settlement.COMPLETE
    for name in ("product_recs", "richrelevance"):
        result = outcome.result_for(name)
        assert result is not None
        assert (result.status, result.detail) == (DeliveryStatus.SKIPPED, "disabled")
        assert fakes[name].requests == []


async def test_destinations_are_called_concurrently(loyalty: FakeServer, clock: FakeClock) -> None:
    """Profile Store answers only once eSputnik has been called: sequential delivery would hang."""
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
    processor = Processor.from_settings(settings, transports=transports.get, clock=clock)
    outcome = await asyncio.wait_for(
        processor.process(sample("order-created.json"), metadata()), 10
    )
    await processor.aclose()
    assert outcome.settlement is Settlement.COMPLETE


async def test_a_slow_destination_is_bounded_by_its_own_timeout(loyalty: FakeServer) -> None:
    never = asyncio.Event()
    calls = {"profile_store": 0, "esputnik": 0}

    async def hangs(request: httpx.Request) -> httpx.Response:
        calls["profile_store"] += 1
        await never.wait()
        raise AssertionError("unreachable")

    async def answers(request: httpx.Request) -> httpx.Response:
        calls["esputnik"] += 1
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
    processor = Processor.from_settings(settings, transports=transports.get)
    outcome = await asyncio.wait_for(
        processor.process(sample("order-created.json"), metadata()), 10
    )
    await processor.aclose()
    assert outcome.settlement is Settlement.RETRY
    slow, fast = outcome.result_for("profile_store"), outcome.result_for("esputnik")
    assert slow is not None
    assert fast is not None
    assert (slow.status, fast.status) == (DeliveryStatus.TRANSIENT_ERROR, DeliveryStatus.DELIVERED)
    assert "no answer within 0.05s" in slow.detail


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
