"""One message in, one settlement out: the processor's outcome plus the retry-later decision.

Shared by the topic trigger, the retry-queue trigger, the DLQ replay tool and the tests. It
returns an Outcome whose settlement the caller carries out on the message:
complete (delivered, skipped, or a retry copy is scheduled), dead-letter (with reason), or retry
(abandon: only when even the retry copy could not be scheduled; the ledger makes the resulting
redelivery safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind

from order_processor.model import (
    DeadLetterReason,
    DeliveryStatus,
    MessageMetadata,
    Outcome,
    Settlement,
)
from order_processor.processor import Processor, log_outcome
from order_processor.redelivery import (
    FIRST_SEEN,
    ORIGINAL_MESSAGE_ID,
    OWED,
    RETRY_ATTEMPT,
    RetryCopy,
    RetryQueue,
    RetrySchedule,
    RetryState,
    ServiceBusRetryQueue,
)
from order_processor.servicebus import service_bus_client
from order_processor.settings import AppSettings

log = logging.getLogger("order_processor")

_OWED = frozenset({DeliveryStatus.TRANSIENT_ERROR, DeliveryStatus.PERMANENT_ERROR})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _label(outcome: Outcome) -> str:
    """complete | retry-scheduled | dead-letter | abandon: what happened to the message."""
    if outcome.retry_at is not None:
        return "retry-scheduled"
    return "abandon" if outcome.settlement is Settlement.RETRY else outcome.settlement.value


class OrderHandler:
    def __init__(
        self,
        *,
        processor: Processor,
        retry_queue: RetryQueue,
        schedule: RetrySchedule,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.processor = processor
        self.retry_queue = retry_queue
        self.schedule = schedule
        self._now = now

    @classmethod
    def from_settings(cls, settings: AppSettings) -> OrderHandler:
        """What the function runs (and `dlq replay --to process`): the processor, and retry
        copies through a Service Bus client of its own, closed with the handler."""
        return cls(
            processor=Processor.from_settings(settings),
            retry_queue=ServiceBusRetryQueue(
                service_bus_client(settings.service_bus), queue=settings.core.orders_retry_queue
            ),
            schedule=RetrySchedule.from_settings(settings.core),
        )

    async def aclose(self) -> None:
        await self.processor.aclose()
        await self.retry_queue.aclose()

    async def handle(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        with self.processor.telemetry.tracer.start_as_current_span(
            "process order message",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "servicebus",
                "messaging.message.id": metadata.message_id or "",
                "orders.retry_attempt": RetryState.of(metadata.application_properties).attempt,
            },
        ) as span:
            outcome = await self._conclude(
                body, metadata, await self.processor.process(body, metadata)
            )
            span.set_attributes(
                {
                    "orders.order_id": outcome.order_id or "",
                    "orders.event_key": outcome.event_key or "",
                    "orders.outcome": _label(outcome),
                    "orders.reason": outcome.reason or "",
                }
            )
        return outcome

    async def handle_batch(
        self, messages: Sequence[tuple[bytes, MessageMetadata]]
    ) -> list[Outcome]:
        """The batch trigger's messages: one Outcome each, in order, each settled on its own."""
        with self.processor.telemetry.tracer.start_as_current_span(
            "process order batch",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "servicebus",
                "messaging.batch.message_count": len(messages),
            },
        ):
            outcomes = await self.processor.process_batch(messages)
            return list(
                await asyncio.gather(
                    *(
                        self._conclude(body, metadata, outcome)
                        for (body, metadata), outcome in zip(messages, outcomes, strict=True)
                    )
                )
            )

    async def _conclude(self, body: bytes, metadata: MessageMetadata, outcome: Outcome) -> Outcome:
        """Turn "retry" into a scheduled retry copy (or abandon), and count the outcome."""
        if outcome.settlement is Settlement.RETRY:
            outcome = await self._retry_later(body, metadata, outcome)
        telemetry = self.processor.telemetry
        telemetry.messages.add(1, {"orders.outcome": _label(outcome)})
        if outcome.settlement is Settlement.DEAD_LETTER:
            telemetry.dead_letters.add(1, {"orders.reason": outcome.reason or ""})
        if outcome.retry_at is not None:
            telemetry.retries_scheduled.add(1, {"orders.reason": outcome.reason or ""})
        return outcome

    async def _retry_later(
        self, body: bytes, metadata: MessageMetadata, outcome: Outcome
    ) -> Outcome:
        now = self._now()
        state = RetryState.of(metadata.application_properties)
        first_seen = state.first_seen or metadata.enqueued_time or now
        owed_results = [r for r in outcome.results if r.status in _OWED]
        owed = (
            sorted(r.destination for r in owed_results)
            if owed_results
            else sorted(state.owed or ())  # nothing was tried (loyalty/ledger down): same debt
        )
        if self.schedule.exhausted(retries_done=state.attempt, first_seen=first_seen, now=now):
            errors = "; ".join(r.describe() for r in owed_results) or outcome.description or ""
            return log_outcome(
                replace(
                    outcome,
                    settlement=Settlement.DEAD_LETTER,
                    reason=DeadLetterReason.RETRIES_EXHAUSTED,
                    description=(
                        f"still failing after {state.attempt + 1} attempts over "
                        f"{(now - first_seen).total_seconds() // 60:.0f} min ({outcome.reason}): "
                        f"{errors}. "
                        "Fix the destination, then replay: only owed destinations are called."
                    ),
                ),
                metadata,
            )
        attempt = state.attempt + 1
        at = now + self.schedule.delay(attempt)
        properties: dict[str, str | int] = {
            **metadata.application_properties,
            RETRY_ATTEMPT: attempt,
            FIRST_SEEN: first_seen.isoformat(),
        }
        if owed:
            properties[OWED] = ",".join(owed)
        original = metadata.application_properties.get(ORIGINAL_MESSAGE_ID) or metadata.message_id
        if original:
            properties[ORIGINAL_MESSAGE_ID] = original
        copy = RetryCopy(
            body=body,
            # Deterministic: a re-sent copy of the same attempt is a duplicate the queue can drop.
            message_id=f"{original or outcome.event_key}:retry-{attempt}",
            scheduled_at=at,
            application_properties=properties,
            session_id=metadata.session_id,
        )
        try:
            await self.retry_queue.schedule(copy)
        except Exception as exc:  # any failure here means "abandon"; said in the description
            return log_outcome(
                replace(
                    outcome,
                    description=f"{outcome.description}; scheduling the retry copy failed "
                    f"({type(exc).__name__}), abandoned for redelivery",
                ),
                metadata,
            )
        return log_outcome(
            replace(
                outcome,
                settlement=Settlement.COMPLETE,
                retry_at=at,
                description=f"retry {attempt} scheduled for {at.isoformat()} "
                f"(owed: {', '.join(owed) or 'all'}); {outcome.description}",
            ),
            metadata,
        )
