"""Which event goes where: the routing table (docs/destinations/README.md), as data.

Each destination declares its own column (`Destination.routes`: the destination's own name for
each event it takes, such as a Profile Store event type or an eSputnik order status); an event a
destination does not take is simply absent, and is recorded as skipped. A destination whose
settings switch an event on or off decides its column under its settings
(`Destination.routes_for`); `ROUTES` is the table with every destination's default settings. This
module only reads the columns together.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from order_processor.contract import EventType
from order_processor.destinations import DESTINATIONS, DestinationSettings

ROUTES: Mapping[str, Mapping[EventType, str]] = MappingProxyType(
    {name: cls.routes for name, cls in DESTINATIONS.items()}
)

_NOTHING: Mapping[EventType, str] = MappingProxyType({})


def column(
    destination: str, settings: DestinationSettings | None = None
) -> Mapping[EventType, str]:
    """The destination's column: under `settings` (its own block) when given, else with its
    default settings."""
    cls = DESTINATIONS.get(destination)
    if cls is None:
        return _NOTHING
    return cls.routes if settings is None else cls.routes_for(settings)


def route(
    destination: str, event_type: EventType, settings: DestinationSettings | None = None
) -> str | None:
    """The destination's name for this event, or None when the event is not sent there (under
    `settings`, the destination's block, when given; else with its default settings)."""
    return column(destination, settings).get(event_type)
