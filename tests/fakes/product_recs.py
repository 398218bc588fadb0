"""Optimizely Product Recommendations offline order tracking as documented
(docs/destinations/product_recs.md, Sources): `POST /tracker/smart-api/orders/offline`, headers
`site`, `siteToken`, `channel`, `Content-Type: application/json`, a JSON body `{lang, user?,
order}`; and the offline order cancellation, `DELETE /smart-api/orders/offline/<order number>`
(no `/tracker`), the same headers, no body. The tracker answers in the body: `{"status":"OK"}`, or
`{"status":"fail"|"warning","errors":[{"code","message"}]}`.

The sources name `MalformedJson`, `MissingOrMalformedCurrency` and `SiteNotRecognized` and say the
body decides, so every refusal here is HTTP 200 with a fail body. They do not say how a wrong
`siteToken` or `channel` is answered, nor what the DELETE answers: this fake assumes the same body,
with codes of its own (not the vendor's): `InvalidSiteToken`, `ChannelNotRecognized`, and for a
cancellation `CancellationsNotEnabled` (Optimizely has not enabled them for the site) and
`OrderNotFound` (no offline order with that number); cancelling an order twice is OK (a DELETE is
idempotent). Field problems use `MissingOrMalformed<Field>` after the documented currency code. A
path or method the tracker does not serve answers a plain 404/405: a DELETE under `/tracker` is
a 404, as the documented cancellation path has no `/tracker`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from tests.fakes.base import FakeServer, Recorded, Reply

PATH = "/tracker/smart-api/orders/offline"
#: the cancellation path: `<CANCEL_PATH>/<percent-encoded order number>`
CANCEL_PATH = "/smart-api/orders/offline"
SITE = "retailsite"
SITE_TOKEN = "product-recs-test-token"
CHANNEL = "store"
ORDER_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d GMT")
CURRENCY = re.compile(r"[A-Z]{3}")


def fail(code: str, message: str) -> Reply:
    return Reply(200, {"status": "fail", "errors": [{"code": code, "message": message}]})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ProductRecsRules:
    def __init__(
        self,
        *,
        site: str = SITE,
        site_token: str = SITE_TOKEN,
        channel: str = CHANNEL,
        warnings: list[dict[str, str]] | None = None,
        cancellations_enabled: bool = True,
    ) -> None:
        self.site = site
        self.site_token = site_token
        self.channel = channel
        #: when set, accepted orders are answered `warning` with these errors instead of `OK`
        self.warnings = warnings
        #: Optimizely enables cancellations per site; False answers as a site without them
        self.cancellations_enabled = cancellations_enabled
        self.accepted: list[dict[str, Any]] = []
        #: the order numbers cancelled, in order (decoded from the path)
        self.cancelled: list[str] = []

    @staticmethod
    def _order_problem(order: Any) -> tuple[str, str] | None:
        if not isinstance(order, dict):
            return "MissingOrMalformedOrder", "order must be an object"
        if not isinstance(order.get("refCode"), str) or not order["refCode"]:
            return "MissingOrMalformedRefCode", "order.refCode is required"
        if "customerId" in order and (
            not isinstance(order["customerId"], str) or not order["customerId"]
        ):
            return "MissingOrMalformedCustomerId", "order.customerId must be a non-empty string"
        if not isinstance(order.get("orderDate"), str) or not ORDER_DATE.fullmatch(
            order["orderDate"]
        ):
            return "MissingOrMalformedOrderDate", "orderDate must look like 2016-05-16T14:25:00 GMT"
        if not isinstance(order.get("currency"), str) or not CURRENCY.fullmatch(order["currency"]):
            return "MissingOrMalformedCurrency", "currency must be an ISO 4217 code"
        for name in ("shipping", "subTotal", "total"):
            if name in order and not _is_number(order[name]):
                return f"MissingOrMalformed{name[0].upper()}{name[1:]}", f"{name} must be a number"
        items = order.get("items")
        if not isinstance(items, list) or not items:
            return "MissingOrMalformedItems", "order.items must be a non-empty array"
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                return "MissingOrMalformedItems", f"items[{index}] must be an object"
            if not isinstance(item.get("refCode"), str) or not item["refCode"]:
                return "MissingOrMalformedItemRefCode", f"items[{index}].refCode is required"
            if not isinstance(item.get("qty"), int) or isinstance(item["qty"], bool):
                return "MissingOrMalformedItemQty", f"items[{index}].qty must be an integer"
            if not _is_number(item.get("price")):
                return "MissingOrMalformedItemPrice", f"items[{index}].price must be a number"
            if "attributes" in item and not isinstance(item["attributes"], dict):
                return "MalformedAttributes", f"items[{index}].attributes must be an object"
        if "attributes" in order and not isinstance(order["attributes"], dict):
            return "MalformedAttributes", "order.attributes must be an object"
        return None

    def _problem(self, document: Any) -> tuple[str, str] | None:
        if not isinstance(document, dict):
            return "MalformedJson", "the body must be a JSON object"
        if "lang" in document and not isinstance(document["lang"], str):
            return "MalformedLang", "lang must be a language code"
        if "user" in document:
            user = document["user"]
            if not isinstance(user, dict) or not any(
                user.get(key) for key in ("id", "email", "segments")
            ):
                return (
                    "MissingUserIdentifier",
                    "when user is given, email, id or segments must be supplied",
                )
        return self._order_problem(document.get("order"))

    def _header_problem(self, request: Recorded) -> Reply | None:
        if request.header("site") != self.site:
            return fail("SiteNotRecognized", "the site is not recognised")
        if request.header("sitetoken") != self.site_token:
            return fail("InvalidSiteToken", "the siteToken is not valid for this site")
        if request.header("channel") != self.channel:
            return fail("ChannelNotRecognized", "the channel is not recognised")
        if not (request.header("content-type") or "").startswith("application/json"):
            return fail("MalformedJson", "Content-Type must be application/json")
        return None

    def __call__(self, request: Recorded) -> Reply:
        if request.path.startswith(CANCEL_PATH + "/"):
            return self._cancel(request)
        if request.path != PATH:
            return Reply(404, "Not Found")
        if request.method != "POST":
            return Reply(405, "Method Not Allowed")
        if (problem := self._header_problem(request)) is not None:
            return problem
        return self._track(request)

    @property
    def order_numbers(self) -> set[str]:
        """The refCodes of the offline orders accepted so far."""
        return {document["order"]["refCode"] for document in self.accepted}

    def _cancel(self, request: Recorded) -> Reply:
        segment = request.path.removeprefix(CANCEL_PATH + "/")
        if not segment or "/" in segment:  # an unencoded "/" in the order number
            return Reply(404, "Not Found")
        if request.method != "DELETE":
            return Reply(405, "Method Not Allowed")
        if (problem := self._header_problem(request)) is not None:
            return problem
        if not self.cancellations_enabled:
            return fail("CancellationsNotEnabled", "order cancellations are not enabled")
        order_number = unquote(segment)
        if order_number not in self.order_numbers:
            return fail("OrderNotFound", "no offline order with this number")
        if order_number not in self.cancelled:
            self.cancelled.append(order_number)
        return Reply(200, {"status": "OK"})

    def _track(self, request: Recorded) -> Reply:
        try:
            document = json.loads(request.body)
        except ValueError:
            return fail("MalformedJson", "the body is not valid JSON")
        if (problem := self._problem(document)) is not None:
            return fail(*problem)
        self.accepted.append(document)
        if self.warnings:
            return Reply(200, {"status": "warning", "errors": self.warnings})
        return Reply(200, {"status": "OK"})


def settings_for(url: str) -> dict[str, Any]:
    """The destination's settings (field -> value) that point it at this fake."""
    return {"url": url + PATH, "site": SITE, "site_token": SITE_TOKEN, "channel": CHANNEL}


RULES = ProductRecsRules


def product_recs_server(**rules: Any) -> tuple[FakeServer, ProductRecsRules]:
    handler = ProductRecsRules(**rules)
    return FakeServer(handler), handler
