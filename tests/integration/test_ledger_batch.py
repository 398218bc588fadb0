"""A lane's batch through `claim_many` / `record_many`, on the in-memory store and on Azurite.

The answers must be exactly those of claiming and recording one by one (tests/integration/
test_ledger.py is the spec for one row); Azurite runs them as entity group transactions, so the
cases put rows of one partition side by side: fresh, delivered, held and expired rows in one
transaction, a batch larger than one transaction, a row changed between claim and record, a
failure of one row. The last tests count the requests a batch costs on Azurite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from order_processor.ledger import (
    LEDGER_BUCKETS,
    Claimed,
    ClaimRequest,
    Gate,
    Held,
    Ledger,
    LedgerFailure,
    LedgerRejected,
    LedgerStatus,
    LedgerUnavailable,
    MemoryLedger,
    Settled,
    build_ledger,
    partition_key,
)
from order_processor.model import DeliveryStatus, DestinationResult
from order_processor.settings import LedgerSettings
from tests.azurite import RequestCounter
from tests.integration.conftest import LEASE, NOW

LANE = "esputnik"


def same_order(count: int, order: str = "100245") -> list[str]:
    """Event keys of one order: all in one partition per destination."""
    return [f"{order}:OrderUpdated:{i:012x}abcd" for i in range(count)]


def many_orders(count: int) -> list[str]:
    return [f"B{i}:OrderCreated:{i:012x}abcd" for i in range(count)]


def delivered(key: str = "") -> DestinationResult:
    return DestinationResult(
        destination=LANE, status=DeliveryStatus.DELIVERED, attempts=1, response_id=f"r-{key}"
    )


async def claim_all(
    store: Ledger, keys: list[str], *, at: datetime = NOW, message_id: str = "m"
) -> list[Gate | LedgerFailure]:
    return await store.claim_many(
        [ClaimRequest(k, f"{message_id}-{i}") for i, k in enumerate(keys)],
        LANE,
        now=at,
        lease=LEASE,
    )


def kinds(gates: list[Any]) -> list[str]:
    return [type(g).__name__ for g in gates]


@pytest.mark.parametrize("size", [1, 32, 100, 130])
async def test_a_fresh_batch_is_claimed_and_recorded_whole(store: Ledger, size: int) -> None:
    """130 rows of one order: more than one entity group transaction holds."""
    keys = same_order(size)
    gates = await claim_all(store, keys)
    assert kinds(gates) == ["Claimed"] * size
    failures = await store.record_many(
        [(g, delivered(k)) for g, k in zip(gates, keys, strict=True)],  # type: ignore[misc]
        now=NOW,
    )
    assert failures == [None] * size
    for key in (keys[0], keys[-1]):
        row = await store.read(key, LANE)
        assert row is not None
        assert (row.status, row.attempts, row.response_id) == (
            LedgerStatus.DELIVERED,
            1,
            f"r-{key}",
        )
    rows = await store.rows_for_order("100245", destinations=[LANE])
    assert len(rows) == size
    assert {r.status for r in rows} == {LedgerStatus.DELIVERED}


async def test_a_batch_over_many_orders_spreads_over_the_lanes_buckets(store: Ledger) -> None:
    keys = many_orders(64)
    gates = await claim_all(store, keys)
    assert kinds(gates) == ["Claimed"] * 64
    assert len({partition_key(LANE, k) for k in keys}) == LEDGER_BUCKETS


async def test_rows_delivered_held_or_expired_answer_as_one_by_one(store: Ledger) -> None:
    """In one partition (one transaction): delivered -> Settled, held -> Held, an expired claim
    -> taken over, a failed one -> claimed again, the rest fresh."""
    keys = same_order(12)
    early = await claim_all(store, keys[:4], at=NOW - LEASE * 2, message_id="old")
    assert all(isinstance(g, Claimed) for g in early)
    done, expired, failed, _ = early
    assert isinstance(done, Claimed)
    assert isinstance(failed, Claimed)
    await store.record_many(
        [
            (done, delivered(keys[0])),
            (failed, DestinationResult(destination=LANE, status=DeliveryStatus.TRANSIENT_ERROR)),
        ],
        now=NOW - LEASE * 2,
    )
    held = await store.claim(keys[4], LANE, message_id="holder", now=NOW, lease=LEASE)
    assert isinstance(held, Claimed)

    gates = await claim_all(store, keys, at=NOW + timedelta(seconds=1), message_id="new")
    assert kinds(gates) == ["Settled", "Claimed", "Claimed", "Claimed", "Held"] + ["Claimed"] * 7
    settled, taken, again, expired_too, still_held = gates[:5]
    assert isinstance(settled, Settled)
    assert settled.entry.response_id == f"r-{keys[0]}"
    assert isinstance(taken, Claimed)
    assert (taken.entry.message_id, taken.entry.first_attempt) == ("new-1", NOW - LEASE * 2)
    assert isinstance(again, Claimed)
    assert again.entry.message_id == "new-2"
    assert isinstance(expired_too, Claimed)
    assert isinstance(still_held, Held)
    assert still_held.entry is not None
    assert still_held.entry.message_id == "holder"
    assert expired is not None


async def test_a_redelivered_batch_settles_every_row(store: Ledger) -> None:
    keys = same_order(40) + many_orders(20)
    first = await claim_all(store, keys)
    await store.record_many([(g, delivered()) for g in first], now=NOW)  # type: ignore[misc]
    again = await claim_all(store, keys, at=NOW + timedelta(minutes=5))
    assert kinds(again) == ["Settled"] * len(keys)


async def test_a_redelivered_batch_of_held_claims_holds(store: Ledger) -> None:
    keys = same_order(20)
    await claim_all(store, keys)
    assert kinds(await claim_all(store, keys, at=NOW + LEASE / 2)) == ["Held"] * 20


async def test_the_same_event_twice_in_one_batch_is_claimed_once(store: Ledger) -> None:
    keys = same_order(3)
    gates = await claim_all(store, [keys[0], keys[1], keys[0], keys[2], keys[0]])
    assert kinds(gates) == ["Claimed", "Claimed", "Held", "Claimed", "Held"]
    claimed = gates[0]
    assert isinstance(claimed, Claimed)
    assert gates[2] == Held(claimed.entry)


async def test_two_racing_batches_never_claim_a_row_twice(store: Ledger) -> None:
    keys = same_order(30) + many_orders(30)
    racing = await asyncio.gather(
        *(claim_all(store, keys, message_id=f"copy{c}") for c in range(3))
    )
    for i in range(len(keys)):
        assert sum(isinstance(batch[i], Claimed) for batch in racing) == 1


async def test_a_row_taken_over_between_claim_and_record_keeps_the_new_holder(
    store: Ledger,
) -> None:
    keys = same_order(5)
    gates = await claim_all(store, keys)
    newer = await store.claim(keys[2], LANE, message_id="newer", now=NOW + LEASE * 2, lease=LEASE)
    assert isinstance(newer, Claimed)
    failures = await store.record_many(
        [(g, delivered(k)) for g, k in zip(gates, keys, strict=True)],  # type: ignore[misc]
        now=NOW + LEASE * 2,
    )
    assert failures == [None] * 5
    statuses = {k: (await store.read(k, LANE)) for k in keys}
    assert {k: r.status for k, r in statuses.items() if r} == {
        **dict.fromkeys(keys, LedgerStatus.DELIVERED),
        keys[2]: LedgerStatus.IN_FLIGHT,
    }
    row = statuses[keys[2]]
    assert row is not None
    assert row.message_id == "newer"


def _fail_one_row(store: Ledger, key: str) -> type[Exception]:
    """Make one row fail on its own: a hook in memory; on Azurite a key the service refuses."""
    if isinstance(store, MemoryLedger):
        store.failing[key] = LedgerUnavailable("storage down for this row")
        return LedgerUnavailable
    return LedgerRejected


async def test_a_storage_failure_of_one_row_is_returned_in_its_place(store: Ledger) -> None:
    keys = same_order(6)
    bad = keys[3] if isinstance(store, MemoryLedger) else "100245:" + "k" * 1100
    keys[3] = bad
    expected = _fail_one_row(store, bad)
    gates = await claim_all(store, keys)
    assert isinstance(gates[3], expected)
    assert kinds(gates[:3] + gates[4:]) == ["Claimed"] * 5
    # and the others are recorded as usual
    claimed = [(g, delivered()) for g in gates if isinstance(g, Claimed)]
    assert await store.record_many(claimed, now=NOW) == [None] * 5


async def test_a_record_failing_for_one_row_fails_only_that_row() -> None:
    store = MemoryLedger()
    keys = same_order(4)
    gates = await claim_all(store, keys)
    store.failing[keys[1]] = LedgerUnavailable("storage down for this row")
    failures = await store.record_many([(g, delivered()) for g in gates], now=NOW)  # type: ignore[misc]
    assert [type(f).__name__ for f in failures] == [
        "NoneType",
        "LedgerUnavailable",
        "NoneType",
        "NoneType",
    ]
    assert store.rows[(keys[1], LANE)][0].status is LedgerStatus.IN_FLIGHT
    assert store.rows[(keys[2], LANE)][0].status is LedgerStatus.DELIVERED


async def test_an_unreachable_store_fails_each_row_of_a_batch() -> None:
    store = MemoryLedger()
    store.failure = OSError("connection refused")
    gates = await claim_all(store, same_order(3))
    assert kinds(gates) == ["LedgerUnavailable"] * 3


# -- What a batch costs on Azurite: requests sent -----------------------------------


@pytest.fixture
async def counted(azurite: str) -> AsyncIterator[tuple[Ledger, RequestCounter]]:
    counter = RequestCounter()
    built = build_ledger(
        LedgerSettings(connection=azurite, table=f"t{uuid.uuid4().hex[:12]}"),
        trace_configs=[counter.trace],
    )
    yield built, counter
    await built.aclose()


async def test_one_delivery_costs_two_requests(counted: tuple[Ledger, RequestCounter]) -> None:
    ledger, counter = counted
    await ledger.read("warm-up:OrderCreated:0", LANE)  # creates the table
    counter.sent = 0
    gate = await ledger.claim(
        "100245:OrderCreated:0123456789abcdef", LANE, message_id="m", now=NOW, lease=LEASE
    )
    assert isinstance(gate, Claimed)
    await ledger.record(gate, delivered(), now=NOW)
    assert counter.sent == 2


@pytest.mark.parametrize("size", [32, 100])
async def test_a_batch_costs_one_request_per_partition_each_way(
    counted: tuple[Ledger, RequestCounter], size: int
) -> None:
    ledger, counter = counted
    await ledger.read("warm-up:OrderCreated:0", LANE)
    counter.sent = 0
    keys = many_orders(size)
    gates = await claim_all(ledger, keys)
    await ledger.record_many([(g, delivered()) for g in gates], now=NOW)  # type: ignore[misc]
    partitions = len({partition_key(LANE, k) for k in keys})
    assert counter.sent == 2 * partitions <= 2 * LEDGER_BUCKETS


async def test_a_redelivered_batch_reads_instead_of_failing_transaction_after_transaction(
    counted: tuple[Ledger, RequestCounter],
) -> None:
    """All 50 rows of one partition exist: two failed transactions, then the rest is read
    (one request each, as one by one), not 50 transactions in a row."""
    ledger, counter = counted
    keys = same_order(50)
    await claim_all(ledger, keys)
    counter.sent = 0
    gates = await claim_all(ledger, keys, at=NOW + LEASE / 2)
    assert kinds(gates) == ["Held"] * 50
    assert counter.sent == 2 + 50
