"""RichRelevance / Algonomy Omnichannel Order API as documented (seed 002).

`POST /omnichannel/v1/oauth2/token` with grant_type=client_credentials, client_id, client_secret
(form fields or query parameters) -> `{"token_type":"bearer","access_token":"..."}`; bad
credentials 401. `PUT /omnichannel/api/v1/{apiKey}/orders?mode=offline|online` takes one order
object, `POST` the same URL an array; a bearer token is required (401), an unknown apiKey is 403,
a body breaking the documented rules is 400 with an error body. Re-importing an id replaces it.
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


class RichRelevanceRules:
    def __init__(self, *, expires_in: int | None = None, accept_tokens: bool = True) -> None:
        #: seconds in the token response; the seed documents no TTL, so None leaves it out
        self.expires_in = expires_in
        #: False: issued tokens are never accepted (a token for another environment)
        self.accept_tokens = accept_tokens
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

    @staticmethod
    def _problem(order: Any) -> str | None:
        if not isinstance(order, dict):
            return "each order must be a JSON object"
        order_id = order.get("id")
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            return "id is mandatory and must be an integer"
        if not -(2**63) <= order_id < 2**63:
            return "id does not fit a long"
        if not isinstance(order.get("userId"), str) or not order["userId"]:
            return "userId is mandatory"
        try:
            datetime.fromisoformat(order["dateTime"])
        except (KeyError, TypeError, ValueError):
            return "dateTime is mandatory and must be ISO 8601"
        if "regionId" in order and not isinstance(order["regionId"], int):
            return "regionId must be a long"
        for name in ("couponValue",):
            if name in order and not isinstance(order[name], int | float):
                return f"{name} must be a number"
        items = order.get("lineItems")
        if not isinstance(items, list):
            return "lineItems is mandatory and must be an array"
        for item in items:
            if not isinstance(item, dict):
                return "each line item must be an object"
            if item.get("productId") in (None, ""):
                return "lineItems.productId is mandatory"
            quantity = item.get("quantity")
            if not isinstance(quantity, int) or isinstance(quantity, bool):
                return "lineItems.quantity is mandatory and must be an integer"
            price = item.get("unitPrice")
            if not isinstance(price, int | float) or isinstance(price, bool):
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
