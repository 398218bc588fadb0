"""What each fake vendor answers: the documented success body, auth checks, and (for a sample of
requests) the full validation of the contract-test fakes in `tests/fakes`.

Credentials and paths come from `tests/fakes`, so the bench's settings and the vendors agree with
the contract tests. Everything here runs in the fake-server process, never in the driver.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import esputnik as esputnik_fake
from tests.fakes import loyalty as loyalty_fake
from tests.fakes import product_recs as product_recs_fake
from tests.fakes import profile_store as profile_store_fake
from tests.fakes import richrelevance as richrelevance_fake
from tests.fakes.base import Recorded, Reply

#: the systems the fake process serves, one listening socket each (as separate hosts would be)
SYSTEMS = ("profile_store", "product_recs", "richrelevance", "esputnik", "loyalty")
DESTINATION_NAMES = SYSTEMS[:4]

#: cards whose number ends in this digit are unknown to the loyalty provider (404)
UNKNOWN_CARD_DIGIT = "9"

RR_ORDERS_PREFIX = "/omnichannel/api/v1/"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # path and query
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def recorded(self) -> Recorded:
        from urllib.parse import parse_qs

        path, _, query = self.target.partition("?")
        return Recorded(self.method, path, parse_qs(query), self.headers, self.body)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    #: the kind of request, for counting: a system name, or "<system>_token"
    kind: str = ""
    ok: bool = True


def customer_record(card: str) -> dict[str, Any]:
    tail = card[-8:]
    return {
        "customerId": f"C-{tail}",
        "email": f"shopper.{tail}@example.com",
        "firstName": "Bench",
        "lastName": f"Shopper{tail}",
        "phone": f"+4477009{tail[-5:]}",
        "tier": "silver",
    }


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


OK_PRODUCT_RECS = _json({"status": "OK"})
NOT_FOUND = _json({"error": "card not found"})
UNAUTHORISED = _json({"error": "unauthorized"})


@dataclass
class VendorState:
    """Per-process vendor state: issued tokens and the sampled full validators."""

    tokens: set[str] = field(default_factory=set)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    rules: dict[str, Callable[[Recorded], Reply]] = field(default_factory=dict)
    #: eSputnik Basic headers already decoded: header value -> authorised
    basic: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rr_rules = richrelevance_fake.RichRelevanceRules()
        self.rules = {
            "profile_store": profile_store_fake.ProfileStoreRules(),
            "product_recs": product_recs_fake.ProductRecsRules(),
            "richrelevance": self.rr_rules,
            "esputnik": esputnik_fake.EsputnikRules(),
        }

    def issue_token(self) -> str:
        token = f"bench-token-{next(self.counter)}"
        self.tokens.add(token)
        self.rr_rules.valid_tokens.add(token)
        return token

    def forget_validation_state(self) -> None:
        """The full validators remember what they accepted; drop it between runs."""
        tokens = set(self.tokens)
        self.__post_init__()
        self.rr_rules.valid_tokens |= tokens


def _authorised(system: str, request: Request, state: VendorState) -> bool:
    h = request.headers
    if system == "profile_store":  # epi-single: the app's default style (current docs)
        return h.get("authorization") == f"epi-single {profile_store_fake.API_KEY}"
    if system == "product_recs":
        return (
            h.get("site") == product_recs_fake.SITE
            and h.get("sitetoken") == product_recs_fake.SITE_TOKEN
        )
    if system == "richrelevance":
        value = h.get("authorization", "")
        return value.startswith("Bearer ") and value[7:] in state.tokens
    if system == "esputnik":
        value = h.get("authorization", "")
        known = state.basic.get(value)
        if known is None:
            known = state.basic[value] = _basic_ok(value)
        return known
    return h.get("ocp-apim-subscription-key") == loyalty_fake.API_KEY


def _basic_ok(value: str) -> bool:
    scheme, _, encoded = value.partition(" ")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except ValueError:
        return False
    return scheme.lower() == "basic" and decoded.partition(":")[2] == esputnik_fake.API_KEY


def _token(request: Request, state: VendorState) -> Answer:
    from urllib.parse import parse_qs

    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    if (
        form.get("client_id") != richrelevance_fake.CLIENT_ID
        or form.get("client_secret") != richrelevance_fake.CLIENT_SECRET
    ):
        return Answer(401, _json({"error": "invalid_client"}), "richrelevance_token", ok=False)
    body = {"token_type": "bearer", "access_token": state.issue_token(), "expires_in": 3600}
    return Answer(200, _json(body), "richrelevance_token")


def _loyalty(request: Request) -> Answer:
    card = request.path.removeprefix("/cards/")
    if card.endswith(UNKNOWN_CARD_DIGIT):
        return Answer(404, NOT_FOUND, "loyalty")
    return Answer(200, _json(customer_record(card)), "loyalty")


def _success(system: str, request: Request) -> Answer:
    if system == "product_recs":
        return Answer(200, OK_PRODUCT_RECS, system)
    if system == "richrelevance":
        count = 1 if request.method == "PUT" else len(json.loads(request.body))
        return Answer(200, _json({"status": "success", "count": count}), system)
    if system == "profile_store":
        return Answer(202, b"", system)
    return Answer(200, b"", system)


def _validated(system: str, request: Request, state: VendorState) -> Answer:
    """The contract-test fake's full answer (auth, headers, every documented body rule)."""
    reply = state.rules[system](request.recorded())
    body = reply.encoded()
    ok = 200 <= reply.status < 300
    if system == "product_recs" and ok:
        ok = json.loads(body).get("status") == "OK"
    return Answer(reply.status, body, system, ok=ok)


def answer(system: str, request: Request, state: VendorState, *, validate: bool) -> Answer:
    """The vendor's answer to one request (before any injected error or latency)."""
    if system == "richrelevance" and request.path == richrelevance_fake.TOKEN_PATH:
        return _token(request, state)
    if not _authorised(system, request, state):
        return Answer(401, UNAUTHORISED, system, ok=False)
    if system == "loyalty":
        return _loyalty(request)
    if validate:
        return _validated(system, request, state)
    return _success(system, request)


# --- which orders a vendor accepted ---------------------------------------------------------------


def accepted_order_ids(system: str, body: bytes) -> list[str]:
    """The ERP order ids a destination request carries (one, or several in a bulk request), read
    where each vendor's documented body puts them."""
    document = json.loads(body)
    items = document if isinstance(document, list) else [document]
    if system == "profile_store":  # Track: one event; TrackBulk: an array; the order in payload
        return [str(item["payload"]["orderId"]) for item in items]
    if system == "product_recs":
        return [str(item["order"]["refCode"]) for item in items]
    if system == "richrelevance":  # PUT one order, POST an array
        return [str(item["externalOrderId"]) for item in items]
    if system == "esputnik":
        if isinstance(document, dict) and "orders" in document:  # orders mode, up to 1,000
            return [str(order["externalOrderId"]) for order in document["orders"]]
        params = {p["name"]: p["value"] for p in document.get("params", [])}  # events mode
        return [str(params["externalOrderId"])]
    return []


def digest(ids: Iterable[str]) -> str:
    """An order-independent fingerprint of a set of ids (sum of 64-bit hashes): the fakes and the
    driver compare sets of tens of thousands of ids without shipping them over the pipe."""
    total = 0
    for order_id in ids:
        total += int.from_bytes(hashlib.blake2b(order_id.encode(), digest_size=8).digest(), "big")
    return f"{total % 2**64:016x}"
