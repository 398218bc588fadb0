"""What the delivery ledger costs per delivery: `python -m bench.ledger_cost` (docs/performance.md,
"The ledger's cost").

Starts its own Azurite Table service from node_modules (as tests/azurite.py does) and measures,
in one run and on fresh keys (a new table per measurement, order ids unique to the run):

- **the ledger alone**: claim + record of every delivery through the ledger, for the single-message
  path (one claim and one record per delivery, `--concurrency` in flight, as a lane's function
  with maxConcurrentCalls) and the batch path (`claim_many` + `record_many` of batches of 32 and
  100 for one destination, one batch at a time, as the batch trigger hands them over). Per
  delivery: the driver's CPU (process time, every thread, around the ledger calls only), wall
  time, HTTP requests (counted as they are sent) and Azurite's CPU beside it, for three ledgers:
  `memory` (MemoryLedger), `before` (the ledger as it was before issue 14: azure-data-tables'
  TableClient with its stock pipeline, PartitionKey = event key, one request per row operation,
  kept here as the reference) and `table` (TableLedger as built from the settings);
- **per order** (`--orders`): the real stages, accept then every lane, with the destinations'
  contract fakes in a child process (their CPU is not the driver's) and the loyalty fake, on
  each ledger: CPU per order in the driver, and the ratio to the memory ledger's run.

Every measurement checks it did the work: every claim cleared and recorded, and the table holds
exactly one delivered row per delivery. Results print as Markdown tables (`--json FILE` too).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from bench.azurite import Azurite, AzuriteUnavailable, azurite
from order_processor.ledger import (
    Claimed,
    ClaimRequest,
    Ledger,
    LedgerEntry,
    LedgerStatus,
    MemoryLedger,
    TableStore,
    build_ledger,
)
from order_processor.model import DeliveryStatus, DestinationResult
from order_processor.settings import LedgerSettings
from tests.azurite import RequestCounter

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=45)
LANE = "esputnik"
KINDS = ("memory", "before", "table")


# -- The ledgers compared ----------------------------------------------------------------------


class CountingTransport(AioHttpTransport):
    """azure-core's aiohttp transport (the `before` ledger's), counting the requests it sends."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent = 0

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return await super().send(request, **kwargs)


