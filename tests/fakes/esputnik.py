"""eSputnik as documented (guide [S]; docs/destinations/esputnik.md lists the sources): HTTP Basic
with the API key as the password (any user name); `POST /api/v1/orders` with `{"orders": [...]}`
(1 to 1,000; creates contacts); `POST /api/v1/event` with `{eventTypeKey, keyValue, params}` for an
existing contact only.

No public source says eSputnik refuses an order whose item costs do not add up to `totalCost`
(the event guide's own example does not [S]), so the fake accepts such orders, as the real API
is taken to.

Events mode (the event guide [S]): `date` is `YYYY-MM-ddTHH:mm:ss`, and each item carries the
fields the Yespo guides list as required (externalItemId, name, quantity, cost, url, imageUrl).

Modelling choices where the documentation is silent: an event for a contact eSputnik does not know,
an orderCreated/orderUpdated event missing a required parameter (or with a `date` in another form,
an unknown status, or an item missing a required field), and an orderDelivered for an order that
does not exist are answered 200 (the API accepts the call) but recorded in `ignored` with the
reason, since the event guide says such events are "ignored" and "not saved"
(https://esputnik.com/en/support/how-send-events-resource-v1event). In orders mode, items without
`url`/`imageUrl` are accepted: how the API answers them is not documented (the Shopify plugin sends
none). Money is read as Decimal.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

API_KEY = "esputnik-test-key"
MAX_ORDERS = 1000
STATUSES = frozenset(
    {"INITIALIZED", "IN_PROGRESS", "DELIVERED", "CANCELLED", "ABANDONED_SHOPPING_CART"}
)
EVENT_KEYS = frozenset({"orderCreated", "orderUpdated", "orderDelivered", "orderCancelled"})
STATUS_FOR_KEY = {"orderDelivered": "DELIVERED", "orderCancelled": "CANCELLED"}
REQUIRED_ORDER_FIELDS = ("externalOrderId", "totalCost", "status", "date")
#: an events-mode item without one of these makes eSputnik ignore orderCreated/orderUpdated
REQUIRED_EVENT_ITEM_FIELDS = ("externalItemId", "name", "quantity", "cost", "url", "imageUrl")
#: the event guide's date form for v[S]1/event
EVENT_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
#: fields the order reference (esputnik.com/api/ns1_order.html) types as string
STRING_ORDER_FIELDS = (
    "externalOrderId",
    "externalCustomerId",
    "currency",
    "email",
    "phone",
    "firstName",
    "lastName",
    "restoreUrl",
    "statusDescription",
    "storeId",
    "source",
    "deliveryMethod",
    "paymentMethod",
    "deliveryAddress",
)


@dataclass
class Ignored:
    event: dict[str, Any]
    reason: str


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _iso_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


class EsputnikRules:
    def __init__(self, *, api_key: str = API_KEY, contacts: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        #: contact identifiers eSputnik knows (email lower-cased; phone and ids as sent)
        self.contacts: set[str] = {self._contact_key(c) for c in contacts}
        #: externalOrderId -> the stored order (a re-send replaces it)
        self.orders: dict[str, dict[str, Any]] = {}
        #: every accepted order document, in arrival order, with its `source`
        self.accepted_orders: list[dict[str, Any]] = []
        self.sources: list[str] = []
        self.accepted_events: list[dict[str, Any]] = []
        self.ignored: list[Ignored] = []

    @staticmethod
    def _contact_key(value: str) -> str:
        return value.lower() if "@" in value else value

    def _authorised(self, request: Recorded) -> bool:
        header = request.header("authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return False
        _user, colon, password = decoded.partition(":")
        return bool(colon) and password == self.api_key

    # v1/orders

    def _order_problem(self, order: Any) -> str | None:
        if not isinstance(order, dict):
            return "each order must be a JSON object"
        for name in REQUIRED_ORDER_FIELDS:
            if order.get(name) in (None, ""):
                return f"{name} is required"
        for name in STRING_ORDER_FIELDS:
            if name in order and not isinstance(order[name], str):
                return f"{name} must be a string"
        if _decimal(order["totalCost"]) is None:
            return "totalCost must be a number"
        if order["status"] not in STATUSES:
            return f"status must be one of {', '.join(sorted(STATUSES))}"
        if not _iso_date(order["date"]):
            return "date must be ISO 8601"
        if not any(order.get(k) for k in ("email", "phone", "externalCustomerId")):
            return "a contact identifier (email, phone or externalCustomerId) is required"
        items = order.get("items")
        if items is None:
            return None
        if not isinstance(items, list):
            return "items must be an array"
        for item in items:
            if not isinstance(item, dict) or not item.get("externalItemId"):
                return "each item needs an externalItemId"
            quantity = item.get("quantity")
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
                return "item quantity must be a positive integer"
            if _decimal(item.get("cost")) is None:
                return "item cost must be a number"
        return None

    def _orders(self, document: Any) -> Reply:
        orders = document.get("orders") if isinstance(document, dict) else None
        if not isinstance(orders, list) or not 0 < len(orders) <= MAX_ORDERS:
            return Reply(400, {"message": f"orders must be an array of 1 to {MAX_ORDERS} orders"})
        for order in orders:
            if (problem := self._order_problem(order)) is not None:
                return Reply(400, {"message": problem})
        for order in orders:
            self.orders[order["externalOrderId"]] = order
            self.accepted_orders.append(order)
            self.sources.append(order.get("source") or "online")
            for name in ("email", "phone", "externalCustomerId"):
                if order.get(name):
                    self.contacts.add(self._contact_key(str(order[name])))
        return Reply(200, None)

    # v1/event

    def _event(self, document: Any) -> Reply:
        if not isinstance(document, dict):
            return Reply(400, {"message": "body must be a JSON object"})
        key = document.get("eventTypeKey")
        if key not in EVENT_KEYS:
            return Reply(400, {"message": "unsupported eventTypeKey"})
        key_value = document.get("keyValue")
        if not isinstance(key_value, str) or not key_value:
            return Reply(400, {"message": "keyValue is required"})
        params = document.get("params")
        if not isinstance(params, list) or not all(
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and isinstance(p.get("value"), str)
            for p in params
        ):
            return Reply(400, {"message": "params must be [{name, value}] with string values"})
        values = {p["name"]: p["value"] for p in params}
        items: list[Any] = []
        if "items" in values:
            try:
                items = json.loads(values["items"])
            except ValueError:
                return Reply(400, {"message": "items must be a JSON string"})
            if not isinstance(items, list):
                return Reply(400, {"message": "items must be a JSON array"})
        if self._contact_key(key_value) not in self.contacts:
            self.ignored.append(Ignored(document, "unknown contact"))
            return Reply(200, None)
        order_id = values.get("externalOrderId")
        if key in ("orderCreated", "orderUpdated"):
            if (reason := self._unsaved_order(values, items)) is not None:
                self.ignored.append(Ignored(document, reason))
                return Reply(200, None)
            assert order_id is not None
            self.orders[order_id] = dict(values)
        elif order_id is None or order_id not in self.orders:
            self.ignored.append(Ignored(document, "unknown order"))
            return Reply(200, None)
        else:
            self.orders[order_id]["status"] = STATUS_FOR_KEY[key]
        self.accepted_events.append(document)
        return Reply(200, None)

    @staticmethod
    def _unsaved_order(values: dict[str, str], items: list[Any]) -> str | None:
        """Why an orderCreated/orderUpdated event would be ignored, or None."""
        missing = [n for n in REQUIRED_ORDER_FIELDS if not values.get(n)]
        if missing:
            return f"missing {', '.join(missing)}"
        if not EVENT_DATE.fullmatch(values["date"]):
            return "date is not YYYY-MM-ddTHH:mm:ss"
        if values["status"] not in STATUSES:
            return "unknown status"
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                return f"items[{index}] is not an object"
            lacking = [n for n in REQUIRED_EVENT_ITEM_FIELDS if item.get(n) in (None, "")]
            if lacking:
                return f"items[{index}] lacks {', '.join(lacking)}"
        return None

    def __call__(self, request: Recorded) -> Reply:
        if not self._authorised(request):
            return Reply(401, None, headers={"WWW-Authenticate": 'Basic realm="esputnik"'})
        if request.method != "POST" or request.path not in ("/api/v1/orders", "/api/v1/event"):
            return Reply(404, {"message": "Not Found"})
        if not (request.header("content-type") or "").startswith("application/json"):
            return Reply(415, {"message": "Content-Type must be application/json"})
        try:
            document = json.loads(request.body, parse_float=Decimal)
        except ValueError:
            return Reply(400, {"message": "body is not valid JSON"})
        if request.path == "/api/v1/orders":
            return self._orders(document)
        return self._event(document)


def settings_for(url: str) -> dict[str, Any]:
    """The destination's settings (field -> value) that point it at this fake."""
    return {"base_url": url, "api_key": API_KEY}


RULES = EsputnikRules


def esputnik_server(**rules: Any) -> tuple[FakeServer, EsputnikRules]:
    handler = EsputnikRules(**rules)
    return FakeServer(handler), handler
