"""Optimizely (Episerver) Product Recommendations offline order tracking (seeds 000, 001).

`POST https://<site>.peerius.com/tracker/smart-api/orders/offline` with headers `site`,
`siteToken` (one per channel) and `channel` (`store` for in-store), one order per request. The
answer is in the body whatever the HTTP status: `{"status":"OK"}` is success, `"fail"` a refusal
and `"warning"` an accepted order with remarks, both with `errors: [{code, message}]`.

The body is built from the declarative tables below (target field -> function of the contract);
docs/destinations/product_recs.md reproduces them field by field.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from loyalty_client.customer import Customer
from order_processor import jsonbody
from order_processor.contract import EventType, InStoreOrder, OrderLine
from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind, error_from_response
from order_processor.outbound.redaction import redact
from order_processor.outbound.urls import OutboundUrl

log = logging.getLogger(__name__)

#: how much vendor error text goes into a dead-letter description
MAX_ERROR_TEXT = 1000


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
        description="e.g. `https://<site>.peerius.com/tracker/smart-api/orders/offline` "
        "(UAT: `https://uat.peerius.com/...`)",
    )
    site: str | None = Field(
        default=None, description="`site` header: the site name Optimizely assigned"
    )
    site_token: SecretStr | None = Field(
        default=None, description="`siteToken` header of the channel (secret)"
    )
    channel: str = Field(default="store", description="`channel` header")


def offline_date(moment: datetime) -> str:
    """The seed's form: `2016-05-16T14:25:00 GMT` (UTC, second precision)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S GMT")


def _item_ref_code(line: OrderLine) -> str:
    # productId is the catalogue key the website's recommendations use; the SKU is the fallback.
    return line.product_id or line.sku


def _item_attributes(line: OrderLine) -> dict[str, str]:
    attributes = dict(line.attributes)
    if line.discount > 0:
        attributes["discount"] = "true"
    return attributes


def _order_attributes(order: InStoreOrder) -> dict[str, str]:
    # The ERP's attributes first; the store's own fields (as in the seed's example) win.
    attributes = dict(order.attributes)
    store = {"store": order.store.name, "storePostcode": order.store.postcode}
    attributes.update({key: value for key, value in store.items() if value})
    attributes["storeId"] = order.store.id
    return attributes


#: `user`: sent only when the customer is known and has an id or an email. `email` is deprecated
#: by the vendor, so it is sent only when there is no customer id. `info` is not sent: its keys
#: must be agreed with Optimizely before use.
USER_FIELDS: Mapping[str, Callable[[Customer], Any]] = {
    "id": lambda customer: customer.customer_id,
    "email": lambda customer: None if customer.customer_id else customer.email,
}

#: `order.items[]`, one per contract line.
ITEM_FIELDS: Mapping[str, Callable[[OrderLine], Any]] = {
    "refCode": _item_ref_code,
    "qty": lambda line: line.quantity,
    "price": lambda line: line.unit_price,
    "attributes": _item_attributes,
}

#: `order`.
ORDER_FIELDS: Mapping[str, Callable[[InStoreOrder], Any]] = {
    "refCode": lambda order: order.order_id,
    "orderDate": lambda order: offline_date(order.order_date),
    "currency": lambda order: order.currency,
    "shipping": lambda order: order.shipping,
    "subTotal": lambda order: order.sub_total if order.sub_total is not None else order.lines_total,
    "total": lambda order: order.total,
    "items": lambda order: [apply(ITEM_FIELDS, line) for line in order.lines],
    "attributes": _order_attributes,
}


def apply(fields: Mapping[str, Callable[[Any], Any]], source: Any) -> dict[str, Any]:
    """Build one JSON object from a mapping table; fields that map to None are left out."""
    built = {target: value(source) for target, value in fields.items()}
    return {target: value for target, value in built.items() if value is not None}


def offline_order(event: TrackingEvent) -> dict[str, Any]:
    """The request body for one order event."""
    body: dict[str, Any] = {"lang": event.order.lang}
    if event.customer_known:
        user = apply(USER_FIELDS, event.customer)
        if user:  # the vendor requires id or email whenever `user` is given
            body["user"] = user
    body["order"] = apply(ORDER_FIELDS, event.order)
    return body


def _vendor_errors(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(code, message) pairs from `errors`, redacted and bounded (messages may echo our data)."""
    errors = document.get("errors")
    if not isinstance(errors, list):
        return []
    pairs = []
    for error in errors[:20]:
        if isinstance(error, Mapping):
            code = redact(str(error.get("code") or "").strip())[:64]
            message = redact(str(error.get("message") or "").strip().replace("\n", " "))[:200]
        else:
            code, message = "", redact(str(error))[:200]
        pairs.append((code or "Unknown", message))
    return pairs


def _read_status(response: httpx.Response) -> tuple[str | None, Mapping[str, Any]]:
    """The body's `status`, lower-cased, or None when the body is not the vendor's JSON."""
    try:
        document = response.json()
    except ValueError:
        return None, {}
    if not isinstance(document, Mapping) or not isinstance(document.get("status"), str):
        return None, {}
    return document["status"].strip().lower(), document


class ProductRecs(Destination):
    name = "product_recs"
    # Offline orders only: an update/delivery/cancellation has no offline-order equivalent.
    routes = MappingProxyType({EventType.ORDER_CREATED: "offline-order"})
    fake = "tests.fakes.product_recs"
    title = "Optimizely Product Recommendations (offline orders)"
    settings_class = ProductRecsSettings
    dry_run_status = 200
    dry_run_body: ClassVar[Any] = {"status": "OK"}
    settings: ProductRecsSettings

    def _headers(self) -> Mapping[str, str]:
        return self._header_values

    @functools.cached_property
    def _header_values(self) -> Mapping[str, str]:
        """Built once (settings are frozen) and read-only, since every request shares it."""
        assert self.settings.site is not None
        return MappingProxyType(
            {
                "site": self.settings.site,
                "siteToken": self.settings.secret("site_token"),
                "channel": self.settings.channel,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        assert self.settings.url is not None
        if not event.order.lines:
            raise self.rejected("an offline order needs at least one item")
        return self.client.build_request(
            "POST",
            self.url(self.settings.url),
            headers=self._headers(),
            content=jsonbody.dumps(offline_order(event)),
        )

    def interpret(self, response: httpx.Response) -> Sent:
        status, document = _read_status(response)
        errors = _vendor_errors(document)
        codes = ",".join(code for code, _ in errors) or None
        detail = "; ".join(f"{code}: {message}" if message else code for code, message in errors)
        if not response.is_success:
            # The status decides retry versus dead-letter; the body's codes, when any, explain.
            raise error_from_response(
                self.name,
                response,
                message=detail[:MAX_ERROR_TEXT] or self.error_text(response),
                vendor_code=codes,
            )
        if status == "ok":
            return Sent()
        if status == "warning":
            names = ", ".join(code for code, _ in errors) or "no code"
            log.warning(
                "product_recs accepted the order with warnings: %s",
                names,
                extra={"destination": self.name, "vendor_codes": names},
            )
            return Sent(note=f"warning: {names}")
        if status == "fail":
            raise DeliveryError(
                kind=FailureKind.PERMANENT,
                system=self.name,
                status=response.status_code,
                vendor_code=codes,
                message=detail[:MAX_ERROR_TEXT] or "the order was refused (no errors given)",
            )
        # A 2xx that is not the tracker's answer (a proxy or maintenance page): try again.
        raise DeliveryError(
            kind=FailureKind.TRANSIENT,
            system=self.name,
            status=response.status_code,
            message="the answer has no recognised status (not the tracker's JSON)",
        )
