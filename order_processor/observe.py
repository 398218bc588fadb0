"""Logs, metrics and traces, attached to the stages as observers instead of written inline.

The stages call a handful of hooks (a span around a unit of work, a customer looked up, a
destination's result, a message's outcome); each concern is one observer, in the spirit of
dramatiq's middleware: `LogObserver` writes the log lines operators search, `MetricsObserver`
counts (OpenTelemetry), `TraceObserver` makes the spans. Attributes never carry personal data:
order ids, event keys, destinations, outcomes, reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from order_processor.model import DestinationResult, MessageMetadata, Outcome, Settlement
from order_processor.telemetry import LaneReading, Telemetry, TopicReading

log = logging.getLogger("order_processor")

Attributes = Mapping[str, AttributeValue]


class Span(Protocol):
    def set(self, attributes: Attributes) -> None: ...


class _NoSpan:
    def set(self, attributes: Attributes) -> None:
        return None


NO_SPAN = _NoSpan()


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """One destination's result for one event, as the delivery stage saw it."""

    lane: str
    order_id: str
    event_key: str
    result: DestinationResult
    #: time to the result, retries included (None when the vendor was not called)
    elapsed_ms: float | None = None
    #: from the order reaching the orders topic to the vendor's answer (delivered only)
    end_to_end_ms: float | None = None


def label(outcome: Outcome) -> str:
    """complete | retry-scheduled | dead-letter | abandon: what happened to the message."""
    if outcome.retry_at is not None:
        return "retry-scheduled"
    return "abandon" if outcome.settlement is Settlement.RETRY else outcome.settlement.value


class Observer:
    """Every hook does nothing; an observer overrides what it cares about."""

    def span(
        self, name: str, attributes: Attributes, *, consumer: bool = False
    ) -> AbstractContextManager[Span]:
        return nullcontext(NO_SPAN)

    def looked_up(self, *, found: bool) -> None:
        return None

    def delivered(self, delivered: Delivered) -> None:
        return None

    def settled(self, stage: str, metadata: MessageMetadata, outcome: Outcome) -> None:
        return None

    def record_failed(self, event_key: str, result: DestinationResult) -> None:
        """The vendor answered but the ledger write failed: the one duplicate window."""
        return

    def lanes_read(self, lanes: Sequence[LaneReading], topics: Sequence[TopicReading]) -> None:
        """The `lane_metrics` function read every lane's status."""
        return


class LogObserver(Observer):
    """One line per destination result and one per message outcome, with correlation fields."""

    def delivered(self, delivered: Delivered) -> None:
        result = delivered.result
        log.info(
            "destination %s: %s",
            result.destination,
            result.status.value,
            extra={
                "order_id": delivered.order_id,
                "event_key": delivered.event_key,
                "destination": result.destination,
                "result": result.status.value,
                "attempts": result.attempts,
                "http_status": result.http_status,
            },
        )

    def settled(self, stage: str, metadata: MessageMetadata, outcome: Outcome) -> None:
        text = "retry scheduled" if outcome.retry_at else outcome.settlement.value
        log.info(
            "%s message %s: %s%s",
            stage,
            metadata.message_id or "-",
            text,
            f" ({outcome.reason})" if outcome.reason else "",
            extra={
                "message_id": metadata.message_id,
                "order_id": outcome.order_id,
                "event_key": outcome.event_key,
                "destination": outcome.destination,
                "outcome": outcome.settlement.value,
                "reason": outcome.reason,
                "description": outcome.description,
            },
        )

    def record_failed(self, event_key: str, result: DestinationResult) -> None:
        log.error(
            "destination %s: %s but the ledger write failed",
            result.destination,
            result.status.value,
            extra={"event_key": event_key, "destination": result.destination},
        )

    def lanes_read(self, lanes: Sequence[LaneReading], topics: Sequence[TopicReading]) -> None:
        unread = [r.lane for r in lanes if r.active is None]
        if unread:
            log.warning("lane status not read: %s", ", ".join(unread), extra={"lanes": unread})
        for r in lanes:
            if r.paused or r.dead_letters:
                log.info(
                    "lane %s: %s, %s active, %s dead letters",
                    r.lane,
                    "paused" if r.paused else "running",
                    r.active,
                    r.dead_letters,
                    extra={"destination": r.lane},
                )


