"""The core: bytes + metadata -> Outcome. No Azure Functions types here.

parse & validate -> enrich (loyalty) -> TrackingEvent -> deliver to every enabled destination
concurrently -> one Outcome saying complete, retry or dead-letter, with each destination's result.
`process_batch` does the same for many messages at once (the batch trigger): each message is
parsed, enriched, ledger-guarded and settled on its own, while each destination with a bulk form
gets the batch's events in as few requests as it allows (`bulk.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import httpx

from loyalty_client import CustomerLookup, build_lookup
from loyalty_client.customer import Customer
from order_processor.bulk import send_in_bulk
from order_processor.contract import InStoreOrder, InvalidMessage, parse_order
from order_processor.destinations import DESTINATIONS, Destination, Skip
from order_processor.ledger import (
    Claimed,
    Held,
    Ledger,
    LedgerUnavailable,
    MemoryLedger,
    Settled,
    build_ledger,
)
from order_processor.model import (
    DeadLetterReason,
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
    TrackingEvent,
    enriched_event,
    event_key,
)
from order_processor.outbound.errors import DeliveryError
from order_processor.outbound.http import new_client
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from order_processor.redelivery import RetryState
from order_processor.routing import route
from order_processor.settings import AppSettings
from order_processor.telemetry import Telemetry

log = logging.getLogger("order_processor")

IN_FLIGHT = "InFlight"
LEDGER_UNAVAILABLE = "LedgerUnavailable"

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]


def _no_transport(_: str) -> httpx.AsyncBaseTransport | None:
    return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Ready:
    """A message parsed and enriched: what the fan-out needs."""

    event: TrackingEvent
    metadata: MessageMetadata
    #: owedDestinations of a retry copy (None: every routed destination)
    owed: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Cleared:
    """The ledger let this delivery go ahead: the claim to record the result on, and the route."""

    claim: Claimed
    target: str


class Processor:
    """Built once per process and reused by every invocation (pooled clients, warm caches)."""

    def __init__(
        self,
        *,
        settings: AppSettings,
        lookup: CustomerLookup,
        destinations: Sequence[Destination],
        ledger: Ledger | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.destinations = tuple(destinations)
        # Built directly (tests, the bench): an in-process ledger still stops double sends.
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self._now = now
        self.telemetry = telemetry or Telemetry.create()
        counts = getattr(lookup, "cache_counts", None)
        if callable(counts):
            self.telemetry.observe_loyalty_cache(counts)
        self.retry = retry or RetryPolicy(
            max_attempts=settings.core.destination_max_attempts, clock=clock
        )
        self._clock = clock
        enabled = {d.name for d in self.destinations}
        self._disabled = tuple(
            DestinationResult(destination=name, status=DeliveryStatus.SKIPPED, detail="disabled")
            for name in DESTINATIONS
            if name not in enabled
        )

    @classmethod
    def from_settings(
        cls,
        settings: AppSettings,
        *,
        transports: TransportFactory = _no_transport,
        retry: RetryPolicy | None = None,
        lookup: CustomerLookup | None = None,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        telemetry: Telemetry | None = None,
    ) -> Processor:
        """Wire the enabled destinations, a pooled client each; `transports` is the testing hook.
        Without `ledger`, the one DELIVERY_LEDGER_* describes (Azure Table, or none if disabled)."""
        timeouts = settings.core.destination_timeouts
        http_options = settings.core.http_options
        destinations = [
            cls_(
                settings.destinations[name],
                client=new_client(
                    timeouts=timeouts, transport=transports(name), options=http_options
                ),
                timeouts=timeouts,
            )
            for name, cls_ in DESTINATIONS.items()
            if settings.destinations[name].enabled
        ]
        if lookup is None:
            lookup = build_lookup(
                settings.loyalty, transport=transports("loyalty"), retry=retry, options=http_options
            )
        if ledger is None:
            ledger = build_ledger(settings.ledger)
        return cls(
            settings=settings,
            lookup=lookup,
            destinations=destinations,
            ledger=ledger,
            retry=retry,
            clock=clock,
            now=now,
            telemetry=telemetry,
        )

    async def aclose(self) -> None:
        await asyncio.gather(
            self.lookup.aclose(),
            self.ledger.aclose(),
            *(d.client.aclose() for d in self.destinations),
        )

    async def process(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        deadline = self._deadline()
        ready = await self._begin(body, metadata, deadline)
        if isinstance(ready, Outcome):
            return ready
        results = await asyncio.gather(
            *(self._deliver(d, ready.event, deadline, ready.owed) for d in self.destinations)
        )
        return self._finish(ready, results)

    async def process_batch(
        self, messages: Sequence[tuple[bytes, MessageMetadata]]
    ) -> list[Outcome]:
        """One Outcome per message, in order; a message that fails fails alone."""
        deadline = self._deadline()
        begun = await asyncio.gather(*(self._begin(b, m, deadline) for b, m in messages))
        ready = [r for r in begun if isinstance(r, Ready)]
        per_destination = await asyncio.gather(
            *(self._deliver_many(d, ready, deadline) for d in self.destinations)
        )
        finished = iter(
            [
                self._finish(r, [results[i] for results in per_destination])
                for i, r in enumerate(ready)
            ]
        )
        return [r if isinstance(r, Outcome) else next(finished) for r in begun]

    def _deadline(self) -> float:
        return self._clock() + self.settings.core.retry_budget_seconds

    async def _begin(
        self, body: bytes, metadata: MessageMetadata, deadline: float
    ) -> Ready | Outcome:
        """Parse and enrich, or the message's Outcome when that already decides it."""
        try:
            order = parse_order(body)
        except InvalidMessage as exc:
            return self._settled(
                Outcome(
                    settlement=Settlement.DEAD_LETTER,
                    reason=DeadLetterReason.INVALID_MESSAGE,
                    description=exc.description,
                ),
                metadata,
            )
        key = event_key(order)
        try:
            event = await self.enrich(order, key, metadata, deadline)
        except DeliveryError as exc:
            return self._settled(self._lookup_failed(order, key, exc), metadata)
        return Ready(event, metadata, RetryState.of(metadata.application_properties).owed)

    def _finish(self, ready: Ready, results: Sequence[DestinationResult]) -> Outcome:
        return self._settled(self._decide(ready.event, (*results, *self._disabled)), ready.metadata)

    async def enrich(
        self, order: InStoreOrder, key: str, metadata: MessageMetadata, deadline: float
    ) -> TrackingEvent:
        ref = order.customer
        found: Customer | None = None
        if ref.loyalty_card_number and not ref.email:
            with self.telemetry.tracer.start_as_current_span("loyalty lookup") as span:
                found = await self.lookup.lookup(ref.loyalty_card_number, deadline=deadline)
                span.set_attribute("orders.customer_known", found is not None)
        return enriched_event(order, found, key=key, message_id=metadata.message_id)

    async def _deliver(
        self,
        destination: Destination,
        event: TrackingEvent,
        deadline: float,
        owed: frozenset[str] | None,
    ) -> DestinationResult:
        telemetry = self.telemetry
        attributes = {
            "orders.destination": destination.name,
            "orders.order_id": event.order.order_id,
        }
        with telemetry.tracer.start_as_current_span(
            f"deliver {destination.name}", attributes=attributes
        ) as span:
            started = time.perf_counter()
            result = await self._deliver_guarded(destination, event, deadline, owed)
            outcome = self._observe(result, started)
            span.set_attributes({**outcome, "orders.attempts": result.attempts})
            if result.http_status is not None:
                span.set_attribute("http.response.status_code", result.http_status)
        return result

    def _observe(self, result: DestinationResult, started: float) -> dict[str, str]:
        """Count the delivery and, when the vendor was called, how long it took."""
        outcome = {"orders.destination": result.destination, "orders.result": result.status.value}
        self.telemetry.deliveries.add(1, outcome)
        if result.attempts:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.telemetry.destination_duration.record(elapsed_ms, outcome)
        return outcome

    async def _deliver_many(
        self, destination: Destination, ready: Sequence[Ready], deadline: float
    ) -> list[DestinationResult]:
        """`ready`'s events to one destination: in bulk when it has a bulk form."""
        if len(ready) <= 1 or destination.bulk_limit() <= 1:
            return list(
                await asyncio.gather(
                    *(self._deliver(destination, r.event, deadline, r.owed) for r in ready)
                )
            )
        name = destination.name
        with self.telemetry.tracer.start_as_current_span(
            f"deliver {name} in bulk",
            attributes={"orders.destination": name, "orders.batch_size": len(ready)},
        ):
            started = time.perf_counter()
            gates = await asyncio.gather(*(self._gate(destination, r.event, r.owed) for r in ready))
            settled = {i: g for i, g in enumerate(gates) if isinstance(g, DestinationResult)}
            cleared = {i: g for i, g in enumerate(gates) if isinstance(g, Cleared)}
            to_send: list[int] = []
            elements: list[bytes] = []
            for i, gate in cleared.items():
                try:
                    encoded = destination.encode(ready[i].event, gate.target)
                except DeliveryError as exc:
                    settled[i] = DestinationResult.failed(name, exc, attempts=1)
                    continue
                if isinstance(encoded, Skip):
                    settled[i] = _skipped(name, encoded.reason)
                else:
                    to_send.append(i)
                    elements.append(encoded)
            sent = await send_in_bulk(destination, elements, policy=self.retry, deadline=deadline)
            settled.update(zip(to_send, sent, strict=True))
            await asyncio.gather(*(self._record(g.claim, settled[i]) for i, g in cleared.items()))
            for i in cleared:
                self._logged(ready[i].event, settled[i])
            for result in settled.values():
                self._observe(result, started)
        return [settled[i] for i in range(len(ready))]

    async def _deliver_guarded(
        self,
        destination: Destination,
        event: TrackingEvent,
        deadline: float,
        owed: frozenset[str] | None,
    ) -> DestinationResult:
        gate = await self._gate(destination, event, owed)
        if isinstance(gate, DestinationResult):
            return gate
        result = await self._attempt(destination, event, gate.target, deadline)
        await self._record(gate.claim, result)
        return self._logged(event, result)

    async def _gate(
        self, destination: Destination, event: TrackingEvent, owed: frozenset[str] | None
    ) -> DestinationResult | Cleared:
        """Whether this event still goes to `destination`: the routing table, the retry copy's
        owedDestinations, then the ledger's claim. A result when the answer is no."""
        name = destination.name
        target = route(name, event.event_type)
        if target is None:
            return _skipped(name, f"{event.event_type.value} is not routed here")
        if owed is not None and name not in owed:
            return DestinationResult(
                destination=name,
                status=DeliveryStatus.DELIVERED,
                detail="done by an earlier attempt (not in owedDestinations)",
                previously=True,
            )
        try:
            gate = await self.ledger.claim(
                event.key,
                name,
                message_id=event.message_id,
                now=self._now(),
                lease=self.settings.core.ledger_lease,
            )
        except LedgerUnavailable as exc:
            return self._logged(
                event, _unrecorded(name, f"delivery ledger unavailable ({exc}); not sent")
            )
        if isinstance(gate, Settled):
            status = DeliveryStatus(gate.entry.status.value)
            return self._logged(
                event,
                DestinationResult(
                    destination=name,
                    status=status,
                    detail=f"{status.value} earlier (ledger)",
                    response_id=gate.entry.response_id,
                    previously=True,
                ),
            )
        if isinstance(gate, Held):
            return self._logged(
                event,
                DestinationResult(
                    destination=name,
                    status=DeliveryStatus.TRANSIENT_ERROR,
                    detail="another copy of this event is being delivered (ledger claim held)",
                    vendor_code=IN_FLIGHT,
                ),
            )
        return Cleared(gate, target)

    async def _record(self, claim: Claimed, result: DestinationResult) -> None:
        try:
            await self.ledger.record(claim, result, now=self._now())
        except LedgerUnavailable:
            # The vendor's answer stands; a later copy may call again once the claim's lease
            # ends (only if this message is retried). Said loudly: it is the duplicate window.
            log.error(
                "destination %s: %s but the ledger write failed",
                result.destination,
                result.status.value,
                extra={"event_key": claim.entry.event_key, "destination": result.destination},
            )

    async def _attempt(
        self, destination: Destination, event: TrackingEvent, target: str, deadline: float
    ) -> DestinationResult:
        name = destination.name
        attempts = 0

        async def attempt() -> DestinationResult:
            nonlocal attempts
            attempts += 1
            prepared = destination.prepare(event, target)
            if isinstance(prepared, Skip):
                return _skipped(name, prepared.reason)
            sent = await destination.send(prepared)
            return DestinationResult(
                destination=name,
                status=DeliveryStatus.DELIVERED,
                detail=sent.note,
                response_id=sent.response_id,
                attempts=attempts,
            )

        try:
            result = await call_with_retries(attempt, policy=self.retry, deadline=deadline)
        except DeliveryError as exc:
            result = DestinationResult.failed(name, exc, attempts=attempts)
        return result

    @staticmethod
    def _logged(event: TrackingEvent, result: DestinationResult) -> DestinationResult:
        log.info(
            "destination %s: %s",
            result.destination,
            result.status.value,
            extra={
                "order_id": event.order.order_id,
                "event_key": event.key,
                "destination": result.destination,
                "result": result.status.value,
                "attempts": result.attempts,
                "http_status": result.http_status,
            },
        )
        return result

    @staticmethod
    def _decide(event: TrackingEvent, results: tuple[DestinationResult, ...]) -> Outcome:
        statuses = {r.status for r in results}
        summary = "; ".join(r.describe() for r in results)
        done = Outcome(
            settlement=Settlement.COMPLETE,
            results=results,
            order_id=event.order.order_id,
            event_type=event.event_type,
            event_key=event.key,
        )
        if DeliveryStatus.TRANSIENT_ERROR in statuses:
            # Still owed somewhere: try again later; permanent failures are reported then.
            transient = [r for r in results if r.status is DeliveryStatus.TRANSIENT_ERROR]
            ledger_down = all(r.vendor_code == LEDGER_UNAVAILABLE for r in transient)
            return replace(
                done,
                settlement=Settlement.RETRY,
                reason="LedgerUnavailable" if ledger_down else "DestinationUnavailable",
                description=summary,
            )
        if DeliveryStatus.PERMANENT_ERROR in statuses:
            rejected = [
                r.destination for r in results if r.status is DeliveryStatus.PERMANENT_ERROR
            ]
            return replace(
                done,
                settlement=Settlement.DEAD_LETTER,
                reason=DeadLetterReason.DESTINATION_REJECTED,
                description=f"rejected by {', '.join(rejected)}. {summary}",
            )
        return done

    @staticmethod
    def _lookup_failed(order: InStoreOrder, key: str, exc: DeliveryError) -> Outcome:
        failed = Outcome(
            settlement=Settlement.RETRY,
            reason="LoyaltyUnavailable",
            description=exc.describe(),
            order_id=order.order_id,
            event_type=order.event_type,
            event_key=key,
        )
        if exc.transient:
            return failed
        return replace(
            failed,
            settlement=Settlement.DEAD_LETTER,
            reason=DeadLetterReason.LOYALTY_LOOKUP_FAILED,
            description=f"{exc.describe()}. Check the LOYALTY_* settings, then replay.",
        )

    @staticmethod
    def _settled(outcome: Outcome, metadata: MessageMetadata) -> Outcome:
        if outcome.settlement is Settlement.RETRY:
            return outcome  # the handler decides how to retry, and logs that once
        return log_outcome(outcome, metadata)


def _skipped(destination: str, reason: str) -> DestinationResult:
    return DestinationResult(destination=destination, status=DeliveryStatus.SKIPPED, detail=reason)


def _unrecorded(destination: str, detail: str) -> DestinationResult:
    return DestinationResult(
        destination=destination,
        status=DeliveryStatus.TRANSIENT_ERROR,
        detail=detail,
        vendor_code=LEDGER_UNAVAILABLE,
    )


def log_outcome(outcome: Outcome, metadata: MessageMetadata) -> Outcome:
    """The one log line per message outcome."""
    label = "retry scheduled" if outcome.retry_at else outcome.settlement.value
    log.info(
        "message %s: %s%s",
        metadata.message_id or "-",
        label,
        f" ({outcome.reason})" if outcome.reason else "",
        extra={
            "message_id": metadata.message_id,
            "order_id": outcome.order_id,
            "event_key": outcome.event_key,
            "outcome": outcome.settlement.value,
            "reason": outcome.reason,
            "description": outcome.description,
        },
    )
    return outcome
