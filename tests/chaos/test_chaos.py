"""Chaos, bounded and seeded: thousands of messages through the real handler, ledger and the four
fake vendors while they fail in every documented way, on a simulated Service Bus.

Asserted: every order event is delivered exactly once to every destination it is routed to (or
dead-lettered with a reason), no message is left unsettled, poison messages are dead-lettered on
their first delivery. Run one message at a time and as the batch trigger (ORDERS_BATCH_ENABLED:
bulk requests, a duplicate publish possibly in the same batch). The figures are printed
(`pytest -s` shows them).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from order_processor.handler import OrderHandler
from order_processor.processor import Processor

from order_processor.contract import parse_order
from order_processor.ledger import LedgerStatus, MemoryLedger
from order_processor.model import MessageMetadata, Outcome, Settlement, event_key
from order_processor.outbound.retry import RetryPolicy
from order_processor.redelivery import RetryCopy, RetrySchedule
from order_processor.routing import route
from tests.conftest import EPOCH, FakeClock, business_requests, sample, settings_for
from tests.fakes.base import FakeServer, Recorded, Reply

SEED = 20261123
ORDERS = int(__import__("os").environ.get("CHAOS_ORDERS", "2000"))
POISON = 40
DUPLICATE_SHARE = 0.10  # re-published with a new MessageId
LOCK_LOST_SHARE = 0.05  # settled, but the lock was lost first: Service Bus redelivers
SCHEDULE_FAILURE_SHARE = 0.01  # the retry copy cannot be sent: abandon
MAX_DELIVERY_COUNT = 10
CONCURRENCY = 32
TICK = 2.0  # simulated seconds
#: generous against a loaded machine: an answer that merely arrives late would be a lost ack (the
#: vendor has it, we retry), a duplicate no ledger can prevent; injected timeouts exceed it.
TIMEOUT = 1.0
SPACING = 0.06  # simulated seconds between publishes: ~32 messages in flight at a time
OUTAGE = ("esputnik", 30.0, 420.0)  # down (503) for this stretch of simulated seconds
CARDS = ["6330001234567890", "6330001111111111", "6330009999999999"]  # the last is unknown
TEMPLATES = {
    "OrderCreated": "order-created.json",
    "OrderUpdated": "order-updated.json",
    "OrderDelivered": "order-delivered.json",
    "OrderCancelled": "order-cancelled.json",
}


@dataclass(order=True)
class Delivery:
    at: float
    seq: int
    body: bytes = field(compare=False)
    metadata: MessageMetadata = field(compare=False)
    entity: str = field(compare=False)
    published: str = field(compare=False)  # the publish this delivery descends from
    delivery_count: int = field(default=1, compare=False)


@dataclass
class Figures:
    messages: int = 0
    duplicates: int = 0
    redeliveries: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    retry_copies: int = 0
    abandoned: int = 0
    deliveries: int = 0


class SimulatedServiceBus:
    """A topic subscription plus the retry queue, in simulated time, settling like Service Bus."""

    def __init__(self, clock: FakeClock, rng: random.Random, figures: Figures) -> None:
        self.clock = clock
        self.rng = rng
        self.figures = figures
        self.pending: list[Delivery] = []
        self.dead_letters: list[tuple[Delivery, str, str]] = []
        self.completed: list[Delivery] = []
        self._seq = 0
        self._current: dict[str, str] = {}  # retry copy id -> publish it descends from

    def push(self, delivery: Delivery) -> None:
        heapq.heappush(self.pending, delivery)

    def publish(self, body: bytes, message_id: str, at: float) -> None:
        self._seq += 1
        self.push(
            Delivery(at, self._seq, body, MessageMetadata(message_id=message_id), "sub", message_id)
        )

    # -- the retry queue the handler schedules on (RetryQueue protocol)
    async def schedule(self, copy: RetryCopy) -> None:
        if self.rng.random() < SCHEDULE_FAILURE_SHARE:
            raise ConnectionError("simulated: namespace unreachable")
        self.figures.retry_copies += 1
        self._seq += 1
        metadata = MessageMetadata(
            message_id=copy.message_id,
            application_properties={k: str(v) for k, v in copy.application_properties.items()},
        )
        at = (copy.scheduled_at - EPOCH).total_seconds()
        origin = self._current.get(copy.message_id) or str(
            copy.application_properties.get("originalMessageId", "")
        )
        self.push(Delivery(at, self._seq, copy.body, metadata, "retry", origin))

    async def aclose(self) -> None:
        return None

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.settlement is Settlement.DEAD_LETTER:
            self.dead_letters.append((delivery, outcome.reason or "", outcome.description or ""))
        elif outcome.settlement is Settlement.RETRY:
            self.figures.abandoned += 1
            self._redeliver(delivery)
        elif self.rng.random() < LOCK_LOST_SHARE:
            self.figures.redeliveries += 1
            self._redeliver(delivery)
        else:
            self.completed.append(delivery)

    def _redeliver(self, delivery: Delivery) -> None:
        if delivery.delivery_count >= MAX_DELIVERY_COUNT:
            self.dead_letters.append((delivery, "MaxDeliveryCountExceeded", ""))
            return
        self._seq += 1
        self.push(
            Delivery(
                self.clock.now + 30,  # the lock lapses, then Service Bus redelivers
                self._seq,
                delivery.body,
                delivery.metadata,
                delivery.entity,
                delivery.published,
                delivery.delivery_count + 1,
            )
        )

    async def run(self, handler: OrderHandler, *, batched: bool) -> None:
        while self.pending:
            # Up to CONCURRENCY messages that arrive within one tick are in flight together.
            horizon = max(self.clock.now, self.pending[0].at) + TICK
            batch = []
            while self.pending and self.pending[0].at <= horizon and len(batch) < CONCURRENCY:
                batch.append(heapq.heappop(self.pending))
            self.clock.now = max(self.clock.now, batch[-1].at)
            if batched:
                outcomes = await handler.handle_batch([(d.body, d.metadata) for d in batch])
            else:
                outcomes = await asyncio.gather(
                    *(handler.handle(d.body, d.metadata) for d in batch)
                )
            self.figures.deliveries += len(batch)
            for delivery, outcome in zip(batch, outcomes, strict=True):
                self.settle(delivery, outcome)


def chaos_for(name: str, rng: random.Random, clock: FakeClock, figures: Figures) -> Any:
    start = clock.now

    def fault(request: Recorded) -> Reply | None:
        if name == OUTAGE[0] and OUTAGE[1] <= clock.now - start < OUTAGE[2]:
            figures.faults["outage 503"] += 1
            return Reply(503, {"message": "maintenance"})
        roll = rng.random()
        for share, label, reply in (
            (0.03, "500", Reply(500, {"message": "internal error"})),
            (0.03, "429+Retry-After", Reply(429, headers={"Retry-After": "1"})),
            (0.01, "reset", Reply(drop=True)),
            (0.001, "timeout", Reply(200, delay=TIMEOUT + 0.5)),
        ):
            if roll < share:
                figures.faults[label] += 1
                return reply
            roll -= share
        return None

    return fault


def order(rng: random.Random, number: int) -> bytes:
    event_type = rng.choices(list(TEMPLATES), weights=[70, 10, 10, 10])[0]
    body = json.loads(sample(TEMPLATES[event_type]))
    body["orderId"] = f"CH{number:06d}"
    body["customer"] = {"loyaltyCardNumber": rng.choice(CARDS)}
    return json.dumps(body).encode()


def poison(rng: random.Random, number: int) -> bytes:
    return rng.choice(
        [
            rng.randbytes(rng.randint(1, 64)),
            b'{"orderId": "P%d", "eventType": "OrderCreated"' % number,
            json.dumps({"schemaVersion": "9.0", "orderId": f"P{number}"}).encode(),
            json.dumps({**json.loads(sample("order-created.json")), "lines": []}).encode(),
            json.dumps({**json.loads(sample("order-created.json")), "total": "ninety"}).encode(),
        ]
    )


def events_in(request: Recorded) -> int:
    """How many order events one accepted request carried (bulk forms carry several)."""
    document = json.loads(request.body)
    if isinstance(document, list):
        return len(document)  # Profile Store TrackBulk, RichRelevance POST
    if isinstance(document, dict) and isinstance(document.get("orders"), list):
        return len(document["orders"])  # eSputnik v1/orders
    return 1


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
async def test_chaos_every_event_delivered_exactly_once_or_dead_lettered(
    fakes: dict[str, FakeServer], loyalty: FakeServer, clock: FakeClock, batched: bool
) -> None:
    rng = random.Random(SEED)
    figures = Figures()
    start = clock.utc()
    bus = SimulatedServiceBus(clock, rng, figures)
    for name, server in {**fakes, "loyalty": loyalty}.items():
        server.chaos = chaos_for(name, random.Random(f"{SEED}:{name}"), clock, figures)

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    settings = settings_for(
        fakes["profile_store"].url,
        loyalty.url,
        others={name: fakes[name].url for name in ("product_recs", "richrelevance", "esputnik")},
        core={
            "destination_connect_timeout_seconds": TIMEOUT,
            "destination_read_timeout_seconds": TIMEOUT,
            "destination_timeout_seconds": TIMEOUT,
        },
        loyalty={"timeout_seconds": TIMEOUT, "read_timeout_seconds": TIMEOUT},
    )
    ledger = MemoryLedger()
    processor = Processor.from_settings(
        settings,
        retry=RetryPolicy(max_attempts=3, sleep=no_wait, clock=clock),
        ledger=ledger,
        clock=clock,
        now=clock.utc,
    )
    handler = OrderHandler(
        processor=processor,
        retry_queue=bus,
        schedule=RetrySchedule.from_settings(settings.core),
        now=clock.utc,
    )

    expected: dict[str, set[str]] = {}  # event key -> routed destinations
    poison_ids = set()
    for number in range(ORDERS):
        body = order(rng, number)
        parsed = parse_order(body)
        expected[event_key(parsed)] = {n for n in fakes if route(n, parsed.event_type)}
        at = clock.now + number * SPACING
        bus.publish(body, f"msg-{number}", at)
        figures.messages += 1
        if rng.random() < DUPLICATE_SHARE:
            figures.duplicates += 1
            bus.publish(body, f"msg-{number}-dup", at + rng.uniform(0, 120))
    for number in range(POISON):
        bus.publish(
            poison(rng, number), f"poison-{number}", clock.now + rng.uniform(0, ORDERS * SPACING)
        )
        poison_ids.add(f"poison-{number}")
        figures.messages += 1

    await bus.run(handler, batched=batched)
    await processor.aclose()

    # -- no message left unsettled: every delivery completed or dead-lettered, nothing pending
    assert bus.pending == []
    # -- poison: dead-lettered InvalidMessage on the first delivery, and nothing else was
    dead = {d.published: (d, reason) for d, reason, _ in bus.dead_letters}
    assert set(dead) == poison_ids, [(d.published, r, text) for d, r, text in bus.dead_letters]
    assert all(r == "InvalidMessage" and d.delivery_count == 1 for d, r in dead.values())
    # -- every routed destination has a final row for every event
    owed = [
        (key, name, row.status if row else None)
        for key, names in expected.items()
        for name in names
        if (row := await ledger.read(key, name)) is None
        or row.status not in {LedgerStatus.DELIVERED, LedgerStatus.SKIPPED}
    ]
    assert owed == []
    # -- exactly once: what the vendors accepted equals what the ledger says was delivered
    delivered_rows = Counter(
        entry.destination
        for entry, _ in ledger.rows.values()
        if entry.status is LedgerStatus.DELIVERED
    )
    accepted = {
        name: sum(events_in(r) for r in server.accepted if r.path in business_requests(server))
        for name, server in fakes.items()
    }
    sent_twice = {name: accepted[name] - delivered_rows[name] for name in fakes}
    assert sent_twice == dict.fromkeys(fakes, 0)
    assert figures.faults["outage 503"] > 0
    assert figures.retry_copies > 0

    print(
        f"\nchaos figures ({'batched' if batched else 'one by one'}): "
        f"messages={figures.messages} (orders={ORDERS}, poison={POISON}) "
        f"duplicates injected={figures.duplicates} lock-lost redeliveries={figures.redeliveries} "
        f"faults injected={sum(figures.faults.values())} {dict(figures.faults)} "
        f"deliveries processed={figures.deliveries} retry copies={figures.retry_copies} "
        f"abandoned={figures.abandoned} delivered={dict(delivered_rows)} "
        f"dead-lettered={len(bus.dead_letters)} sent twice=0 "
        f"simulated span={clock.utc() - start}"
    )
