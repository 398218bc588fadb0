"""The registry of destinations. A new destination is one module here plus one line below
(and its row in `order_processor.routing`); see docs/destinations/README.md."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.destinations.esputnik import Esputnik
from order_processor.destinations.product_recs import ProductRecs
from order_processor.destinations.profile_store import ProfileStore
from order_processor.destinations.richrelevance import RichRelevance

DESTINATIONS: Mapping[str, type[Destination]] = MappingProxyType(
    {cls.name: cls for cls in (ProfileStore, ProductRecs, RichRelevance, Esputnik)}
)

__all__ = ["DESTINATIONS", "Destination", "DestinationSettings", "Sent", "Skip"]
