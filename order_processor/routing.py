"""Which event goes where: DESIGN.md's routing table, as data, in one place.

Each cell is the destination's own name for the event (a Profile Store event type, an eSputnik
event key or order status, ...); an event a destination does not take is simply absent, and the
core records it as skipped. A new destination adds one row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from order_processor.contract import EventType

CREATED, UPDATED, DELIVERED, CANCELLED = (
    EventType.ORDER_CREATED,
    EventType.ORDER_UPDATED,
    EventType.ORDER_DELIVERED,
    EventType.ORDER_CANCELLED,
)

ROUTES: Mapping[str, Mapping[EventType, str]] = MappingProxyType(
    {
        "profile_store": {
            CREATED: "StorePurchase",
            UPDATED: "StoreOrderUpdated",
            DELIVERED: "StoreOrderDelivered",
            CANCELLED: "StoreOrderCancelled",
        },
        # Offline orders only: an update/delivery/cancellation has no offline-order equivalent.
        "product_recs": {CREATED: "offline-order"},
        # An update re-imports the same order id, which replaces the order.
        "richrelevance": {CREATED: "order-import", UPDATED: "order-import"},
        # orders mode: the order status; events mode maps these to eventTypeKey (see the module).
        "esputnik": {
            CREATED: "DELIVERED",
            UPDATED: "orderUpdated",
            DELIVERED: "orderDelivered",
            CANCELLED: "orderCancelled",
        },
    }
)


def route(destination: str, event_type: EventType) -> str | None:
    """The destination's name for this event, or None when the event is not sent there."""
    return ROUTES.get(destination, {}).get(event_type)
