"""The delivery ledger: one row per (order event, destination), so nothing is sent twice.

Before a destination is called its row is claimed: inserted, or taken over with the row's ETag. A
delivered or skipped row means "do not call again"; a row another copy of the same event holds
(an unexpired lease) means "back off and retry later". Two copies racing for a row cannot both
win: the loser's insert or conditional replace fails. The claim logic lives here once, for one
row and for a lane's batch alike; stores (`MemoryLedger` for tests and the bench, `TableLedger`
for Azure Table Storage) only supply ETag-guarded primitives, which a store may carry out many
rows per request (Table Storage's entity group transactions).

Row keys (docs/ledger.md): PartitionKey = `<destination>-<bucket>`, RowKey = the event key, where
the bucket is one of LEDGER_BUCKETS digits from a hash of the order key. A lane's batch (one
destination) falls into at most LEDGER_BUCKETS partitions, and one order's rows are a RowKey range
in one partition per destination (`rows_for_order`).

The one window for a duplicate: the vendor accepted the request and the process died before the
result was written. The row stays in flight until its lease ends; the next copy then sends again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import logging
import re
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate, parsedate_to_datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from yarl import URL

from order_processor.model import DeliveryStatus, DestinationResult, order_key, truncate
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


@dataclass(frozen=True, slots=True)
class Existing:
    """A store's answer to an insert: the row was there already, and here it is (read while
    settling a batch), so the claim needs no second read."""

    entry: LedgerEntry
    etag: str


#: What a store's batch insert answers per row: the new ETag; None when the row exists (the
#: claim then reads it); the row as found; a gate the store decided itself (the legacy lookup);
#: or a failure of that row alone.
Inserted = str | None | Existing | Gate | LedgerFailure
#: A batch replace, per row: the new ETag; None when the row changed (or is gone); a failure.
Replaced = str | None | LedgerFailure

_T = TypeVar("_T")


async def _each(calls: Iterable[Awaitable[_T]]) -> list[_T | LedgerFailure]:
    """Run concurrently; a ledger failure stays in its place as a value, anything else unexpected
    is raised, as it would have been one by one. One call is awaited as it is (no task: the
    single-message path makes many of these)."""
    pending = list(calls)
    if len(pending) == 1:
        try:
            return [await pending[0]]
        except (LedgerUnavailable, LedgerRejected) as failure:
            return [failure]
    if not pending:
        return []
    done = await asyncio.gather(*pending, return_exceptions=True)
    for item in done:
        if isinstance(item, BaseException) and not isinstance(item, LedgerFailure):
            raise item
    return done  # type: ignore[return-value]


async def _all(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """asyncio.gather, without a task for a single call."""
    pending = list(calls)
    if len(pending) == 1:
        return [await pending[0]]
    return list(await asyncio.gather(*pending))


# -- Keys ------------------------------------------------------------------------------------

#: Partitions per destination (docs/ledger.md has the numbers): a lane's batch needs at most this
#: many entity group transactions per step, and one destination can take 8 x 2,000 entity
#: writes/s (the per-partition target) before its partitions, not the account, are the limit.
#: Changing it moves every row: it needs a migration like DELIVERY_LEDGER_LEGACY_LOOKUP.
LEDGER_BUCKETS = 8


def order_key_of(event_key: str) -> str:
    """The order key an event key starts with (`<order key>:<eventType>:<hash>`; order keys are
    percent-encoded, so they hold no colon)."""
    return event_key.partition(":")[0]


def bucket(order: str) -> str:
    """The order key's bucket: one digit, the same for all of an order's events."""
    return str(hashlib.sha256(order.encode()).digest()[0] % LEDGER_BUCKETS)


def partition_key(destination: str, event_key: str) -> str:
    return f"{destination}-{bucket(order_key_of(event_key))}"


def _order_rows(order: str) -> tuple[str, str]:
    """The RowKey (or legacy PartitionKey) range holding every event key of one order:
    `<order key>:` <= key < `<order key>;` (';' follows ':')."""
    return f"{order}:", f"{order};"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _registered_destinations() -> list[str]:
    from order_processor.destinations import DESTINATIONS  # the registry, imported when asked

    return list(DESTINATIONS)


# -- The claim/record rules, once for every store -------------------------------------------


def _recorded(claim: Claimed, result: DestinationResult, now: datetime) -> LedgerEntry:
    """The row once the result is in."""
    return replace(
        claim.entry,
        status=_STATUS_FOR_RESULT[result.status],
        attempts=claim.entry.attempts + result.attempts,
        last_attempt=now,
        lease_until=None,
        # a vendor's error text can be long; a Table string property holds 64 KiB
        last_error=None if result.status is DeliveryStatus.DELIVERED else truncate(result.detail),
        http_status=result.http_status,
        response_id=result.response_id,
    )


def _taken_over(claim: Claimed, result: DestinationResult) -> None:
    log.warning(
        "ledger row %s/%s was taken over before its result was written",
        claim.entry.event_key,
        claim.entry.destination,
        extra={"event_key": claim.entry.event_key, "destination": result.destination},
    )


class Ledger(ABC):
    """Claim/record on top of three ETag-guarded primitives a store implements (`_insert`,
    `_get`, `_replace`), plus `_rows_for_order`. A lane's batch is claimed and recorded one row
    at a time, concurrently; `BatchLedger` does it with a store's many-row primitives instead."""

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
        if await self._replace(_recorded(claim, result, now), claim.etag) is None:
            _taken_over(claim, result)

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate | LedgerFailure]:
        """One gate per request, in order (a batch lane's messages for one destination): the
        same answers as claiming one by one (the same event twice: the first copy claims, the
        second finds it held). A failure of one request is returned in its place, not raised.
        Here: one by one, concurrently."""
        return await _each(
            self.claim(r.event_key, destination, message_id=r.message_id, now=now, lease=lease)
            for r in requests
        )

    async def record_many(
        self, recorded: Sequence[tuple[Claimed, DestinationResult]], *, now: datetime
    ) -> list[LedgerFailure | None]:
        """Write each result over its claim; a failure is returned in its place, not raised."""
        return await _each(self.record(claim, result, now=now) for claim, result in recorded)

    async def read(self, event_key: str, destination: str) -> LedgerEntry | None:
        found = await self._get(event_key, destination)
        return found[0] if found else None

    async def rows_for_order(
        self, order_id: str, destinations: Iterable[str] | None = None
    ) -> list[LedgerEntry]:
        """Every row of one order (all its events, each destination), by destination then event
        key: one RowKey range in one partition per destination, never a table scan.
        `destinations` defaults to every registered destination."""
        names = sorted(_registered_destinations() if destinations is None else destinations)
        rows = await self._rows_for_order(order_key(order_id), names)
        return sorted(rows, key=lambda e: (e.destination, e.event_key))

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

    @abstractmethod
    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        """Every row whose event key starts with `<order>:`, for these destinations."""


