"""Optimizely Product Recommendations offline order tracking as documented (seeds 000, 001):
`POST /tracker/smart-api/orders/offline`, headers `site`, `siteToken`, `channel`, a JSON body
`{lang, user?, order}`. The tracker answers in the body: `{"status":"OK"}`, or
`{"status":"fail"|"warning","errors":[{"code","message"}]}`.

The seeds name `MalformedJson`, `MissingOrMalformedCurrency` and `SiteNotRecognized` and say the
body decides, whatever the HTTP status, so every refusal here is HTTP 200 with a fail body. They do
not say how a wrong `siteToken` or `channel` is answered: this fake assumes the same way, with the
codes `InvalidSiteToken` and `ChannelNotRecognized` (its own names, not the vendor's). Field
problems use `MissingOrMalformed<Field>` after the documented currency code. A path or method the
tracker does not serve answers a plain 404/405.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

PATH = "/tracker/smart-api/orders/offline"
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
    ) -> None:
        self.site = site
        self.site_token = site_token
        self.channel = channel
        #: when set, accepted orders are answered `warning` with these errors instead of `OK`
        self.warnings = warnings
        self.accepted: list[dict[str, Any]] = []

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

    def __call__(self, request: Recorded) -> Reply:
        if request.path != PATH:
            return Reply(404, "Not Found")
        if request.method != "POST":
            return Reply(405, "Method Not Allowed")
        if request.header("site") != self.site:
            return fail("SiteNotRecognized", "the site is not recognised")
        if request.header("sitetoken") != self.site_token:
            return fail("InvalidSiteToken", "the siteToken is not valid for this site")
        if request.header("channel") != self.channel:
            return fail("ChannelNotRecognized", "the channel is not recognised")
        if not (request.header("content-type") or "").startswith("application/json"):
            return fail("MalformedJson", "Content-Type must be application/json")
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
