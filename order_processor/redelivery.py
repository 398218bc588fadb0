"""Retry later without holding the lock: a copy scheduled on the deliveries topic, for one lane.

When a lane's vendor (or, at the accept stage, the loyalty provider) is still failing after the
in-message retry budget, the message is not kept locked or abandoned into a tight redelivery loop:
a copy with the same body and properties, plus `retryAttempt`, `firstSeenUtc` and
`originalMessageId`, is scheduled on the deliveries topic by the backoff schedule with the
`destination` of that lane only, and the original is completed. Past the retry window (and a
minimum number of attempts) the message is dead-lettered `RetriesExhausted` on its lane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from order_processor.delivery import DESTINATION, bounded_id
from order_processor.model import DeadLetterReason, MessageMetadata, Outcome, Settlement
from order_processor.outbox import Outbox, Outgoing
from order_processor.settings import CoreSettings

RETRY_ATTEMPT = "retryAttempt"
FIRST_SEEN = "firstSeenUtc"
ORIGINAL_MESSAGE_ID = "originalMessageId"
#: the bookkeeping a replay drops, so that the retry window restarts
RETRY_BOOKKEEPING = frozenset({RETRY_ATTEMPT, FIRST_SEEN})


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

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> RetryState:
        return cls(
            attempt=_int(properties.get(RETRY_ATTEMPT)),
            first_seen=_when(properties.get(FIRST_SEEN)),
        )


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RetryLater:
    """Turns a "retry" outcome into a scheduled copy for one lane (or, past the window, a
    RetriesExhausted dead letter; or, when even the copy cannot be scheduled, an abandon)."""

    def __init__(
        self, *, outbox: Outbox, schedule: RetrySchedule, now: Callable[[], datetime] = _utcnow
    ) -> None:
        self.outbox = outbox
        self.schedule = schedule
        self._now = now

    async def __call__(
        self, body: bytes, metadata: MessageMetadata, outcome: Outcome, *, lane: str
    ) -> Outcome:
        now = self._now()
        state = RetryState.of(metadata.application_properties)
        first_seen = state.first_seen or metadata.enqueued_time or now
        if self.schedule.exhausted(retries_done=state.attempt, first_seen=first_seen, now=now):
            minutes = (now - first_seen).total_seconds() // 60
            return replace(
                outcome,
                settlement=Settlement.DEAD_LETTER,
                reason=DeadLetterReason.RETRIES_EXHAUSTED,
                description=f"still failing after {state.attempt + 1} attempts over "
                f"{minutes:.0f} min ({outcome.reason}): {outcome.description}. "
                "Fix the cause, then replay: the ledger keeps what was delivered from being sent "
                "again.",
            )
        attempt = state.attempt + 1
        at = now + self.schedule.delay(attempt)
        original = metadata.application_properties.get(ORIGINAL_MESSAGE_ID) or metadata.message_id
        properties: dict[str, str | int] = {
            **metadata.application_properties,
            RETRY_ATTEMPT: attempt,
            FIRST_SEEN: first_seen.isoformat(),
            DESTINATION: lane,
        }
        if original:
            properties[ORIGINAL_MESSAGE_ID] = original
        copy = Outgoing(
            body=body,
            # Deterministic: a re-sent copy of the same attempt is a duplicate the topic drops.
            message_id=bounded_id(f"{original or outcome.event_key}:retry-{attempt}"),
            destination=lane,
            application_properties=properties,
            session_id=metadata.session_id,
            scheduled_at=at,
        )
        try:
            await self.outbox.publish([copy])
        except Exception as exc:  # any failure here means "abandon"; said in the description
            return replace(
                outcome,
                settlement=Settlement.RETRY,
                description=f"{outcome.description}; scheduling the retry copy failed "
                f"({type(exc).__name__}), abandoned for redelivery",
            )
        return replace(
            outcome,
            settlement=Settlement.COMPLETE,
            retry_at=at,
            description=f"retry {attempt} scheduled for {at.isoformat()}; {outcome.description}",
        )
