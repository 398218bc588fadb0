"""The registry of destinations: the single source for everything per destination.

A destination is one class (its module here) plus one line in `_BUILT_IN` below. From the class
the app derives its lane (function `deliver_<name>`, subscription setting `<NAME>_SUBSCRIPTION`),
its routing column, its settings block and docs rows, its dev fake, the bench's vendor and the
test fixtures; see docs/destinations/README.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.destinations.esputnik import Esputnik
from order_processor.destinations.product_recs import ProductRecs
from order_processor.destinations.profile_store import ProfileStore
from order_processor.destinations.richrelevance import RichRelevance

_BUILT_IN: tuple[type[Destination], ...] = (ProfileStore, ProductRecs, RichRelevance, Esputnik)
_registry: dict[str, type[Destination]] = {cls.name: cls for cls in _BUILT_IN}

#: name -> destination class, in registration order (read-only view of the registry)
DESTINATIONS: Mapping[str, type[Destination]] = MappingProxyType(_registry)


@contextmanager
def registered(cls: type[Destination]) -> Iterator[type[Destination]]:
    """Testing hook: `cls` is registered for the duration (proves a new destination needs no
    other edit)."""
    if cls.name in _registry:
        raise ValueError(f"a destination named {cls.name!r} is already registered")
    _registry[cls.name] = cls
    try:
        yield cls
    finally:
        del _registry[cls.name]


__all__ = ["DESTINATIONS", "Destination", "DestinationSettings", "Sent", "Skip", "registered"]
