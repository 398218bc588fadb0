"""Ledgers for the bench, on `order_processor.ledger`'s public API only (another change is
rewriting the stores' internals: the bench must not depend on them).

`BenchLedger` wraps any `Ledger` and counts what the lanes ask of it: claims and records per
destination, the calls that carried them, and the Table Storage requests they mean for the
`TableLedger` (the module's documented algorithm: a claim inserts the row, or, when it exists,
reads it and takes it over with its ETag; a record replaces it). For `memory` it can also forget
old rows, by generations: in production the rows live in Table Storage, so keeping every row in
the driver's memory would measure the stand-in, not the app (and hide a real leak in the noise).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from order_processor import ledger as core_ledger
from order_processor.ledger import (
    Claimed,
    ClaimRequest,
    Decided,
    Held,
    Ledger,
    LedgerEntry,
    LedgerRejected,
    LedgerUnavailable,
    Settled,
)
from order_processor.model import DestinationResult

Gate = Claimed | Settled | Held | LedgerUnavailable | LedgerRejected


@dataclass
class LedgerCounts:
    """What the lanes asked of the ledger over one run."""

    #: rows claimed / results recorded (one per delivery attempt of one event)
    claims: int = 0
    records: int = 0
    #: claim_many / record_many calls (a lane's batch is one call)
    claim_calls: int = 0
    record_calls: int = 0
    #: claim answers by kind: fresh, taken-over, settled, held, unavailable, rejected
    gates: Counter[str] = field(default_factory=Counter)
    #: Table Storage requests the TableLedger makes for the same calls (see `table_requests`)
    table_requests: int = 0
    by_destination: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claims": self.claims,
            "records": self.records,
            "claim_calls": self.claim_calls,
            "record_calls": self.record_calls,
            "gates": dict(self.gates),
            "table_requests": self.table_requests,
            "claims_by_destination": dict(self.by_destination),
        }


def _gate_kind(gate: Gate) -> str:
    if isinstance(gate, Claimed):
        entry = gate.entry
        fresh = entry.attempts == 0 and entry.first_attempt == entry.last_attempt
        return "fresh" if fresh else "taken-over"
    if isinstance(gate, Settled):
        return "settled"
    if isinstance(gate, Held):
        return "held"
    return "rejected" if isinstance(gate, LedgerRejected) else "unavailable"


#: Table Storage requests per claim answer, for `TableLedger` one by one: insert (fresh); insert
#: refused, read, conditional replace (taken over); insert refused, read (settled, held); one
#: failed request (unavailable, rejected). A record is one conditional replace.
TABLE_REQUESTS = {
    "fresh": 1,
    "taken-over": 3,
    "settled": 2,
    "held": 2,
    "unavailable": 1,
    "rejected": 1,
}


class BenchLedger:
    """A `Ledger` (duck-typed: the stages call claim_many, record_many and aclose) that counts,
    and with `max_rows` keeps at most two generations of `max_rows` claims each."""

    def __init__(self, make: Callable[[], Ledger], *, max_rows: int | None = None) -> None:
        self._make = make
        self._current = make()
        self._previous: Ledger | None = None
        self._claims_in_current = 0
        self._max_rows = max_rows
        #: id(claim) -> the generation that issued it (a record must go back there)
        self._issued: dict[int, Ledger] = {}
        self.counts = LedgerCounts()

    def as_ledger(self) -> Ledger:
        """This object where the core's signatures want a Ledger."""
        return cast(Ledger, self)

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate]:
        ledger = self._current
        gates = await ledger.claim_many(requests, destination, now=now, lease=lease)
        counts = self.counts
        counts.claim_calls += 1
        counts.claims += len(requests)
        counts.by_destination[destination] += len(requests)
        for gate in gates:
            kind = _gate_kind(gate)
            counts.gates[kind] += 1
            counts.table_requests += TABLE_REQUESTS[kind]
            if isinstance(gate, Claimed):
                self._issued[id(gate)] = ledger
        self._claims_in_current += len(requests)
        if self._max_rows is not None and self._claims_in_current >= self._max_rows:
            self._previous, self._current = self._current, self._make()
            self._claims_in_current = 0
        return gates

    async def record_many(
        self,
        recorded: Sequence[tuple[Claimed, DestinationResult]],
        *,
        now: datetime,
        decided: Sequence[Decided | None] | None = None,
    ) -> list[LedgerUnavailable | LedgerRejected | None]:
        self.counts.record_calls += 1
        self.counts.records += len(recorded)
        self.counts.table_requests += len(recorded)
        groups: dict[int, tuple[Ledger, list[int]]] = {}
        for index, (claim, _) in enumerate(recorded):
            ledger = self._issued.pop(id(claim), self._current)
            groups.setdefault(id(ledger), (ledger, []))[1].append(index)
        failures: list[LedgerUnavailable | LedgerRejected | None] = [None] * len(recorded)
        for ledger, indexes in groups.values():
            done = await ledger.record_many(
                [recorded[i] for i in indexes],
                now=now,
                decided=None if decided is None else [decided[i] for i in indexes],
            )
            for index, failure in zip(indexes, done, strict=True):
                failures[index] = failure
        return failures

    async def read(self, event_key: str, destination: str) -> LedgerEntry | None:
        found = await self._current.read(event_key, destination)
        if found is None and self._previous is not None:
            found = await self._previous.read(event_key, destination)
        return found

    async def aclose(self) -> None:
        await self._current.aclose()
        if self._previous is not None:
            await self._previous.aclose()


def memory_ledger(max_rows: int | None = None) -> BenchLedger:
    return BenchLedger(core_ledger.MemoryLedger, max_rows=max_rows)


def no_ledger() -> BenchLedger:
    return BenchLedger(core_ledger.NoLedger)


def azurite_ledger(connection: str) -> BenchLedger:
    from pydantic import SecretStr

    from order_processor.settings import LedgerSettings

    settings = LedgerSettings(connection=SecretStr(connection), table="benchdeliveries")
    return BenchLedger(lambda: core_ledger.build_ledger(settings))
