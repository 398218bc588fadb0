"""The ledger's claim/record rules, on the in-memory store and on a real Azurite table.

The same cases run on both, so MemoryLedger (used by the chaos test and the bench) is held to the
ETag semantics of the real store.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import pytest

from order_processor.contract import parse_order
from order_processor.ledger import (
    LEDGER_BUCKETS,
    Claimed,
    ClaimRequest,
    Decided,
    Held,
    Ledger,
    LedgerRejected,
    LedgerStatus,
    LedgerUnavailable,
    Settled,
    TableLedger,
    TableStore,
    bucket,
    build_ledger,
    partition_key,
)
from order_processor.model import (
    ORDER_KEY_MAX,
    DeliveryStatus,
    DestinationResult,
    event_key,
    order_key,
)
from order_processor.settings import LedgerSettings
from tests.conftest import sample
from tests.integration.conftest import LEASE, NOW

KEY = "100245:OrderCreated:0123456789abcdef"
KEY2 = "100246:OrderCreated:0123456789abcdef"


def delivered(attempts: int = 1) -> DestinationResult:
    return DestinationResult(
        destination="esputnik",
        status=DeliveryStatus.DELIVERED,
        attempts=attempts,
        response_id="r-1",
    )


async def claim(store: Ledger, *, at: datetime = NOW, message_id: str = "m-1") -> object:
    return await store.claim(KEY, "esputnik", message_id=message_id, now=at, lease=LEASE)


async def test_first_claim_wins_and_the_row_says_in_flight(store: Ledger) -> None:
    gate = await claim(store)
    assert isinstance(gate, Claimed)
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert row.status is LedgerStatus.IN_FLIGHT
    assert row.message_id == "m-1"
    assert row.lease_until == NOW + LEASE


async def test_a_delivered_row_is_never_claimed_again(store: Ledger) -> None:
    gate = await claim(store)
    assert isinstance(gate, Claimed)
    await store.record(gate, delivered(attempts=2), now=NOW)
    again = await claim(store, at=NOW + timedelta(days=3), message_id="m-2")
    assert isinstance(again, Settled)
    assert again.entry.status is LedgerStatus.DELIVERED
    assert again.entry.attempts == 2
    assert again.entry.response_id == "r-1"
    assert again.entry.message_id == "m-1"


async def test_a_held_claim_makes_other_copies_back_off_until_its_lease_ends(store: Ledger) -> None:
    assert isinstance(await claim(store), Claimed)
    assert isinstance(await claim(store, at=NOW + LEASE / 2, message_id="m-2"), Held)
    taken = await claim(store, at=NOW + LEASE + timedelta(seconds=1), message_id="m-3")
    assert isinstance(taken, Claimed)
    assert taken.entry.message_id == "m-3"


async def test_a_transient_failure_frees_the_row_for_the_next_copy(store: Ledger) -> None:
    gate = await claim(store)
    assert isinstance(gate, Claimed)
    failed = DestinationResult(
        destination="esputnik",
        status=DeliveryStatus.TRANSIENT_ERROR,
        detail="esputnik HTTP 503: busy",
        http_status=503,
        attempts=4,
    )
    await store.record(gate, failed, now=NOW)
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert (row.status, row.last_error, row.http_status) == (
        LedgerStatus.FAILED,
        "esputnik HTTP 503: busy",
        503,
    )
    again = await claim(store, at=NOW + timedelta(seconds=1), message_id="m-2")
    assert isinstance(again, Claimed)
    await store.record(again, delivered(), now=NOW)
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert (row.attempts, row.first_attempt) == (5, NOW)


async def test_the_row_keeps_what_the_lane_decided_until_the_next_claim(store: Ledger) -> None:
    gate = await claim(store)
    assert isinstance(gate, Claimed)
    failed = DestinationResult(
        destination="esputnik", status=DeliveryStatus.TRANSIENT_ERROR, detail="busy", attempts=1
    )
    due = NOW + timedelta(minutes=5)
    await store.record(gate, failed, now=NOW, decided=Decided(next_attempt=due))
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert (row.next_attempt, row.dead_letter_reason) == (due, None)
    # The retry copy claims the row: the old decision goes with the old attempt.
    again = await claim(store, at=due, message_id="m-2")
    assert isinstance(again, Claimed)
    assert (again.entry.next_attempt, again.entry.dead_letter_reason) == (None, None)
    rejected = DestinationResult(
        destination="esputnik", status=DeliveryStatus.PERMANENT_ERROR, detail="400", attempts=1
    )
    (failure,) = await store.record_many(
        [(again, rejected)], now=due, decided=[Decided(dead_letter_reason="DestinationRejected")]
    )
    assert failure is None
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert (row.status, row.next_attempt, row.dead_letter_reason) == (
        LedgerStatus.REJECTED,
        None,
        "DestinationRejected",
    )


async def test_two_racing_copies_cannot_both_claim(store: Ledger) -> None:
    gates = await asyncio.gather(*(claim(store, message_id=f"m-{i}") for i in range(8)))
    assert sum(isinstance(g, Claimed) for g in gates) == 1


async def test_two_copies_taking_over_an_expired_claim_cannot_both_win(store: Ledger) -> None:
    assert isinstance(await claim(store), Claimed)
    later = NOW + LEASE * 2
    gates = await asyncio.gather(*(claim(store, at=later, message_id=f"m-{i}") for i in range(8)))
    assert sum(isinstance(g, Claimed) for g in gates) == 1


async def test_a_stale_holder_cannot_overwrite_the_new_holders_row(store: Ledger) -> None:
    stale = await claim(store)
    assert isinstance(stale, Claimed)
    fresh = await claim(store, at=NOW + LEASE * 2, message_id="m-2")
    assert isinstance(fresh, Claimed)
    await store.record(stale, delivered(), now=NOW + LEASE * 2)
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert (row.status, row.message_id) == (LedgerStatus.IN_FLIGHT, "m-2")


async def test_an_unreachable_table_is_ledger_unavailable() -> None:
    store = TableStore.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
        "orderdeliveries",
        retry_total=0,
    )
    ledger = TableLedger(store)
    with pytest.raises(LedgerUnavailable):
        await ledger.claim(KEY, "esputnik", message_id="m-1", now=NOW, lease=LEASE)
    gates = await ledger.claim_many(
        [ClaimRequest(KEY), ClaimRequest(KEY2)], "esputnik", now=NOW, lease=LEASE
    )
    assert [type(g) for g in gates] == [LedgerUnavailable, LedgerUnavailable]
    await ledger.aclose()


def test_the_ledger_defaults_to_the_functions_storage_account() -> None:
    settings = LedgerSettings(web_jobs_storage="UseDevelopmentStorage=true")
    assert settings.connection_string == "UseDevelopmentStorage=true"
    identity = LedgerSettings(connection_account_name="retailsync")
    assert identity.connection_string is None
    assert identity.table_service_uri == "https://retailsync.table.core.windows.net"


def test_a_ledger_with_nowhere_to_live_fails_at_start_up_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="missing setting DELIVERY_LEDGER_CONNECTION"):
        LedgerSettings()
    assert LedgerSettings(enabled=False).enabled is False


async def test_every_valid_order_id_gives_keys_the_table_accepts(store: Ledger) -> None:
    """128 non-ASCII characters (allowed by the contract) percent-encode to over 1 KiB."""
    document = json.loads(sample("order-created.json"))
    document["orderId"] = "订" * 128
    key = event_key(parse_order(json.dumps(document).encode()))
    assert len(key) <= ORDER_KEY_MAX + 32
    gate = await store.claim(key, "esputnik", message_id="m", now=NOW, lease=LEASE)
    assert isinstance(gate, Claimed)


async def test_a_request_the_storage_service_refuses_is_not_an_outage(azurite: str) -> None:
    table = f"t{uuid.uuid4().hex[:12]}"
    built = build_ledger(LedgerSettings(connection=azurite, table=table))
    try:
        with pytest.raises(LedgerRejected, match="refused: HTTP 400"):
            await built.claim("k" * 1100, "esputnik", message_id="m", now=NOW, lease=LEASE)
    finally:
        await built.aclose()


async def test_a_long_error_text_is_kept_shortened_not_refused(store: Ledger) -> None:
    """A vendor's error body can be longer than a Table string property (64 KiB)."""
    gate = await claim(store)
    assert isinstance(gate, Claimed)
    failed = DestinationResult(
        destination="esputnik", status=DeliveryStatus.PERMANENT_ERROR, detail="x" * 40_000
    )
    await store.record(gate, failed, now=NOW)
    row = await store.read(KEY, "esputnik")
    assert row is not None
    assert row.status is LedgerStatus.REJECTED
    assert row.last_error is not None
    assert 0 < len(row.last_error) <= 4096


