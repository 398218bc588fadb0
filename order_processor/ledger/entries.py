"""What the ledger holds and answers: row statuses, entries, the gates a claim returns, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from order_processor.model import DeliveryStatus


class LedgerStatus(StrEnum):
    IN_FLIGHT = "in-flight"
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    FAILED = "failed"  # transiently: owed, and free for the next copy to claim
    REJECTED = "rejected"  # permanently: owed until someone fixes the cause and replays


#: A destination in one of these states is never called again for that event.
FINAL = frozenset({LedgerStatus.DELIVERED, LedgerStatus.SKIPPED})

STATUS_FOR_RESULT = {
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
    #: the lane scheduled a retry copy that comes due then (the copy waits on the topic, where
    #: no peek of the lane's subscription sees it: this is how `trace` knows)
    next_attempt: datetime | None = None
    #: the lane dead-lettered the message, with this DeadLetterReason
    dead_letter_reason: str | None = None

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Decided:
    """What the lane decided after the result, written on the row with it."""

    next_attempt: datetime | None = None
    dead_letter_reason: str | None = None


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


async def each(calls: Iterable[Awaitable[_T]]) -> list[_T | LedgerFailure]:
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


async def all_of(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """asyncio.gather, without a task for a single call."""
    pending = list(calls)
    if len(pending) == 1:
        return [await pending[0]]
    return list(await asyncio.gather(*pending))
