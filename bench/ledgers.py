"""Ledgers for the bench, built on `order_processor.ledger` (imported only when it exists).

`memory` is the project's MemoryLedger with the same claim/record work per delivery, bounded to
the newest rows: in production the rows live in Azure Table Storage, so keeping every row in the
driver's memory would measure the stand-in, not the app (and hide a real leak in the noise).
"""

from __future__ import annotations

from typing import Any

from order_processor import ledger as core_ledger


class BoundedMemoryLedger(core_ledger.MemoryLedger):
    def __init__(self, max_rows: int) -> None:
        super().__init__()
        self.max_rows = max_rows

    def _store(self, entry: core_ledger.LedgerEntry) -> str:
        etag = super()._store(entry)
        while len(self.rows) > self.max_rows:
            del self.rows[next(iter(self.rows))]
        return etag


def bounded_memory_ledger(max_rows: int) -> core_ledger.Ledger:
    return BoundedMemoryLedger(max_rows)


def no_ledger() -> core_ledger.Ledger:
    return core_ledger.NoLedger()


def azurite_ledger(connection: str) -> Any:
    from order_processor.settings import LedgerSettings

    settings = LedgerSettings(connection=connection, table="benchdeliveries")
    return core_ledger.build_ledger(settings)
