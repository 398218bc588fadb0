"""TrackingEvent -> one Profile Store Track API event, declaratively (docs table generated)."""

from __future__ import annotations

from typing import Any

from order_processor import jsonbody
from order_processor.mapping import Context, Field

# What goes into `payload`: the order, minus identifiers Profile Store has no use for (the
# profile is linked through `user`; data minimisation).
_PAYLOAD_EXCLUDE: dict[str, Any] = {"customer": {"loyalty_card_number", "email", "phone"}}


def utc_z(value: Any, _: Context) -> str:
    return jsonbody.utc_z(value)


def order_payload(value: Any, _: Context) -> dict[str, Any]:
    return dict(
        value.model_dump(mode="python", by_alias=True, exclude=_PAYLOAD_EXCLUDE, exclude_none=True)
    )


def full_name(value: Any, _: Context) -> str | None:
    return str(value.name) if value.name else None


EVENT: tuple[Field, ...] = (
    Field(
        "deviceId",
        "settings.deviceId",
        note="PROFILE_STORE_DEVICE_ID (`InStoreDevice`, as in the in-store blog post); required "
        "by the Track API. One value for every in-store customer: see Shared deviceId",
        required=True,
    ),
    Field(
        "eventType",
        "route",
        note="the routing column (StorePurchase, ...); required",
        required=True,
    ),
    Field(
        "value", "route", note="the same as eventType, as in the blog post; required", required=True
    ),
    Field("eventTime", "order.orderDate", utc_z, "UTC ISO 8601 with `Z`, second precision"),
    Field(
        "scope",
        "settings.scope",
        note="PROFILE_STORE_SCOPE: must equal the website's scope (lowercase, no special "
        "characters) so online and in-store land on one profile",
    ),
    Field(
        "user.email",
        "customer.email",
        note="links the event to the profile; events without one are skipped",
    ),
    Field("user.name", "customer", full_name, "loyalty first and last name; left out when unknown"),
    Field(
        "payload",
        "order",
        order_payload,
        "the whole order (contract v1, camelCase, exact decimals) without the customer's card "
        "number, email and phone",
    ),
)