class BatchLedger(Ledger):
    """The same rules, with a store's many-row primitives: a batch's rows are inserted with
    `_insert_many`, read where they exist, and taken over or recorded with `_replace_many`, so a
    store that writes many rows per request (Table Storage's entity group transactions) needs
    a few requests per batch instead of one or more per row. One row (the single-message path)
    takes `Ledger`'s single-row steps, the same requests with fewer layers in between, unless
    `_one_row_as_batch` says its claim needs the batch steps too."""

    @property
    def _one_row_as_batch(self) -> bool:
        return False

    async def claim(
        self,
        event_key: str,
        destination: str,
        *,
        message_id: str | None,
        now: datetime,
        lease: timedelta,
    ) -> Gate:
        if not self._one_row_as_batch:
            return await super().claim(
                event_key, destination, message_id=message_id, now=now, lease=lease
            )
        (gate,) = await self.claim_many(
            [ClaimRequest(event_key, message_id)], destination, now=now, lease=lease
        )
        if isinstance(gate, LedgerUnavailable | LedgerRejected):
            raise gate
        return gate

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate | LedgerFailure]:
        if len(requests) == 1 and not self._one_row_as_batch:
            return await super().claim_many(requests, destination, now=now, lease=lease)
        first: dict[str, int] = {}
        fresh: list[LedgerEntry] = []
        slots: list[int] = []
        for request in requests:
            slot = first.get(request.event_key)
            if slot is None:
                slot = first[request.event_key] = len(fresh)
                fresh.append(
                    LedgerEntry(
                        event_key=request.event_key,
                        destination=destination,
                        status=LedgerStatus.IN_FLIGHT,
                        message_id=request.message_id,
                        first_attempt=now,
                        last_attempt=now,
                        lease_until=now + lease,
                    )
                )
            slots.append(slot)
        gates = await self._claim_rows(fresh, now=now, lease=lease) if fresh else []
        answered: set[int] = set()
        out: list[Gate | LedgerFailure] = []
        for slot in slots:
            gate = gates[slot]
            if slot in answered and isinstance(gate, Claimed):
                gate = Held(gate.entry)  # the same event again in this batch: the first holds it
            answered.add(slot)
            out.append(gate)
        return out

    async def _claim_rows(
        self, fresh: Sequence[LedgerEntry], *, now: datetime, lease: timedelta
    ) -> list[Gate | LedgerFailure]:
        """`claim`'s steps for many rows: insert every row; read those that exist; take over
        those neither final nor held."""
        inserted = await self._insert_many(fresh)
        gates: list[Gate | LedgerFailure | None] = [None] * len(fresh)
        known: dict[int, Existing] = {}
        unread: list[int] = []
        for i, (entry, answer) in enumerate(zip(fresh, inserted, strict=True)):
            if isinstance(answer, str):
                gates[i] = Claimed(entry, answer)
            elif answer is None:
                unread.append(i)
            elif isinstance(answer, Existing):
                known[i] = answer
            else:
                gates[i] = answer
        reads = await _each(self._get(fresh[i].event_key, fresh[i].destination) for i in unread)
        for i, read in zip(unread, reads, strict=True):
            if read is None:  # deleted in between: someone is tidying up; try again later
                gates[i] = Held(None)
            elif isinstance(read, LedgerUnavailable | LedgerRejected):
                gates[i] = read
            else:
                known[i] = Existing(*read)
        takeovers: list[tuple[int, LedgerEntry, LedgerEntry, str]] = []
        for i, found in sorted(known.items()):
            current = found.entry
            if current.status in FINAL:
                gates[i] = Settled(current)
            elif current.held_at(now):
                gates[i] = Held(current)
            else:
                taken = replace(
                    current,
                    status=LedgerStatus.IN_FLIGHT,
                    message_id=fresh[i].message_id,
                    last_attempt=now,
                    lease_until=now + lease,
                )
                takeovers.append((i, current, taken, found.etag))
        if takeovers:
            replaced = await self._replace_many([(t, etag) for _, _, t, etag in takeovers])
            for (i, current, taken, _), answer in zip(takeovers, replaced, strict=True):
                if isinstance(answer, str):
                    gates[i] = Claimed(taken, answer)
                elif answer is None:
                    gates[i] = Held(current)
                else:
                    gates[i] = answer
        assert all(g is not None for g in gates)
        return gates  # type: ignore[return-value]

    async def record_many(
        self, recorded: Sequence[tuple[Claimed, DestinationResult]], *, now: datetime
    ) -> list[LedgerFailure | None]:
        if len(recorded) == 1:
            return await super().record_many(recorded, now=now)
        answers = await self._replace_many(
            [(_recorded(claim, result, now), claim.etag) for claim, result in recorded]
        )
        out: list[LedgerFailure | None] = []
        for (claim, result), answer in zip(recorded, answers, strict=True):
            if answer is None:
                _taken_over(claim, result)
            out.append(None if answer is None or isinstance(answer, str) else answer)
        return out

    async def _insert_many(self, entries: Sequence[LedgerEntry]) -> list[Inserted]:
        """Insert each row if absent (see `Inserted`); by default one by one, concurrently."""
        answers: list[Inserted] = [*await _each(self._insert(e) for e in entries)]
        return answers

    async def _replace_many(
        self, pairs: Sequence[tuple[LedgerEntry, str | None]]
    ) -> list[Replaced]:
        """Replace each row that still has its ETag; by default one by one, concurrently."""
        answers: list[Replaced] = [*await _each(self._replace(e, etag) for e, etag in pairs)]
        return answers


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


