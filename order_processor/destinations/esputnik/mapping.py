"""TrackingEvent -> eSputnik, declaratively (docs tables generated): one element of v1/orders'
`orders` array (ORDER), the `params` of a v1/event orderCreated/... event (EVENT), and one
item per order line (ITEM, both modes). Sources: docs/destinations/esputnik.md."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from order_processor import jsonbody
from order_processor.contract import OrderLine
from order_processor.destinations.esputnik.settings import render_link
from order_processor.mapping import Context, Field, MappingError, apply

#: what v1/orders' `source` says for an in-store order ("anything else counts as online")
ORDER_SOURCE = "offline"
#: the item fields without which an events-mode orderCreated/orderUpdated is ignored: the event
#: guide's example has them all, Yespo's orders guide lists them as required item parameters, its
#: events guide url and imageUrl (docs/destinations/esputnik.md, Item links)
EVENT_ITEM_REQUIRED = ("externalItemId", "name", "quantity", "cost", "url", "imageUrl")
#: a phone is kept when it has this many digits (E.164 allows 15), as the WooCommerce plugin does
PHONE_DIGITS = range(5, 16)
_NOT_A_DIGIT = re.compile(r"[^0-9]")


class OrderStatus(StrEnum):
    INITIALIZED = "INITIALIZED"
    IN_PROGRESS = "IN_PROGRESS"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


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


def phone_digits(phone: str | None) -> str | None:
    """The phone as eSputnik's plugins send it: digits only (`+44 7700 900123` ->
    `447700900123`), so the contact it names is the one the website created; None when what is
    left is not a phone number (fewer than 5 or more than 15 digits)."""
    if phone is None:
        return None
    digits = _NOT_A_DIGIT.sub("", phone)
    return digits if len(digits) in PHONE_DIGITS else None


# --- transforms (named: the docs table shows the name) ----------------------------------------


def digits_only(phone: str, _: Context) -> str | None:
    return phone_digits(phone)


def order_status(route: str, _: Context) -> str:
    return TARGETS[route].status.value


def item_id(line: OrderLine, _: Context) -> str:
    return line.product_id or line.sku


def line_total(line: OrderLine, _: Context) -> Decimal:
    """What the customer paid for the line: unit price x quantity, less the line's discount
    (exact Decimal; see "Item cost" in the docs for why a line total and not a unit price)."""
    return line.unit_price * line.quantity - line.discount


def item_url(line: OrderLine, context: Context) -> str | None:
    """The line's own page (contract 1.1), else ESPUTNIK_ITEM_URL_TEMPLATE filled from it."""
    template = context.settings.item_url_template
    if line.url is not None or template is None:
        return line.url
    return render_link(template, sku=line.sku, product_id=line.product_id)


def item_image_url(line: OrderLine, context: Context) -> str | None:
    """The line's own image (contract 1.1), else ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE filled."""
    template = context.settings.item_image_url_template
    if line.image_url is not None or template is None:
        return line.image_url
    return render_link(template, sku=line.sku, product_id=line.product_id)


def text(value: Any, _: Context) -> str:
    return str(value)


def event_date(moment: datetime, context: Context) -> str:
    """`YYYY-MM-ddTHH:mm:ss` in ESPUTNIK_EVENT_TIME_ZONE, no offset (the event guide's form [S])."""
    try:
        local = moment.astimezone(context.settings.event_zone)
    except OverflowError:
        raise MappingError("date: orderDate is out of range in ESPUTNIK_EVENT_TIME_ZONE") from None
    return (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )


def json_text(value: Any, _: Context) -> str:
    return jsonbody.dumps(value).decode("utf-8")


# --- the mappings -----------------------------------------------------------------------------

# Notes cite the sources listed in docs/destinations/esputnik.md: [S] guide [S] (v1/event), [O] the
# order reference, [G] Yespo's orders guide, [W] [SH] [OC] the WooCommerce, Shopify and OpenCart
# plugins.