class MetricsObserver(Observer):
    """Counters and histograms; every one carries `orders.stage` or `orders.destination`."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def delivered(self, delivered: Delivered) -> None:
        t = self.telemetry
        attributes = {
            "orders.destination": delivered.result.destination,
            "orders.result": delivered.result.status.value,
        }
        t.deliveries.add(1, attributes)
        if delivered.elapsed_ms is not None:
            t.destination_duration.record(delivered.elapsed_ms, attributes)
        if delivered.end_to_end_ms is not None:
            t.end_to_end_latency.record(
                delivered.end_to_end_ms, {"orders.destination": delivered.result.destination}
            )

    def settled(self, stage: str, metadata: MessageMetadata, outcome: Outcome) -> None:
        t = self.telemetry
        where = {"orders.stage": stage, "orders.lane": outcome.destination or "accept"}
        t.messages.add(1, {**where, "orders.outcome": label(outcome)})
        if outcome.settlement is Settlement.DEAD_LETTER:
            t.dead_letters.add(1, {**where, "orders.reason": outcome.reason or ""})
        if outcome.retry_at is not None:
            t.retries_scheduled.add(1, {**where, "orders.reason": outcome.reason or ""})

    def lanes_read(self, lanes: Sequence[LaneReading], topics: Sequence[TopicReading]) -> None:
        self.telemetry.lanes.update(self.telemetry.meter, lanes, topics)


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: object) -> None:
        self._span = span

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)  # type: ignore[attr-defined]


class TraceObserver(Observer):
    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer

    @contextmanager
    def span(self, name: str, attributes: Attributes, *, consumer: bool = False) -> Iterator[Span]:
        kind = SpanKind.CONSUMER if consumer else SpanKind.INTERNAL
        with self.tracer.start_as_current_span(name, kind=kind, attributes=attributes) as span:
            yield _OtelSpan(span)


class _Spans:
    """Several observers' spans as one (rare: normally only TraceObserver makes spans)."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self._spans = spans

    def set(self, attributes: Attributes) -> None:
        for span in self._spans:
            span.set(attributes)


class Observers(Observer):
    """The observers a stage reports to, called in order."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = tuple(observers)
        self._spanning = tuple(o for o in self.observers if type(o).span is not Observer.span)

    @classmethod
    def standard(cls, telemetry: Telemetry) -> Observers:
        return cls([LogObserver(), MetricsObserver(telemetry), TraceObserver(telemetry)])

    def span(
        self, name: str, attributes: Attributes, *, consumer: bool = False
    ) -> AbstractContextManager[Span]:
        if not self._spanning:
            return nullcontext(NO_SPAN)
        if len(self._spanning) == 1:
            return self._spanning[0].span(name, attributes, consumer=consumer)
        return self._all_spans(name, attributes, consumer)

    @contextmanager
    def _all_spans(self, name: str, attributes: Attributes, consumer: bool) -> Iterator[Span]:
        with ExitStack() as stack:
            yield _Spans(
                [
                    stack.enter_context(o.span(name, attributes, consumer=consumer))
                    for o in self._spanning
                ]
            )

    def looked_up(self, *, found: bool) -> None:
        for observer in self.observers:
            observer.looked_up(found=found)

    def delivered(self, delivered: Delivered) -> None:
        for observer in self.observers:
            observer.delivered(delivered)

    def settled(self, stage: str, metadata: MessageMetadata, outcome: Outcome) -> None:
        for observer in self.observers:
            observer.settled(stage, metadata, outcome)

    def record_failed(self, event_key: str, result: DestinationResult) -> None:
        for observer in self.observers:
            observer.record_failed(event_key, result)

    def lanes_read(self, lanes: Sequence[LaneReading], topics: Sequence[TopicReading]) -> None:
        for observer in self.observers:
            observer.lanes_read(lanes, topics)
