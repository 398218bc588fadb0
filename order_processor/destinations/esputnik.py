"""eSputnik orders, in two documented ways (seed 003, DESIGN.md); see docs/destinations/esputnik.md.

`orders` mode (default): `POST {base}/api/v1/orders` with `{"orders": [...]}` (up to 1,000),
`source: "offline"`; creates the contact when it is new. `events` mode: `POST {base}/api/v1/event`
with `eventTypeKey` orderCreated/orderUpdated/orderDelivered/orderCancelled and `params` as
`[{name, value}]` strings; the contact must already exist. Auth: HTTP Basic, any user name, the API
key as the password.

The bodies are built from the declarative tables below (`ORDER_FIELDS`, `EVENT_PARAMS`,
`ITEM_FIELDS`: target field, documented source, how the value is read), which the docs reproduce.

Totals rule (eSputnik: "item costs must add up to totalCost"), whenever items are sent:
    item cost = unitPrice * quantity - line discount          (one per contract line)
    totalCost = total - shipping                               (the goods, without delivery)
    sum(item cost) == totalCost, exactly (Decimal, no rounding)
The contract's order-level `discount` is a summary of what the lines already carry (subTotal -
discount + shipping = total), so it is not subtracted again; it is sent as information only. An
order that breaks the rule is refused before any call, as a permanent error (dead-lettered).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from order_processor import jsonbody
from order_processor.contract import EventType, OrderLine
from order_processor.destinations.base import Destination, DestinationSettings, Skip
from order_processor.model import TrackingEvent
from order_processor.outbound.urls import OutboundUrl

MAX_BULK_ORDERS = 1000
ORDER_SOURCE = "offline"


class EsputnikMode(StrEnum):
    ORDERS = "orders"
    EVENTS = "events"


class OrderStatus(StrEnum):
    INITIALIZED = "INITIALIZED"
    IN_PROGRESS = "IN_PROGRESS"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


class EsputnikSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="ESPUTNIK_")
    required: ClassVar[tuple[str, ...]] = ("api_key",)
    example: ClassVar[dict[str, str]] = {"api_key": "dry-run-key"}

    base_url: OutboundUrl = Field(default="https://esputnik.com", description="API host")
    api_key: SecretStr | None = Field(
        default=None, description="API key, sent as the HTTP Basic password (secret)"
    )
    mode: EsputnikMode = Field(
        default=EsputnikMode.ORDERS,
        description="`orders` (`POST /api/v1/orders`, creates contacts) or `events` "
        "(`POST /api/v1/event`, contacts must exist)",
    )
    user_name: str = Field(
        default="instore-order-sync", description="HTTP Basic user name (eSputnik ignores it)"
    )

    def secret_values(self) -> list[str]:
        """The key, and the user:key pair whose base64 form travels in the Basic header."""
        values = super().secret_values()
        return values + [f"{self.user_name}:{value}" for value in values]


@dataclass(frozen=True, slots=True)
class Target:
    """What one routing cell means: the v1/event type key and the order status sent with it."""

    event_type_key: str
    status: OrderStatus


#: routing.py's "esputnik" cells -> event key (events mode) and status (both modes). An in-store
#: sale is complete when it is created, so created/updated/delivered all carry DELIVERED; an
#: update re-sends the whole order, which replaces it by externalOrderId.
TARGETS: dict[str, Target] = {
    "DELIVERED": Target("orderCreated", OrderStatus.DELIVERED),
    "orderUpdated": Target("orderUpdated", OrderStatus.DELIVERED),
    "orderDelivered": Target("orderDelivered", OrderStatus.DELIVERED),
    "orderCancelled": Target("orderCancelled", OrderStatus.CANCELLED),
}


@dataclass(frozen=True, slots=True)
class Source:
    """Everything a mapping table reads: the event plus the values this module derives."""

    event: TrackingEvent
    status: OrderStatus
    total_cost: Decimal
    items: list[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One row of a mapping table: target field <- documented source. None values are omitted."""

    target: str
    source: str
    read: Callable[[Source], Any]


@dataclass(frozen=True, slots=True)
class ItemFieldMap:
    target: str
    source: str
    read: Callable[[OrderLine], Any]


def item_cost(line: OrderLine) -> Decimal:
    """The line's net amount: what the customer paid for it."""
    return line.unit_price * line.quantity - line.discount


ITEM_FIELDS: tuple[ItemFieldMap, ...] = (
    ItemFieldMap(
        "externalItemId",
        "lines[].productId, else lines[].sku",
        lambda line: line.product_id or line.sku,
    ),
    ItemFieldMap("name", "lines[].name", lambda line: line.name),
    ItemFieldMap("category", "lines[].category", lambda line: line.category),
    ItemFieldMap("quantity", "lines[].quantity", lambda line: line.quantity),
    ItemFieldMap("cost", "lines[].unitPrice * quantity - lines[].discount", item_cost),
)

