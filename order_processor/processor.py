"""The core: bytes + metadata -> Outcome. No Azure Functions types here.

parse & validate -> enrich (loyalty) -> TrackingEvent -> deliver to every enabled destination
concurrently -> one Outcome saying complete, retry or dead-letter, with each destination's result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import httpx

from loyalty_client import CustomerLookup, build_lookup
from loyalty_client.customer import Customer
from order_processor.contract import InStoreOrder, InvalidMessage, parse_order
from order_processor.destinations import DESTINATIONS, Destination, Skip
from order_processor.errors import DeliveryError
from order_processor.http import new_client
from order_processor.model import (
    DeadLetterReason,
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
    TrackingEvent,
    event_key,
)
from order_processor.retry import RetryPolicy, call_with_retries
from order_processor.routing import route
from order_processor.settings import AppSettings

log = logging.getLogger("order_processor")

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]


def _no_transport(_: str) -> httpx.AsyncBaseTransport | None:
    return None


class Processor:
    """Built once per process and reused by every invocation (pooled clients, warm caches)."""

    def __init__(
        self,
        *,
        settings: AppSettings,
        lookup: CustomerLookup,
        destinations: Sequence[Destination],
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.destinations = tuple(destinations)
        self.retry = retry or RetryPolicy(
            max_attempts=settings.core.destination_max_attempts, clock=clock
        )
        self._clock = clock
        self._disabled = [
            name for name in DESTINATIONS if name not in {d.name for d in self.destinations}
        ]

    @classmethod
    def from_settings(
        cls,
        settings: AppSettings,
        *,
        transports: TransportFactory = _no_transport,
        retry: RetryPolicy | None = None,
        lookup: CustomerLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Processor:
        """Wire the enabled destinations, a pooled client each; `transports` is the testing hook."""
        timeouts = settings.core.destination_timeouts
        destinations = [
            cls_(
                settings.destinations[name],
                client=new_client(timeouts=timeouts, transport=transports(name)),
                timeouts=timeouts,
            )
            for name, cls_ in DESTINATIONS.items()
            if settings.destinations[name].enabled
        ]
        if lookup is None:
            lookup = build_lookup(settings.loyalty, transport=transports("loyalty"), retry=retry)
        return cls(
            settings=settings, lookup=lookup, destinations=destinations, retry=retry, clock=clock
        )

    async def aclose(self) -> None:
        await asyncio.gather(self.lookup.aclose(), *(d.client.aclose() for d in self.destinations))

    async def process(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        deadline = self._clock() + self.settings.core.retry_budget_seconds
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
            event = await self._enrich(order, key, metadata, deadline)
        except DeliveryError as exc:
            return self._settled(self._lookup_failed(order, key, exc), metadata)
        results = await asyncio.gather(
            *(self._deliver(d, event, deadline) for d in self.destinations)
        )
        skipped = tuple(
            DestinationResult(destination=name, status=DeliveryStatus.SKIPPED, detail="disabled")
            for name in self._disabled
        )
        return self._settled(self._decide(event, (*results, *skipped)), metadata)

    async def _enrich(
        self, order: InStoreOrder, key: str, metadata: MessageMetadata, deadline: float
    ) -> TrackingEvent:
        ref = order.customer
        found: Customer | None = None
        if ref.loyalty_card_number and not ref.email:
            found = await self.lookup.lookup(ref.loyalty_card_number, deadline=deadline)
        customer = Customer(
            customer_id=(found.customer_id if found else None) or ref.customer_id,
            email=(found.email if found else None) or ref.email,
            phone=(found.phone if found else None) or ref.phone,
            first_name=found.first_name if found else None,
            last_name=found.last_name if found else None,
        )
        return TrackingEvent(
            order=order,
            customer=customer,
            customer_known=found is not None or ref.email is not None,
            key=key,
            message_id=metadata.message_id,
        )

    async def _deliver(
        self, destination: Destination, event: TrackingEvent, deadline: float
    ) -> DestinationResult:
        name = destination.name
        target = route(name, event.event_type)
        if target is None:
            return DestinationResult(
                destination=name,
                status=DeliveryStatus.SKIPPED,
                detail=f"{event.event_type.value} is not routed here",
            )
        attempts = 0

        async def attempt() -> DestinationResult:
            nonlocal attempts
            attempts += 1
            prepared = destination.prepare(event, target)
            if isinstance(prepared, Skip):
                return DestinationResult(
                    destination=name, status=DeliveryStatus.SKIPPED, detail=prepared.reason
                )
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
            result = DestinationResult(
                destination=name,
                status=DeliveryStatus.TRANSIENT_ERROR
                if exc.transient
                else DeliveryStatus.PERMANENT_ERROR,
                detail=exc.describe(),
                http_status=exc.status,
                vendor_code=exc.vendor_code,
                attempts=attempts,
            )
        log.info(
            "destination %s: %s",
            name,
            result.status.value,
            extra={
                "order_id": event.order.order_id,
                "event_key": event.key,
                "destination": name,
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
            return replace(
                done,
                settlement=Settlement.RETRY,
                reason="DestinationUnavailable",
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
        log.info(
            "message %s: %s%s",
            metadata.message_id or "-",
            outcome.settlement.value,
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
