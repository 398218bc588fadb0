"""RichRelevance / Algonomy Omnichannel Order API as documented (its doc page).

`POST /omnichannel/v1/oauth2/token` with grant_type=client_credentials, client_id, client_secret
(form fields or query parameters) -> `{"token_type":"bearer","access_token":"..."}`; bad
credentials 401. `PUT /omnichannel/api/v1/{apiKey}/orders?mode=offline|online` takes one order
object, `POST` the same URL an array; a bearer token is required (401), an unknown apiKey is 403,
a body breaking the documented field table is 400 with an error body: `id`, `productId` and
`quantity` integers (32-bit: the table types `regionId` "long" but these "integer"),
`paymentMethod` one of `cash|credit|check|digital|other`, `skuId` an integer or, as every
example sends it, a string. Re-importing an id replaces it (the docs say "update").
"""

from __future__ import annotations

import itertools
import re
import threading
from datetime import datetime
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

API_KEY = "rr-test-api-key"
CLIENT_ID = "rr-client"
CLIENT_SECRET = "rr-secret"
TOKEN_PATH = "/omnichannel/v1/oauth2/token"
_ORDERS = re.compile(r"^/omnichannel/api/v1/(?P<key>[^/]+)/orders$")
#: `paymentMethod`'s documented values
PAYMENT_METHODS = ("cash", "credit", "check", "digital", "other")
INT32 = (-(2**31), 2**31 - 1)
LONG = (-(2**63), 2**63 - 1)


