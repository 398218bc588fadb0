"""eSputnik's settings block (`ESPUTNIK_*`)."""

from __future__ import annotations

import string
from datetime import UTC, tzinfo
from enum import StrEnum
from typing import ClassVar
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.redaction import basic_pairs
from order_processor.outbound.urls import OutboundUrl

#: the slots an item link template may use, filled URL-encoded from the order line
TEMPLATE_SLOTS = frozenset({"sku", "productId"})
MAX_TEMPLATE_LENGTH = 1024


class EsputnikMode(StrEnum):
    ORDERS = "orders"
    EVENTS = "events"


def template_slots(template: str) -> list[str]:
    """The slots a template uses, in order (ValueError for a malformed or unknown one)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError("has an unmatched { or } (write {{ or }} for a literal brace)") from None
    slots = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_SLOTS:
            raise ValueError(f"has an unknown slot {{{name}}}: use {{sku}} or {{productId}}")
        if spec or conversion:
            raise ValueError(f"slot {{{name}}} takes no format or conversion")
        slots.append(name)
    return slots


def check_item_link_template(value: str | None) -> str | None:
    """An absolute https URL whose path or query has a {sku} and/or {productId} slot."""
    if value is None:
        return None
    text = value.strip()
    if any(character.isspace() for character in text):
        raise ValueError("must not contain spaces")
    if not template_slots(text):
        raise ValueError("needs a {sku} or {productId} slot, e.g. https://shop.example/p/{sku}")
    parts = urlsplit(text.split("{", 1)[0])
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ValueError("must be an absolute https:// URL, e.g. https://shop.example/p/{sku}")
    if not (parts.path or parts.query or parts.fragment or text.split("{", 1)[0].endswith("?")):
        raise ValueError("slots belong in the path or query, after the host")
    return text


def render_link(template: str, *, sku: str, product_id: str | None) -> str | None:
    """The template with its slots filled (URL-encoded), or None when the line lacks a value a
    slot needs (a {productId} template and a line without productId)."""
    values = {"sku": sku, "productId": product_id}
    needed = template_slots(template)
    if any(values[name] is None for name in needed):
        return None
    return template.format(**{name: quote(values[name] or "", safe="") for name in needed})


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
    item_url_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_LENGTH,
        description="an item's product page when its order line has no `url`: an https URL "
        "with `{sku}` and/or `{productId}` slots (URL-encoded), e.g. "
        "`https://shop.example/p/{sku}`. Events mode skips orders whose items have no page",
    )
    item_image_url_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_LENGTH,
        description="an item's image when its order line has no `imageUrl`: an https URL with "
        "`{sku}` and/or `{productId}` slots, e.g. `https://shop.example/img/{sku}.jpg`. Events "
        "mode skips orders whose items have no image",
    )
    event_time_zone: str = Field(
        default="UTC",
        description="events mode: the time zone of `date` (`YYYY-MM-ddTHH:mm:ss`, no offset); "
        "set it to the eSputnik account's time zone, e.g. `Europe/Kyiv`",
    )

    @field_validator("item_url_template", "item_image_url_template")
    @classmethod
    def _is_a_link_template(cls, value: str | None) -> str | None:
        return check_item_link_template(value)

    @field_validator("event_time_zone")
    @classmethod
    def _is_a_time_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @property
    def event_zone(self) -> tzinfo:
        return _zone(self.event_time_zone)

    def secret_values(self) -> list[str]:
        """The key, and the user:key pair whose base64 form travels in the Basic header."""
        values = super().secret_values()
        return values + basic_pairs(self.user_name, values)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            "is not a known IANA time zone such as Europe/Kyiv (where the system has no time "
            "zone database, install the tzdata package)"
        ) from None
