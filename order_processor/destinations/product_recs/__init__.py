"""Optimizely (Episerver) Product Recommendations offline order tracking; docs/destinations/
product_recs.md has the requests, the generated mapping tables and the sources.

`POST https://<site>.peerius.com/tracker/smart-api/orders/offline` with headers `site`,
`siteToken` (one per channel) and `channel` (`store` for in-store), one order per request. With
PRODUCT_RECS_CANCELLATIONS_ENABLED, OrderCancelled is
`DELETE https://<site>.peerius.com/smart-api/orders/offline/<order number>` (no `/tracker`), the
same headers. The answer is in the body: `{"status":"OK"}` is success, `"fail"` a refusal and
`"warning"` an accepted request with remarks, both with `errors: [{code, message}]`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.destinations.product_recs import mapping
from order_processor.destinations.product_recs.settings import (
    ProductRecsSettings,
    cancellation_url,
)
from order_processor.mapping import Context, apply
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind, error_from_response
from order_processor.outbound.redaction import redact

__all__ = ["ProductRecs", "ProductRecsSettings", "cancellation_url", "offline_order"]

log = logging.getLogger(__name__)

#: how much vendor error text goes into a dead-letter description
MAX_ERROR_TEXT = 1000
OFFLINE_ORDER = "offline-order"
CANCEL_OFFLINE_ORDER = "cancel-offline-order"
#: why an order without `user` is not sent (PRODUCT_RECS_SEND_ANONYMOUS=false, the default)
ANONYMOUS = (
    "no known customer (no user id or email): Optimizely uses no offline order without a user "
    "to enrich anyone, and offline orders do not affect crowd behaviour by default "
    "(PRODUCT_RECS_SEND_ANONYMOUS=true sends it)"
)
#: why the cancellation of such an order is not sent either
ANONYMOUS_CANCELLATION = (
    "no known customer (no user id or email): its offline order was not sent "
    "(PRODUCT_RECS_SEND_ANONYMOUS=false), so there is nothing to cancel"
)


def offline_order(event: TrackingEvent, settings: ProductRecsSettings) -> dict[str, Any]:
    """The request body for one order event."""
    return apply(mapping.ORDER, Context(event, settings, OFFLINE_ORDER))


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


def _method(response: httpx.Response) -> str | None:
    try:
        return response.request.method
    except RuntimeError:  # a response built without its request (tests)
        return None


class ProductRecs(Destination):
    name = "product_recs"
    # Offline orders only: an update or a delivery has no offline-order equivalent. A
    # cancellation has one, which Optimizely must enable per site: see routes_for.
    routes = MappingProxyType({EventType.ORDER_CREATED: OFFLINE_ORDER})
    routes_with_cancellations = MappingProxyType(
        {**routes, EventType.ORDER_CANCELLED: CANCEL_OFFLINE_ORDER}
    )
    fake = "tests.fakes.product_recs"
    title = "Optimizely Product Recommendations (offline orders)"
    settings_class = ProductRecsSettings
    mappings = MappingProxyType(
        {
            "Offline order (the body)": mapping.ORDER,
            "`user`": mapping.USER,
            "`order.items[]`": mapping.ITEM,
            "Cancellation (`DELETE` URL)": mapping.CANCELLATION,
        }
    )
    dry_run_status = 200
    dry_run_body: ClassVar[Any] = {"status": "OK"}
    settings: ProductRecsSettings

    @classmethod
    def routes_for(cls, settings: DestinationSettings) -> Mapping[EventType, str]:
        """OrderCancelled too when PRODUCT_RECS_CANCELLATIONS_ENABLED (default off)."""
        assert isinstance(settings, ProductRecsSettings)
        return cls.routes_with_cancellations if settings.cancellations_enabled else cls.routes

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
        if route == CANCEL_OFFLINE_ORDER:
            return self._cancellation(event)
        assert self.settings.url is not None
        body = offline_order(event, self.settings)
        if "user" not in body and not self.settings.send_anonymous:
            return Skip(ANONYMOUS)
        if not event.order.lines:
            raise self.rejected("an offline order needs at least one item")
        return self.client.build_request(
            "POST",
            self.url(self.settings.url),
            headers=self._headers(),
            content=jsonbody.dumps(body),
        )

    def _cancellation(self, event: TrackingEvent) -> httpx.Request | Skip:
        """`DELETE` of the offline order: the same headers, no body [C]."""
        assert self.settings.url is not None
        context = Context(event, self.settings, CANCEL_OFFLINE_ORDER)
        if mapping.known_user(event.customer, context) is None and not self.settings.send_anonymous:
            return Skip(ANONYMOUS_CANCELLATION)
        order_number = apply(mapping.CANCELLATION, context)["order_number"]
        try:
            url = cancellation_url(self.settings.url, order_number)
        except ValueError as exc:
            raise self.rejected(f"cannot cancel: {exc}") from None
        # Not self.url(): that caches every URL it parses, and each order has its own.
        return self.client.build_request("DELETE", httpx.URL(url), headers=self._headers())

    def interpret(self, response: httpx.Response) -> Sent:
        if response.is_success and not response.content and _method(response) == "DELETE":
            # No body to read: HTTP's own answer to an enacted DELETE (204 No Content) [D].
            return Sent()
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
                "product_recs accepted the request with warnings: %s",
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
                message=detail[:MAX_ERROR_TEXT] or "the request was refused (no errors given)",
            )
        # A 2xx that is not the tracker's answer (a proxy or maintenance page): try again.
        raise DeliveryError(
            kind=FailureKind.TRANSIENT,
            system=self.name,
            status=response.status_code,
            message="the answer has no recognised status (not the tracker's JSON)",
        )
