"""A loyalty provider with the README's default contract: `GET /cards/{card}` -> customer JSON,
404 for an unknown card, 401 for bad credentials; auth by header key, HTTP Basic or OAuth2."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

CUSTOMERS: dict[str, dict[str, Any]] = {
    "6330001234567890": {
        "customerId": "C-000123",
        "email": "ann.shopper@example.com",
        "firstName": "Ann",
        "lastName": "Shopper",
        "phone": "+447700900123",
        "tier": "gold",
        "attributes": {},
    },
    "6330001111111111": {
        "customerId": "C-000456",
        "email": "bo.buyer@example.com",
        "firstName": "Bo",
        "lastName": "Buyer",
        "tier": "silver",
        "attributes": {},
    },
}
API_KEY = "loyalty-test-key"
CLIENT_ID = "loyalty-client"
CLIENT_SECRET = "loyalty-secret"


class LoyaltyRules:
    def __init__(
        self,
        *,
        auth: str = "header",
        header: str = "Ocp-Apim-Subscription-Key",
        prefix: str = "",
        wrap: str | None = None,
        expires_in: int | None = 3600,
    ) -> None:
        self.auth = auth
        self.header = header
        self.prefix = prefix
        #: nest the record under this key (for field-path tests), e.g. "data.profile"
        self.wrap = wrap
        self.expires_in = expires_in
        self._tokens = (f"tok-{n}" for n in itertools.count(1))
        self.valid_tokens: set[str] = set()

    def _authorised(self, request: Recorded) -> bool:
        if self.auth == "header":
            return request.header(self.header) == f"{self.prefix}{API_KEY}"
        if self.auth == "basic":
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            return request.header("authorization") == f"Basic {expected}"
        if self.auth == "oauth2":
            value = request.header("authorization") or ""
            return value.startswith("Bearer ") and value[7:] in self.valid_tokens
        return True

    def __call__(self, request: Recorded) -> Reply:
        if request.path == "/oauth/token":
            return self._token(request)
        if request.method != "GET":
            return Reply(405, {"error": "method not allowed"})
        if not self._authorised(request):
            return Reply(
                401, {"error": "unauthorized", "message": "missing or invalid credentials"}
            )
        if not request.path.startswith("/cards/"):
            return Reply(404, {"error": "no such resource"})
        record = CUSTOMERS.get(request.path.removeprefix("/cards/"))
        if record is None:
            return Reply(404, {"error": "card not found"})
        body: Any = record
        if self.wrap:
            for key in reversed(self.wrap.split(".")):
                body = {key: body}
        return Reply(200, body)

    def _token(self, request: Recorded) -> Reply:
        form = request.form()
        if request.method != "POST" or form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return Reply(401, {"error": "invalid_client"})
        token = next(self._tokens)
        self.valid_tokens.add(token)
        body: dict[str, Any] = {"access_token": token, "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return Reply(200, body)


def settings_for(url: str) -> dict[str, Any]:
    """The loyalty settings (field -> value) that point the app at this fake."""
    return {
        "api_base_url": url,
        "auth": "header",
        "api_key": API_KEY,
        "api_key_header": "Ocp-Apim-Subscription-Key",
    }


RULES = LoyaltyRules


def loyalty_server(**rules: Any) -> FakeServer:
    return FakeServer(LoyaltyRules(**rules))
