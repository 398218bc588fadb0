"""What flows through the core: the enriched event, per-destination results, and the outcome."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import quote

from loyalty_client.customer import Customer
from order_processor import jsonbody
from order_processor.contract import EventType, InStoreOrder
from order_processor.outbound.errors import DeliveryError
from order_processor.outbound.redaction import scrub

#: Service Bus accepts up to 4096 characters for DeadLetterReason and DeadLetterErrorDescription.
SERVICE_BUS_TEXT_LIMIT = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageMetadata:
    """What the core needs to know about the Service Bus message around the body."""

    message_id: str | None = None
    enqueued_time: datetime | None = None
    delivery_count: int | None = None
    session_id: str | None = None
    application_properties: dict[str, str] = field(default_factory=dict)


#: longest order id kept readable in keys; longer ones (after percent-encoding) are hashed
ORDER_KEY_MAX = 64


def order_key(order_id: str) -> str:
    """The order id as it appears in keys: percent-encoded (safe in Azure Table keys and in
    MessageIds), or `sha256-<40 hex>` when that would be longer than ORDER_KEY_MAX characters
    (128 non-ASCII characters percent-encode to over 1 KiB, Table Storage's key limit)."""
    quoted = quote(order_id, safe="")
    if len(quoted) <= ORDER_KEY_MAX:
        return quoted
    return "sha256-" + hashlib.sha256(order_id.encode("utf-8")).hexdigest()[:40]


def event_key(order: InStoreOrder) -> str:
    """Content-derived identity of one order event: orderId, eventType and a hash of the order.

    A redelivery, a retry copy, a replay or a re-publish with a new MessageId all map to the same
    key. At most ORDER_KEY_MAX + 32 ASCII characters, whatever the order id.
    """
    canonical = jsonbody.dumps(order.model_dump(mode="json", by_alias=True))
    digest = hashlib.sha256(canonical).hexdigest()[:16]
    return f"{order_key(order.order_id)}:{order.event_type.value}:{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingEvent:
    """One order event, enriched with the customer; what every destination maps from."""

    order: InStoreOrder
    customer: Customer
    #: True when the loyalty provider knew the card (or the ERP sent the email itself)
    customer_known: bool
    key: str
    message_id: str | None = None

    @property
    def event_type(self) -> EventType:
        return self.order.event_type


def enriched_event(
    order: InStoreOrder, found: Customer | None, *, key: str, message_id: str | None = None
) -> TrackingEvent:
    """The order with its customer: what the loyalty provider `found` wins over what the ERP
    sent; the ERP's own email also counts as a known customer."""
    ref = order.customer
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
        message_id=message_id,
    )


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    SKIPPED = "skipped"
    TRANSIENT_ERROR = "transient-error"
    PERMANENT_ERROR = "permanent-error"


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationResult:
    destination: str
    status: DeliveryStatus
    detail: str = ""
    http_status: int | None = None
    vendor_code: str | None = None
    response_id: str | None = None
    attempts: int = 0
    #: already settled for this destination by an earlier copy of the event, as the delivery
    #: ledger's claim found it (delivered or skipped): not called now
    previously: bool = False

    @classmethod
    def failed(cls, destination: str, exc: DeliveryError, *, attempts: int) -> DestinationResult:
        """What a DeliveryError means for this destination: retry later, or refused for good."""
        return cls(
            destination=destination,
            status=DeliveryStatus.TRANSIENT_ERROR
            if exc.transient
            else DeliveryStatus.PERMANENT_ERROR,
            detail=exc.describe(),
            http_status=exc.status,
            vendor_code=exc.vendor_code,
            attempts=attempts,
        )

    def describe(self) -> str:
        text = f"{self.destination}: {self.status.value}"
        return f"{text} ({self.detail})" if self.detail else text


class Settlement(StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


class DeadLetterReason(StrEnum):
    INVALID_MESSAGE = "InvalidMessage"
    DESTINATION_REJECTED = "DestinationRejected"
    LOYALTY_LOOKUP_FAILED = "LoyaltyLookupFailed"
    RETRIES_EXHAUSTED = "RetriesExhausted"


def truncate(text: str, limit: int = SERVICE_BUS_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What to do with the message, and why."""

    settlement: Settlement
    reason: str | None = None
    description: str | None = None
    results: tuple[DestinationResult, ...] = ()
    order_id: str | None = None
    event_type: EventType | None = None
    event_key: str | None = None
    #: the lane (destination) this outcome is about; None for the accept stage
    destination: str | None = None
    #: accept stage: the destinations a delivery message was published for
    routed: tuple[str, ...] = ()
    #: when a retry copy was scheduled (the message itself is then completed)
    retry_at: datetime | None = None

    def __post_init__(self) -> None:
        # The dead-letter reason and description are read by people and tools (dlq peek): no
        # configured secret reaches them, whatever a vendor echoed.
        if self.reason is not None:
            object.__setattr__(self, "reason", truncate(scrub(self.reason)))
        if self.description is not None:
            object.__setattr__(self, "description", truncate(scrub(self.description)))

    def result_for(self, destination: str) -> DestinationResult | None:
        return next((r for r in self.results if r.destination == destination), None)
