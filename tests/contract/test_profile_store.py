"""Profile Store through both stages (accept, then the profile_store lane) against a loopback
Track API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from order_processor.contract import MAX_BODY_BYTES, parse_order
from order_processor.destinations.profile_store import ProfileStore
from order_processor.local import LocalRun
from order_processor.model import DeadLetterReason, DeliveryStatus, Outcome, Settlement
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from tests.conftest import FakeClock, metadata, sample, settings_for
from tests.fakes.base import FakeServer, Reply
from tests.fakes.profile_store import API_KEY, SCOPE, ProfileStoreRules, profile_store_server

PS = tuple[FakeServer, ProfileStoreRules]

EVENT_NAMES = {
    "order-created.json": "StorePurchase",
    "order-updated.json": "StoreOrderUpdated",
    "order-delivered.json": "StoreOrderDelivered",
    "order-cancelled.json": "StoreOrderCancelled",
}


async def lane(local: LocalRun, body: bytes) -> Outcome:
    """The profile_store lane's outcome for an order message (accepted and published first)."""
    run = await local.run(body, metadata())
    assert run.accept.settlement is Settlement.COMPLETE, run.accept.description
    return run.lanes["profile_store"]


@pytest.mark.parametrize(("name", "event_type"), EVENT_NAMES.items())
async def test_every_event_type_is_tracked_with_its_event_name(
    local: LocalRun, profile_store: PS, name: str, event_type: str
) -> None:
    outcome = await lane(local, sample(name))
    assert outcome.settlement is Settlement.COMPLETE
    event = profile_store[1].accepted[-1]
    assert (event["eventType"], event["value"]) == (event_type, event_type)


async def test_tracking_event_shape(local: LocalRun, profile_store: PS) -> None:
    await lane(local, sample("order-created.json"))
    request = profile_store[0].requests[-1]
    assert (request.method, request.path) == ("POST", "/api/v1.0/Track")
    assert request.header("Authorization") == f"epi-single {API_KEY}"  # the default: current docs
    assert request.header("Ocp-Apim-Subscription-Key") is None
    event = request.json()
    assert event["deviceId"] == "InStoreDevice"
    assert event["eventTime"] == "2026-11-20T14:25:00Z"
    assert event["scope"] == SCOPE
    assert event["user"] == {"email": "ann.shopper@example.com", "name": "Ann Shopper"}
    assert event["payload"]["orderId"] == "100245"
    # The payload carries the order, not the customer's card number.
    assert "loyaltyCardNumber" not in json.dumps(event["payload"])
    # Money is written exactly as the ERP sent it (through the delivery message too).
    assert b'"unitPrice":50.00' in request.body
    assert b'"subTotal":90.00' in request.body


async def test_event_time_is_converted_to_utc_z(local: LocalRun, profile_store: PS) -> None:
    document = json.loads(sample("order-created.json"))
    document["orderDate"] = "2026-11-20T16:25:00+02:00"
    await lane(local, json.dumps(document).encode())
    assert profile_store[1].accepted[-1]["eventTime"] == "2026-11-20T14:25:00Z"


async def test_400_dead_letters_destination_rejected_on_its_lane_only(
    local: LocalRun, profile_store: PS
) -> None:
    profile_store[0].inject(Reply(400, {"message": "scope does not match the site's scope"}))
    run = await local.run(sample("order-created.json"), metadata())
    outcome = run.lanes["profile_store"]
    assert outcome.settlement is Settlement.DEAD_LETTER
    assert outcome.reason == DeadLetterReason.DESTINATION_REJECTED
    assert outcome.description is not None
    assert "profile_store HTTP 400" in outcome.description
    assert "scope does not match" in outcome.description
    others = {name: o.settlement for name, o in run.lanes.items() if name != "profile_store"}
    assert set(others.values()) == {Settlement.COMPLETE}


async def test_503_is_retried_then_a_retry_copy_is_scheduled_for_the_lane(
    local: LocalRun, profile_store: PS, clock: FakeClock
) -> None:
    profile_store[0].inject(*[Reply(503, {"message": "unavailable"})] * 3)
    run = await local.run(sample("order-created.json"), metadata())
    outcome = run.lanes["profile_store"]
    # Completed: the retry copy scheduled on the deliveries topic carries the delivery on.
    assert (outcome.settlement, outcome.reason) == (Settlement.COMPLETE, "DestinationUnavailable")
    assert outcome.retry_at is not None
    result = outcome.result_for("profile_store")
    assert result is not None
    assert (result.status, result.http_status, result.attempts) == (
        DeliveryStatus.TRANSIENT_ERROR,
        503,
        3,
    )
    assert len(clock.sleeps) == 2
    (copy,) = run.scheduled
    assert copy.destination == "profile_store"


async def test_429_then_success_is_delivered(
    local: LocalRun, profile_store: PS, clock: FakeClock
) -> None:
    profile_store[0].inject(Reply(429, {"message": "rate limited"}, headers={"Retry-After": "1"}))
    outcome = await lane(local, sample("order-created.json"))
    assert outcome.settlement is Settlement.COMPLETE
    assert outcome.retry_at is None
    assert clock.sleeps == [1.0]


