"""eSputnik (Yespo) orders, in two documented ways; docs/destinations/esputnik.md has the requests,
the generated mapping tables and the sources.

`orders` mode (default): `POST {base}/api/v1/orders` with `{"orders": [...]}` (up to 1,000),
`source: "offline"`; creates the contact when it is new. `events` mode: `POST {base}/api/v1/event`
with `eventTypeKey` orderCreated/orderUpdated/orderDelivered/orderCancelled and `params` as
`[{name, value}]` strings; the contact must already exist. Auth: HTTP Basic, any user name, the API
key as the password.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Skip
from order_processor.destinations.esputnik import mapping
from order_processor.destinations.esputnik.mapping import (
    ORDER_SOURCE,
    TARGETS,
    OrderStatus,
    Target,
)
from order_processor.destinations.esputnik.settings import EsputnikMode, EsputnikSettings
from order_processor.mapping import Context, Fields, MappingError, apply
from order_processor.model import TrackingEvent

__all__ = [
    "ORDER_SOURCE",
    "TARGETS",
    "Esputnik",
    "EsputnikMode",
    "EsputnikSettings",
    "OrderStatus",
    "Target",
]

MAX_BULK_ORDERS = 1000
#: v1/event types that only change the status of a stored order (the event guide [S]): their
#: items are sent only when complete, and never the reason to skip the event
STATUS_ONLY_EVENTS = frozenset({"orderDelivered", "orderCancelled"})
#: how many incomplete lines a skip reason names
_NAMED_PROBLEMS = 3


def _incomplete_reason(event_type_key: str, incomplete: dict[int, list[str]]) -> str:
    """Why an events-mode order is skipped: which lines lack what, and where it comes from."""
    named = "; ".join(
        f"lines[{index}] has no {', '.join(missing)}"
        for index, missing in list(incomplete.items())[:_NAMED_PROBLEMS]
    )
    more = len(incomplete) - _NAMED_PROBLEMS
    if more > 0:
        named += f"; and {more} more lines"
    fields = dict.fromkeys(name for missing in incomplete.values() for name in missing)
    sources = "; ".join(f"{name} from {mapping.ITEM_FIELD_SOURCES[name]}" for name in fields)
    return (
        f"events mode: eSputnik ignores an {event_type_key} event whose items lack a required "
        f"field ({named}): give them {sources}"
    )


def key_value(event: TrackingEvent) -> str | None:
    """The contact identifier for v1/event: email, else phone (digits only, as the contact was
    created with it), else the customer id."""
    customer = event.customer
    return customer.email or mapping.phone_digits(customer.phone) or customer.customer_id


class Esputnik(Destination):
    name = "esputnik"
    # orders mode: the order status; events mode maps these to eventTypeKey (TARGETS).
    routes = MappingProxyType(
        {
            EventType.ORDER_CREATED: "DELIVERED",
            EventType.ORDER_UPDATED: "orderUpdated",
            EventType.ORDER_DELIVERED: "orderDelivered",
            EventType.ORDER_CANCELLED: "orderCancelled",
        }
    )
    fake = "tests.fakes.esputnik"
    title = "eSputnik"
    mappings = MappingProxyType(
        {
            "`orders` mode: each element of `orders`": mapping.ORDER,
            "`events` mode: `params` (each value sent as a string)": mapping.EVENT,
            "Item (both modes; `items`)": mapping.ITEM,
        }
    )
    settings_class = EsputnikSettings
    dry_run_status = 200
    dry_run_body: ClassVar[Any] = {}
    settings: EsputnikSettings

    def _target(self, route: str) -> Target:
        target = TARGETS.get(route)
        if target is None:
            raise self.rejected(f"route {route!r} has no eSputnik mapping")
        return target

    def _context(self, event: TrackingEvent, route: str) -> Context:
        self._target(route)
        context = Context(event, self.settings, route)
        return Context(event, self.settings, route, derived={"items": mapping.items(context)})

    def _apply(self, fields: Fields, context: Context) -> dict[str, Any]:
        try:
            return apply(fields, context)
        except MappingError as exc:
            raise self.rejected(f"order {context.event.order.order_id}: {exc}") from None

    def order(self, event: TrackingEvent, route: str) -> dict[str, Any]:
        """One element of the v1/orders `orders` array."""
        return self._apply(mapping.ORDER, self._context(event, route))

    def event_body(self, event: TrackingEvent, route: str) -> dict[str, Any] | Skip:
        """The v1/event body (`params` in the mapping's order, every value a string), or Skip
        when eSputnik would silently ignore it for items without what it requires of each."""
        target = self._target(route)
        context = self._context(event, route)
        incomplete = mapping.incomplete_items(context.derived["items"])
        if incomplete and target.event_type_key in STATUS_ONLY_EVENTS:
            context = Context(event, self.settings, route, derived={"items": None})
        elif incomplete:
            return Skip(_incomplete_reason(target.event_type_key, incomplete))
        params = self._apply(mapping.EVENT, context)
        return {
            "eventTypeKey": target.event_type_key,
            "keyValue": key_value(event),
            "params": [{"name": name, "value": str(value)} for name, value in params.items()],
        }

    def _headers(self) -> Mapping[str, str]:
        return self._header_values

    @functools.cached_property
    def _header_values(self) -> Mapping[str, str]:
        """Built once (settings are frozen) and read-only, since every request shares it."""
        pair = f"{self.settings.user_name}:{self.settings.secret('api_key')}".encode()
        return MappingProxyType(
            {
                "Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )

    def _url(self, resource: str) -> httpx.URL:
        return self.url(f"{self.settings.base_url.rstrip('/')}/api/v1/{resource}")

    def _post(self, resource: str, body: bytes) -> httpx.Request:
        return self.client.build_request(
            "POST", self._url(resource), headers=self._headers(), content=body
        )

    def _require_orders_mode(self) -> None:
        if self.settings.mode is not EsputnikMode.ORDERS:
            raise ValueError("bulk delivery is for orders mode; v1/event takes one event")

    @classmethod
    def max_batch(cls, settings: DestinationSettings) -> int:
        assert isinstance(settings, EsputnikSettings)
        return MAX_BULK_ORDERS if settings.mode is EsputnikMode.ORDERS else 1

    def encode(self, event: TrackingEvent, route: str) -> bytes | Skip:
        """One element of the v1/orders `orders` array (orders mode)."""
        self._require_orders_mode()
        if not (event.customer.email or mapping.phone_digits(event.customer.phone)):
            return Skip("no customer email or phone: eSputnik needs one to create the contact")
        return jsonbody.dumps(self.order(event, route))

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        if self.settings.mode is EsputnikMode.EVENTS:
            if key_value(event) is None:
                return Skip(
                    "no customer email, phone or customer id: an eSputnik event must name an "
                    "existing contact"
                )
            body = self.event_body(event, route)
            return body if isinstance(body, Skip) else self._post("event", jsonbody.dumps(body))
        encoded = self.encode(event, route)
        return encoded if isinstance(encoded, Skip) else self.prepare_bulk([encoded])

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """One v1/orders request for up to 1,000 orders (orders mode)."""
        self._require_orders_mode()
        self._check_bulk_size(elements)
        return self._post("orders", b'{"orders":' + jsonbody.array(elements) + b"}")