# -- Azure Table Storage: the rows -----------------------------------------------------------

_DATE_TYPE = "Edm.DateTime"
#: the most operations one entity group transaction may hold (docs/ledger.md)
EGT_MAX_ENTITIES = 100


def _when(value: datetime) -> str:
    """An Edm.DateTime value: ISO 8601 in UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _parse_when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_entity(entry: LedgerEntry) -> dict[str, Any]:
    """The row as Table Storage's JSON: PartitionKey = `<destination>-<bucket>`, RowKey = event
    key. Absent values are left out, so a replace removes them."""
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(entry.destination, entry.event_key),
        "RowKey": entry.event_key,
        "Status": entry.status.value,
        "Attempts": entry.attempts,
    }
    for name, value in (
        ("MessageId", entry.message_id),
        ("LastError", entry.last_error),
        ("HttpStatus", entry.http_status),
        ("ResponseId", entry.response_id),
    ):
        if value is not None:
            entity[name] = value
    for name, when in (
        ("FirstAttemptUtc", entry.first_attempt),
        ("LastAttemptUtc", entry.last_attempt),
        ("LeaseUntilUtc", entry.lease_until),
    ):
        if when is not None:
            entity[name] = _when(when)
            entity[name + "@odata.type"] = _DATE_TYPE
    return entity


def from_entity(entity: dict[str, Any], *, legacy: bool = False) -> LedgerEntry:
    """A row as read back (JSON without type annotations: the dates are ISO strings); `legacy`:
    a row of the layout before the lanes (PartitionKey = event key, RowKey = destination)."""
    if legacy:
        event_key, destination = str(entity["PartitionKey"]), str(entity["RowKey"])
    else:
        event_key = str(entity["RowKey"])
        destination = str(entity["PartitionKey"]).rpartition("-")[0]
    http_status = entity.get("HttpStatus")
    return LedgerEntry(
        event_key=event_key,
        destination=destination,
        status=LedgerStatus(entity["Status"]),
        message_id=entity.get("MessageId"),
        attempts=int(entity.get("Attempts", 0)),
        first_attempt=_parse_when(entity.get("FirstAttemptUtc")),
        last_attempt=_parse_when(entity.get("LastAttemptUtc")),
        lease_until=_parse_when(entity.get("LeaseUntilUtc")),
        last_error=entity.get("LastError"),
        http_status=None if http_status is None else int(http_status),
        response_id=entity.get("ResponseId"),
    )


# -- Azure Table Storage: the wire -----------------------------------------------------------

_API_VERSION = "2019-02-02"
_STORAGE_SCOPE = "https://storage.azure.com/.default"
_JSON = "application/json"
_NO_METADATA = "application/json;odata=nometadata"
#: refresh a bearer token this long before it expires (as azure-core's token policy does)
_TOKEN_REFRESH_SECONDS = 300


class StorageError(Exception):
    """Table Storage answered with an error status (the error code and message from its body)."""

    def __init__(self, status: int, code: str | None, message: str = "") -> None:
        super().__init__(f"HTTP {status} {code or ''}".strip())
        self.status = status
        self.code = code
        self.message = message


class BatchError(StorageError):
    """An entity group transaction failed as a whole; `index` is the operation that failed it,
    when the service said (its message starts with `<index>:`)."""

    def __init__(self, status: int, code: str | None, message: str, index: int | None) -> None:
        super().__init__(status, code, message)
        self.index = index


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def error(self) -> StorageError:
        code, message = _odata_error(self.body.decode(errors="replace"))
        return StorageError(self.status, code or self.headers.get("x-ms-error-code"), message)


class _Authorization:
    """The Authorization of one attempt: Shared Key (an HMAC-SHA256 of the verb, Content-MD5,
    Content-Type, x-ms-date and /account + the path as sent: the string azure-data-tables'
    SharedKeyCredentialPolicy signs, checked by Azurite), a SAS (in the query instead), or a
    bearer token from a token credential (the app's managed identity), kept until 5 minutes
    before it expires and fetched by one request at a time."""

    def __init__(self, credential: object) -> None:
        self.sas: str | None = None
        self._key: bytes | None = None
        self._token_credential: Any = None
        self._token: Any = None
        self._token_lock = asyncio.Lock()
        if isinstance(credential, AzureNamedKeyCredential):
            name, key = credential.named_key
            self._account, self._prefix = "/" + name, f"SharedKey {name}:"
            self._key = base64.b64decode(key)
        elif isinstance(credential, AzureSasCredential):
            self.sas = credential.signature.lstrip("?")
        elif hasattr(credential, "get_token"):
            self._token_credential = credential
        else:
            raise TypeError(f"unsupported ledger credential: {type(credential).__name__}")

    async def header(self, method: str, url: URL, headers: Mapping[str, str]) -> str | None:
        if self._key is not None:
            signed = "\n".join(
                (
                    method,
                    headers.get("Content-MD5", ""),
                    headers.get("Content-Type", ""),
                    headers["x-ms-date"],
                    self._account + url.raw_path,
                )
            )
            digest = hmac.new(self._key, signed.encode(), hashlib.sha256).digest()
            return self._prefix + base64.b64encode(digest).decode()
        if self._token_credential is not None:
            return "Bearer " + await self._bearer()
        return None

    async def _bearer(self) -> str:
        token = self._token
        if token is None or token.expires_on - _TOKEN_REFRESH_SECONDS <= time.time():
            async with self._token_lock:
                token = self._token
                if token is None or token.expires_on - _TOKEN_REFRESH_SECONDS <= time.time():
                    token = self._token = await self._token_credential.get_token(_STORAGE_SCOPE)
        return str(token.token)


def _key(value: str) -> str:
    """A key inside `Table(PartitionKey='...',RowKey='...')`: quotes doubled, then URL-encoded."""
    return quote(value.replace("'", "''"), safe="")


def _literal(value: str) -> str:
    """A string literal in a $filter."""
    return "'" + value.replace("'", "''") + "'"


_INDEX = re.compile(r"^(\d+):")
#: statuses worth another attempt (azure-core's RetryPolicy), and those a POST is retried on
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_POST_RETRY_STATUSES = frozenset({500, 503, 504})


class TableStore:
    """The ledger's few Table Storage operations over its REST API: one aiohttp connection pool
    per process, no SDK pipeline.

    Why not azure-data-tables' TableClient: per request, its generated serializer, the entity
    (de)serialisation and a pipeline of thirteen policies cost ~0.7 ms of CPU here, and its
    aiohttp session, created with trust_env, reads ~/.netrc and the proxy variables in a worker
    thread twice per request. Why not azure-core's pipeline either (with only the policies the
    ledger needs it was the first step): it still cost 37% of each request's CPU (0.39 against
    0.25 ms, docs/performance.md, "The ledger's cost"), which the single-message path pays twice
    per delivery. What the ledger needs from it is kept, as it was configured:

    - retries (`retry_total`, 2) on azure-core's rules: GET and PUT after a connection or read
      error and on 408, 429, 500, 502, 503, 504; POST (insert, transactions) on 500, 503, 504
      only; any error status with Retry-After after that delay; otherwise 0 s, then 1.6 s;
    - timeouts: connect 5 s, each read 10 s;
    - a client request id (x-ms-client-request-id, the same for every attempt), the storage
      headers, the credential (Shared Key, SAS or a token: `_Authorization`);
    - proxies from the environment, only when the environment sets one (trust_env costs two
      thread hops per request).

    Left out: distributed tracing (the lane's span covers its ledger calls), HTTP logging (the
    app keeps the azure loggers at WARNING), redirects and secondary-location routing (the
    ledger uses the primary endpoint).
    """

    def __init__(
        self,
        endpoint: str,
        table: str,
        *,
        credential: object,
        retry_total: int = 2,
        retry_backoff: float = 0.8,
        connection_timeout: float = 5,
        read_timeout: float = 10,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        user_agent: str = "order-processor-ledger",
        owns_credential: bool = False,
    ) -> None:
        self.table = table
        self._account_url = endpoint.rstrip("/")
        self._table_url = f"{self._account_url}/{table}"
        self._auth = _Authorization(credential)
        self._credential = credential
        self._owns_credential = owns_credential
        self._retry_total = retry_total
        self._backoff = retry_backoff
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=connection_timeout, sock_read=read_timeout
        )
        self._trace_configs = list(trace_configs)
        self._fixed = {
            "x-ms-version": _API_VERSION,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "User-Agent": user_agent,
        }
        self._session: aiohttp.ClientSession | None = None
        self._second = -1
        self._date = ""

    @classmethod
    def from_connection_string(cls, connection: str, table: str, **options: Any) -> TableStore:
        """A storage connection string (or UseDevelopmentStorage=true), read the way
        azure-data-tables reads it."""
        from azure.data.tables import TableClient

        parsed = TableClient.from_connection_string(connection, table_name=table)
        try:
            return cls(parsed.url, table, credential=parsed.credential, **options)
        finally:
            parsed.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()

    def _url(self, text: str) -> URL:
        """A URL built here, already percent-encoded (signed as sent)."""
        if self._auth.sas:
            text += ("&" if "?" in text else "?") + self._auth.sas
        return URL(text, encoded=True)

    def _x_ms_date(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._date = second, formatdate(second, usegmt=True)
        return self._date

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None = None
    ) -> _Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=bool(urllib.request.getproxies()),
                trace_configs=self._trace_configs or None,
            )
        headers |= self._fixed
        headers["x-ms-client-request-id"] = str(uuid.uuid4())
        retries = 0
        while True:
            headers["x-ms-date"] = self._x_ms_date()
            authorization = await self._auth.header(method, url, headers)
            if authorization:
                headers["Authorization"] = authorization
            try:
                async with self._session.request(method, url, headers=headers, data=body) as got:
                    answer = _Answer(got.status, got.headers, await got.read())
            except (TimeoutError, aiohttp.ClientError):
                if retries >= self._retry_total or method == "POST":
                    raise
                delay = self._backoff * 2**retries if retries else 0.0
            else:
                if retries >= self._retry_total or answer.status < 400:
                    return answer
                retry_after = _retry_after(answer.headers.get("Retry-After"))
                if retry_after is not None:
                    delay = retry_after
                elif answer.status in (
                    _POST_RETRY_STATUSES if method == "POST" else _RETRY_STATUSES
                ):
                    delay = self._backoff * 2**retries if retries else 0.0
                else:
                    return answer
            retries += 1
            await asyncio.sleep(delay)

    async def create_table(self) -> None:
        answer = await self._send(
            "POST",
            self._url(f"{self._account_url}/Tables"),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "Prefer": "return-no-content"},
            json.dumps({"TableName": self.table}).encode(),
        )
        if answer.status not in (201, 204, 409):
            raise answer.error()

    async def insert(self, entity: dict[str, Any]) -> str | None:
        """The new row's ETag, or None when a row with its keys exists."""
        answer = await self._send(
            "POST",
            self._url(self._table_url),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "Prefer": "return-no-content"},
            json.dumps(entity).encode(),
        )
        if answer.status in (201, 204):
            return answer.headers["ETag"]
        if answer.status == 409:
            return None
        raise answer.error()

    def _entity_url(self, partition: str, row: str) -> str:
        return f"{self._table_url}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}')"

    async def get(self, partition: str, row: str) -> tuple[dict[str, Any], str] | None:
        answer = await self._send(
            "GET", self._url(self._entity_url(partition, row)), {"Accept": _NO_METADATA}
        )
        if answer.status == 200:
            return json.loads(answer.body), answer.headers["ETag"]
        if answer.status == 404:
            return None
        raise answer.error()

    async def replace(self, entity: dict[str, Any], etag: str | None) -> str | None:
        """The new ETag, or None when the row no longer has `etag` (or is gone)."""
        answer = await self._send(
            "PUT",
            self._url(self._entity_url(entity["PartitionKey"], entity["RowKey"])),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "If-Match": etag or "*"},
            json.dumps(entity).encode(),
        )
        if answer.status == 204:
            return answer.headers["ETag"]
        if answer.status in (404, 412):
            return None
        raise answer.error()

    async def query(self, where: str) -> list[dict[str, Any]]:
        """Every row matching an OData $filter, following continuation tokens."""
        found: list[dict[str, Any]] = []
        params = "$filter=" + quote(where, safe="")
        while True:
            answer = await self._send(
                "GET", self._url(f"{self._table_url}()?{params}"), {"Accept": _NO_METADATA}
            )
            if answer.status != 200:
                raise answer.error()
            found += json.loads(answer.body).get("value", [])
            partition = answer.headers.get("x-ms-continuation-NextPartitionKey")
            if not partition:
                return found
            params = "$filter=" + quote(where, safe="") + "&NextPartitionKey=" + quote(partition)
            row = answer.headers.get("x-ms-continuation-NextRowKey")
            if row:
                params += "&NextRowKey=" + quote(row)

    async def transact(self, operations: Sequence[tuple[dict[str, Any], str | None]]) -> list[str]:
        """One entity group transaction (all rows in one partition, at most 100): each entity is
        created (etag None) or replaced if it still has its ETag. Every new ETag, in order; or
        BatchError when it failed as a whole."""
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for index, (entity, etag) in enumerate(operations):
            if etag is None:
                line = f"POST {self._table_url} HTTP/1.1\r\nPrefer: return-no-content\r\n"
            else:
                url = self._entity_url(entity["PartitionKey"], entity["RowKey"])
                line = f"PUT {url} HTTP/1.1\r\nIf-Match: {etag}\r\n"
            parts.append(
                f"--{changeset}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n"
                f"{line}Content-Type: {_JSON}\r\nAccept: {_NO_METADATA}\r\n"
                f"DataServiceVersion: 3.0;\r\n\r\n{json.dumps(entity)}\r\n"
            )
        parts.append(f"--{changeset}--\r\n--{batch}--\r\n")
        answer = await self._send(
            "POST",
            self._url(f"{self._account_url}/$batch"),
            {"Content-Type": f"multipart/mixed; boundary={batch}", "Accept": _JSON},
            "".join(parts).encode(),
        )
        if answer.status != 202:
            raise answer.error()
        answers = _batch_answers(answer.body.decode(errors="replace"))
        failed = [a for a in answers if not 200 <= a[0] < 300]
        if failed or len(answers) != len(operations):
            status, _, body = failed[0] if failed else (500, None, "")
            code, message = _odata_error(body)
            match = _INDEX.match(message)
            raise BatchError(status, code, message, int(match.group(1)) if match else None)
        return [str(etag) for _, etag, _ in answers]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number of seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _odata_error(body: str) -> tuple[str | None, str]:
    """The code and message of Table Storage's JSON error body."""
    try:
        error = json.loads(body)["odata.error"]
        return str(error.get("code")), str(error.get("message", {}).get("value", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, ""


_PART = re.compile(r"^HTTP/1\.[01] (\d{3})", re.MULTILINE)
_ETAG = re.compile(r"^ETag:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def _batch_answers(text: str) -> list[tuple[int, str | None, str]]:
    """Each operation's status, ETag and body in a multipart/mixed batch response."""
    answers: list[tuple[int, str | None, str]] = []
    starts = [m.start() for m in _PART.finditer(text)] + [len(text)]
    for begin, end in itertools.pairwise(starts):
        part = text[begin:end]
        head, _, body = part.replace("\r\n", "\n").partition("\n\n")
        etag = _ETAG.search(head)
        answers.append((int(part[9:12]), etag.group(1) if etag else None, body.split("\n--", 1)[0]))
    return answers


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

    def __init__(self, store: TableStore, *, legacy_lookup: bool = False) -> None:
        self._store = store
        self.legacy_lookup = legacy_lookup
        self._ready = False
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
            old = await _each(self._get_legacy(e.event_key, e.destination) for e in entries)
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
        done = await _all(self._create_group([rows[i] for i in group]) for group in groups)
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
                answers[i] = (await _each([self._insert(rows[i])]))[0]
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
                    reads = await _each(
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
        done = await _all(self._replace_group([pairs[i] for i in group]) for group in groups)
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
        low, high = _order_rows(order)
        queries = [
            f"PartitionKey eq {_literal(f'{d}-{bucket(order)}')} and "
            f"RowKey ge {_literal(low)} and RowKey lt {_literal(high)}"
            for d in destinations
        ]
        if self.legacy_lookup:
            queries.append(f"PartitionKey ge {_literal(low)} and PartitionKey lt {_literal(high)}")
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
    settings: LedgerSettings, *, trace_configs: Sequence[aiohttp.TraceConfig] = ()
) -> Ledger:
    """The ledger DELIVERY_LEDGER_* describes: a connection string, or the table endpoint with the
    app's managed identity; NoLedger only when explicitly disabled. `trace_configs`: aiohttp's
    request hooks (the bench and the tests count requests with them)."""
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
    return TableLedger(store, legacy_lookup=settings.legacy_lookup)
