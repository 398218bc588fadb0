"""Which event goes where: the routing table (docs/destinations/README.md), as data.

Each destination declares its own column (`Destination.routes`: the destination's own name for
each event it takes, such as a Profile Store event type or an eSputnik order status); an event a
destination does not take is simply absent, and is recorded as skipped. This module only reads the
columns together.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from order_processor.contract import EventType
from order_processor.destinations import DESTINATIONS

ROUTES: Mapping[str, Mapping[EventType, str]] = MappingProxyType(
    {name: cls.routes for name, cls in DESTINATIONS.items()}
)


def route(destination: str, event_type: EventType) -> str | None:
    """The destination's name for this event, or None when the event is not sent there."""
    cls = DESTINATIONS.get(destination)
    return cls.routes.get(event_type) if cls is not None else None
