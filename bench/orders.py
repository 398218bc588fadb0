"""Valid contract v1 orders for the bench, generated deterministically and cheaply.

A few hundred body templates are rendered once; message `i` is template `i % T` with its own order
id and loyalty card spliced in (a bytes join, a microsecond), so a 100k-message run neither holds
100k bodies in memory nor spends the driver's CPU on generating them.

Each order also has a `Plan`: what the core should do with it (look the card up or not, which
destinations it sends to). The floor and the batch simulation follow plans; the report checks the
core against them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from bench.vendors import UNKNOWN_CARD_DIGIT
from order_processor.contract import EventType
from order_processor.routing import ROUTES

ORDER_SLOT = "@@ORDER@@"
CARD_SLOT = "@@CARD@@"
TEMPLATES = 256

#: share of each event type, in the order ERP publishes them (mostly sales)
EVENT_MIX = (
    (EventType.ORDER_CREATED, 0.70),
    (EventType.ORDER_UPDATED, 0.15),
    (EventType.ORDER_DELIVERED, 0.10),
    (EventType.ORDER_CANCELLED, 0.05),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the core is expected to do with one order."""

    event_type: EventType
    #: the card to look up (None: no lookup, the message has an email or no card)
    card: str | None
    #: destinations that receive a request for this order (routed, and not skipped)
    sends: tuple[str, ...]
    #: destinations the event is routed to: one delivery message each (a lane may still skip)
    routes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[bytes, bytes, bytes]  # before the order id, between id and card, after the card
    event_type: EventType
    identity: str  # "card", "email" or "phone"


@dataclass(frozen=True, slots=True)
class Order:
    index: int
    body: bytes
    plan: Plan
    order_id: str = ""


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _document(rng: random.Random, event_type: EventType, identity: str) -> dict[str, object]:
    lines = []
    sub_total = Decimal(0)
    discount = Decimal(0)
    for n in range(rng.randint(1, 4)):
        price = Decimal(rng.randint(199, 12_999)) / 100
        quantity = rng.randint(1, 3)
        line_discount = Decimal(rng.choice((0, 0, 0, 100, 250))) / 100
        line: dict[str, object] = {
            "sku": f"SKU-{rng.randint(1000, 9999)}-{n}",
            "productId": str(rng.randint(10_000, 99_999)),
            "name": rng.choice(("Merino jumper", "Wool socks", "Oxford shirt", "Chinos")),
            "category": rng.choice(("knitwear", "accessories", "shirts", "trousers")),
            "quantity": quantity,
            "unitPrice": _money(price),
        }
        if line_discount:
            line["discount"] = _money(line_discount)
        if rng.random() < 0.5:
            line["attributes"] = {"size": rng.choice(("S", "M", "L", "XL"))}
        lines.append(line)
        sub_total += price * quantity
        discount += line_discount
    customer: dict[str, str] = {"loyaltyCardNumber": CARD_SLOT}
    if identity == "email":
        customer = {"email": f"walk.in.{rng.randint(1, 10**6)}@example.com", "customerId": "W-1"}
    elif identity == "phone":
        customer = {"phone": f"+44 7700 9{rng.randint(10_000, 99_999)}", "customerId": "W-2"}
    hour, minute = rng.randint(8, 20), rng.randint(0, 59)
    return {
        "schemaVersion": "1.0",
        "eventType": event_type.value,
        "orderId": ORDER_SLOT,
        "orderDate": f"2026-11-{rng.randint(1, 28):02d}T{hour:02d}:{minute:02d}:00+01:00",
        "store": {"id": f"S{rng.randint(1, 300):03d}", "name": "Regent Street", "regionId": 7},
        "customer": customer,
        "currency": "GBP",
        "subTotal": _money(sub_total),
        "shipping": 0,
        "discount": _money(discount),
        "total": _money(sub_total - discount),
        "paymentMethod": rng.choice(("card", "cash", "gift-card")),
        "lines": lines,
        "attributes": {"till": str(rng.randint(1, 20))},
        "lang": "en-gb",
    }


def _template(rng: random.Random) -> Template:
    roll = rng.random()
    event_type = EVENT_MIX[-1][0]
    for candidate, share in EVENT_MIX:
        if roll < share:
            event_type = candidate
            break
        roll -= share
    identity = rng.choices(("card", "email", "phone"), weights=(88, 10, 2))[0]
    text = json.dumps(_document(rng, event_type, identity), separators=(",", ":"))
    head, _, rest = text.partition(ORDER_SLOT)
    middle, _, tail = rest.partition(CARD_SLOT)
    return Template((head.encode(), middle.encode(), tail.encode()), event_type, identity)


def _sends(event_type: EventType, identity: str, known: bool) -> tuple[str, ...]:
    """The core's skip rules for these orders (see each destination's `prepare`)."""
    has_email = identity == "email" or (identity == "card" and known)
    has_phone = identity == "phone" or (identity == "card" and known)
    has_id = identity != "card" or known
    # Product Recommendations skips orders without a known customer (the loyalty provider's, or
    # the ERP's own email): PRODUCT_RECS_SEND_ANONYMOUS is off by default.
    known_customer = identity == "email" or (identity == "card" and known)
    sends = {
        "profile_store": has_email,
        "product_recs": known_customer,
        "richrelevance": has_id,
        "esputnik": has_email or has_phone,
    }
    return tuple(
        name for name, sent in sends.items() if sent and event_type in ROUTES.get(name, {})
    )


class OrderSet:
    """`count` orders over `cards` distinct loyalty cards (1 in 10 unknown to the provider)."""

    def __init__(self, count: int, *, cards: int, seed: int = 7, tag: str = "B") -> None:
        self.count = count
        self.cards = max(1, cards)
        self.tag = tag
        rng = random.Random(seed)  # noqa: S311 (test data)
        self.templates = [_template(rng) for _ in range(TEMPLATES)]
        self._card_rng_seed = seed + 1

    def __len__(self) -> int:
        return self.count

    def card(self, number: int) -> str:
        return f"6330{number:012d}"

    def __iter__(self) -> Iterator[Order]:
        rng = random.Random(self._card_rng_seed)  # noqa: S311 (test data)
        for index in range(self.count):
            template = self.templates[index % TEMPLATES]
            card = self.card(rng.randrange(self.cards))
            order_id = f"{self.tag}{index:08d}"
            head, middle, tail = template.parts
            has_card = template.identity == "card"
            spliced = card.encode() if has_card else b""
            body = b"".join((head, order_id.encode(), middle, spliced, tail))
            lookup = card if has_card else None
            known = not card.endswith(UNKNOWN_CARD_DIGIT)
            sends = _sends(template.event_type, template.identity, known)
            routes = tuple(name for name in ROUTES if template.event_type in ROUTES[name])
            plan = Plan(template.event_type, lookup, sends, routes)
            yield Order(index, body, plan, order_id)