# -- Key layout: partitions per destination and bucket, one order's rows found by range ---------


def test_one_orders_events_share_a_partition_per_destination() -> None:
    created = partition_key("esputnik", "A-1:OrderCreated:0123456789abcdef")
    delivered = partition_key("esputnik", "A-1:OrderDelivered:fedcba9876543210")
    assert created == delivered == f"esputnik-{bucket('A-1')}"
    assert partition_key("profile_store", "A-1:OrderCreated:0123456789abcdef") == (
        f"profile_store-{bucket('A-1')}"
    )
    buckets = {bucket(order_key(f"order-{i}")) for i in range(500)}
    assert buckets == {str(b) for b in range(LEDGER_BUCKETS)}


async def test_rows_for_order_finds_every_event_and_destination_of_that_order_only(
    store: Ledger,
) -> None:
    wanted = ["A-1:OrderCreated:0000000000000001", "A-1:OrderDelivered:0000000000000002"]
    others = ["A-10:OrderCreated:0000000000000003", "A-:OrderCreated:0000000000000004"]
    for destination in ("esputnik", "profile_store", "richrelevance"):
        gates = await store.claim_many(
            [ClaimRequest(k, "m") for k in wanted + others], destination, now=NOW, lease=LEASE
        )
        assert all(isinstance(g, Claimed) for g in gates)
    rows = await store.rows_for_order("A-1")
    assert [(r.destination, r.event_key) for r in rows] == [
        (d, k) for d in ("esputnik", "profile_store", "richrelevance") for k in wanted
    ]
    assert {r.status for r in rows} == {LedgerStatus.IN_FLIGHT}
    only = await store.rows_for_order("A-1", destinations=["profile_store"])
    assert {r.destination for r in only} == {"profile_store"}
    assert await store.rows_for_order("A-2") == []


async def test_rows_for_order_takes_the_order_id_as_the_erp_wrote_it(store: Ledger) -> None:
    """Order ids are percent-encoded in keys (and hashed when long): the lookup does the same."""
    document = json.loads(sample("order-created.json"))
    ids = ["ORD/2026 #1'", "订" * 128]
    for order_id in ids:
        document["orderId"] = order_id
        key = event_key(parse_order(json.dumps(document).encode()))
        await store.claim(key, "esputnik", message_id="m", now=NOW, lease=LEASE)
    for order_id in ids:
        (row,) = await store.rows_for_order(order_id, destinations=["esputnik"])
        assert row.event_key.startswith(order_key(order_id) + ":")
