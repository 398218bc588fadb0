"""The two stages wired from the settings: what the function app, the command line, the bench
and the tests all run.

One accept stage and one delivery stage per enabled destination share one ledger, one loyalty
lookup (with its cache) and one outbox; each destination keeps its own pooled HTTP client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import httpx

from loyalty_client import CustomerLookup, build_lookup
from order_processor.accept import AcceptStage
from order_processor.deliver import DeliveryStage
from order_processor.destinations import DESTINATIONS, Destination
from order_processor.ledger import Ledger, MemoryLedger, build_ledger
from order_processor.observe import Observer, Observers
from order_processor.outbound.http import new_client
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import Outbox, ServiceBusOutbox
from order_processor.redelivery import RetryLater, RetrySchedule
from order_processor.servicebus import service_bus_client
from order_processor.settings import AppSettings
from order_processor.telemetry import Telemetry

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]


def _no_transport(_: str) -> httpx.AsyncBaseTransport | None:
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    settings: AppSettings
    accept: AcceptStage
    #: destination name -> its lane, for the enabled destinations
    lanes: Mapping[str, DeliveryStage]
    lookup: CustomerLookup
    ledger: Ledger
    outbox: Outbox
    telemetry: Telemetry
    #: what every stage reports to (logs, metrics, spans); the lane_metrics function too
    observer: Observer

    @classmethod
    def from_settings(
        cls,
        settings: AppSettings,
        *,
        transports: TransportFactory = _no_transport,
        retry: RetryPolicy | None = None,
        lookup: CustomerLookup | None = None,
        ledger: Ledger | None = None,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        telemetry: Telemetry | None = None,
        observer: Observer | None = None,
    ) -> Pipeline:
        """Wire the stages. Every argument is a testing hook; left out, it is what the settings
        describe (`transports`: per system, e.g. a MockTransport or the dry run's recorder)."""
        core = settings.core
        telemetry = telemetry or Telemetry.create()
        observer = observer or Observers.standard(telemetry)
        http_options = core.http_options
        if lookup is None:
            lookup = build_lookup(
                settings.loyalty, transport=transports("loyalty"), retry=retry, options=http_options
            )
        if ledger is None:
            ledger = build_ledger(settings.ledger)
        if outbox is None:
            outbox = ServiceBusOutbox(
                service_bus_client(settings.service_bus), topic=core.deliveries_topic
            )
        _observe_lookup(telemetry, lookup)
        retry_later = RetryLater(outbox=outbox, schedule=RetrySchedule.from_settings(core), now=now)
        policy = retry or RetryPolicy(max_attempts=core.destination_max_attempts, clock=clock)
        timeouts = core.destination_timeouts
        lanes: dict[str, DeliveryStage] = {}
        for name in settings.enabled:
            destination: Destination = DESTINATIONS[name](
                settings.destinations[name],
                client=new_client(
                    timeouts=timeouts, transport=transports(name), options=http_options
                ),
                timeouts=timeouts,
            )
            lanes[name] = DeliveryStage(
                destination=destination,
                core=core,
                ledger=ledger,
                retry_later=retry_later,
                policy=policy,
                observer=observer,
                clock=clock,
                now=now,
            )
        accept = AcceptStage(
            core=core,
            destinations={name: settings.destinations[name] for name in lanes},
            lookup=lookup,
            outbox=outbox,
            retry_later=retry_later,
            observer=observer,
            clock=clock,
            now=now,
        )
        return cls(
            settings=settings,
            accept=accept,
            lanes=MappingProxyType(lanes),
            lookup=lookup,
            ledger=ledger,
            outbox=outbox,
            telemetry=telemetry,
            observer=observer,
        )

    async def aclose(self) -> None:
        await asyncio.gather(
            self.lookup.aclose(),
            self.ledger.aclose(),
            self.outbox.aclose(),
            *(lane.destination.client.aclose() for lane in self.lanes.values()),
        )


def _observe_lookup(telemetry: Telemetry, lookup: CustomerLookup) -> None:
    counts = getattr(lookup, "cache_counts", None)
    if callable(counts):
        telemetry.observe_loyalty_cache(counts)
    invalid = getattr(lookup, "invalid_email_count", None)
    if callable(invalid):
        telemetry.observe_invalid_emails(invalid)


def memory_ledger() -> Ledger:
    """An in-process ledger (dry runs, tests): still stops double sends within the process."""
    return MemoryLedger()
