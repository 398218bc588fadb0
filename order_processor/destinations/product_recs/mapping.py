"""TrackingEvent -> one Product Recommendations offline order, or the order number of a
cancellation, declaratively (docs tables generated). The sources ([O], [C] ...) are listed in
docs/destinations/product_recs.md."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from order_processor.contract import InStoreOrder, OrderLine
from order_processor.mapping import Context, Field, apply


def gmt_seconds(value: datetime, _: Context) -> str:
    """The documented form `2016-05-16T14:25:00 GMT`: UTC, second precision."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S GMT")


def product_id_or_sku(line: OrderLine, _: Context) -> str:
    # productId is the catalogue key the website's recommendations use; the SKU is the fallback.
    return line.product_id or line.sku


def line_attributes(line: OrderLine, _: Context) -> dict[str, str]:
    attributes = dict(line.attributes)
    if line.discount > 0:
        attributes["discount"] = "true"
    return attributes


def sub_total_or_lines(order: InStoreOrder, _: Context) -> Decimal:
    return order.sub_total if order.sub_total is not None else order.lines_total


def store_attributes(order: InStoreOrder, _: Context) -> dict[str, str]:
    # The ERP's attributes first; the store's own fields (as in the documented example) win.
    attributes = dict(order.attributes)
    store = {"store": order.store.name, "storePostcode": order.store.postcode}
    attributes.update({key: value for key, value in store.items() if value})
    attributes["storeId"] = order.store.id
    return attributes


def known_only(value: Any, context: Context) -> Any:
    """The value for a known customer (the loyalty provider knew the card, or the ERP sent the
    email); None (left out) otherwise."""
    return value if context.event.customer_known else None


def email_without_id(email: str, context: Context) -> str | None:
    """The deprecated `email`, only when there is no id to send instead."""
    return None if context.event.customer.customer_id else email


def items(lines: list[OrderLine], context: Context) -> list[dict[str, Any]]:
    return [apply(ITEM, context.for_line(line)) for line in lines]


def known_user(_: Any, context: Context) -> dict[str, Any] | None:
    """`user` for a known customer with an id or an email (one of them is required whenever
    `user` is given); None (left out) otherwise."""
    if not context.event.customer_known:
        return None
    return apply(USER, context) or None


#: `user`: who bought it. `info` is not sent: its keys must be agreed with Optimizely first.
USER: tuple[Field, ...] = (
    Field(
        "id",
        "customer.customerId",
        note="the loyalty provider's customer id (else the ERP's `customer.customerId`): the "
        "pseudonymised id the website also tracks [O]",
    ),
    Field(
        "email",
        "customer.email",
        email_without_id,
        "only when there is no id: deprecated by Optimizely, kept for backward compatibility [O]",
    ),
)

#: `order.items[]`: one per order line.
ITEM: tuple[Field, ...] = (
    Field(
        "refCode",
        "line",
        product_id_or_sku,
        "`productId` (the catalogue key), else the `sku`",
        required=True,
    ),
    Field("qty", "line.quantity", required=True),
    Field("price", "line.unitPrice", note="unit price before the line discount [O]", required=True),
    Field(
        "attributes",
        "line",
        line_attributes,
        'the line\'s attributes, plus `"discount": "true"` when the line is discounted (the '
        "documented example's form [O])",
    ),
)

#: The request body.
ORDER: tuple[Field, ...] = (
    Field("lang", "order.lang", note="contract default `en-gb`, the documented default too [O]"),
    Field("user", "customer", known_user, "see `user` below; left out for an unknown customer"),
    Field("order.refCode", "order.orderId", note="the ERP's order reference", required=True),
    Field(
        "order.customerId",
        "customer.customerId",
        known_only,
        "the same customer id as `user.id`, for a known customer; listed by [O], used for "
        "offline orders by Optimizely's own commerce integration [X]",
    ),
    Field("order.orderDate", "order.orderDate", gmt_seconds, "UTC [O]", required=True),
    Field("order.currency", "order.currency", note="ISO 4217, upper case", required=True),
    Field("order.shipping", "order.shipping", note="exact decimal; contract default 0"),
    Field(
        "order.subTotal",
        "order",
        sub_total_or_lines,
        "`subTotal`, else the sum of the lines (unit price x quantity - line discount)",
    ),
    Field("order.total", "order.total", note="exact decimal", required=True),
    Field("order.items", "order.lines", items, "one per line: see `order.items[]` below"),
    Field(
        "order.attributes",
        "order",
        store_attributes,
        "the ERP's `attributes`, then `store` (store name), `storePostcode` and `storeId`, "
        "as in the documented example [O]; the store's fields win",
    ),
)

#: `DELETE {PRODUCT_RECS_URL without /tracker}/<order_number>`: a cancellation has no body.
CANCELLATION: tuple[Field, ...] = (
    Field(
        "order_number",
        "order.orderId",
        note="the `refCode` the order was sent with [C]; percent-encoded as one path segment "
        "(`cancellation_url`)",
        required=True,
    ),
)
