"""eSputnik's settings block (`ESPUTNIK_*`)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.urls import OutboundUrl


class EsputnikMode(StrEnum):
    ORDERS = "orders"
    EVENTS = "events"


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
