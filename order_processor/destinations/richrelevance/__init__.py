"""RichRelevance / Algonomy Omnichannel Order API; docs/destinations/richrelevance.md has the
request, the generated mapping tables and the sources.

`PUT {base}/omnichannel/api/v1/{apiKey}/orders?mode=offline|online` imports one order; `POST` of
an array to the same URL imports many (the batch lane). An update re-imports the same `id`. Auth
is an OAuth2 client-credentials bearer token from `POST {base}/omnichannel/v1/oauth2/token`, one
per process, shared by every concurrent call and refreshed on expiry or on a 401
(`order_processor.outbound.http.ClientCredentialsAuth`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Sent, Skip
from order_processor.destinations.richrelevance import mapping
from order_processor.destinations.richrelevance.settings import (
    EmailHash,
    Mode,
    NonNumericProduct,
    RichRelevanceSettings,
    SkuIdForm,
)
from order_processor.mapping import Context, MappingError, apply
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import error_from_response
from order_processor.outbound.http import ClientCredentialsAuth, Timeouts, send

__all__ = [
    "EmailHash",
    "Mode",
    "NonNumericProduct",
    "RichRelevance",
    "RichRelevanceSettings",
    "SkuIdForm",
]

log = logging.getLogger(__name__)

OAUTH2_PATH = "/omnichannel/v1/oauth2/token"
#: orders per POST: the API documents no limit; Profile Store's 100 keeps requests small
MAX_BULK_ORDERS = 100
#: the request extension carrying what `interpret` should record beside the delivery
_NOTE = "richrelevance.note"


class RichRelevance(Destination):
    name = "richrelevance"
    # An update re-imports the same order id, which replaces the order.
    routes = MappingProxyType(
        {EventType.ORDER_CREATED: "order-import", EventType.ORDER_UPDATED: "order-import"}
    )
    fake = "tests.fakes.richrelevance"
    title = "RichRelevance / Algonomy Omnichannel orders"
    mappings = MappingProxyType({"Order": mapping.ORDER, "Line item": mapping.LINE_ITEM})
    settings_class = RichRelevanceSettings
    dry_run_status = 200
    # A dry run answers the token request and the PUT alike: this is a valid token response and,
    # being a 2xx, a successful import.
    dry_run_body: ClassVar[Any] = {"access_token": "dry-run-access-token", "token_type": "bearer"}
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

    def order(self, event: TrackingEvent, route: str) -> tuple[dict[str, Any], str] | Skip:
        """The Omnichannel order for one event and a note on lines left out, or Skip; raises
        `rejected` when the mapping cannot be built (an id out of range, a line refused)."""
        if not event.customer.customer_id:
            return Skip(
                "no loyalty customer id: RichRelevance requires userId to match the website's"
            )
        if not event.order.lines:
            return Skip("order has no lines: a re-import would replace the order with none")
        context = Context(event, self.settings, route)
        try:
            items, left_out = mapping.line_items(context)
            if not items:
                return Skip(
                    f"no line has an integer productId ({len(left_out)} left out, "
                    "RICHRELEVANCE_NON_NUMERIC_PRODUCT=skip-line)"
                )
            body = apply(
                mapping.ORDER, Context(event, self.settings, route, derived={"lineItems": items})
            )
        except MappingError as exc:
            raise self.rejected(str(exc)) from None
        note = ""
        if left_out:
            note = (
                f"{len(left_out)} of {len(event.order.lines)} lines left out (no integer "
                f"productId): lines {', '.join(map(str, left_out))}"
            )
            log.info(
                "richrelevance: order %s sent without %s",
                event.order.order_id,
                note,
                extra={"destination": self.name, "lines_left_out": len(left_out)},
            )
        return body, note

    def encode(self, event: TrackingEvent, route: str) -> bytes | Skip:
        built = self.order(event, route)
        return built if isinstance(built, Skip) else jsonbody.dumps(built[0])

    def _orders_request(self, method: str, body: bytes, note: str = "") -> httpx.Request:
        return self.client.build_request(
            method,
            # the same URL `params={"mode": ...}` would give, without re-parsing it every time
            self.url(f"{self.orders_url()}?{urlencode({'mode': self.settings.mode.value})}"),
            headers=_JSON_HEADERS,
            content=body,
            extensions={_NOTE: note} if note else None,
        )

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        built = self.order(event, route)
        if isinstance(built, Skip):
            return built
        body, note = built
        return self._orders_request("PUT", jsonbody.dumps(body), note)

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """The documented `POST` of an array of orders to the same URL (the batch lane)."""
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
            note = str(request.extensions.get(_NOTE, "")) if request is not None else ""
            # A PUT carries one order; a bulk POST one per element, each recorded on its own.
            return Sent(response_id=ids[0] if len(ids) == 1 else None, note=note, response_ids=ids)
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
