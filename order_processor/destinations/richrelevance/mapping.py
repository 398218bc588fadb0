"""TrackingEvent -> one Omnichannel Order API order, declaratively (docs table generated).

[O] in the notes is the API's reference page, [S] the SKU feed's; docs/destinations/richrelevance.md
lists them with their addresses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from order_processor.destinations.richrelevance.settings import (
    EmailHash,
    NonNumericProduct,
    SkuIdForm,
)
from order_processor.mapping import Context, Field, MappingError, apply

#: the documented integer (`regionId` beside it is typed "long"): a signed 32-bit integer's top
INT32_MAX = 2**31 - 1
_DIGITS = re.compile(r"[0-9]+")


# --- order id -----------------------------------------------------------------------------------


def order_id_to_int(order_id: str, bits: int) -> int:
    """The API's integer `id` for an ERP order id, in `0 .. 2**bits - 1`; the same input and
    bits always give the same id, so a re-send replaces the same order.

    A canonical decimal id (ASCII digits, no leading zero) is used as it is, and refused
    (MappingError) when it is above the range: truncating or hashing it could land on another
    order's id. Anything else is `int.from_bytes(sha256(utf8(order_id))[:8], "big")` masked to
    `bits` ("00123" is hashed, not read as 123, so it cannot take the ERP's order "123"). With 53
    bits this is the formula earlier versions used for every tenant.
    """
    limit = (1 << bits) - 1
    if _DIGITS.fullmatch(order_id) and (order_id == "0" or order_id[0] != "0"):
        value = int(order_id)
        if value > limit:
            raise MappingError(
                f"order id {order_id} is above the integer id range RichRelevance takes "
                f"(RICHRELEVANCE_ORDER_ID_BITS={bits}: 0 to {limit}); refused rather than "
                "truncated or hashed onto another order's id. Set 53 once Algonomy confirms "
                "`id` is a long"
            )
        return value
    digest = hashlib.sha256(order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & limit


def rr_order_id(value: Any, context: Context) -> int:
    return order_id_to_int(str(value), context.settings.order_id_bits)


# --- line identifiers ---------------------------------------------------------------------------


def integer_id(value: str | None) -> int | None:
    """An identifier as the documented integer: ASCII digits (leading zeros dropped, as an
    integer key has none) up to INT32_MAX; None for anything else."""
    if value is None or not _DIGITS.fullmatch(value):
        return None
    number = int(value)
    return number if number <= INT32_MAX else None


def product_id(value: Any, _: Context) -> int | None:
    return integer_id(value)


def sku_id(value: Any, context: Context) -> str | int | None:
    if context.settings.sku_id is SkuIdForm.STRING:
        return str(value)
    return integer_id(value)


# --- payment method -----------------------------------------------------------------------------

#: the documented values [O], each with the ERP values (compared without case, spaces, `-`, `_`)
#: that mean it; any other ERP value is `other`
PAYMENT_METHODS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cash": ("cash",),
        "credit": ("card", "credit", "credit card", "debit", "debit card"),
        "check": ("check", "cheque"),
        "digital": ("digital", "wallet", "mobile", "apple pay", "google pay", "paypal"),
        "other": ("other",),
    }
)


def _payment_key(value: str) -> str:
    return re.sub(r"[\s_-]+", "", value).lower()


_PAYMENT_LOOKUP: Mapping[str, str] = MappingProxyType(
    {_payment_key(erp): value for value, erps in PAYMENT_METHODS.items() for erp in erps}
)


def payment_method(value: Any, _: Context) -> str | None:
    key = _payment_key(str(value))
    if not key:
        return None
    return _PAYMENT_LOOKUP.get(key, "other")


def _payment_note() -> str:
    groups = "; ".join(
        f"`{value}` from {', '.join(erps)}" for value, erps in PAYMENT_METHODS.items()
    )
    return (
        f"one of the documented `cash`, `credit`, `check`, `digital`, `other` [O]: {groups} "
        "(case, spaces, `-` and `_` ignored); any other value `other`; left out when the ERP "
        "sent none"
    )


# --- the rest -----------------------------------------------------------------------------------


def iso8601(value: Any, _: Context) -> str:
    assert isinstance(value, datetime)
    return value.isoformat(timespec="seconds")


def hash_email(email: str | None, algorithm: EmailHash) -> str | None:
    """Hex digest of the trimmed, lower-cased email; None when off or there is no email."""
    if algorithm is EmailHash.OFF or not email or not email.strip():
        return None
    normalised = email.strip().lower().encode("utf-8")
    if algorithm is EmailHash.MD5:
        return hashlib.md5(normalised, usedforsecurity=False).hexdigest()
    return hashlib.sha256(normalised).hexdigest()


def email_hash(value: Any, context: Context) -> str | None:
    return hash_email(value, context.settings.email_hash)


# --- the mapping --------------------------------------------------------------------------------

ORDER: tuple[Field, ...] = (
    Field(
        "id",
        "order.orderId",
        rr_order_id,
        "integer, mandatory [O]: a numeric ERP id as it is (refused above the "
        "RICHRELEVANCE_ORDER_ID_BITS range), any other hashed into it; see Order id",
        required=True,
    ),
    Field(
        "externalOrderId",
        "order.orderId",
        note="the ERP order id verbatim; not a documented field [O] (see Open questions)",
    ),
    Field("channel", "settings.channel", note="RICHRELEVANCE_CHANNEL (default `store`, as [O])"),
    Field(
        "userId",
        "customer.customerId",
        note="mandatory [O]: must match the shopper id the site sends, the loyalty customer "
        "id; without one the event is skipped",
        required=True,
    ),
    Field(
        "dateTime",
        "order.orderDate",
        iso8601,
        "mandatory, ISO 8601 [O]: the ERP's own offset kept, second precision",
        required=True,
    ),
    Field("paymentMethod", "order.paymentMethod", payment_method, _payment_note()),
    Field(
        "emailHash",
        "customer.email",
        email_hash,
        "RICHRELEVANCE_EMAIL_HASH of the trimmed, lower-cased email; [O] names no algorithm; "
        "left out when `off` or no email",
    ),
    Field("storeId", "order.store.id", note="string [O]"),
    Field("regionId", "order.store.regionId", note="long [O]: the region feed's id"),
    Field("currency", "order.currency", note="ISO currency code [O] (USD when left out)"),
    Field("couponCode", "order.coupon.code", note="string [O]"),
    Field(
        "couponValue",
        "order.coupon.value",
        note="exact decimal: typed integer, but [O]'s examples send 23.76",
    ),
    Field(
        "lineItems",
        "derived.lineItems",
        note="mandatory array [O]: each line with an integer productId, through the line item "
        "mapping; the others by RICHRELEVANCE_NON_NUMERIC_PRODUCT",
        required=True,
    ),
)

LINE_ITEM: tuple[Field, ...] = (
    Field(
        "productId",
        "line.productId",
        product_id,
        "integer, mandatory, the catalog key [O]: ASCII digits up to 2147483647; never the SKU",
        required=True,
    ),
    Field(
        "skuId",
        "line.sku",
        sku_id,
        "RICHRELEVANCE_SKU_ID: `string` (default) the SKU verbatim, as every example [O] and "
        "the SKU feed's alphanumeric ids [S]; `integer` numeric SKUs only (the type column)",
    ),
    Field("quantity", "line.quantity", note="integer, mandatory [O]", required=True),
    Field(
        "unitPrice",
        "line.unitPrice",
        note="exact decimal, the unit price before the line discount: typed integer, but "
        "[O]'s examples send 256.678",
        required=True,
    ),
)


def line_items(context: Context) -> tuple[list[dict[str, Any]], list[int]]:
    """Each line with an integer productId through LINE_ITEM, and the indexes of the lines left
    out (RICHRELEVANCE_NON_NUMERIC_PRODUCT=skip-line); `reject` raises MappingError instead."""
    items: list[dict[str, Any]] = []
    left_out: list[int] = []
    for index, line in enumerate(context.event.order.lines):
        if integer_id(line.product_id) is None:
            if context.settings.non_numeric_product is NonNumericProduct.REJECT:
                raise MappingError(
                    f"lines[{index}] has no integer productId (sku {line.sku}): RichRelevance "
                    "types productId as an integer catalog key and "
                    "RICHRELEVANCE_NON_NUMERIC_PRODUCT=reject"
                )
            left_out.append(index)
            continue
        items.append(apply(LINE_ITEM, context.for_line(line)))
    return items, left_out