ITEM: tuple[Field, ...] = (
    Field(
        "externalItemId",
        "line",
        item_id,
        "[S] the line's productId, else its sku",
    ),
    Field("name", "line.name", note="[S]; [G] lists it as required of each item"),
    Field("category", "line.category", note="[S]"),
    Field("quantity", "line.quantity", note="[S]"),
    Field(
        "cost",
        "line",
        line_total,
        "the line total the customer paid: unitPrice x quantity - the line's discount (see Item "
        "cost)",
    ),
    Field(
        "url",
        "line",
        item_url,
        "[S][G] the line's `url` (contract 1.1), else ESPUTNIK_ITEM_URL_TEMPLATE; left out when "
        "neither gives one (events mode: see Item links)",
    ),
    Field(
        "imageUrl",
        "line",
        item_image_url,
        "[S][G] the line's `imageUrl` (contract 1.1), else ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE; as "
        "`url`",
    ),
)

ORDER: tuple[Field, ...] = (
    Field(
        "externalOrderId",
        "order.orderId",
        note="[O]; a re-send updates the order [SH]",
        required=True,
    ),
    Field(
        "externalCustomerId",
        "customer.customerId",
        note="the loyalty customer id; left out when unknown, as the plugins do for guests "
        "[W][OC] (see Open questions)",
    ),
    Field(
        "totalCost",
        "order.total",
        note="the order total, shipping included, as the plugins send it [W][SH][OC]; never "
        "checked against the items (see Totals)",
        required=True,
    ),
    Field("status", "route", order_status, "[O] per event type (Which events)", required=True),
    Field(
        "date", "order.orderDate", note="ISO 8601 with the order's offset, as [O]", required=True
    ),
    Field("currency", "order.currency", note="ISO 4217 [O]", required=True),
    Field("email", "customer.email", note="[O]"),
    Field(
        "phone",
        "customer.phone",
        digits_only,
        "digits only, as [W][OC] send it (`+44...` may create a second contact); left out unless "
        "5 to 15 digits [W]",
    ),
    Field("firstName", "customer.firstName", note="[O]"),
    Field("lastName", "customer.lastName", note="[O]"),
    Field("shipping", "order.shipping", note="[O]"),
    Field("discount", "order.discount", note="[O]; information only"),
    Field(
        "paymentMethod",
        "order.paymentMethod",
        note="[O] a string; the ERP's value as it is (`cash`, `card`...), as [W][OC] pass theirs",
    ),
    Field(
        "storeId",
        "order.store.id",
        note='[O] "Store ID (if you work with several stores in one account)": the store of '
        "the sale",
    ),
    Field("source", f'"{ORDER_SOURCE}"', note="[O] anything else counts as online"),
    Field("items", "derived.items", note="[O] one per line (Item); left out when there are none"),
)

EVENT: tuple[Field, ...] = (
    Field("externalOrderId", "order.orderId", note="[S]", required=True),
    Field("externalCustomerId", "customer.customerId", note="[S]; as in orders mode"),
    Field(
        "totalCost", "order.total", text, "[S] the order total, as in orders mode", required=True
    ),
    Field("status", "route", order_status, "[S] per event type (Which events)", required=True),
    Field(
        "date",
        "order.orderDate",
        event_date,
        "[S] `YYYY-MM-ddTHH:mm:ss`, no offset, in ESPUTNIK_EVENT_TIME_ZONE (see Events date)",
        required=True,
    ),
    Field("currency", "order.currency", note="as in orders mode"),
    Field("email", "customer.email", note="[S] a default contact locator"),
    Field("phone", "customer.phone", digits_only, "[S] digits only, as in orders mode"),
    Field(
        "items",
        "derived.items",
        json_text,
        "[S] the items (Item) as a JSON string; left out when there are none",
    ),
)


def items(context: Context) -> list[dict[str, Any]] | None:
    """One ITEM object per order line; None when the order has no lines."""
    lines = context.event.order.lines
    if not lines:
        return None
    return [apply(ITEM, context.for_line(line)) for line in lines]


#: where a missing required item field comes from, for the skip reason
ITEM_FIELD_SOURCES = {
    "name": "lines[].name",
    "url": "lines[].url (contract 1.1) or ESPUTNIK_ITEM_URL_TEMPLATE",
    "imageUrl": "lines[].imageUrl (contract 1.1) or ESPUTNIK_ITEM_IMAGE_URL_TEMPLATE",
}


def incomplete_items(built: list[dict[str, Any]] | None) -> dict[int, list[str]]:
    """Line index -> the EVENT_ITEM_REQUIRED fields its item lacks (only incomplete lines)."""
    incomplete = {}
    for index, item in enumerate(built or ()):
        missing = [name for name in EVENT_ITEM_REQUIRED if item.get(name) in (None, "")]
        if missing:
            incomplete[index] = missing
    return incomplete