ORDER_FIELDS: tuple[FieldMap, ...] = (
    FieldMap("externalOrderId", "orderId", lambda s: s.event.order.order_id),
    FieldMap("externalCustomerId", "customer: customer_id", lambda s: s.event.customer.customer_id),
    FieldMap("totalCost", "total - shipping", lambda s: s.total_cost),
    FieldMap("status", "eventType (see TARGETS)", lambda s: s.status.value),
    FieldMap("date", "orderDate (ISO 8601 with offset)", lambda s: s.event.order.order_date),
    FieldMap("currency", "currency", lambda s: s.event.order.currency),
    FieldMap("email", "customer: email", lambda s: s.event.customer.email),
    FieldMap("phone", "customer: phone", lambda s: s.event.customer.phone),
    FieldMap("firstName", "customer: first_name", lambda s: s.event.customer.first_name),
    FieldMap("lastName", "customer: last_name", lambda s: s.event.customer.last_name),
    FieldMap("shipping", "shipping", lambda s: s.event.order.shipping),
    FieldMap("discount", "discount (information only)", lambda s: s.event.order.discount),
    FieldMap("source", '"offline"', lambda s: ORDER_SOURCE),
    FieldMap("items", "lines (ITEM_FIELDS); omitted when there are none", lambda s: s.items),
)

EVENT_PARAMS: tuple[FieldMap, ...] = (
    FieldMap("externalOrderId", "orderId", lambda s: s.event.order.order_id),
    FieldMap("externalCustomerId", "customer: customer_id", lambda s: s.event.customer.customer_id),
    FieldMap("totalCost", "total - shipping", lambda s: str(s.total_cost)),
    FieldMap("status", "eventType (see TARGETS)", lambda s: s.status.value),
    FieldMap(
        "date", "orderDate (ISO 8601 with offset)", lambda s: s.event.order.order_date.isoformat()
    ),
    FieldMap("currency", "currency", lambda s: s.event.order.currency),
    FieldMap("email", "customer: email", lambda s: s.event.customer.email),
    FieldMap("phone", "customer: phone", lambda s: s.event.customer.phone),
    FieldMap(
        "items",
        "lines (ITEM_FIELDS) as a JSON string; omitted when there are none",
        lambda s: None if s.items is None else jsonbody.dumps(s.items).decode("utf-8"),
    ),
)


def build_items(event: TrackingEvent) -> list[dict[str, Any]] | None:
    lines = event.order.lines
    if not lines:
        return None
    return [
        {f.target: value for f in ITEM_FIELDS if (value := f.read(line)) is not None}
        for line in lines
    ]


def total_cost(event: TrackingEvent) -> Decimal:
    return event.order.total - event.order.shipping


def totals_problem(event: TrackingEvent) -> str | None:
    """Why eSputnik would refuse this order's numbers, or None (no lines: nothing to add up)."""
    order = event.order
    if not order.lines:
        return None
    items = order.lines_total
    expected = total_cost(event)
    if items == expected:
        return None
    return (
        f"order {order.order_id}: item costs (unitPrice * quantity - line discount) add up to "
        f"{items}, but totalCost (total {order.total} - shipping {order.shipping}) is {expected}; "
        "eSputnik requires item costs to add up to totalCost"
    )


def key_value(event: TrackingEvent) -> str | None:
    """The contact identifier for v1/event: email, else phone, else the customer id."""
    customer = event.customer
    return customer.email or customer.phone or customer.customer_id


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
    settings_class = EsputnikSettings
    dry_run_status = 200
    dry_run_body: ClassVar[Any] = {}
    settings: EsputnikSettings

    def _target(self, route: str) -> Target:
        target = TARGETS.get(route)
        if target is None:
            raise self.rejected(f"route {route!r} has no eSputnik mapping")
        return target

    def _source(self, event: TrackingEvent, route: str) -> Source:
        if (problem := totals_problem(event)) is not None:
            raise self.rejected(problem, vendor_code="TotalsMismatch")
        return Source(
            event=event,
            status=self._target(route).status,
            total_cost=total_cost(event),
            items=build_items(event),
        )

    def order(self, event: TrackingEvent, route: str) -> dict[str, Any]:
        """One element of the v1/orders `orders` array (raises `rejected` on bad totals)."""
        source = self._source(event, route)
        return {f.target: value for f in ORDER_FIELDS if (value := f.read(source)) is not None}

    def event_body(self, event: TrackingEvent, route: str) -> dict[str, Any]:
        """The v1/event body (raises `rejected` on bad totals)."""
        source = self._source(event, route)
        params = [
            {"name": f.target, "value": str(value)}
            for f in EVENT_PARAMS
            if (value := f.read(source)) is not None
        ]
        return {
            "eventTypeKey": self._target(route).event_type_key,
            "keyValue": key_value(event),
            "params": params,
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
        if not (event.customer.email or event.customer.phone):
            return Skip("no customer email or phone: eSputnik needs one to create the contact")
        return jsonbody.dumps(self.order(event, route))

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        if self.settings.mode is EsputnikMode.EVENTS:
            if key_value(event) is None:
                return Skip(
                    "no customer email, phone or customer id: an eSputnik event must name an "
                    "existing contact"
                )
            return self._post("event", jsonbody.dumps(self.event_body(event, route)))
        encoded = self.encode(event, route)
        return encoded if isinstance(encoded, Skip) else self.prepare_bulk([encoded])

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """One v1/orders request for up to 1,000 orders (orders mode)."""
        self._require_orders_mode()
        self._check_bulk_size(elements)
        return self._post("orders", b'{"orders":' + jsonbody.array(elements) + b"}")
