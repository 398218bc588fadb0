"""The ledger in an Azure Table (DELIVERY_LEDGER_TABLE): TableLedger, and build_ledger."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from order_processor.ledger.base import BatchLedger, Ledger
from order_processor.ledger.entries import (
    FINAL,
    Existing,
    Held,
    Inserted,
    LedgerEntry,
    LedgerFailure,
    LedgerRejected,
    LedgerUnavailable,
    Replaced,
    Settled,
    all_of,
    each,
)
from order_processor.ledger.keys import bucket, order_rows, partition_key
from order_processor.ledger.memory import NoLedger
from order_processor.ledger.wire import (
    EGT_MAX_ENTITIES,
    BatchError,
    StorageError,
    TableStore,
    from_entity,
    literal,
    to_entity,
)
from order_processor.settings import LedgerSettings

log = logging.getLogger("order_processor.ledger")
_T = TypeVar("_T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- Azure Table Storage: the ledger ---------------------------------------------------------


def _is_refusal(status: int) -> bool:
    """A 4xx other than timeouts and throttling: the request is wrong, not the service down."""
    return 400 <= status < 500 and status not in {408, 429}


def _failure(operation: str, exc: BaseException) -> LedgerFailure:
    if isinstance(exc, StorageError) and _is_refusal(exc.status):
        return LedgerRejected(f"ledger {operation} refused: HTTP {exc.status} {exc.code or ''}")
    detail = f"HTTP {exc.status}" if isinstance(exc, StorageError) else type(exc).__name__
    return LedgerUnavailable(f"ledger {operation} failed: {detail}")


_OUTAGES = (StorageError, aiohttp.ClientError, OSError, TimeoutError)


class TableLedger(BatchLedger):
    """The ledger in an Azure Table (`DELIVERY_LEDGER_TABLE`), created on first use.

    A lane's batch is claimed and recorded with entity group transactions: the rows grouped by
    partition, at most 100 per request. Any storage failure other than the ETag/exists answers
    becomes LedgerUnavailable (or LedgerRejected for a request the service refuses) for the rows
    it concerns, so those messages are retried later rather than delivered without a record.

    `legacy_lookup` (DELIVERY_LEDGER_LEGACY_LOOKUP): rows written by the previous layout
    (PartitionKey = event key, RowKey = destination) are looked up too, see `_insert_many`.
    """

    def __init__(
        self, store: TableStore, *, legacy_lookup: bool = False, create_table: bool = True
    ) -> None:
        self._store = store
        self.legacy_lookup = legacy_lookup
        #: False: the table is taken as there (a reader, such as `trace`, may not create it)
        self._ready = not create_table
        self._ready_lock = asyncio.Lock()

    @property
    def _one_row_as_batch(self) -> bool:
        return self.legacy_lookup  # the old row is looked up in `_insert_many`

    async def _ensure_table(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            await self._store.create_table()
            self._ready = True

    async def _call(self, operation: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        try:
            if not self._ready:
                await self._ensure_table()
            return await call(*args)
        except BatchError:
            raise
        except _OUTAGES as exc:
            raise _failure(operation, exc) from exc

    # one row

    async def _insert(self, entry: LedgerEntry) -> str | None:
        return await self._call("insert", self._store.insert, to_entity(entry))

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        found = await self._call(
            "read", self._store.get, partition_key(destination, event_key), event_key
        )
        if found is None and self.legacy_lookup:
            return await self._get_legacy(event_key, destination)
        return (from_entity(found[0]), found[1]) if found else None

    async def _get_legacy(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        found = await self._call("read", self._store.get, event_key, destination)
        return (from_entity(found[0], legacy=True), found[1]) if found else None

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        return await self._call("replace", self._store.replace, to_entity(entry), etag)

    # a lane's batch

    async def _insert_many(self, entries: Sequence[LedgerEntry]) -> list[Inserted]:
        """Create the rows with one entity group transaction per partition (100 at most each).

        With the legacy lookup on, each row is first looked up under the previous layout: a
        delivered or skipped old row is copied into the new layout and settles the claim; an old
        row another copy holds (an unexpired lease: the previous version delivering right now)
        holds it; otherwise (no old row, failed, rejected, expired) the claim goes on as usual.
        """
        answers: list[Inserted] = [None] * len(entries)
        rows = list(entries)
        copies: set[int] = set()
        if self.legacy_lookup:
            old = await each(self._get_legacy(e.event_key, e.destination) for e in entries)
            for i, (entry, found) in enumerate(zip(entries, old, strict=True)):
                if isinstance(found, LedgerUnavailable | LedgerRejected):
                    answers[i] = found
                elif found is not None and found[0].status in FINAL:
                    copies.add(i)
                    rows[i] = replace(found[0], event_key=entry.event_key)
                elif found is not None and found[0].held_at(entry.last_attempt or _utcnow()):
                    answers[i] = Held(found[0])
        todo = [i for i, a in enumerate(answers) if a is None]
        inserted = await self._create_rows([rows[i] for i in todo])
        for i, answer in zip(todo, inserted, strict=True):
            answers[i] = Settled(rows[i]) if i in copies and isinstance(answer, str) else answer
        return answers

    async def _create_rows(self, rows: Sequence[LedgerEntry]) -> list[Inserted]:
        answers: list[Inserted] = [None] * len(rows)
        groups = _groups(rows, lambda entry: partition_key(entry.destination, entry.event_key))
        done = await all_of(self._create_group([rows[i] for i in group]) for group in groups)
        for group, group_answers in zip(groups, done, strict=True):
            for i, answer in zip(group, group_answers, strict=True):
                answers[i] = answer
        return answers

    async def _create_group(self, rows: Sequence[LedgerEntry]) -> list[Inserted]:
        """One partition's rows: an entity group transaction creates them all, or fails as a
        whole naming the row that failed it. That row is settled on its own (it exists: the
        claim reads it; refused: a failure of its own) and the rest is tried again. A second
        existing row suggests a redelivered batch: the rest is read first, and only the rows
        not found are created."""
        answers: list[Inserted] = [None] * len(rows)
        pending = list(range(len(rows)))
        conflicts = 0
        while pending:
            if len(pending) == 1:
                (i,) = pending
                answers[i] = (await each([self._insert(rows[i])]))[0]
                break
            entities = [(to_entity(rows[i]), None) for i in pending]
            try:
                etags = await self._call("insert", self._store.transact, entities)
            except BatchError as exc:
                if (
                    exc.index is None
                    or not 0 <= exc.index < len(pending)
                    or not (exc.status == 409 or _is_refusal(exc.status))
                ):
                    failure = _failure("insert", exc)
                    for i in pending:
                        answers[i] = failure
                    break
                i = pending.pop(exc.index)
                if exc.status != 409:
                    answers[i] = _failure("insert", exc)
                    continue
                conflicts += 1
                if conflicts >= 2 and pending:
                    conflicts = 0
                    reads = await each(
                        self._get(rows[j].event_key, rows[j].destination) for j in pending
                    )
                    still: list[int] = []
                    for j, read in zip(pending, reads, strict=True):
                        if read is None:
                            still.append(j)
                        else:
                            answers[j] = Existing(*read) if isinstance(read, tuple) else read
                    pending = still
                continue
            except (LedgerUnavailable, LedgerRejected) as failure:
                for i in pending:
                    answers[i] = failure
                break
            for i, etag in zip(pending, etags, strict=True):
                answers[i] = etag
            break
        return answers

    async def _replace_many(
        self, pairs: Sequence[tuple[LedgerEntry, str | None]]
    ) -> list[Replaced]:
        """Replace the rows, each only if it still has its ETag: one entity group transaction
        per partition. A row that changed fails the whole transaction: that partition's rows
        are then replaced one by one, so each gets its own answer."""
        answers: list[Replaced] = [None] * len(pairs)
        groups = _groups(
            [entry for entry, _ in pairs],
            lambda entry: partition_key(entry.destination, entry.event_key),
        )
        done = await all_of(self._replace_group([pairs[i] for i in group]) for group in groups)
        for group, group_answers in zip(groups, done, strict=True):
            for i, answer in zip(group, group_answers, strict=True):
                answers[i] = answer
        return answers

    async def _replace_group(
        self, pairs: Sequence[tuple[LedgerEntry, str | None]]
    ) -> list[Replaced]:
        one_by_one = super()._replace_many
        if len(pairs) == 1 or any(etag is None for _, etag in pairs):
            return await one_by_one(pairs)
        entities = [(to_entity(entry), etag) for entry, etag in pairs]
        try:
            etags = await self._call("replace", self._store.transact, entities)
        except BatchError as exc:
            if exc.status in (404, 412) or _is_refusal(exc.status):
                return await one_by_one(pairs)
            failure = _failure("replace", exc)
            return [failure] * len(pairs)
        except (LedgerUnavailable, LedgerRejected) as failure:
            return [failure] * len(pairs)
        return list(etags)

    # an order's rows

    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        low, high = order_rows(order)
        queries = [
            f"PartitionKey eq {literal(f'{d}-{bucket(order)}')} and "
            f"RowKey ge {literal(low)} and RowKey lt {literal(high)}"
            for d in destinations
        ]
        if self.legacy_lookup:
            queries.append(f"PartitionKey ge {literal(low)} and PartitionKey lt {literal(high)}")
        found = await asyncio.gather(*(self._call("query", self._store.query, q) for q in queries))
        new = itertools.chain.from_iterable(found[: len(destinations)])
        rows = {(e.event_key, e.destination): e for e in map(from_entity, new)}
        if self.legacy_lookup:
            wanted = set(destinations)
            for entity in found[-1]:
                old = from_entity(entity, legacy=True)
                if old.destination in wanted:
                    rows.setdefault((old.event_key, old.destination), old)
        return list(rows.values())

    async def _rows_for_message(self, message_id: str) -> list[LedgerEntry]:
        """A filter on a property that is no key: the service reads the whole table, up to 1,000
        rows or 5 seconds per response, with a continuation for the rest (each response one
        billed request). Rows of the old layout (legacy lookup) are read the same way."""
        found = await self._call("query", self._store.query, f"MessageId eq {literal(message_id)}")
        rows = []
        for entity in found:
            legacy = ":" in str(entity.get("PartitionKey", ""))
            if legacy and not self.legacy_lookup:
                continue
            rows.append(from_entity(entity, legacy=legacy))
        return rows

    async def aclose(self) -> None:
        await self._store.close()


def _groups(items: Sequence[_T], partition: Callable[[_T], str]) -> list[list[int]]:
    """Indexes of `items` by partition, in chunks of at most EGT_MAX_ENTITIES."""
    by_partition: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_partition.setdefault(partition(item), []).append(i)
    return [
        indexes[start : start + EGT_MAX_ENTITIES]
        for indexes in by_partition.values()
        for start in range(0, len(indexes), EGT_MAX_ENTITIES)
    ]


def build_ledger(
    settings: LedgerSettings,
    *,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
    create_table: bool = True,
) -> Ledger:
    """The ledger DELIVERY_LEDGER_* describes: a connection string, or the table endpoint with the
    app's managed identity; NoLedger only when explicitly disabled. `trace_configs`: aiohttp's
    request hooks (the bench and the tests count requests with them). `create_table=False` for
    readers (Storage Table Data Reader cannot create a table)."""
    if not settings.enabled:
        log.warning("DELIVERY_LEDGER_ENABLED=false: duplicates are possible (local runs only)")
        return NoLedger()
    # Fail fast and let the message retry later rather than wait out long storage retries.
    options: dict[str, Any] = {
        "retry_total": 2,
        "connection_timeout": 5,
        "read_timeout": 10,
        "trace_configs": trace_configs,
    }
    if settings.connection_string:
        store = TableStore.from_connection_string(
            settings.connection_string, settings.table, **options
        )
    else:
        from azure.identity.aio import DefaultAzureCredential

        assert settings.table_service_uri
        store = TableStore(
            settings.table_service_uri,
            settings.table,
            credential=DefaultAzureCredential(),
            owns_credential=True,
            **options,
        )
    return TableLedger(store, legacy_lookup=settings.legacy_lookup, create_table=create_table)
