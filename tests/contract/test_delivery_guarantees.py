"""The failure semantics (README, "Outcomes and settlement") through the real stages, ledger and
four fakes: nothing lost (retry copies for one lane, RetriesExhausted on that lane), nothing sent
twice (the ledger)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from order_processor.accept import ACCEPT_LANE
from order_processor.ledger import Claimed, LedgerStatus, LedgerUnavailable, MemoryLedger
from order_processor.local import LocalRun, received
from order_processor.model import DeliveryStatus, DestinationResult, MessageMetadata, Settlement
from order_processor.outbox import MemoryOutbox, Outgoing
from order_processor.pipeline import Pipeline
from order_processor.redelivery import RetryState
from tests.conftest import FakeClock, business_requests, sample
from tests.fakes.base import FakeServer, Reply

CREATED = sample("order-created.json")
ROUTED = {"profile_store", "product_recs", "richrelevance", "esputnik"}


def sent(fakes: dict[str, FakeServer]) -> dict[str, int]:
    return {name: len(business_requests(server)) for name, server in fakes.items()}


async def accepted(
    pipeline: Pipeline, outbox: MemoryOutbox, body: bytes = CREATED
) -> dict[str, Outgoing]:
    """Run the accept stage; the delivery messages it published, by lane."""
    outcome = await pipeline.accept.accept(body, MessageMetadata(message_id="m-1"))
    assert outcome.settlement is Settlement.COMPLETE, outcome.description
    return {m.destination: m for m in outbox.take()}


async def test_the_accept_stage_publishes_one_delivery_message_per_routed_lane(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    published = await accepted(pipeline, outbox)
    assert set(published) == ROUTED
    for name, message in published.items():
        assert message.application_properties["destination"] == name
        assert message.message_id.endswith(f":{name}")
        assert message.message_id.startswith("100245:OrderCreated:")
        assert message.session_id == "100245"
        assert message.scheduled_at is None
    assert sent(fakes) == dict.fromkeys(ROUTED, 0)  # accepting sends nothing to the vendors


async def test_a_redelivered_delivery_message_calls_its_vendor_once(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    lane = pipeline.lanes["esputnik"]
    first = await lane.deliver(message.body, received(message))
    again = await lane.deliver(message.body, received(message))
    assert (first.settlement, again.settlement) == (Settlement.COMPLETE, Settlement.COMPLETE)
    assert again.results[0].previously
    assert sent(fakes)["esputnik"] == 1


async def test_a_duplicate_publish_with_a_new_message_id_is_the_same_event(
    local: LocalRun, fakes: dict[str, FakeServer]
) -> None:
    await local.run(CREATED, MessageMetadata(message_id="m-1"))
    reformatted = json.dumps(json.loads(CREATED), indent=2).encode()
    run = await local.run(reformatted, MessageMetadata(message_id="m-2"))
    assert run.settlement is Settlement.COMPLETE
    assert all(r.previously for r in run.results if r.destination in ROUTED)
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)


async def test_a_transient_failure_schedules_a_copy_for_that_lane_only(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer], clock: FakeClock
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    metadata = received(message)
    outcome = await pipeline.lanes["esputnik"].deliver(message.body, metadata)
    assert outcome.settlement is Settlement.COMPLETE
    assert outcome.retry_at == clock.utc() + timedelta(minutes=1)
    (copy,) = outbox.take()
    assert copy.body == message.body
    assert copy.destination == "esputnik"
    assert copy.message_id == f"{message.message_id}:retry-1"
    assert copy.scheduled_at == outcome.retry_at
    assert copy.application_properties == {
        **message.application_properties,
        "retryAttempt": 1,
        "firstSeenUtc": metadata.enqueued_time.isoformat() if metadata.enqueued_time else "",
        "originalMessageId": message.message_id,
    }
    retried = await pipeline.lanes["esputnik"].deliver(copy.body, received(copy))
    assert (retried.settlement, retried.retry_at) == (Settlement.COMPLETE, None)
    assert sent(fakes)["esputnik"] == 4  # three 503s, then 200
    assert sent(fakes)["profile_store"] == 0  # other lanes are not touched by its retries


async def test_backoff_follows_the_schedule_and_the_last_step_repeats(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer], clock: FakeClock
) -> None:
    message = (await accepted(pipeline, outbox))["profile_store"]
    fakes["profile_store"].inject(*[Reply(503)] * 100)
    current = message
    delays, copies = [], []
    for _ in range(7):
        outcome = await pipeline.lanes["profile_store"].deliver(
            current.body, received(current, now=clock.utc())
        )
        assert outcome.retry_at is not None
        delays.append(outcome.retry_at - clock.utc())
        (current,) = outbox.take()
        copies.append(current)
        assert current.scheduled_at is not None
        clock.now += (current.scheduled_at - clock.utc()).total_seconds()
    assert [d.total_seconds() / 60 for d in delays] == [1, 5, 15, 30, 60, 60, 60]
    assert [c.application_properties["retryAttempt"] for c in copies] == [1, 2, 3, 4, 5, 6, 7]
    assert len({c.application_properties["firstSeenUtc"] for c in copies}) == 1


async def test_past_the_window_the_lane_dead_letters_with_the_last_error(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    fakes["esputnik"].inject(*[Reply(503)] * 100)
    properties = {
        **{k: str(v) for k, v in message.application_properties.items()},
        "retryAttempt": "6",
        "firstSeenUtc": "2026-11-23T05:00:00+00:00",  # the FakeClock's 09:16: past 180 min
    }
    outcome = await pipeline.lanes["esputnik"].deliver(
        message.body, MessageMetadata(message_id="x:retry-6", application_properties=properties)
    )
    assert (outcome.settlement, outcome.reason) == (Settlement.DEAD_LETTER, "RetriesExhausted")
    description = outcome.description or ""
    assert "after 7 attempts" in description
    assert "esputnik: transient-error (esputnik HTTP 503" in description
    assert outbox.take() == []


async def test_the_window_does_not_end_retries_before_the_minimum_attempts(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    fakes["esputnik"].inject(*[Reply(503)] * 100)
    properties = {"retryAttempt": "1", "firstSeenUtc": "2026-11-20T05:00:00+00:00"}
    outcome = await pipeline.lanes["esputnik"].deliver(
        message.body, MessageMetadata(message_id="m", application_properties=properties)
    )
    assert outcome.settlement is Settlement.COMPLETE
    assert len(outbox.take()) == 1


async def test_an_unreachable_ledger_sends_nothing_and_retries_later(
    pipeline: Pipeline,
    outbox: MemoryOutbox,
    fakes: dict[str, FakeServer],
    ledger: MemoryLedger,
) -> None:
    published = await accepted(pipeline, outbox)
    ledger.failure = ConnectionResetError("storage down")
    for name, message in published.items():
        outcome = await pipeline.lanes[name].deliver(message.body, received(message))
        assert (outcome.settlement, outcome.reason) == (Settlement.COMPLETE, "LedgerUnavailable")
    assert sent(fakes) == dict.fromkeys(ROUTED, 0)
    copies = outbox.take()
    assert {c.destination for c in copies} == ROUTED
    ledger.failure = None
    for copy in copies:
        outcome = await pipeline.lanes[copy.destination].deliver(copy.body, received(copy))
        assert outcome.settlement is Settlement.COMPLETE
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)


async def test_when_the_retry_copy_cannot_be_scheduled_the_message_is_abandoned(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    outbox.failure = ConnectionError("namespace unreachable")
    outcome = await pipeline.lanes["esputnik"].deliver(message.body, received(message))
    assert outcome.settlement is Settlement.RETRY
    assert "scheduling the retry copy failed (ConnectionError)" in (outcome.description or "")
    outbox.failure = None
    again = await pipeline.lanes["esputnik"].deliver(message.body, received(message))
    assert again.settlement is Settlement.COMPLETE
    assert sent(fakes)["esputnik"] == 4


async def test_concurrent_copies_of_one_delivery_send_once(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    message = (await accepted(pipeline, outbox))["profile_store"]
    lane = pipeline.lanes["profile_store"]
    outcomes = await asyncio.gather(
        *(lane.deliver(message.body, received(message)) for _ in range(5))
    )
    assert all(o.settlement is Settlement.COMPLETE for o in outcomes)
    assert sent(fakes)["profile_store"] == 1
    # The copies that lost the race retry later and then find the event delivered.
    for copy in outbox.take():
        assert (await lane.deliver(copy.body, received(copy))).retry_at is None
    assert sent(fakes)["profile_store"] == 1


async def test_replaying_a_rejected_delivery_calls_only_that_vendor_again(
    local: LocalRun, pipeline: Pipeline, fakes: dict[str, FakeServer], ledger: MemoryLedger
) -> None:
    fakes["product_recs"].inject(
        Reply(200, {"status": "fail", "errors": [{"code": "E12", "message": "bad site"}]})
    )
    run = await local.run(CREATED, MessageMetadata(message_id="m-1"))
    rejected = run.lanes["product_recs"]
    assert (rejected.settlement, rejected.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    row = await ledger.read(rejected.event_key or "", "product_recs")
    assert row is not None
    assert row.status is LedgerStatus.REJECTED
    replayed = await local.run(CREATED, MessageMetadata(message_id="m-1"))
    assert replayed.settlement is Settlement.COMPLETE
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 1), "product_recs": 2}


async def test_the_ledger_row_says_when_a_retry_copy_is_due_and_why_a_letter_was_dead(
    pipeline: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer], ledger: MemoryLedger
) -> None:
    """Recorded after the lane decided: a scheduled copy waits on the topic, where no peek of the
    lane's subscription finds it, so the row is where `trace` learns of it."""
    fakes["esputnik"].inject(*[Reply(503)] * 4)
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    published = await accepted(pipeline, outbox)
    retried = await pipeline.lanes["esputnik"].deliver(
        published["esputnik"].body, received(published["esputnik"])
    )
    rejected = await pipeline.lanes["richrelevance"].deliver(
        published["richrelevance"].body, received(published["richrelevance"])
    )
    key = retried.event_key or ""
    row = await ledger.read(key, "esputnik")
    assert row is not None
    assert (row.status, row.next_attempt, row.dead_letter_reason) == (
        LedgerStatus.FAILED,
        retried.retry_at,
        None,
    )
    assert retried.retry_at is not None
    row = await ledger.read(key, "richrelevance")
    assert row is not None
    assert (row.status, row.next_attempt, row.dead_letter_reason) == (
        LedgerStatus.REJECTED,
        None,
        rejected.reason,
    )
    assert rejected.reason == "DestinationRejected"


