"""Traces and metrics (OpenTelemetry), exported to Application Insights when configured.

The core records through a `Telemetry` object built from a tracer and a meter provider: the
global ones by default (no-ops until `configure_azure_monitor` runs), in-memory ones in tests.
Attributes never carry personal data: order ids, event keys, destinations, outcomes, reasons.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Tracer, TracerProvider

log = logging.getLogger("order_processor")

SCOPE = "order_processor"


@dataclass(frozen=True, slots=True)
class LaneReading:
    """One lane's status as the `lane_metrics` function read it (None: not read)."""

    lane: str
    subscription: str
    active: int | None = None
    dead_letters: int | None = None
    oldest_age_seconds: float | None = None
    paused: bool = False


@dataclass(frozen=True, slots=True)
class TopicReading:
    topic: str
    scheduled: int | None = None


_LANE_GAUGES: tuple[tuple[str, str, str, Callable[[LaneReading], float | int | None]], ...] = (
    (
        "orders.lane.active_messages",
        "{message}",
        "messages waiting in (or being delivered from) the lane's subscription",
        lambda r: r.active,
    ),
    (
        "orders.lane.dead_letter_messages",
        "{message}",
        "messages in the lane's dead-letter queue, whoever put them there",
        lambda r: r.dead_letters,
    ),
    (
        "orders.lane.oldest_message_age",
        "s",
        "age of the lane's oldest active message (0: none waiting)",
        lambda r: r.oldest_age_seconds,
    ),
    (
        "orders.lane.paused",
        "1",
        "1 while the lane's function is disabled (AzureWebJobs.<function>.Disabled)",
        lambda r: int(r.paused),
    ),
)


class LaneGauges:
    """The last lane status read, which the observable gauges report at each export. Readings
    older than `stale_after` seconds are not reported: a gauge that stops is better than one
    that repeats an old value (the function runs every minute; exports are every minute)."""

    def __init__(
        self, *, stale_after: float = 180.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lanes: tuple[LaneReading, ...] = ()
        self._topics: tuple[TopicReading, ...] = ()
        self._at: float | None = None
        self._stale_after = stale_after
        self._clock = clock
        self._registered = False

    def update(
        self,
        meter: metrics.Meter,
        lanes: Sequence[LaneReading],
        topics: Sequence[TopicReading],
    ) -> None:
        if not self._registered:
            self._register(meter)
        self._lanes, self._topics, self._at = tuple(lanes), tuple(topics), self._clock()

    def _fresh(self) -> bool:
        return self._at is not None and self._clock() - self._at <= self._stale_after

    def _register(self, meter: metrics.Meter) -> None:
        self._registered = True
        for name, unit, description, pick in _LANE_GAUGES:
            meter.create_observable_gauge(
                name, callbacks=[self._lane_callback(pick)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "orders.topic.scheduled_messages",
            callbacks=[self._topic_callback],
            unit="{message}",
            description="messages scheduled on the topic (every lane's retry copies)",
        )

    def _lane_callback(
        self, pick: Callable[[LaneReading], float | int | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            if not self._fresh():
                return []
            return [
                Observation(value, {"orders.lane": r.lane, "orders.subscription": r.subscription})
                for r in self._lanes
                if (value := pick(r)) is not None
            ]

        return observe

    def _topic_callback(self, _: CallbackOptions) -> Iterable[Observation]:
        if not self._fresh():
            return []
        return [
            Observation(t.scheduled, {"orders.topic": t.topic})
            for t in self._topics
            if t.scheduled is not None
        ]


@dataclass(frozen=True, slots=True)
class Telemetry:
    tracer: Tracer
    messages: metrics.Counter
    deliveries: metrics.Counter
    retries_scheduled: metrics.Counter
    dead_letters: metrics.Counter
    destination_duration: metrics.Histogram
    end_to_end_latency: metrics.Histogram
    meter: metrics.Meter
    #: the lanes' gauges, registered when the `lane_metrics` function first reports
    lanes: LaneGauges

    @classmethod
    def create(
        cls,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> Telemetry:
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
        return cls(
            tracer=(tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE),
            messages=meter.create_counter(
                "orders.messages", description="messages settled, by stage, lane and outcome"
            ),
            deliveries=meter.create_counter(
                "orders.deliveries", description="destination results, by destination and result"
            ),
            retries_scheduled=meter.create_counter(
                "orders.retries_scheduled", description="retry copies scheduled"
            ),
            dead_letters=meter.create_counter(
                "orders.dead_letters", description="messages dead-lettered, by reason"
            ),
            destination_duration=meter.create_histogram(
                "orders.destination.duration",
                unit="ms",
                description="time to a destination's result, retries included",
            ),
            end_to_end_latency=meter.create_histogram(
                "orders.delivery.latency",
                unit="ms",
                description="from the order reaching the orders topic to the vendor accepting it",
            ),
            meter=meter,
            lanes=LaneGauges(),
        )

    def observe_loyalty_cache(self, counts: Callable[[], tuple[int, int] | None]) -> None:
        """Loyalty cache hits and misses as monotonic counters (hit ratio = hits / total)."""

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            found = counts()
            if found is None:
                return []
            hits, misses = found
            return [Observation(hits, {"cache": "hit"}), Observation(misses, {"cache": "miss"})]

        self.meter.create_observable_counter(
            "orders.loyalty.lookups",
            callbacks=[observe],
            description="loyalty lookups by cache result",
        )

    def observe_invalid_emails(self, count: Callable[[], int]) -> None:
        """Loyalty records whose email was not an email address (treated as no email)."""

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(count())]

        self.meter.create_observable_counter(
            "orders.loyalty.invalid_emails",
            callbacks=[observe],
            description="loyalty records with an email that is not an email address",
        )


def configure_azure_monitor_from_environment() -> bool:
    """Export traces, metrics and logs to Application Insights when
    APPLICATIONINSIGHTS_CONNECTION_STRING is set, and trace every httpx call. Returns whether it
    did; without the setting nothing is exported and the instruments are no-ops."""
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    from azure.monitor.opentelemetry import configure_azure_monitor

    from order_processor.logs import redact_handlers
    from order_processor.outbound.http import instrument_httpx

    # Our loggers only: the Functions host already ships its own; the SDKs' are too chatty.
    configure_azure_monitor(logger_name="order_processor")
    redact_handlers(logging.getLogger("order_processor"))  # its exporter sends every extra
    instrument_httpx()
    log.info("Application Insights export configured")
    return True