async def test_unknown_customer_is_skipped_by_policy(local: LocalRun, profile_store: PS) -> None:
    outcome = await lane(local, sample("order-created-unknown-card.json"))
    assert outcome.settlement is Settlement.COMPLETE
    result = outcome.result_for("profile_store")
    assert result is not None
    assert result.status is DeliveryStatus.SKIPPED
    assert profile_store[0].requests == []


async def test_email_in_the_message_skips_the_lookup(
    local: LocalRun, profile_store: PS, loyalty: FakeServer
) -> None:
    outcome = await lane(local, sample("order-created-with-email.json"))
    assert outcome.settlement is Settlement.COMPLETE
    assert loyalty.requests == []
    assert len(profile_store[1].accepted) == 1


async def test_loyalty_lookups_are_cached(local: LocalRun, loyalty: FakeServer) -> None:
    for _ in range(3):
        await local.run(sample("order-created.json"), metadata())
    assert len(loyalty.requests) == 1


async def test_loyalty_outage_schedules_an_accept_retry_without_publishing_deliveries(
    local: LocalRun, profile_store: PS, loyalty: FakeServer
) -> None:
    loyalty.inject(*[Reply(503)] * 3)
    run = await local.run(sample("order-created.json"), metadata())
    assert (run.accept.settlement, run.accept.reason) == (Settlement.COMPLETE, "LoyaltyUnavailable")
    assert run.accept.retry_at is not None
    (copy,) = run.scheduled
    assert copy.destination == "accept"
    assert run.lanes == {}
    assert profile_store[0].requests == []


@pytest.fixture
async def subscription_key(
    loyalty: FakeServer, retry: RetryPolicy, clock: FakeClock
) -> AsyncIterator[tuple[LocalRun, Any]]:
    """An older tenant that expects the 2018 blog's header."""
    server, _ = profile_store_server(auth_style="subscription-key")
    with server:
        settings = settings_for(
            server.url, loyalty.url, profile_store={"auth_style": "subscription-key"}
        )
        built = Pipeline.from_settings(settings, retry=retry, clock=clock, outbox=MemoryOutbox())
        yield LocalRun(built), server
        await built.aclose()


async def test_subscription_key_auth_style_for_older_tenants(
    subscription_key: tuple[LocalRun, FakeServer],
) -> None:
    local, server = subscription_key
    outcome = await lane(local, sample("order-created.json"))
    assert outcome.settlement is Settlement.COMPLETE
    assert server.requests[-1].header("ocp-apim-subscription-key") == API_KEY
    assert server.requests[-1].header("authorization") is None


async def test_wrong_key_is_rejected(
    loyalty: FakeServer, retry: RetryPolicy, profile_store: PS
) -> None:
    settings = settings_for(profile_store[0].url, loyalty.url, profile_store={"api_key": "wrong"})
    pipeline = Pipeline.from_settings(settings, retry=retry, outbox=MemoryOutbox())
    outcome = await lane(LocalRun(pipeline), sample("order-created.json"))
    await pipeline.aclose()
    assert outcome.reason == DeadLetterReason.DESTINATION_REJECTED
    assert "HTTP 401" in (outcome.description or "")


def _body_of_size(target: int) -> bytes:
    """A valid order whose compact JSON is exactly `target` bytes (attributes as filler)."""
    document = json.loads(sample("order-created.json"))
    filler = {f"a{i}": "" for i in range(100)}
    line = document["lines"][0]
    document["lines"] = [dict(line, attributes=dict(filler)) for _ in range(3)]
    body = json.dumps(document, separators=(",", ":")).encode()
    missing = target - len(body)
    for attributes in (line_["attributes"] for line_ in document["lines"]):
        for key in attributes:
            take = min(1024, missing)
            attributes[key] = "x" * take
            missing -= take
    body = json.dumps(document, separators=(",", ":")).encode()
    assert len(body) == target
    return body


async def test_events_over_256_kb_are_rejected_before_sending(
    local: LocalRun, profile_store: PS
) -> None:
    # Under the 256 KB message limit, but the TrackingEvent around it is over Profile Store's.
    outcome = await lane(local, _body_of_size(MAX_BODY_BYTES - 10))
    assert outcome.reason == DeadLetterReason.DESTINATION_REJECTED
    assert "256 KB" in (outcome.description or "")
    assert profile_store[0].requests == []


async def test_track_bulk_is_accepted(pipeline: Pipeline, profile_store: PS) -> None:
    destination = pipeline.lanes["profile_store"].destination
    assert isinstance(destination, ProfileStore)
    event = await pipeline.accept.enrich(
        parse_order(sample("order-created.json")), "k", metadata(), 1e12
    )
    element = destination.encode(event, "StorePurchase")
    assert isinstance(element, bytes)
    request = destination.prepare_bulk([element] * 100)
    sent = await destination.send(request)
    assert sent is not None
    assert profile_store[0].requests[-1].path == "/api/v1.0/TrackBulk"
    assert len(profile_store[1].accepted) == 100
    with pytest.raises(ValueError, match="1 to 100"):
        destination.prepare_bulk([element] * 101)
