"""What the ledger's integration tests share: the instant and lease they claim with, and one
`store` fixture that runs each test on every ledger: in memory row by row, in memory under the
batched algorithm, and the real Table client against Azurite."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from order_processor.ledger import BatchLedger, Ledger, MemoryLedger, build_ledger
from order_processor.settings import LedgerSettings

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=45)


class BatchedMemoryLedger(BatchLedger, MemoryLedger):
    """The in-memory rows under the batched algorithm TableLedger uses (without Azure)."""


@pytest.fixture(params=["memory", "memory-batched", "azurite"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    if request.param == "memory-batched":
        yield BatchedMemoryLedger()
        return
    connection = request.getfixturevalue("azurite")
    built = build_ledger(LedgerSettings(connection=connection, table=f"t{uuid.uuid4().hex[:12]}"))
    yield built
    await built.aclose()
