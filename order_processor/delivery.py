"""The internal delivery contract (v1): what the accept stage publishes to the deliveries topic,
one message per routed destination, and what each lane reads.

It carries the enriched event (the order as contract v1 plus the customer the loyalty provider
gave), so a lane never looks the customer up again. The JSON Schema in
`schemas/delivery-message.v1.schema.json` is generated from these models
(`python -m order_processor schema`). Additive changes keep `deliveryVersion` 1.x; a lane refuses
a major version it does not read (dead-letter `InvalidMessage`), so deploy readers first.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, StringConstraints, ValidationError, field_validator

from loyalty_client.customer import Customer
from order_processor.contract import (
    ContractModel,
    Identifier,
    InStoreOrder,
    InvalidMessage,
    check_major,
    describe_validation_error,
    load_json_object,
)
from order_processor.model import TrackingEvent

DELIVERY_VERSION = "1.0"
SUPPORTED_MAJOR = 1
#: Service Bus refuses a MessageId (and a SessionId) longer than this
MAX_ID_LENGTH = 128
#: application properties every delivery message carries (the lanes' SQL filters read
#: `destination`; the others are for people and tools)
DESTINATION = "destination"
EVENT_KEY = "eventKey"
ORDER_ID = "orderId"
EVENT_TYPE = "eventType"

Text = Annotated[str, StringConstraints(max_length=512)]


class DeliveryCustomer(ContractModel):
    """The customer as the accept stage resolved it (loyalty record over the ERP's fields)."""

    customer_id: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    first_name: Text | None = None
    last_name: Text | None = None


class DeliveryMessage(ContractModel):
    """One order event for one destination (internal contract v1)."""

    delivery_version: Annotated[str, StringConstraints(pattern=r"^\d{1,6}(\.\d{1,6})?$")] = (
        DELIVERY_VERSION
    )
    destination: Identifier
    event_key: Identifier
    order: InStoreOrder
    customer: DeliveryCustomer
    #: the loyalty provider knew the card (or the ERP sent the email itself)
    customer_known: bool
    #: when the order message reached the orders topic (end-to-end latency starts there)
    order_enqueued_at: AwareDatetime | None = None
    accepted_at: AwareDatetime
    #: the order message's MessageId, for tracing a delivery back to what the ERP sent
    source_message_id: Identifier | None = None

    @field_validator("delivery_version")
    @classmethod
    def _supported_major(cls, value: str) -> str:
        return check_major(value, supported=SUPPORTED_MAJOR, reader="lane")

    @classmethod
    def of(
        cls,
        event: TrackingEvent,
        *,
        destination: str,
        accepted_at: datetime,
        order_enqueued_at: datetime | None,
    ) -> DeliveryMessage:
        return cls(
            destination=destination,
            event_key=event.key,
            order=event.order,
            customer=DeliveryCustomer(**asdict(event.customer)),
            customer_known=event.customer_known,
            order_enqueued_at=order_enqueued_at,
            accepted_at=accepted_at,
            source_message_id=event.message_id,
        )

    def event(self) -> TrackingEvent:
        """The enriched event the destination maps from."""
        return TrackingEvent(
            order=self.order,
            customer=Customer(**self.customer.model_dump()),
            customer_known=self.customer_known,
            key=self.event_key,
            message_id=self.source_message_id,
        )

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")

    @property
    def message_id(self) -> str:
        """`<event key>:<destination>`: the same event published twice is a duplicate the
        topic's duplicate detection drops (and the ledger recognises past its window)."""
        return bounded_id(f"{self.event_key}:{self.destination}")

    @property
    def session_id(self) -> str:
        """The order id: a lane that requires sessions keeps each order's events in order."""
        return bounded_id(self.order.order_id)

    def application_properties(self) -> dict[str, str]:
        return {
            DESTINATION: self.destination,
            EVENT_KEY: self.event_key,
            ORDER_ID: self.order.order_id[:MAX_ID_LENGTH],
            EVENT_TYPE: self.order.event_type.value,
        }


def bounded_id(text: str) -> str:
    """`text` when Service Bus accepts it as an id, else its sha256 (still deterministic)."""
    if len(text) <= MAX_ID_LENGTH:
        return text
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_delivery(body: bytes) -> DeliveryMessage:
    """bytes -> DeliveryMessage, or InvalidMessage naming what is wrong (a version skew between
    stages, or a message that did not come from the accept stage)."""
    document = load_json_object(body, where="(delivery)")
    try:
        return DeliveryMessage.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage(f"(delivery) {describe_validation_error(exc)}") from None
