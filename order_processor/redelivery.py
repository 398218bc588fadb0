"""Retry later without holding the lock: scheduled copies on the retry queue.

When a destination is still failing after the in-message retry budget, the message is not kept
locked (or abandoned into a tight redelivery loop): a copy with the same body and properties,
plus `retryAttempt`, `firstSeenUtc` and `owedDestinations`, is scheduled on the retry queue
(`ORDERS_RETRY_QUEUE`) by the backoff schedule, and the original is completed. Past the retry
window (and a minimum number of attempts) the message is dead-lettered `RetriesExhausted`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from azure.servicebus import ServiceBusMessage, aio

from order_processor.settings import CoreSettings

RETRY_ATTEMPT = "retryAttempt"
FIRST_SEEN = "firstSeenUtc"
OWED = "owedDestinations"
ORIGINAL_MESSAGE_ID = "originalMessageId"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySchedule:
    backoff: tuple[timedelta, ...]
    window: timedelta
    min_attempts: int

    @classmethod
    def from_settings(cls, core: CoreSettings) -> RetrySchedule:
        return cls(
            backoff=tuple(timedelta(minutes=m) for m in core.retry_backoff_minutes),
            window=timedelta(minutes=core.retry_window_minutes),
            min_attempts=core.retry_min_attempts,
        )

    def delay(self, attempt: int) -> timedelta:
        """Wait before retry `attempt` (1 = the first retry); the last step repeats."""
        return self.backoff[min(attempt, len(self.backoff)) - 1]

    def exhausted(self, *, retries_done: int, first_seen: datetime, now: datetime) -> bool:
        return now - first_seen >= self.window and retries_done + 1 >= self.min_attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    """What a message says about its own retries (from its application properties)."""

    attempt: int = 0
    first_seen: datetime | None = None
    owed: frozenset[str] | None = None

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> RetryState:
        attempt = _int(properties.get(RETRY_ATTEMPT))
        first_seen = _when(properties.get(FIRST_SEEN))
        owed_text = properties.get(OWED)
        owed = (
            frozenset(name for name in str(owed_text).split(",") if name)
            if owed_text is not None
            else None
        )
        return cls(attempt=attempt, first_seen=first_seen, owed=owed)


def _int(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except (TypeError, ValueError):
        return 0


def _when(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryCopy:
    """The scheduled copy: same body, session and properties, plus the retry bookkeeping."""

    body: bytes
    message_id: str
    scheduled_at: datetime
    application_properties: dict[str, str | int] = field(default_factory=dict)
    session_id: str | None = None


class RetryQueue(Protocol):
    async def schedule(self, copy: RetryCopy) -> None: ...

    async def aclose(self) -> None: ...


class ServiceBusRetryQueue:
    """Sends scheduled copies with one pooled async sender per process."""

    def __init__(self, client: aio.ServiceBusClient, *, queue: str) -> None:
        self._client = client
        self._queue = queue
        self._sender: aio.ServiceBusSender | None = None
        self._lock = asyncio.Lock()

    async def _get_sender(self) -> aio.ServiceBusSender:
        async with self._lock:
            if self._sender is None:
                self._sender = self._client.get_queue_sender(self._queue)
            return self._sender

    async def schedule(self, copy: RetryCopy) -> None:
        sender = await self._get_sender()
        message = ServiceBusMessage(
            copy.body,
            message_id=copy.message_id,
            session_id=copy.session_id,
            content_type="application/json",
            application_properties=dict(copy.application_properties),  # type: ignore[arg-type]
            scheduled_enqueue_time_utc=copy.scheduled_at,
        )
        await sender.send_messages(message)

    async def aclose(self) -> None:
        if self._sender is not None:
            await self._sender.close()
        await self._client.close()


class RecordingRetryQueue:
    """Keeps scheduled copies in memory: for tests, the CLI and the chaos test."""

    def __init__(self) -> None:
        self.copies: list[RetryCopy] = []
        #: testing hook: when set, `schedule` raises it (Service Bus unreachable)
        self.failure: Exception | None = None

    async def schedule(self, copy: RetryCopy) -> None:
        if self.failure is not None:
            raise self.failure
        self.copies.append(copy)

    async def aclose(self) -> None:
        return None