async def test_the_loyalty_provider_down_schedules_an_accept_retry_and_publishes_nothing(
    pipeline: Pipeline, outbox: MemoryOutbox, loyalty: FakeServer, clock: FakeClock
) -> None:
    loyalty.inject(*[Reply(503)] * 3)  # every attempt of one lookup
    outcome = await pipeline.accept.accept(CREATED, MessageMetadata(message_id="m-1"))
    assert (outcome.settlement, outcome.reason) == (Settlement.COMPLETE, "LoyaltyUnavailable")
    (copy,) = outbox.take()
    assert (copy.destination, copy.body) == (ACCEPT_LANE, CREATED)
    assert copy.application_properties["destination"] == ACCEPT_LANE
    assert copy.scheduled_at == clock.utc() + timedelta(minutes=1)
    again = await pipeline.accept.accept(copy.body, received(copy))
    assert (again.settlement, again.retry_at) == (Settlement.COMPLETE, None)
    assert set(again.routed) == ROUTED


async def test_a_deliveries_topic_that_cannot_be_reached_abandons_the_order(
    pipeline: Pipeline, outbox: MemoryOutbox
) -> None:
    outbox.failure = ConnectionError("namespace unreachable")
    outcome = await pipeline.accept.accept(CREATED, MessageMetadata(message_id="m-1"))
    assert (outcome.settlement, outcome.reason) == (Settlement.RETRY, "DeliveriesUnavailable")