def _integer(value: Any, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RichRelevanceRules:
    def __init__(
        self,
        *,
        expires_in: int | None = None,
        accept_tokens: bool = True,
        long_ids: bool = False,
        strict_sku_id: bool = False,
    ) -> None:
        #: seconds in the token response; the Omnichannel Order API page documents no TTL
        #: (https://help.richrelevance.com/Personalization_Cloud/Relevance_Cloud%3A_Core_APIs/Core_APIs/Omnichannel_Order_API),
        #: so None leaves it out
        self.expires_in = expires_in
        #: False: issued tokens are never accepted (a token for another environment)
        self.accept_tokens = accept_tokens
        #: True: a tenant whose `id` Algonomy confirmed is a long (ORDER_ID_BITS=53)
        self.long_ids = long_ids
        #: True: `skuId` held to its type column (integer), refusing the examples' strings
        self.strict_sku_id = strict_sku_id
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.valid_tokens: set[str] = set()
        self.token_requests = 0
        #: every order accepted, in order of arrival (with the query's mode)
        self.accepted: list[dict[str, Any]] = []
        #: the current state: (channel, id) -> the last imported order
        self.orders: dict[tuple[str | None, int], dict[str, Any]] = {}
        self.modes: list[str] = []

    # --- test controls ------------------------------------------------------------------------

    def revoke_tokens(self) -> None:
        """Every issued token stops working (expiry, rotation): the next call answers 401."""
        with self._lock:
            self.valid_tokens.clear()

    # --- token endpoint -----------------------------------------------------------------------

    def _token(self, request: Recorded) -> Reply:
        params = {k: v[0] for k, v in request.query.items()}
        if request.body:
            params.update(request.form())
        if request.method != "POST" or params.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        with self._lock:
            self.token_requests += 1
            if params.get("client_id") != CLIENT_ID or params.get("client_secret") != CLIENT_SECRET:
                return Reply(401, {"error": "invalid_client"})
            token = f"rr-token-{next(self._counter)}"
            if self.accept_tokens:
                self.valid_tokens.add(token)
        body: dict[str, Any] = {"token_type": "bearer", "access_token": token}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return Reply(200, body)

    # --- orders -------------------------------------------------------------------------------

    def _problem(self, order: Any) -> str | None:
        """The first documented rule `order` breaks (the API page's field table), or None."""
        if not isinstance(order, dict):
            return "each order must be a JSON object"
        # `id` is typed integer while `regionId` beside it is typed long: a 32-bit integer,
        # unless this tenant's `id` was confirmed a long.
        id_range = LONG if self.long_ids else INT32
        if not _integer(order.get("id"), id_range):
            kind = "a long" if self.long_ids else "an integer (32-bit)"
            return f"id is mandatory and must be {kind}"
        if not isinstance(order.get("userId"), str) or not order["userId"]:
            return "userId is mandatory"
        try:
            datetime.fromisoformat(order["dateTime"])
        except (KeyError, TypeError, ValueError):
            return "dateTime is mandatory and must be ISO 8601"
        for name in ("channel", "storeId", "emailHash", "ccHash", "couponCode"):
            if name in order and not isinstance(order[name], str):
                return f"{name} must be a string"
        if "paymentMethod" in order and order["paymentMethod"] not in PAYMENT_METHODS:
            return f"paymentMethod must be one of {', '.join(PAYMENT_METHODS)}"
        if "regionId" in order and not _integer(order["regionId"], LONG):
            return "regionId must be a long"
        if "currency" in order and not (
            isinstance(order["currency"], str) and re.fullmatch(r"[A-Z]{3}", order["currency"])
        ):
            return "currency must be an ISO currency code"
        if "couponValue" in order and not _number(order["couponValue"]):
            return "couponValue must be a number"
        for name in ("segmentIds", "segmentNames"):
            if name in order and not (
                isinstance(order[name], list) and all(isinstance(v, str) for v in order[name])
            ):
                return f"{name} must be an array of strings"
        items = order.get("lineItems")
        if not isinstance(items, list):
            return "lineItems is mandatory and must be an array"
        for item in items:
            if (problem := self._item_problem(item)) is not None:
                return problem
        return None

    def _item_problem(self, item: Any) -> str | None:
        if not isinstance(item, dict):
            return "each line item must be an object"
        if not _integer(item.get("productId"), INT32):
            return "lineItems.productId is mandatory and must be an integer"
        if "skuId" in item:
            sku = item["skuId"]
            # Typed integer, but every documented example sends a string ("123", "sku1").
            if not (_integer(sku, INT32) or (isinstance(sku, str) and not self.strict_sku_id)):
                return "lineItems.skuId must be an integer"
        if not _integer(item.get("quantity"), INT32):
            return "lineItems.quantity is mandatory and must be an integer"
        if not _number(item.get("unitPrice")):
            return "lineItems.unitPrice is mandatory and must be a number"
        return None

    def _orders(self, request: Recorded, api_key: str) -> Reply:
        value = request.header("authorization") or ""
        with self._lock:
            authorised = value.startswith("Bearer ") and value[7:] in self.valid_tokens
        if not authorised:
            return Reply(401, {"error": "invalid_token", "message": "missing or invalid token"})
        if api_key != API_KEY:
            return Reply(403, {"error": "forbidden", "message": "apiKey not recognised"})
        mode = request.query.get("mode", ["offline"])[0]
        if mode not in ("offline", "online"):
            return Reply(400, {"error": "bad_request", "message": "mode is offline or online"})
        try:
            document = request.json()
        except ValueError:
            return Reply(400, {"error": "bad_request", "message": "body is not valid JSON"})
        if request.method == "PUT":
            if not isinstance(document, dict):
                return Reply(400, {"error": "bad_request", "message": "PUT takes one order"})
            orders = [document]
        else:
            if not isinstance(document, list) or not document:
                return Reply(400, {"error": "bad_request", "message": "POST takes an array"})
            orders = document
        for order in orders:
            if (problem := self._problem(order)) is not None:
                return Reply(400, {"error": "bad_request", "message": problem})
        with self._lock:
            for order in orders:
                self.accepted.append(order)
                self.modes.append(mode)
                self.orders[(order.get("channel"), order["id"])] = order
        return Reply(200, {"status": "success", "count": len(orders)})

    def __call__(self, request: Recorded) -> Reply:
        if request.path == TOKEN_PATH:
            return self._token(request)
        match = _ORDERS.match(request.path)
        if match is None:
            return Reply(404, {"error": "not_found"})
        if request.method not in ("PUT", "POST"):
            return Reply(405, {"error": "method_not_allowed"})
        return self._orders(request, match["key"])


def settings_for(url: str) -> dict[str, Any]:
    """The destination's settings (field -> value) that point it at this fake."""
    return {
        "base_url": url,
        "api_key": API_KEY,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


RULES = RichRelevanceRules


def richrelevance_server(**rules: Any) -> tuple[FakeServer, RichRelevanceRules]:
    handler = RichRelevanceRules(**rules)
    return FakeServer(handler), handler
