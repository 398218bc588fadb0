"""Stage 1, `accept_order`: an order message becomes one delivery message per lane.

bytes -> contract v1 order (poison is dead-lettered here, once) -> the customer, looked up once
(cached, single-flight) -> the TrackingEvent -> the routing table -> one delivery message per
routed, enabled destination, published to the deliveries topic -> complete. A loyalty provider
that stays down past the budget means retry later (a copy for the `accept` lane); a deliveries
topic that cannot be reached means abandon (Service Bus redelivers; copies already published are
duplicates the topic drops).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from loyalty_client import CustomerLookup
from loyalty_client.customer import Customer
from order_processor.contract import InStoreOrder, InvalidMessage, parse_order
from order_processor.delivery import DeliveryMessage
from order_processor.destinations import DestinationSettings
from order_processor.model import (
    DeadLetterReason,
    MessageMetadata,
    Outcome,
    Settlement,
    TrackingEvent,
    enriched_event,
    event_key,
)
from order_processor.observe import Observer
from order_processor.outbound.errors import DeliveryError
from order_processor.outbox import MessageTooLarge, Outbox, Outgoing
from order_processor.redelivery import RetryLater
from order_processor.routing import column
from order_processor.settings import CoreSettings

#: the pseudo-lane of the accept stage's own retry copies (subscription ACCEPT_RETRY_SUBSCRIPTION)
ACCEPT_LANE = "accept"
MESSAGE_TOO_LARGE = "MessageTooLarge"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AcceptStage:
    """Built once per process and shared by every invocation (pooled clients, warm cache)."""

    def __init__(
        self,
        *,
        core: CoreSettings,
        destinations: Mapping[str, DestinationSettings],
        lookup: CustomerLookup,
        outbox: Outbox,
        retry_later: RetryLater,
        observer: Observer,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.core = core
        #: the enabled destinations, in registration order
        self.destinations = tuple(destinations)
        #: their routing columns under their settings (decided once: settings are frozen)
        self.columns = {name: column(name, block) for name, block in destinations.items()}
        self.lookup = lookup
        self.outbox = outbox
        self.retry_later = retry_later
        self.observer = observer
        self._clock = clock
        self._now = now

    async def accept(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        with self.observer.span(
            "accept order message",
            {"messaging.system": "servicebus", "messaging.message.id": metadata.message_id or ""},
            consumer=True,
        ) as span:
            outcome = await self._accept(body, metadata)
            span.set(
                {
                    "orders.order_id": outcome.order_id or "",
                    "orders.event_key": outcome.event_key or "",
                    "orders.outcome": outcome.settlement.value,
                    "orders.reason": outcome.reason or "",
                    "orders.routed": ",".join(outcome.routed),
                }
            )
        self.observer.settled("accept", metadata, outcome)
        return outcome

    async def _accept(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        deadline = self._clock() + self.core.retry_budget_seconds
        try:
            order = parse_order(body, max_bytes=self.core.orders_max_message_bytes)
        except InvalidMessage as exc:
            return Outcome(
                settlement=Settlement.DEAD_LETTER,
                reason=DeadLetterReason.INVALID_MESSAGE,
                description=exc.description,
            )
        key = event_key(order)
        about = Outcome(
            settlement=Settlement.COMPLETE,
            order_id=order.order_id,
            event_type=order.event_type,
            event_key=key,
        )
        try:
            event = await self.enrich(order, key, metadata, deadline)
        except DeliveryError as exc:
            return await self._lookup_failed(body, metadata, about, exc)
        routed = [name for name in self.destinations if event.event_type in self.columns[name]]
        accepted_at = self._now()
        messages = [
            DeliveryMessage.of(
                event,
                destination=name,
                accepted_at=accepted_at,
                order_enqueued_at=metadata.enqueued_time,
            )
            for name in routed
        ]
        try:
            await self.outbox.publish([outgoing(m) for m in messages])
        except MessageTooLarge as exc:
            return replace(
                about,
                settlement=Settlement.DEAD_LETTER,
                reason=MESSAGE_TOO_LARGE,
                description=f"{exc}; raise the deliveries topic's maximum message size "
                "(Premium) or lower ORDERS_MAX_MESSAGE_BYTES to what it carries",
            )
        except Exception as exc:  # the topic unreachable: let Service Bus redeliver
            return replace(
                about,
                settlement=Settlement.RETRY,
                reason="DeliveriesUnavailable",
                description=f"publishing to the deliveries topic failed ({type(exc).__name__}); "
                "abandoned for redelivery",
            )
        not_routed = [name for name in self.destinations if name not in routed]
        return replace(
            about,
            routed=tuple(routed),
            description=f"published for {', '.join(routed) or 'no destination'}"
            + (
                f"; {order.event_type.value} is not routed to {', '.join(not_routed)}"
                if not_routed
                else ""
            ),
        )

    async def enrich(
        self, order: InStoreOrder, key: str, metadata: MessageMetadata, deadline: float
    ) -> TrackingEvent:
        """The order with its customer: one lookup by card, unless the ERP sent the email."""
        ref = order.customer
        found: Customer | None = None
        if ref.loyalty_card_number and not ref.email:
            with self.observer.span("loyalty lookup", {}) as span:
                found = await self.lookup.lookup(ref.loyalty_card_number, deadline=deadline)
                span.set({"orders.customer_known": found is not None})
            self.observer.looked_up(found=found is not None)
        return enriched_event(order, found, key=key, message_id=metadata.message_id)

    async def _lookup_failed(
        self, body: bytes, metadata: MessageMetadata, about: Outcome, exc: DeliveryError
    ) -> Outcome:
        if not exc.transient:
            return replace(
                about,
                settlement=Settlement.DEAD_LETTER,
                reason=DeadLetterReason.LOYALTY_LOOKUP_FAILED,
                description=f"{exc.describe()}. Check the LOYALTY_* settings, then replay.",
            )
        failed = replace(
            about,
            settlement=Settlement.RETRY,
            reason="LoyaltyUnavailable",
            description=exc.describe(),
        )
        return await self.retry_later(body, metadata, failed, lane=ACCEPT_LANE)


def outgoing(message: DeliveryMessage) -> Outgoing:
    return Outgoing(
        body=message.encode(),
        message_id=message.message_id,
        destination=message.destination,
        application_properties=dict(message.application_properties()),
        session_id=message.session_id,
    )
