"""DESIGN.md's failure semantics through the real handler, processor, ledger and four fakes:
nothing lost (retry copies, RetriesExhausted), nothing sent twice (ledger, owedDestinations)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from order_processor.handler import OrderHandler
from order_processor.ledger import Claimed, LedgerStatus, LedgerUnavailable, MemoryLedger
from order_processor.model import DeliveryStatus, DestinationResult, MessageMetadata, Settlement
from order_processor.redelivery import RecordingRetryQueue, RetryCopy, RetryState
from tests.conftest import FakeClock, business_requests, sample
from tests.fakes.base import FakeServer, Reply

CREATED = sample("order-created.json")
ROUTED = {"profile_store", "product_recs", "richrelevance", "esputnik"}


def sent(fakes: dict[str, FakeServer]) -> dict[str, int]:
    return {name: len(business_requests(server)) for name, server in fakes.items()}


def copy_metadata(copy: RetryCopy) -> MessageMetadata:
    """What the retry-queue trigger sees when the scheduled copy arrives."""
    return MessageMetadata(
        message_id=copy.message_id,
        session_id=copy.session_id,
        application_properties={k: str(v) for k, v in copy.application_properties.items()},
    )


async def test_a_redelivered_message_calls_no_destination_again(
    handler: OrderHandler, fakes: dict[str, FakeServer]
) -> None:
    first = await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    assert first.settlement is Settlement.COMPLETE
    again = await handler.handle(CREATED, MessageMetadata(message_id="m-1", delivery_count=2))
    assert again.settlement is Settlement.COMPLETE
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)
    assert all(r.previously for r in again.results)


async def test_a_duplicate_publish_with_a_new_message_id_is_the_same_event(
    handler: OrderHandler, fakes: dict[str, FakeServer]
) -> None:
    await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    reformatted = json.dumps(json.loads(CREATED), indent=2).encode()
    outcome = await handler.handle(reformatted, MessageMetadata(message_id="m-2"))
    assert outcome.settlement is Settlement.COMPLETE
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)


async def test_a_transient_failure_schedules_a_copy_owing_only_that_destination(
    handler: OrderHandler,
    fakes: dict[str, FakeServer],
    retry_queue: RecordingRetryQueue,
    clock: FakeClock,
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    outcome = await handler.handle(
        CREATED, MessageMetadata(message_id="m-1", application_properties={"source": "erp"})
    )
    assert outcome.settlement is Settlement.COMPLETE
    assert outcome.retry_at == clock.utc() + timedelta(minutes=1)
    (copy,) = retry_queue.copies
    assert copy.body == CREATED
    assert copy.message_id == "m-1:retry-1"
    assert copy.scheduled_at == outcome.retry_at
    assert copy.application_properties == {
        "source": "erp",
        "retryAttempt": 1,
        "firstSeenUtc": clock.utc().isoformat(),
        "owedDestinations": "esputnik",
        "originalMessageId": "m-1",
    }
    retried = await handler.handle(copy.body, copy_metadata(copy))
    assert retried.settlement is Settlement.COMPLETE
    assert retried.retry_at is None
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 1), "esputnik": 4}  # three 503s, then 200


async def test_owed_destinations_protect_even_without_a_ledger(
    handler: OrderHandler, fakes: dict[str, FakeServer]
) -> None:
    properties = {"retryAttempt": "1", "owedDestinations": "product_recs"}
    outcome = await handler.handle(
        CREATED, MessageMetadata(message_id="m-1:retry-1", application_properties=properties)
    )
    assert outcome.settlement is Settlement.COMPLETE
    assert sent(fakes) == {"profile_store": 0, "product_recs": 1, "richrelevance": 0, "esputnik": 0}


async def test_backoff_follows_the_schedule_and_the_last_step_repeats(
    handler: OrderHandler,
    fakes: dict[str, FakeServer],
    retry_queue: RecordingRetryQueue,
    clock: FakeClock,
) -> None:
    fakes["profile_store"].inject(*[Reply(503)] * 100)
    metadata = MessageMetadata(message_id="m-1")
    delays = []
    for _ in range(7):
        outcome = await handler.handle(CREATED, metadata)
        assert outcome.retry_at is not None
        delays.append(outcome.retry_at - clock.utc())
        copy = retry_queue.copies[-1]
        clock.now = (copy.scheduled_at - clock.utc()).total_seconds() + clock.now
        metadata = copy_metadata(copy)
    assert [d.total_seconds() / 60 for d in delays] == [1, 5, 15, 30, 60, 60, 60]
    assert [c.application_properties["retryAttempt"] for c in retry_queue.copies] == [
        1, 2, 3, 4, 5, 6, 7,
    ]  # fmt: skip
    first_seen = {c.application_properties["firstSeenUtc"] for c in retry_queue.copies}
    assert len(first_seen) == 1


async def test_past_the_window_the_message_is_dead_lettered_with_each_last_error(
    handler: OrderHandler, fakes: dict[str, FakeServer], retry_queue: RecordingRetryQueue
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 100)
    fakes["richrelevance"].inject(*[Reply(429, headers={"Retry-After": "1"})] * 100)
    properties = {
        "retryAttempt": "6",
        "firstSeenUtc": "2026-11-23T05:00:00+00:00",  # the FakeClock's 09:16: past 180 min
        "owedDestinations": "esputnik,richrelevance",
    }
    outcome = await handler.handle(
        CREATED, MessageMetadata(message_id="m-1:retry-6", application_properties=properties)
    )
    assert (outcome.settlement, outcome.reason) == (Settlement.DEAD_LETTER, "RetriesExhausted")
    description = outcome.description or ""
    assert "after 7 attempts" in description
    assert "esputnik: transient-error (esputnik HTTP 503" in description
    assert "richrelevance: transient-error (richrelevance token HTTP 429" in description
    assert "profile_store" not in description  # delivered earlier: not owed
    assert retry_queue.copies == []


async def test_the_window_does_not_end_retries_before_the_minimum_attempts(
    handler: OrderHandler, fakes: dict[str, FakeServer], retry_queue: RecordingRetryQueue
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 100)
    properties = {"retryAttempt": "1", "firstSeenUtc": "2026-11-20T05:00:00+00:00"}
    outcome = await handler.handle(
        CREATED, MessageMetadata(message_id="m-1", application_properties=properties)
    )
    assert outcome.settlement is Settlement.COMPLETE
    assert len(retry_queue.copies) == 1


async def test_an_unreachable_ledger_sends_nothing_and_retries_later(
    handler: OrderHandler,
    fakes: dict[str, FakeServer],
    ledger: MemoryLedger,
    retry_queue: RecordingRetryQueue,
) -> None:
    ledger.failure = ConnectionResetError("storage down")
    outcome = await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    assert (outcome.settlement, outcome.reason) == (Settlement.COMPLETE, "LedgerUnavailable")
    assert sent(fakes) == dict.fromkeys(ROUTED, 0)
    (copy,) = retry_queue.copies
    assert copy.application_properties["owedDestinations"] == ",".join(sorted(ROUTED))
    ledger.failure = None
    assert (await handler.handle(CREATED, copy_metadata(copy))).settlement is Settlement.COMPLETE
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)


async def test_when_the_retry_copy_cannot_be_scheduled_the_message_is_abandoned(
    handler: OrderHandler, fakes: dict[str, FakeServer], retry_queue: RecordingRetryQueue
) -> None:
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    retry_queue.failure = ConnectionError("namespace unreachable")
    outcome = await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    assert outcome.settlement is Settlement.RETRY
    assert "scheduling the retry copy failed (ConnectionError)" in (outcome.description or "")
    again = await handler.handle(CREATED, MessageMetadata(message_id="m-1", delivery_count=2))
    assert again.settlement is Settlement.COMPLETE
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 1), "esputnik": 4}


async def test_concurrent_copies_of_one_event_send_once(
    handler: OrderHandler, fakes: dict[str, FakeServer], retry_queue: RecordingRetryQueue
) -> None:
    outcomes = await asyncio.gather(
        *(handler.handle(CREATED, MessageMetadata(message_id=f"m-{i}")) for i in range(5))
    )
    assert all(o.settlement is Settlement.COMPLETE for o in outcomes)
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)
    # The copies that lost a race retry later and then find the event delivered.
    for copy in list(retry_queue.copies):
        assert (await handler.handle(copy.body, copy_metadata(copy))).retry_at is None
    assert sent(fakes) == dict.fromkeys(ROUTED, 1)


async def test_replaying_a_rejected_message_calls_only_the_destination_that_rejected_it(
    handler: OrderHandler, fakes: dict[str, FakeServer], ledger: MemoryLedger
) -> None:
    fakes["product_recs"].inject(
        Reply(200, {"status": "fail", "errors": [{"code": "E12", "message": "bad site"}]})
    )
    outcome = await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    assert (outcome.settlement, outcome.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    row = await ledger.read(outcome.event_key or "", "product_recs")
    assert row is not None
    assert row.status is LedgerStatus.REJECTED
    replayed = await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    assert replayed.settlement is Settlement.COMPLETE
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 1), "product_recs": 2}


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
    fakes: dict[str, FakeServer], handler: OrderHandler, clock: FakeClock
) -> None:
    ledger = CrashAfterSend()
    handler.processor.ledger = ledger
    fakes["esputnik"].inject(*[Reply(503)] * 3)  # keeps the message alive for a retry
    await handler.handle(CREATED, MessageMetadata(message_id="m-1"))
    ledger.crash = False
    held = await handler.handle(CREATED, MessageMetadata(message_id="m-1", delivery_count=2))
    assert {r.destination for r in held.results if r.vendor_code == "InFlight"} == ROUTED
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 1), "esputnik": 3}  # nothing sent twice yet
    clock.now += handler.processor.settings.core.ledger_lease.total_seconds() + 1
    await handler.handle(CREATED, MessageMetadata(message_id="m-1", delivery_count=3))
    # The claims lapsed: each destination is called again. This is the documented window.
    assert sent(fakes) == {**dict.fromkeys(ROUTED, 2), "esputnik": 4}


async def test_retry_state_survives_what_service_bus_does_to_property_types() -> None:
    state = RetryState.of({"retryAttempt": 3, "firstSeenUtc": "2026-11-23T09:00:00Z"})
    assert state.attempt == 3
    assert state.first_seen is not None
    assert state.first_seen.utcoffset() == timedelta(0)
    assert RetryState.of({"retryAttempt": "x"}).attempt == 0
    assert RetryState.of({"owedDestinations": ""}).owed == frozenset()


def test_a_previously_settled_result_keeps_its_status() -> None:
    assert DeliveryStatus(LedgerStatus.SKIPPED.value) is DeliveryStatus.SKIPPED
