"""The delivery ledger: one row per (order event, destination), so nothing is sent twice.

Before a destination is called its row is claimed: inserted, or taken over with the row's ETag. A
delivered or skipped row means "do not call again"; a row another copy of the same event holds
(an unexpired lease) means "back off and retry later". Two copies racing for a row cannot both
win: the loser's insert or conditional replace fails. The claim logic lives here once; stores
(`MemoryLedger` for tests and the bench, `TableLedger` for Azure Table Storage) only supply three
primitive, ETag-guarded operations.

The one window for a duplicate: the vendor accepted the request and the process died before the
result was written. The row stays in flight until its lease ends; the next copy then sends again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode

from order_processor.model import DeliveryStatus, DestinationResult
from order_processor.settings import LedgerSettings

log = logging.getLogger("order_processor.ledger")


class LedgerStatus(StrEnum):
    IN_FLIGHT = "in-flight"
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"  # transiently: owed, and free for the next copy to claim
    REJECTED = "rejected"  # permanently: owed until someone fixes the cause and replays


#: A destination in one of these states is never called again for that event.
FINAL = frozenset({LedgerStatus.DELIVERED, LedgerStatus.SKIPPED})

_STATUS_FOR_RESULT = {
    DeliveryStatus.DELIVERED: LedgerStatus.DELIVERED,
    DeliveryStatus.SKIPPED: LedgerStatus.SKIPPED,
    DeliveryStatus.TRANSIENT_ERROR: LedgerStatus.FAILED,
    DeliveryStatus.PERMANENT_ERROR: LedgerStatus.REJECTED,
}


class LedgerUnavailable(Exception):
    """The ledger could not be read or written: deliver nothing, retry the message later."""


class LedgerRejected(Exception):
    """The storage service refused the request itself (a 4xx that is not an answer about the
    row): trying again would fail the same way, so it is not an outage to wait out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    event_key: str
    destination: str
    status: LedgerStatus
    message_id: str | None = None
    attempts: int = 0
    first_attempt: datetime | None = None
    last_attempt: datetime | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    http_status: int | None = None
    response_id: str | None = None

    def held_at(self, now: datetime) -> bool:
        return (
            self.status is LedgerStatus.IN_FLIGHT
            and self.lease_until is not None
            and self.lease_until > now
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """This copy may call the destination; `record` the result with the claim."""

    entry: LedgerEntry
    etag: str | None


@dataclass(frozen=True, slots=True)
class Settled:
    """Delivered or skipped earlier: do not call again."""

    entry: LedgerEntry


@dataclass(frozen=True, slots=True)
class Held:
    """Another copy of the same event is delivering right now (or won the race)."""

    entry: LedgerEntry | None


Gate = Claimed | Settled | Held
LedgerFailure = LedgerUnavailable | LedgerRejected


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One event a lane wants to deliver."""

    event_key: str
    message_id: str | None = None


def _gate_or_failure(found: object) -> Any:
    """gather(return_exceptions=True)'s item: a ledger failure stays a value; anything else
    unexpected is raised, as it would have been without the batch."""
    if isinstance(found, LedgerUnavailable | LedgerRejected):
        return found
    if isinstance(found, BaseException):
        raise found
    return found


class Ledger(ABC):
    """Claim/record on top of three ETag-guarded primitives a store implements."""

    async def claim(
        self,
        event_key: str,
        destination: str,
        *,
        message_id: str | None,
        now: datetime,
        lease: timedelta,
    ) -> Gate:
        fresh = LedgerEntry(
            event_key=event_key,
            destination=destination,
            status=LedgerStatus.IN_FLIGHT,
            message_id=message_id,
            first_attempt=now,
            last_attempt=now,
            lease_until=now + lease,
        )
        etag = await self._insert(fresh)
        if etag is not None:
            return Claimed(fresh, etag)
        found = await self._get(event_key, destination)
        if found is None:  # deleted in between: someone is tidying up; try again later
            return Held(None)
        current, current_etag = found
        if current.status in FINAL:
            return Settled(current)
        if current.held_at(now):
            return Held(current)
        taken = replace(
            current,
            status=LedgerStatus.IN_FLIGHT,
            message_id=message_id,
            last_attempt=now,
            lease_until=now + lease,
        )
        etag = await self._replace(taken, current_etag)
        return Claimed(taken, etag) if etag is not None else Held(current)

    async def record(self, claim: Claimed, result: DestinationResult, *, now: datetime) -> None:
        """Write the outcome over our claim; if the claim was taken over meanwhile, the newer
        holder's row wins and ours is only logged."""
        entry = replace(
            claim.entry,
            status=_STATUS_FOR_RESULT[result.status],
            attempts=claim.entry.attempts + result.attempts,
            last_attempt=now,
            lease_until=None,
            last_error=None if result.status is DeliveryStatus.DELIVERED else result.detail,
            http_status=result.http_status,
            response_id=result.response_id,
        )
        if await self._replace(entry, claim.etag) is None:
            log.warning(
                "ledger row %s/%s was taken over before its result was written",
                claim.entry.event_key,
                claim.entry.destination,
                extra={"event_key": claim.entry.event_key, "destination": result.destination},
            )

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate | LedgerFailure]:
        """One gate per request, in order (a batch lane's messages for one destination). A
        failure of one request is returned in its place, not raised. Stores that can write many
        rows in one request override this; the default claims one by one, concurrently."""
        gates = await asyncio.gather(
            *(
                self.claim(r.event_key, destination, message_id=r.message_id, now=now, lease=lease)
                for r in requests
            ),
            return_exceptions=True,
        )
        return [_gate_or_failure(g) for g in gates]

    async def record_many(
        self, recorded: Sequence[tuple[Claimed, DestinationResult]], *, now: datetime
    ) -> list[LedgerFailure | None]:
        """Write each result over its claim; a failure is returned in its place, not raised."""
        done = await asyncio.gather(
            *(self.record(claim, result, now=now) for claim, result in recorded),
            return_exceptions=True,
        )
        return [_gate_or_failure(d) if d is not None else None for d in done]

    async def read(self, event_key: str, destination: str) -> LedgerEntry | None:
        found = await self._get(event_key, destination)
        return found[0] if found else None

    async def aclose(self) -> None:
        return None

    @abstractmethod
    async def _insert(self, entry: LedgerEntry) -> str | None:
        """Insert if absent; the new ETag, or None when the row exists."""

    @abstractmethod
    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        """The row and its ETag, or None."""

    @abstractmethod
    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        """Replace if the row still has `etag`; the new ETag, or None when it changed."""


