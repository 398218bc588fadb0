"""Ledgers for the bench, on `order_processor.ledger`'s public API only (another change is
rewriting the stores' internals: the bench must not depend on them).

`BenchLedger` wraps any `Ledger` and counts what the lanes ask of it: claims and records per
destination, the calls that carried them, and the Table Storage requests they mean for the
`TableLedger` one row at a time (the module's documented algorithm: a claim inserts the row, or,
when it exists, reads it and takes it over with its ETag; a record replaces it). For `memory` it
can also forget old rows, by generations: in production the rows live in Table Storage, so keeping
every row in the driver's memory would measure the stand-in, not the app (and hide a real leak in
the noise).

What the ledger costs the worker (`BenchLedger.cost`), measured on every run:

- **CPU in the ledger's calls**: each `claim_many` / `record_many` is driven step by step and the
  thread's CPU time of every step is added up (`_Timed`): the ledger's own code and whatever it
  calls synchronously (aiohttp's request and response handling, JSON, signing), not the time it
  spends suspended while other coroutines run. What the event loop does for the ledger's sockets
  between steps (the selector, the protocol's `data_received`) is not in it: the run's CPU per
  order against the memory ledger's in the same run (the `ledger` mode) is the whole figure.
- **Round trips**: the HTTP requests the ledger's aiohttp session sent (a request hook), for the
  Table ledger; the modelled `table_requests` is kept for the memory ledger.
- **Azurite's CPU** over the run, beside the driver's (Azurite is not Table Storage: its CPU only
  shows the server side doing less work per delivery when the client sends fewer requests).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
from tests.azurite import RequestCounter

if TYPE_CHECKING:
    from bench.azurite import Azurite

T = TypeVar("T")
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
    #: thread CPU seconds spent inside the ledger's calls (see the module's docstring)
    client_cpu_s: float = 0.0
    #: HTTP requests the Table ledger sent (None: an in-process ledger)
    http_requests: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "claims": self.claims,
            "records": self.records,
            "claim_calls": self.claim_calls,
            "record_calls": self.record_calls,
            "gates": dict(self.gates),
            "table_requests": self.table_requests,
            "claims_by_destination": dict(self.by_destination),
            "client_cpu_s": round(self.client_cpu_s, 4),
            "http_requests": self.http_requests,
        }


class _Timed:
    """Await `coroutine`, adding the thread CPU time of each of its steps to `counts`."""

    __slots__ = ("_coroutine", "_counts")

    def __init__(self, coroutine: Awaitable[T], counts: LedgerCounts) -> None:
        self._coroutine = coroutine
        self._counts = counts

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine = cast(Any, self._coroutine)
        clock = time.thread_time
        spent = 0.0
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                start = clock()
                try:
                    yielded = coroutine.send(value) if error is None else coroutine.throw(error)
                except StopIteration as done:
                    spent += clock() - start
                    return done.value
                except BaseException:
                    spent += clock() - start
                    raise
                spent += clock() - start
                value, error = None, None
                try:
                    value = yield yielded
                except BaseException as exc:  # cancellation and the like: hand it on
                    error = exc
        finally:
            self._counts.client_cpu_s += spent


async def timed(coroutine: Awaitable[T], counts: LedgerCounts) -> T:
    result: T = await _Timed(coroutine, counts)
    return result


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

    def __init__(
        self,
        make: Callable[[], Ledger],
        *,
        max_rows: int | None = None,
        kind: str = "memory",
        azurite: Azurite | None = None,
        table: str | None = None,
        requests: RequestCounter | None = None,
    ) -> None:
        self.kind = kind
        #: the Table ledger's server and its table (None: an in-process ledger)
        self.azurite = azurite
        self.table = table
        self._requests = requests
        self._azurite_cpu_start = azurite.cpu_seconds() if azurite else 0.0
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
        counts = self.counts
        gates = await timed(ledger.claim_many(requests, destination, now=now, lease=lease), counts)
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
            done = await timed(
                ledger.record_many(
                    [recorded[i] for i in indexes],
                    now=now,
                    decided=None if decided is None else [decided[i] for i in indexes],
                ),
                self.counts,
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

    def cost(self, deliveries: int | None = None) -> dict[str, Any]:
        """What the ledger cost so far, per delivery (a claimed (event, destination); `deliveries`
        overrides the count): CPU in its calls, round trips, Azurite's CPU beside them."""
        counts = self.counts
        if self._requests is not None:
            counts.http_requests = self._requests.sent
        n = deliveries if deliveries is not None else counts.claims
        azurite_cpu = self.azurite.cpu_seconds() - self._azurite_cpu_start if self.azurite else None

        def per(value: float | None, scale: float = 1.0) -> float | None:
            return None if value is None or not n else round(value * scale / n, 4)

        return {
            "ledger": self.kind,
            "table": self.table,
            "deliveries": n,
            "client_cpu_ms_per_delivery": per(counts.client_cpu_s, 1000),
            "round_trips_per_delivery": per(counts.http_requests),
            "modelled_table_requests_per_delivery": per(counts.table_requests),
            "azurite_cpu_ms_per_delivery": per(azurite_cpu, 1000),
            "azurite_cpu_s": None if azurite_cpu is None else round(azurite_cpu, 3),
            "client_cpu_s": round(counts.client_cpu_s, 4),
            "http_requests": counts.http_requests,
        }


def memory_ledger(max_rows: int | None = None) -> BenchLedger:
    return BenchLedger(core_ledger.MemoryLedger, max_rows=max_rows)


def no_ledger() -> BenchLedger:
    return BenchLedger(core_ledger.NoLedger, kind="none")


def table_ledger(connection: str, table: str, *, azurite: Azurite | None = None) -> BenchLedger:
    """The app's Table ledger (`build_ledger`, as the function app builds it) on `table`, its
    requests counted."""
    from pydantic import SecretStr

    from order_processor.settings import LedgerSettings

    settings = LedgerSettings(connection=SecretStr(connection), table=table)
    counter = RequestCounter()
    return BenchLedger(
        lambda: core_ledger.build_ledger(settings, trace_configs=[counter.trace]),
        kind="azurite",
        azurite=azurite,
        table=table,
        requests=counter,
    )


def azurite_ledger(azurite: Azurite) -> BenchLedger:
    """The Table ledger on a fresh table of the bench's own Azurite: no run finds another's rows."""
    return table_ledger(azurite.connection, azurite.new_table(), azurite=azurite)
