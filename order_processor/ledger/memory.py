"""In-process stores: MemoryLedger (tests, the bench, dry runs) and NoLedger (local runs only)."""

from __future__ import annotations

import itertools

from order_processor.ledger.base import Ledger
from order_processor.ledger.entries import LedgerEntry, LedgerRejected, LedgerUnavailable


class MemoryLedger(Ledger):
    """An in-process ledger with the same ETag semantics (tests, the bench)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[LedgerEntry, str]] = {}
        self._versions = itertools.count(1)
        #: testing hook: when set, every operation raises it (an unreachable ledger)
        self.failure: Exception | None = None
        #: testing hook: event key -> what every operation on that event's rows raises (one
        #: row of a batch failing on its own)
        self.failing: dict[str, Exception] = {}

    def _check(self, event_key: str | None = None) -> None:
        failure = self.failure or (self.failing.get(event_key) if event_key else None)
        if failure is not None:
            if isinstance(failure, LedgerUnavailable | LedgerRejected):
                raise failure
            raise LedgerUnavailable(str(failure)) from failure

    def _store(self, entry: LedgerEntry) -> str:
        etag = f'W/"{next(self._versions)}"'
        self.rows[(entry.event_key, entry.destination)] = (entry, etag)
        return etag

    async def _insert(self, entry: LedgerEntry) -> str | None:
        self._check(entry.event_key)
        if (entry.event_key, entry.destination) in self.rows:
            return None
        return self._store(entry)

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        self._check(event_key)
        return self.rows.get((event_key, destination))

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        self._check(entry.event_key)
        current = self.rows.get((entry.event_key, entry.destination))
        if current is None or current[1] != etag:
            return None
        return self._store(entry)

    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        self._check()
        prefix, wanted = f"{order}:", set(destinations)
        return [
            entry
            for (event_key, destination), (entry, _) in list(self.rows.items())
            if destination in wanted and event_key.startswith(prefix)
        ]

    async def _rows_for_message(self, message_id: str) -> list[LedgerEntry]:
        self._check()
        return [entry for entry, _ in list(self.rows.values()) if entry.message_id == message_id]


class NoLedger(Ledger):
    """DELIVERY_LEDGER_ENABLED=false (local runs only): every copy may send. Unsafe in Azure."""

    async def _insert(self, entry: LedgerEntry) -> str | None:
        return ""

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        return None

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        return ""

    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        return []

    async def _rows_for_message(self, message_id: str) -> list[LedgerEntry]:
        return []
