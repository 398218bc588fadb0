"""Traces and metrics (OpenTelemetry), exported to Application Insights when configured.

The core records through a `Telemetry` object built from a tracer and a meter provider: the
global ones by default (no-ops until `configure_azure_monitor` runs), in-memory ones in tests.
Attributes never carry personal data: order ids, event keys, destinations, outcomes, reasons.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Tracer, TracerProvider

log = logging.getLogger("order_processor")

SCOPE = "order_processor"


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
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # Our loggers only: the Functions host already ships its own; the SDKs' are too chatty.
    configure_azure_monitor(logger_name="order_processor")
    HTTPXClientInstrumentor().instrument()
    log.info("Application Insights export configured")
    return True
