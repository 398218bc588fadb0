"""Profile Store's settings block (`PROFILE_STORE_*`)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.urls import OutboundUrl


class AuthStyle(StrEnum):
    #: `Authorization: epi-single <key>`: the only style in Optimizely's current Track API docs
    EPI_SINGLE = "epi-single"
    #: `Ocp-Apim-Subscription-Key: <key>`: the 2018 blog's style, for older tenants
    SUBSCRIPTION_KEY = "subscription-key"


class ProfileStoreSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILE_STORE_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_key", "scope")
    example: ClassVar[dict[str, str]] = {
        "base_url": "https://track-emea01.profilestore.episerver.net",
        "api_key": "dry-run-key",
        "scope": "default",
    }

    base_url: OutboundUrl | None = Field(
        default=None,
        description="Track API host, e.g. `https://track-emea01.profilestore.episerver.net`",
    )
    api_key: SecretStr | None = Field(default=None, description="the Track API key (secret)")
    auth_style: AuthStyle = Field(
        default=AuthStyle.EPI_SINGLE,
        description="`epi-single` (`Authorization: epi-single <key>`, Optimizely's current "
        "docs) or `subscription-key` (`Ocp-Apim-Subscription-Key: <key>`, older tenants)",
    )
    scope: str | None = Field(
        default=None, description="the website's tracking scope, lowercase letters and digits"
    )
    device_id: str = Field(
        default="InStoreDevice",
        description="`deviceId` of in-store events: one value shared by every in-store customer "
        "(see docs/destinations/profile_store.md, Shared deviceId)",
    )

    @field_validator("scope")
    @classmethod
    def _scope_is_lowercase_word(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]+", value):
            raise ValueError(
                "must be lowercase letters and digits only, the same as the website's scope"
            )
        return value
