"""Product Recommendations' settings block (`PRODUCT_RECS_*`), and the cancellation endpoint
derived from the offline order endpoint."""

from __future__ import annotations

from typing import ClassVar, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.urls import OutboundUrl

#: the documented offline orders path; the POST has it under `/tracker`, the DELETE does not
OFFLINE_ORDERS_PATH = "/smart-api/orders/offline"
TRACKER = "/tracker"


def cancellation_url(url: str, order_number: str) -> str:
    """`DELETE` URL cancelling `order_number`, derived from the offline order endpoint `url`:
    the same scheme, host, port (and query, if any); the path's trailing
    `/tracker/smart-api/orders/offline` becomes `/smart-api/orders/offline/<order number>` (a
    prefix before it, such as a proxy's, is kept). The order number is one percent-encoded path
    segment (`/`, `?`, `#`, `%`, spaces, non-ASCII all encoded).

    ValueError when `url`'s path does not end with the documented path (then where the
    cancellation endpoint is cannot be told), or the order number is `.` or `..` (a client or
    proxy would resolve it as a dot-segment, DELETE-ing another path).
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(OFFLINE_ORDERS_PATH):
        raise ValueError(
            f"must end with {TRACKER}{OFFLINE_ORDERS_PATH}, the documented endpoint, for the "
            "cancellation URL to be derived from it"
        )
    if order_number in {".", ".."}:
        raise ValueError(f"order number {order_number!r} cannot be a URL path segment")
    prefix = path.removesuffix(OFFLINE_ORDERS_PATH).removesuffix(TRACKER)
    segment = quote(order_number, safe="")
    return urlunsplit(
        (parts.scheme, parts.netloc, f"{prefix}{OFFLINE_ORDERS_PATH}/{segment}", parts.query, "")
    )


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
    cancellations_enabled: bool = Field(
        default=False,
        description="`true`: OrderCancelled is sent as `DELETE .../smart-api/orders/offline/"
        "<orderId>` (PRODUCT_RECS_URL without `/tracker`); Optimizely must first enable order "
        "cancellations for the site",
    )

    @model_validator(mode="after")
    def _cancellation_url_can_be_derived(self) -> Self:
        if self.enabled and self.cancellations_enabled and self.url is not None:
            try:
                cancellation_url(self.url, "order")
            except ValueError as exc:
                raise ValueError(
                    f"PRODUCT_RECS_URL {exc} (PRODUCT_RECS_CANCELLATIONS_ENABLED=true)"
                ) from None
        return self
