"""Product Recommendations' settings block (`PRODUCT_RECS_*`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.urls import OutboundUrl


class ProductRecsSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCT_RECS_")
    required: ClassVar[tuple[str, ...]] = ("url", "site", "site_token")
    example: ClassVar[dict[str, str]] = {
        "url": "https://uat.peerius.com/tracker/smart-api/orders/offline",
        "site": "dry-run-site",
        "site_token": "dry-run-token",
    }

    url: OutboundUrl | None = Field(
        default=None,
        description="the offline order endpoint, e.g. "
        "`https://<site>.peerius.com/tracker/smart-api/orders/offline` "
        "(UAT: `https://uat.peerius.com/...`)",
    )
    site: str | None = Field(
        default=None, description="`site` header: the site name Optimizely assigned"
    )
    site_token: SecretStr | None = Field(
        default=None, description="`siteToken` header of the channel (secret)"
    )
    channel: str = Field(
        default="store", description="`channel` header; must be the siteToken's channel"
    )
    send_anonymous: bool = Field(
        default=False,
        description="`true`: also send orders without a known customer (no `user`). By default "
        "they are skipped: Optimizely uses no offline order without `user` to enrich anyone, and "
        "offline orders do not affect crowd behaviour unless Optimizely enables it for the site",
    )
