"""RichRelevance's settings block (`RICHRELEVANCE_*`)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from order_processor.destinations.base import DestinationSettings
from order_processor.outbound.urls import OutboundUrl

PRODUCTION_BASE_URL = "https://gateway.richrelevance.com"
#: `id` is typed "integer" (`regionId`, beside it, "long"): 31 bits fit a signed 32-bit integer;
#: 53 is the most every JSON reader keeps exactly, for a tenant whose `id` is confirmed a long
ORDER_ID_BITS = (31, 53)


class Mode(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


class EmailHash(StrEnum):
    SHA256 = "sha256"
    MD5 = "md5"
    OFF = "off"


class NonNumericProduct(StrEnum):
    """What to do with an order line whose productId is not an integer (or is missing)."""

    #: leave the line out of the order; an order left with no line is skipped
    SKIP_LINE = "skip-line"
    #: refuse the order for this destination (dead-letter DestinationRejected on its lane)
    REJECT = "reject"


class SkuIdForm(StrEnum):
    #: the ERP's SKU verbatim, as a string: every example in the API's docs and the SKU feed
    STRING = "string"
    #: numeric SKUs as integers (the type column), other SKUs left out (the field is optional)
    INTEGER = "integer"


class RichRelevanceSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="RICHRELEVANCE_")
    required: ClassVar[tuple[str, ...]] = ("api_key", "client_id", "client_secret")
    example: ClassVar[dict[str, str]] = {
        "api_key": "dry-run-api-key",
        "client_id": "dry-run-client",
        "client_secret": "dry-run-secret",
    }

    base_url: OutboundUrl = Field(
        default=PRODUCTION_BASE_URL,
        description="gateway host (QA `https://qa-gateway.richrelevance.com`, staging "
        "`https://staging-gateway.richrelevance.com`); a token works only on its own host",
    )
    api_key: SecretStr | None = Field(
        default=None, description="the site environment's apiKey (path segment; secret)"
    )
    client_id: str | None = Field(default=None, description="OAuth2 client id")
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth2 client secret (secret)"
    )
    mode: Mode = Field(default=Mode.OFFLINE, description="`offline` or `online` import")
    channel: str = Field(
        default="store", min_length=1, max_length=64, description="`channel` of the orders"
    )
    email_hash: EmailHash = Field(
        default=EmailHash.SHA256,
        description="`emailHash` of the lower-cased trimmed email: `sha256`, `md5` or `off` "
        "(the API does not name the algorithm: use what the site sends)",
    )
    order_id_bits: int = Field(
        default=31,
        description="range of the integer `id`: `31` (0 to 2147483647, fits a signed 32-bit "
        "integer) or `53` (only once Algonomy confirms `id` is a long). Numeric ERP ids above "
        "it are refused; others are hashed into it. Changing it re-keys hashed ids (see "
        "docs/destinations/richrelevance.md, Order id)",
    )
    non_numeric_product: NonNumericProduct = Field(
        default=NonNumericProduct.SKIP_LINE,
        description="a line without an integer `productId`: `skip-line` (left out; an order "
        "with no line left is skipped) or `reject` (the order is refused on this lane)",
    )
    sku_id: SkuIdForm = Field(
        default=SkuIdForm.STRING,
        description="`skuId` form: `string` (the ERP SKU, as the API's examples) or `integer` "
        "(numeric SKUs only, others left out)",
    )

    @field_validator("order_id_bits")
    @classmethod
    def _supported_bits(cls, value: int) -> int:
        if value not in ORDER_ID_BITS:
            raise ValueError(
                "must be 31 (a signed 32-bit integer) or 53 (a long, kept exact by every "
                "JSON reader)"
            )
        return value