class BeforeLedger(Ledger):
    """The ledger as it was before issue 14 (commit 134e1e7), kept as the reference: stock
    azure-data-tables TableClient (retry_total=2 and the timeouts the app set), PartitionKey =
    event key, RowKey = destination, one request per row operation, a batch one by one."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._ready = False

    async def _ready_table(self) -> None:
        if not self._ready:
            with suppress(ResourceExistsError):
                await self._table.create_table()
            self._ready = True

    @staticmethod
    def _entity(entry: LedgerEntry) -> dict[str, Any]:
        entity = {
            "PartitionKey": entry.event_key,
            "RowKey": entry.destination,
            "Status": entry.status.value,
            "MessageId": entry.message_id,
            "Attempts": entry.attempts,
            "FirstAttemptUtc": entry.first_attempt,
            "LastAttemptUtc": entry.last_attempt,
            "LeaseUntilUtc": entry.lease_until,
            "LastError": entry.last_error,
            "HttpStatus": entry.http_status,
            "ResponseId": entry.response_id,
        }
        return {name: value for name, value in entity.items() if value is not None}

    async def _insert(self, entry: LedgerEntry) -> str | None:
        await self._ready_table()
        try:
            meta = await self._table.create_entity(self._entity(entry))
        except ResourceExistsError:
            return None
        return str(meta["etag"])

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        await self._ready_table()
        try:
            entity = await self._table.get_entity(event_key, destination)
        except ResourceNotFoundError:
            return None
        entry = LedgerEntry(
            event_key=event_key,
            destination=destination,
            status=LedgerStatus(entity["Status"]),
            message_id=entity.get("MessageId"),
            attempts=int(entity.get("Attempts", 0)),
            lease_until=entity.get("LeaseUntilUtc"),
        )
        return entry, str(entity.metadata["etag"])

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        await self._ready_table()
        try:
            meta = await self._table.update_entity(
                self._entity(entry),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(meta["etag"])

    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        return []

    async def aclose(self) -> None:
        await self._table.close()


@dataclass
class Built:
    ledger: Ledger
    transport: CountingTransport | RequestCounter | None
    table: str | None


def build(kind: str, connection: str) -> Built:
    """A fresh ledger of this kind; table ledgers get a new table (nothing delivered yet)."""
    if kind == "memory":
        return Built(MemoryLedger(), None, None)
    table = f"t{uuid.uuid4().hex[:16]}"
    if kind == "before":
        # the stock client builds its aiohttp transport with use_env_settings=True
        transport = CountingTransport(connection_timeout=5, read_timeout=10)
        client = TableClient.from_connection_string(
            connection, table_name=table, retry_total=2, transport=transport
        )
        return Built(BeforeLedger(client), transport, table)
    counter = RequestCounter()
    settings = LedgerSettings(connection=connection, table=table)
    return Built(build_ledger(settings, trace_configs=[counter.trace]), counter, table)


async def delivered_rows(built: Built, connection: str) -> int:
    """How many delivered rows the ledger holds (a fresh table: a scan is fine here)."""
    ledger = built.ledger
    if isinstance(ledger, MemoryLedger):
        return sum(e.status is LedgerStatus.DELIVERED for e, _ in ledger.rows.values())
    assert built.table
    store = TableStore.from_connection_string(connection, built.table)
    try:
        return len(await store.query("Status eq 'delivered'"))
    finally:
        await store.close()


# -- The ledger alone ------------------------------------------------------------------------


@dataclass
class Measured:
    section: str
    path: str
    kind: str
    deliveries: int
    cpu_ms: float
    wall_ms: float
    requests: float | None
    azurite_cpu_ms: float | None
    extra: dict[str, Any] = field(default_factory=dict)


def event_keys(run: str, count: int, start: int = 0) -> list[str]:
    """Realistic event keys, unique to this run: `<order key>:<eventType>:<16 hex>`."""
    keys = []
    for i in range(start, start + count):
        digest = hashlib.sha256(f"{run}{i}".encode()).hexdigest()[:16]
        keys.append(f"R{run}-{i}:OrderCreated:{digest}")
    return keys


def result(key: str) -> DestinationResult:
    return DestinationResult(
        destination=LANE, status=DeliveryStatus.DELIVERED, attempts=1, response_id=f"r-{key[-8:]}"
    )


async def single(ledger: Ledger, keys: Sequence[str], concurrency: int) -> None:
    """One claim and one record per delivery, `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(key: str) -> None:
        async with gate:
            claim = await ledger.claim(key, LANE, message_id=key, now=NOW, lease=LEASE)
            if not isinstance(claim, Claimed):
                raise AssertionError(f"{key}: {claim}")
            await ledger.record(claim, result(key), now=NOW)

    await asyncio.gather(*(one(k) for k in keys))


async def batched(ledger: Ledger, keys: Sequence[str], size: int) -> None:
    """claim_many + record_many per batch, one batch at a time."""
    for start in range(0, len(keys), size):
        chunk = keys[start : start + size]
        gates = await ledger.claim_many(
            [ClaimRequest(k, k) for k in chunk], LANE, now=NOW, lease=LEASE
        )
        claims = [g for g in gates if isinstance(g, Claimed)]
        if len(claims) != len(chunk):
            raise AssertionError(f"batch not cleared: {[type(g).__name__ for g in gates]}")
        failures = await ledger.record_many(
            [(c, result(c.entry.event_key)) for c in claims], now=NOW
        )
        if any(f is not None for f in failures):
            raise AssertionError(f"records failed: {failures}")


async def measure_ledger(
    kind: str, path: str, deliveries: int, env: Azurite, run: str, concurrency: int
) -> Measured:
    built = build(kind, env.connection)
    size = 0 if path == "single" else int(path.split()[-1])

    async def drive(keys: Sequence[str]) -> None:
        if size:
            await batched(built.ledger, keys, size)
        else:
            await single(built.ledger, keys, concurrency)

    try:
        warm = event_keys(run + "w" + kind + str(size), max(size, concurrency))
        await drive(warm)  # the table exists, the connections are open
        keys = event_keys(run + kind + str(size), deliveries)
        sent = built.transport.sent if built.transport else 0
        azurite_cpu = env.cpu_seconds()
        cpu, wall = time.process_time(), time.perf_counter()
        await drive(keys)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        azurite_cpu = env.cpu_seconds() - azurite_cpu
        requests = (built.transport.sent - sent) / deliveries if built.transport else None
        rows = await delivered_rows(built, env.connection)
        if rows != len(warm) + deliveries:
            raise AssertionError(f"{kind} {path}: {rows} delivered rows, {len(warm) + deliveries}")
    finally:
        await built.ledger.aclose()
    on_azurite = kind != "memory"
    return Measured(
        section="ledger",
        path=path,
        kind=kind,
        deliveries=deliveries,
        cpu_ms=cpu / deliveries * 1000,
        wall_ms=wall / deliveries * 1000,
        requests=requests,
        azurite_cpu_ms=azurite_cpu / deliveries * 1000 if on_azurite else None,
    )


# -- Per order: the real stages --------------------------------------------------------------

_FAKES = """
import json, sys
from order_processor.devfakes import start, stop
servers, values = start(host="127.0.0.1", base_port=0, say=lambda line: None)
print(json.dumps(values), flush=True)
sys.stdin.read()
stop(servers)
"""


@contextmanager
def fake_vendors() -> Iterator[dict[str, str]]:
    """Every destination's and the loyalty provider's contract fake, in a child process; the
    settings (`Values`) that point the app at them."""
    child = subprocess.Popen(  # noqa: S603 - this interpreter, our own module
        [sys.executable, "-c", _FAKES],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield json.loads(child.stdout.readline())
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def _orders(run: str, count: int) -> list[bytes]:
    """Order messages with ids unique to the run (the event keys follow from the content)."""
    sample = ROOT / "samples" / "orders" / "valid" / "order-created.json"
    template = json.loads(sample.read_text())
    return [json.dumps({**template, "orderId": f"R{run}-{i}"}).encode() for i in range(count)]


async def measure_orders(
    kind: str,
    path: str,
    orders: int,
    env: Azurite,
    run: str,
    concurrency: int,
    values: dict[str, str],
) -> Measured:
    from order_processor.local import received
    from order_processor.model import MessageMetadata, Settlement
    from order_processor.outbox import MemoryOutbox
    from order_processor.pipeline import Pipeline
    from order_processor.settings import load_settings

    with _environment(values):
        settings = load_settings(overrides={"ledger": {"enabled": False}})
    built = build(kind, env.connection)
    outbox = MemoryOutbox()
    pipeline = Pipeline.from_settings(settings, ledger=built.ledger, outbox=outbox)
    size = 0 if path == "single" else int(path.split()[-1])

    async def drive(bodies: Sequence[bytes]) -> tuple[int, list[Any]]:
        gate = asyncio.Semaphore(concurrency)

        async def accept(i: int, body: bytes) -> None:
            async with gate:
                await pipeline.accept.accept(body, MessageMetadata(message_id=f"m{i}"))

        await asyncio.gather(*(accept(i, b) for i, b in enumerate(bodies)))
        by_lane: dict[str, list[tuple[bytes, Any]]] = {}
        for message in outbox.take():
            by_lane.setdefault(message.destination, []).append((message.body, received(message)))
        outcomes: list[Any] = []
        for name, messages in by_lane.items():
            lane = pipeline.lanes[name]
            if size:
                for start in range(0, len(messages), size):
                    outcomes += await lane.deliver_batch(messages[start : start + size])
            else:

                async def deliver(body: bytes, meta: Any, lane: Any = lane) -> Any:
                    async with gate:
                        return await lane.deliver(body, meta)

                outcomes += await asyncio.gather(*(deliver(b, m) for b, m in messages))
        return sum(len(m) for m in by_lane.values()), outcomes

    try:
        await drive(_orders(run + "w" + kind + path.replace(" ", ""), 20))
        bodies = _orders(run + kind + path.replace(" ", ""), orders)
        rows_before = await delivered_rows(built, env.connection)
        sent = built.transport.sent if built.transport else 0
        azurite_cpu = env.cpu_seconds()
        cpu, wall = time.process_time(), time.perf_counter()
        deliveries, outcomes = await drive(bodies)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        azurite_cpu = env.cpu_seconds() - azurite_cpu
        requests = (built.transport.sent - sent) / deliveries if built.transport else None
        settled = {o.settlement for o in outcomes}
        if settled != {Settlement.COMPLETE} or any(
            r.previously for o in outcomes for r in o.results
        ):
            raise AssertionError(f"{kind} {path}: not every delivery completed fresh: {settled}")
        delivered = sum(r.status is DeliveryStatus.DELIVERED for o in outcomes for r in o.results)
        rows = await delivered_rows(built, env.connection) - rows_before
        if delivered != deliveries or rows != deliveries:
            raise AssertionError(f"{kind} {path}: {delivered} delivered, {rows} rows written")
    finally:
        await pipeline.aclose()
    return Measured(
        section="orders",
        path=path,
        kind=kind,
        deliveries=deliveries,
        cpu_ms=cpu / orders * 1000,
        wall_ms=wall / orders * 1000,
        requests=requests,
        azurite_cpu_ms=azurite_cpu / orders * 1000 if kind != "memory" else None,
        extra={"orders": orders, "deliveries_per_order": deliveries / orders},
    )


# -- Report ----------------------------------------------------------------------------------


def table(results: Sequence[Measured], section: str) -> str:
    rows = [r for r in results if r.section == section]
    unit = "delivery" if section == "ledger" else "order"
    lines = [
        f"| path | ledger | {'deliveries' if section == 'ledger' else 'orders'} | "
        f"CPU ms/{unit} | x memory (range) | wall ms/{unit} | requests/delivery | "
        f"Azurite CPU ms/{unit} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        count = r.deliveries if section == "ledger" else r.extra["orders"]
        ratios = sorted(r.extra.get("vs_memory_by_round", []))
        if len(ratios) > 1:
            ratio = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        else:
            ratio = f"{ratios[0]:.2f}" if ratios else "-"
        lines.append(
            f"| {r.path} | {r.kind} | {count} | {r.cpu_ms:.3f} | {ratio} | {r.wall_ms:.3f} | "
            f"{'-' if r.requests is None else f'{r.requests:.3f}'} | "
            f"{'-' if r.azurite_cpu_ms is None else f'{r.azurite_cpu_ms:.3f}'} |"
        )
    return "\n".join(lines)


def before_after(results: Sequence[Measured]) -> str:
    lines = [
        "| section | path | CPU before / after | requests before / after |",
        "|---|---|---|---|",
    ]
    for section in ("ledger", "orders"):
        for path in dict.fromkeys(r.path for r in results if r.section == section):
            got = {r.kind: r for r in results if r.section == section and r.path == path}
            if "before" in got and "table" in got:
                b, a = got["before"], got["table"]
                req = (
                    f"{b.requests:.2f} / {a.requests:.2f}"
                    if b.requests is not None and a.requests is not None
                    else "-"
                )
                lines.append(f"| {section} | {path} | {b.cpu_ms / a.cpu_ms:.1f}x | {req} |")
    return "\n".join(lines)


def median_of(rounds: list[list[Measured]]) -> list[Measured]:
    """Each measurement's median over the rounds (by CPU), in the first round's order, with the
    rounds' figures and its CPU over the memory ledger's in the same round and path (the
    measurements run back to back, so each ratio pairs figures taken under the same load)."""
    merged: list[Measured] = []
    for i in range(len(rounds[0])):
        same = [r[i] for r in rounds]
        median = sorted(same, key=lambda m: m.cpu_ms)[len(same) // 2]
        ratios = []
        for measured in rounds:
            memory = next(
                (
                    m
                    for m in measured
                    if (m.section, m.path, m.kind) == (median.section, median.path, "memory")
                ),
                None,
            )
            if memory is not None:
                ratios.append(measured[i].cpu_ms / memory.cpu_ms)
        median.extra = {
            **median.extra,
            "rounds_cpu_ms": [round(m.cpu_ms, 4) for m in same],
            "vs_memory_by_round": [round(r, 3) for r in ratios],
        }
        merged.append(median)
    return merged


async def run(args: argparse.Namespace) -> list[Measured]:
    run_id = uuid.uuid4().hex[:8]
    paths = ["single", *(f"batch {n}" for n in args.batch_sizes)]
    kinds = [k for k in KINDS if k in args.ledgers]
    rounds: list[list[Measured]] = []
    with azurite() as env:
        values: dict[str, str] = {}
        with fake_vendors() if args.orders else _nothing() as found:
            values = found or {}
            for round_no in range(args.rounds):
                measured: list[Measured] = []
                for path in paths:
                    for kind in kinds:  # interleaved: the machine's drift hits all alike
                        measured.append(
                            await measure_ledger(
                                kind,
                                path,
                                args.deliveries,
                                env,
                                f"{run_id}{round_no}",
                                args.concurrency,
                            )
                        )
                if args.orders:
                    for path in paths:
                        for kind in kinds:
                            measured.append(
                                await measure_orders(
                                    kind,
                                    path,
                                    args.orders,
                                    env,
                                    f"{run_id}{round_no}",
                                    args.concurrency,
                                    values,
                                )
                            )
                rounds.append(measured)
    return median_of(rounds)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables while the settings are read, the previous ones after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _production_logging() -> None:
    """Logging as in Azure (INFO for our loggers, JSON lines, redaction), written nowhere."""
    from order_processor.logs import configure_logging

    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 - process-long
    configure_logging("INFO", fmt="json")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_cost", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000, help="per ledger measurement")
    parser.add_argument("--orders", type=int, default=400, help="per order measurement; 0: skip")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[32, 100])
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, single path")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--ledgers", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def report(results: Sequence[Measured], args: argparse.Namespace) -> str:
    parts = ["The ledger alone, per delivery:", table(results, "ledger")]
    if args.orders:
        parts += ["Per order, the real stages (accept + every lane):", table(results, "orders")]
    if {"before", "table"} <= set(args.ledgers):
        parts += ["Before / after:", before_after(results)]
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    _production_logging()
    started = time.perf_counter()
    try:
        results = asyncio.run(run(args))
    except AzuriteUnavailable as exc:
        raise SystemExit(str(exc)) from None
    print(
        f"Run of {datetime.now(UTC).isoformat(timespec='seconds')} on {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}, {time.perf_counter() - started:.0f} s, "
        f"median of {args.rounds} round(s)\n"
    )
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
