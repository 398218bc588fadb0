"""DELIVERY_LEDGER_LEGACY_LOOKUP on Azurite: rows the version before the lanes wrote
(PartitionKey = event key, RowKey = destination) still count while the setting is on.

The old rows are written here with azure-data-tables, as that version wrote them.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from order_processor.ledger import (
    Claimed,
    ClaimRequest,
    Held,
    Ledger,
    LedgerStatus,
    Settled,
    build_ledger,
)
from order_processor.settings import LedgerSettings
from tests.integration.conftest import LEASE, NOW

LANE = "esputnik"
KEYS = {
    name: f"L-{name}:OrderCreated:0123456789abcdef"
    for name in ("delivered", "skipped", "held", "failed", "expired", "none")
}


def old_row(event_key: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "PartitionKey": event_key,
        "RowKey": LANE,
        "Status": status,
        "MessageId": "old-m",
        "Attempts": 1,
        "FirstAttemptUtc": NOW - timedelta(days=1),
        "LastAttemptUtc": NOW - timedelta(days=1),
        **extra,
    }


@pytest.fixture
async def table(azurite: str) -> str:
    """A table holding the previous version's rows; yields its name."""
    name = f"t{uuid.uuid4().hex[:12]}"
    async with TableClient.from_connection_string(azurite, table_name=name) as old:
        await old.create_table()
        await old.create_entity(old_row(KEYS["delivered"], "delivered", ResponseId="r-old"))
        await old.create_entity(old_row(KEYS["skipped"], "skipped"))
        await old.create_entity(old_row(KEYS["held"], "in-flight", LeaseUntilUtc=NOW + LEASE))
        await old.create_entity(old_row(KEYS["failed"], "failed", LastError="HTTP 503"))
        await old.create_entity(old_row(KEYS["expired"], "in-flight", LeaseUntilUtc=NOW - LEASE))
    return name


def ledger(azurite: str, table: str, *, legacy: bool) -> Ledger:
    return build_ledger(LedgerSettings(connection=azurite, table=table, legacy_lookup=legacy))


async def test_without_the_setting_old_rows_are_not_seen(azurite: str, table: str) -> None:
    store = ledger(azurite, table, legacy=False)
    gate = await store.claim(KEYS["delivered"], LANE, message_id="m", now=NOW, lease=LEASE)
    assert isinstance(gate, Claimed)
    await store.aclose()


async def test_an_old_delivered_row_settles_the_claim_and_is_copied_over(
    azurite: str, table: str
) -> None:
    store = ledger(azurite, table, legacy=True)
    gate = await store.claim(KEYS["delivered"], LANE, message_id="m", now=NOW, lease=LEASE)
    assert isinstance(gate, Settled)
    assert (gate.entry.status, gate.entry.response_id, gate.entry.message_id) == (
        LedgerStatus.DELIVERED,
        "r-old",
        "old-m",
    )
    await store.aclose()
    # The copy in the new layout keeps settling it once the setting is off again.
    after = ledger(azurite, table, legacy=False)
    again = await after.claim(KEYS["delivered"], LANE, message_id="m2", now=NOW, lease=LEASE)
    assert isinstance(again, Settled)
    assert again.entry.response_id == "r-old"
    await after.aclose()


async def test_a_batch_sees_each_old_row_as_the_old_version_would_have(
    azurite: str, table: str
) -> None:
    store = ledger(azurite, table, legacy=True)
    names = list(KEYS)
    gates = await store.claim_many(
        [ClaimRequest(KEYS[n], f"new-{n}") for n in names], LANE, now=NOW, lease=LEASE
    )
    answers = dict(zip(names, gates, strict=True))
    assert isinstance(answers["delivered"], Settled)
    assert isinstance(answers["skipped"], Settled)
    assert answers["skipped"].entry.status is LedgerStatus.SKIPPED
    # the previous version is delivering it right now (both versions run during a deployment)
    assert isinstance(answers["held"], Held)
    # owed, or abandoned by a copy that died: claimed afresh in the new layout
    for name in ("failed", "expired", "none"):
        claimed = answers[name]
        assert isinstance(claimed, Claimed)
        assert (claimed.entry.status, claimed.entry.message_id) == (
            LedgerStatus.IN_FLIGHT,
            f"new-{name}",
        )
    await store.aclose()


async def test_reads_and_an_orders_rows_include_old_rows_while_it_is_on(
    azurite: str, table: str
) -> None:
    store = ledger(azurite, table, legacy=True)
    row = await store.read(KEYS["failed"], LANE)
    assert row is not None
    assert (row.status, row.last_error) == (LedgerStatus.FAILED, "HTTP 503")
    await store.claim(KEYS["failed"], LANE, message_id="m", now=NOW, lease=LEASE)
    (claimed,) = await store.rows_for_order("L-failed", destinations=[LANE])
    assert claimed.status is LedgerStatus.IN_FLIGHT  # the new row wins over the old one
    (old,) = await store.rows_for_order("L-skipped", destinations=[LANE])
    assert old.status is LedgerStatus.SKIPPED
    await store.aclose()
    without = ledger(azurite, table, legacy=False)
    assert await without.rows_for_order("L-skipped", destinations=[LANE]) == []
    await without.aclose()


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIVERY_LEDGER_LEGACY_LOOKUP", "true")
    settings = LedgerSettings(web_jobs_storage="UseDevelopmentStorage=true")
    assert settings.legacy_lookup is True
    monkeypatch.delenv("DELIVERY_LEDGER_LEGACY_LOOKUP")
    assert LedgerSettings(web_jobs_storage="UseDevelopmentStorage=true").legacy_lookup is False