class CrashAfterSend(MemoryLedger):
    """The process dies after the vendor accepted and before the result is written."""

    def __init__(self) -> None:
        super().__init__()
        self.crash = True

    async def record(self, claim: Claimed, result: DestinationResult, **kwargs: Any) -> None:
        if self.crash:
            raise LedgerUnavailable("process died")
        await super().record(claim, result, **kwargs)


async def test_the_only_duplicate_window_is_a_crash_between_send_and_ledger_write(
    fakes: dict[str, FakeServer], pipeline: Pipeline, outbox: MemoryOutbox, clock: FakeClock
) -> None:
    message = (await accepted(pipeline, outbox))["esputnik"]
    lane = pipeline.lanes["esputnik"]
    ledger = CrashAfterSend()
    lane.ledger = ledger
    await lane.deliver(message.body, received(message))
    ledger.crash = False
    held = await lane.deliver(message.body, received(message))
    assert held.results[0].vendor_code == "InFlight"
    assert sent(fakes)["esputnik"] == 1  # nothing sent twice yet
    clock.now += pipeline.settings.core.ledger_lease.total_seconds() + 1
    await lane.deliver(message.body, received(message))
    # The claim lapsed: the vendor is called again. This is the documented window.
    assert sent(fakes)["esputnik"] == 2


async def test_retry_state_survives_what_service_bus_does_to_property_types() -> None:
    state = RetryState.of({"retryAttempt": 3, "firstSeenUtc": "2026-11-23T09:00:00Z"})
    assert state.attempt == 3
    assert state.first_seen is not None
    assert state.first_seen.utcoffset() == timedelta(0)
    assert RetryState.of({"retryAttempt": "x"}).attempt == 0


def test_a_previously_settled_result_keeps_its_status() -> None:
    assert DeliveryStatus(LedgerStatus.SKIPPED.value) is DeliveryStatus.SKIPPED