class MemoryLedger(Ledger):
    """An in-process ledger with the same ETag semantics (tests, the bench)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[LedgerEntry, str]] = {}
        self._versions = itertools.count(1)
        #: testing hook: when set, every operation raises it (an unreachable ledger)
        self.failure: Exception | None = None

    def _check(self) -> None:
        if self.failure is not None:
            raise LedgerUnavailable(str(self.failure)) from self.failure

    def _store(self, entry: LedgerEntry) -> str:
        etag = f'W/"{next(self._versions)}"'
        self.rows[(entry.event_key, entry.destination)] = (entry, etag)
        return etag

    async def _insert(self, entry: LedgerEntry) -> str | None:
        self._check()
        if (entry.event_key, entry.destination) in self.rows:
            return None
        return self._store(entry)

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        self._check()
        return self.rows.get((event_key, destination))

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        self._check()
        current = self.rows.get((entry.event_key, entry.destination))
        if current is None or current[1] != etag:
            return None
        return self._store(entry)


class NoLedger(Ledger):
    """DELIVERY_LEDGER_ENABLED=false (local runs only): every copy may send. Unsafe in Azure."""

    async def _insert(self, entry: LedgerEntry) -> str | None:
        return ""

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        return None

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        return ""


# -- Azure Table Storage ---------------------------------------------------------------------

_DATES = ("FirstAttemptUtc", "LastAttemptUtc", "LeaseUntilUtc")


def to_entity(entry: LedgerEntry) -> dict[str, Any]:
    """PartitionKey = event key (one partition per order event), RowKey = destination."""
    entity: dict[str, Any] = {
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


def from_entity(entity: dict[str, Any]) -> LedgerEntry:
    def when(name: str) -> datetime | None:
        value = entity.get(name)
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    first, last, lease = (when(name) for name in _DATES)
    return LedgerEntry(
        event_key=str(entity["PartitionKey"]),
        destination=str(entity["RowKey"]),
        status=LedgerStatus(entity["Status"]),
        message_id=entity.get("MessageId"),
        attempts=int(entity.get("Attempts", 0)),
        first_attempt=first,
        last_attempt=last,
        lease_until=lease,
        last_error=entity.get("LastError"),
        http_status=entity.get("HttpStatus"),
        response_id=entity.get("ResponseId"),
    )


class TableLedger(Ledger):
    """The ledger in an Azure Table (`DELIVERY_LEDGER_TABLE`), created on first use.

    Any storage failure other than the ETag/exists answers becomes LedgerUnavailable, so the
    message is retried later rather than delivered without a record.
    """

    def __init__(self, table: Any) -> None:
        # `table` is an azure.data.tables.aio.TableClient (typed loosely: the SDK is untyped here)
        self._table = table
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def _ensure_table(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            with contextlib.suppress(ResourceExistsError):
                await self._table.create_table()
            self._ready = True

    async def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        try:
            await self._ensure_table()
            return await getattr(self._table, operation)(*args, **kwargs)
        except AzureError as exc:
            if _is_answer(exc):
                raise
            if _is_refusal(exc):
                raise LedgerRejected(
                    f"ledger {operation} refused: HTTP {getattr(exc, 'status_code', '?')} "
                    f"{getattr(exc, 'error_code', None) or type(exc).__name__}"
                ) from exc
            raise LedgerUnavailable(f"ledger {operation} failed: {type(exc).__name__}") from exc
        except OSError as exc:
            raise LedgerUnavailable(f"ledger {operation} failed: {type(exc).__name__}") from exc

    async def _insert(self, entry: LedgerEntry) -> str | None:
        try:
            meta = await self._call("create_entity", to_entity(entry))
        except ResourceExistsError:
            return None
        return str(meta["etag"])

    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        try:
            entity = await self._call("get_entity", event_key, destination)
        except ResourceNotFoundError:
            return None
        return from_entity(dict(entity)), str(entity.metadata["etag"])

    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        try:
            meta = await self._call(
                "update_entity",
                to_entity(entry),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(meta["etag"])

    async def aclose(self) -> None:
        await self._table.close()


def _is_refusal(exc: AzureError) -> bool:
    """A 4xx other than timeouts and throttling: the request is wrong, not the service down."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in {408, 429}


def _is_answer(exc: Exception) -> bool:
    """Exists / not found / precondition failed are answers, not outages."""
    return isinstance(exc, ResourceExistsError | ResourceModifiedError | ResourceNotFoundError)


def build_ledger(settings: LedgerSettings) -> Ledger:
    """The ledger DELIVERY_LEDGER_* describes: a connection string, or the table endpoint with the
    app's managed identity; NoLedger only when explicitly disabled."""
    if not settings.enabled:
        log.warning("DELIVERY_LEDGER_ENABLED=false: duplicates are possible (local runs only)")
        return NoLedger()
    from azure.data.tables.aio import TableClient

    # Fail fast and let the message retry later rather than wait out long storage retries.
    options: dict[str, Any] = {"retry_total": 2, "connection_timeout": 5, "read_timeout": 10}
    if settings.connection_string:
        table = TableClient.from_connection_string(
            settings.connection_string, table_name=settings.table, **options
        )
    else:
        from azure.identity.aio import DefaultAzureCredential

        assert settings.table_service_uri
        table = TableClient(
            endpoint=settings.table_service_uri,
            table_name=settings.table,
            credential=DefaultAzureCredential(),
            **options,
        )
    return TableLedger(table)
