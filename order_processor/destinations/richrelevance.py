"""RichRelevance / Algonomy Omnichannel Order API (seed 002, DESIGN.md).

`PUT {base}/omnichannel/api/v1/{apiKey}/orders?mode=offline|online` imports one order; re-sending
the same `id` replaces it, which is how OrderUpdated works. Auth is an OAuth2 client-credentials
bearer token from `POST {base}/omnichannel/v1/oauth2/token`, one per process, shared by every
concurrent call and refreshed on expiry or on a 401 (`order_processor.http.ClientCredentialsAuth`).

The body is built from the declarative tables `ORDER_FIELDS` and `LINE_ITEM_FIELDS` (target field
-> source path in `source_document`), reproduced in docs/destinations/richrelevance.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from loyalty_client.customer import read_path
from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import error_from_response
from order_processor.outbound.http import ClientCredentialsAuth, Timeouts, send
from order_processor.outbound.urls import OutboundUrl

PRODUCTION_BASE_URL = "https://gateway.richrelevance.com"
OAUTH2_PATH = "/omnichannel/v1/oauth2/token"
#: JavaScript-safe integers: the largest id every JSON reader keeps exactly
ID_BITS = 53
ID_MASK = (1 << ID_BITS) - 1
#: orders per POST: the API documents no limit; Profile Store's 100 keeps requests small
MAX_BULK_ORDERS = 100


class Mode(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


class EmailHash(StrEnum):
    SHA256 = "sha256"
    MD5 = "md5"
    OFF = "off"


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
        description="`emailHash` of the lower-cased trimmed email: `sha256`, `md5` or `off`",
    )


# --- order id -----------------------------------------------------------------------------------


def order_id_to_int(order_id: str) -> int:
    """The API's integer `id` for an ERP order id; the same input always gives the same id.

    A canonical decimal id (ASCII digits, no leading zero, below 2**53) is used as it is.
    Anything else is `int.from_bytes(sha256(utf8(order_id))[:8], "big") & (2**53 - 1)`, so a
    re-send of that order replaces the same order. ("00123" is hashed, not read as 123, so it
    cannot collide with the ERP's order "123".)
    """
    if order_id.isascii() and order_id.isdigit() and (order_id == "0" or order_id[0] != "0"):
        value = int(order_id)
        if value <= ID_MASK:
            return value
    digest = hashlib.sha256(order_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ID_MASK


def hash_email(email: str | None, algorithm: EmailHash) -> str | None:
    """Hex digest of the trimmed, lower-cased email; None when off or there is no email."""
    if algorithm is EmailHash.OFF or not email or not email.strip():
        return None
    normalised = email.strip().lower().encode("utf-8")
    if algorithm is EmailHash.MD5:
        return hashlib.md5(normalised, usedforsecurity=False).hexdigest()
    return hashlib.sha256(normalised).hexdigest()


# --- the declarative mapping --------------------------------------------------------------------

Transform = Callable[[Any, RichRelevanceSettings], Any]


def _iso8601(value: Any, _settings: RichRelevanceSettings) -> Any:
    assert isinstance(value, datetime)
    return value.isoformat(timespec="seconds")


def _rr_id(value: Any, _settings: RichRelevanceSettings) -> Any:
    return order_id_to_int(str(value))


def _email_hash(value: Any, settings: RichRelevanceSettings) -> Any:
    return hash_email(value, settings.email_hash)


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One target field: the first non-empty source path wins, then `transform`; fields whose
    value ends up None are left out of the body."""

    target: str
    sources: tuple[str, ...]
    transform: Transform | None = None
    note: str = ""


#: source paths read `source_document(event, settings)`: `order.*` is contract v1 (camelCase),
#: `customer.*` the enriched customer, `settings.*` this destination's settings.
ORDER_FIELDS: tuple[FieldMap, ...] = (
    FieldMap("id", ("order.orderId",), _rr_id, "numeric id as is, else 53-bit sha256 mapping"),
    FieldMap("externalOrderId", ("order.orderId",), None, "the ERP order id, verbatim"),
    FieldMap("channel", ("settings.channel",), None, "RICHRELEVANCE_CHANNEL"),
    FieldMap("userId", ("customer.customerId",), None, "loyalty customer id (mandatory)"),
    FieldMap("dateTime", ("order.orderDate",), _iso8601, "ISO 8601 with the ERP's offset"),
    FieldMap("paymentMethod", ("order.paymentMethod",)),
    FieldMap("emailHash", ("customer.email",), _email_hash, "RICHRELEVANCE_EMAIL_HASH"),
    FieldMap("storeId", ("order.store.id",)),
    FieldMap("regionId", ("order.store.regionId",)),
    FieldMap("currency", ("order.currency",)),
    FieldMap("couponCode", ("order.coupon.code",)),
    FieldMap("couponValue", ("order.coupon.value",), None, "exact decimal"),
)

#: source paths read one contract v1 line (camelCase)
LINE_ITEM_FIELDS: tuple[FieldMap, ...] = (
    FieldMap("productId", ("productId", "sku"), None, "catalog key; the SKU when no productId"),
    FieldMap("skuId", ("sku",)),
    FieldMap("quantity", ("quantity",)),
    FieldMap("unitPrice", ("unitPrice",), None, "exact decimal, before line discount"),
)


def apply_mapping(
    table: Sequence[FieldMap], source: Any, settings: RichRelevanceSettings
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for field in table:
        value = next(
            (v for path in field.sources if (v := read_path(source, path)) not in (None, "")),
            None,
        )
        if value is not None and field.transform is not None:
            value = field.transform(value, settings)
        if value is not None:
            body[field.target] = value
    return body


def source_document(event: TrackingEvent, settings: RichRelevanceSettings) -> dict[str, Any]:
    """What the mapping tables read: python values, so Decimal and datetime stay exact."""
    return {
        "order": event.order.model_dump(mode="python", by_alias=True),
        "customer": {"customerId": event.customer.customer_id, "email": event.customer.email},
        "settings": {"channel": settings.channel},
    }


def order_body(event: TrackingEvent, settings: RichRelevanceSettings) -> dict[str, Any]:
    """The Omnichannel order object for one event (no checks; `prepare` decides Skip)."""
    source = source_document(event, settings)
    body = apply_mapping(ORDER_FIELDS, source, settings)
    body["lineItems"] = [
        apply_mapping(LINE_ITEM_FIELDS, line, settings) for line in source["order"]["lines"]
    ]
    return body


# --- the destination ----------------------------------------------------------------------------


class RichRelevance(Destination):
    name = "richrelevance"
    # An update re-imports the same order id, which replaces the order.
    routes = MappingProxyType(
        {EventType.ORDER_CREATED: "order-import", EventType.ORDER_UPDATED: "order-import"}
    )
    fake = "tests.fakes.richrelevance"
    title = "RichRelevance / Algonomy Omnichannel orders"
    settings_class = RichRelevanceSettings
    dry_run_status = 200
    # A dry run answers the token request and the PUT alike: this is a valid token response and,
    # being a 2xx, a successful import.
    dry_run_body: ClassVar[Any] = {"access_token": "dry-run", "token_type": "bearer"}
    settings: RichRelevanceSettings

    def __init__(
        self, settings: DestinationSettings, *, client: httpx.AsyncClient, timeouts: Timeouts
    ) -> None:
        super().__init__(settings, client=client, timeouts=timeouts)
        assert isinstance(settings, RichRelevanceSettings)
        assert settings.client_id is not None
        assert settings.client_secret is not None
        #: the process-wide token for this destination (single-flight, refreshed on 401/expiry)
        self.auth = ClientCredentialsAuth(
            system=self.name,
            client=client,
            token_url=f"{self._base}{OAUTH2_PATH}",
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            timeouts=timeouts,
        )

    @property
    def _base(self) -> str:
        return self.settings.base_url.rstrip("/")

    @property
    def token_requests(self) -> int:
        return self.auth.token_requests

    def orders_url(self) -> str:
        return f"{self._base}/omnichannel/api/v1/{self.settings.secret('api_key')}/orders"

    @classmethod
    def max_batch(cls, settings: DestinationSettings) -> int:
        return MAX_BULK_ORDERS

    def encode(self, event: TrackingEvent, route: str) -> bytes | Skip:
        if not event.customer.customer_id:
            return Skip(
                "no loyalty customer id: RichRelevance requires userId to match the website's"
            )
        if not event.order.lines:
            return Skip("order has no lines: a re-import would replace the order with none")
        return jsonbody.dumps(order_body(event, self.settings))

    def _orders_request(self, method: str, body: bytes) -> httpx.Request:
        return self.client.build_request(
            method,
            # the same URL `params={"mode": ...}` would give, without re-parsing it every time
            self.url(f"{self.orders_url()}?{urlencode({'mode': self.settings.mode.value})}"),
            headers=_JSON_HEADERS,
            content=body,
        )

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        encoded = self.encode(event, route)
        return encoded if isinstance(encoded, Skip) else self._orders_request("PUT", encoded)

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """`POST` of an array of orders to the same URL (each replaces its order by id)."""
        self._check_bulk_size(elements)
        return self._orders_request("POST", jsonbody.array(elements))

    async def send(self, request: httpx.Request) -> Sent:
        response = await send(
            self.client, request, system=self.name, timeouts=self.timeouts, auth=self.auth
        )
        return self.interpret(response, request)

    def interpret(self, response: httpx.Response, request: httpx.Request | None = None) -> Sent:
        if response.is_success:
            ids = _sent_ids(request)
            # A PUT carries one order; a bulk POST one per element, each recorded on its own.
            return Sent(response_id=ids[0] if len(ids) == 1 else None, response_ids=ids)
        if response.status_code == 401:
            # The auth flow already fetched a fresh token and retried once: credentials are wrong
            # for this host (tokens do not cross environments) or the apiKey is not theirs.
            raise error_from_response(
                self.name, response, message="unauthorized after a token refresh"
            )
        raise error_from_response(self.name, response, message=self.error_text(response))


_JSON_HEADERS = MappingProxyType({"Content-Type": "application/json", "Accept": "application/json"})


def _sent_ids(request: httpx.Request | None) -> tuple[str | None, ...]:
    """The integer id of each order imported, in order, for the delivery ledger (ERP id ->
    RichRelevance id): one for a PUT, one per element of a bulk POST."""
    if request is None:
        return ()
    try:
        document: Any = json.loads(request.content)
    except ValueError:
        return ()
    orders = document if isinstance(document, list) else [document]
    return tuple(
        str(order["id"]) if isinstance(order, Mapping) and "id" in order else None
        for order in orders
    )
