"""An in-process Service Bus for the lanes mode: the orders subscription, the deliveries topic with
one subscription per lane (and the accept stage's retry subscription), and the operations the
Standard tier would bill for what went through them.

The deliveries topic is an `Outbox`: each published message goes to the subscription its
`destination` names (what each lane's SQL filter does), a message id seen before is dropped (the
topic's duplicate detection), and a message with `scheduled_at` becomes available then (on the
bench's clock: the loop's, with the retry schedule compressed through the settings, see
bench/lanes.py). Receives are peek-lock: a message is in flight until its consumer settles it
(complete, abandon, dead-letter).

Billing rule (Service Bus pricing FAQ, Standard tier): an operation is any API call; a send, a
receive and a settlement (complete, abandon, dead-letter) of a message up to 64 KB is one operation
each, larger messages one per 64 KB started; each subscription's copy is received and settled on
its own. Counted here per message, as that rule reads, also when several messages travel in one
call (`send_calls` counts the calls). Idle receives (long polls that return nothing) depend on
traffic gaps, not on orders, and are not counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from order_processor.model import MessageMetadata
from order_processor.outbox import Outgoing

BILLING_UNIT = 64 * 1024


def billed_units(size: int) -> int:
    """Operations one send, receive or settlement of a message of `size` bytes is billed as."""
    return max(1, math.ceil(size / BILLING_UNIT))


@dataclass
class Operations:
    """Service Bus operations, as billed (see the module's rule)."""

    #: the ERP publishing orders (the product's cost, but not the app's own calls)
    erp_sends: int = 0
    #: the app's sends: delivery messages and retry copies, and of those the scheduled copies
    sends: int = 0
    scheduled: int = 0
    #: API calls that carried the sends (one per publish call)
    send_calls: int = 0
    #: messages dropped by duplicate detection (still billed as sends)
    duplicates: int = 0
    receives: int = 0
    completes: int = 0
    abandons: int = 0
    dead_letters: int = 0

    @property
    def settlements(self) -> int:
        return self.completes + self.abandons + self.dead_letters

    @property
    def app(self) -> int:
        """What the functions themselves are billed for."""
        return self.sends + self.receives + self.settlements

    @property
    def total(self) -> int:
        return self.erp_sends + self.app

    def as_dict(self) -> dict[str, int]:
        return {
            "erp_sends": self.erp_sends,
            "sends": self.sends,
            "scheduled": self.scheduled,
            "send_calls": self.send_calls,
            "duplicates": self.duplicates,
            "receives": self.receives,
            "completes": self.completes,
            "abandons": self.abandons,
            "dead_letters": self.dead_letters,
            "settlements": self.settlements,
            "app": self.app,
            "total": self.total,
        }


@dataclass(eq=False)
class Envelope:
    """A message in a subscription (or in flight from it)."""

    body: bytes
    message_id: str
    properties: dict[str, str]
    session_id: str | None
    #: when it became available (UTC; what the trigger reports as EnqueuedTimeUtc)
    enqueued_time: datetime
    delivery_count: int = 0
    #: perf_counter when received (for the lane's own time per message)
    received_at: float = 0.0
    units: int = 1

    def metadata(self) -> MessageMetadata:
        return MessageMetadata(
            message_id=self.message_id,
            enqueued_time=self.enqueued_time,
            delivery_count=self.delivery_count,
            session_id=self.session_id,
            application_properties=dict(self.properties),
        )


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str
    description: str


class Subscription:
    """Peek-lock delivery to any number of receivers; counts what it bills and how long it had
    work (a message ready or in flight: the lane's "work available" time)."""

    def __init__(self, name: str, ops: Operations) -> None:
        self.name = name
        self.ops = ops
        self.ready: deque[Envelope] = deque()
        self.in_flight = 0
        self.scheduled = 0
        self.dead: list[DeadLetter] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: called after each receive (the ERP feed tops the orders subscription up)
        self.on_receive: Callable[[], None] | None = None
        self._busy_since: float | None = None
        self.busy_s = 0.0
        self.first_available: float | None = None

    # -- work-available time ------------------------------------------------------------------

    def _active(self) -> int:
        return len(self.ready) + self.in_flight

    def _mark(self) -> None:
        now = time.perf_counter()
        if self._active():
            if self._busy_since is None:
                self._busy_since = now
                if self.first_available is None:
                    self.first_available = now
        elif self._busy_since is not None:
            self.busy_s += now - self._busy_since
            self._busy_since = None

    def busy_seconds(self) -> float:
        """Seconds with work available so far (a current busy stretch included)."""
        open_stretch = time.perf_counter() - self._busy_since if self._busy_since else 0.0
        return self.busy_s + open_stretch

    @property
    def idle(self) -> bool:
        """Nothing ready, in flight or scheduled."""
        return not self._active() and not self.scheduled

    # -- messages -----------------------------------------------------------------------------

    def put(self, envelope: Envelope, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(envelope)
        else:
            self.ready.append(envelope)
        self._mark()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def schedule(self, envelope: Envelope, delay: float) -> None:
        """Available after `delay` seconds (a scheduled message)."""
        self.scheduled += 1

        def due() -> None:
            self.scheduled -= 1
            envelope.enqueued_time = datetime.now(UTC)
            self.put(envelope)

        asyncio.get_running_loop().call_later(max(0.0, delay), due)

    async def receive(self, max_messages: int = 1) -> list[Envelope]:
        """Wait for at least one message; take up to `max_messages` (peek-lock)."""
        while not self.ready:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and self.ready:
                    self._pass_on()
                raise
        taken = [self.ready.popleft() for _ in range(min(max_messages, len(self.ready)))]
        now = time.perf_counter()
        for envelope in taken:
            envelope.delivery_count += 1
            envelope.received_at = now
            self.ops.receives += envelope.units
        self.in_flight += len(taken)
        if self.ready:
            self._pass_on()
        if self.on_receive is not None:
            self.on_receive()
        return taken

    def _pass_on(self) -> None:
        """More is ready: wake the next waiting receiver."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def complete(self, envelope: Envelope) -> None:
        self.ops.completes += envelope.units
        self._settled()

    def abandon(self, envelope: Envelope) -> None:
        """Back to the subscription at once (Service Bus redelivers an abandoned message)."""
        self.ops.abandons += envelope.units
        self.in_flight -= 1
        self.put(envelope, front=True)

    def dead_letter(self, envelope: Envelope, reason: str, description: str) -> None:
        self.ops.dead_letters += envelope.units
        self.dead.append(DeadLetter(envelope.message_id, reason, description))
        self._settled()

    def _settled(self) -> None:
        self.in_flight -= 1
        self._mark()


class DeliveriesTopic:
    """The deliveries topic as the stages' `Outbox`: routed by `destination` to a subscription."""

    def __init__(self, subscriptions: Mapping[str, Subscription], ops: Operations) -> None:
        self.subscriptions = subscriptions
        self.ops = ops
        self._seen: set[str] = set()
        #: published for a destination no subscription takes (a disabled lane)
        self.unrouted = 0

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        ops = self.ops
        ops.send_calls += 1
        now = datetime.now(UTC)
        for message in messages:
            units = billed_units(len(message.body))
            ops.sends += units
            if message.message_id in self._seen:
                ops.duplicates += 1
                continue
            self._seen.add(message.message_id)
            subscription = self.subscriptions.get(message.destination)
            if subscription is None:
                self.unrouted += 1
                continue
            envelope = Envelope(
                body=message.body,
                message_id=message.message_id,
                properties={k: str(v) for k, v in message.application_properties.items()},
                session_id=message.session_id,
                enqueued_time=now,
                units=units,
            )
            if message.scheduled_at is not None:
                ops.scheduled += 1
                subscription.schedule(envelope, (message.scheduled_at - now).total_seconds())
            else:
                subscription.put(envelope)

    async def aclose(self) -> None:
        return None


@dataclass
class OrdersFeed:
    """The ERP publishing orders to the orders subscription, one of two ways:

    - saturating (`rate` None): it keeps `depth` orders ready, so the accept stage always has
      work and no order waits behind a backlog of the whole run (throughput: capacity);
    - paced (`rate` orders per second): open loop, order i at start + i / rate, whatever the app
      does (latency at a load it can carry).
    """

    subscription: Subscription
    orders: Any  # an iterator of bench.orders.Order
    depth: int
    rate: float | None = None
    #: order id -> perf_counter when published
    published: dict[str, float] = field(default_factory=dict)
    exhausted: bool = False

    def __post_init__(self) -> None:
        if self.rate is None:
            self.subscription.on_receive = self.top_up

    def start(self) -> asyncio.Task[None] | None:
        if self.rate is None:
            self.top_up()
            return None
        return asyncio.create_task(self._pace(self.rate))

    def top_up(self) -> None:
        while not self.exhausted and len(self.subscription.ready) < self.depth:
            self._publish_next()

    async def _pace(self, rate: float) -> None:
        start = time.perf_counter()
        sent = 0
        while not self.exhausted:
            due = int((time.perf_counter() - start) * rate) + 1
            while sent < due and not self.exhausted:
                self._publish_next()
                sent += 1
            await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))

    def _publish_next(self) -> None:
        order = next(self.orders, None)
        if order is None:
            self.exhausted = True
            return
        subscription = self.subscription
        units = billed_units(len(order.body))
        subscription.ops.erp_sends += units
        self.published[order.order_id] = time.perf_counter()
        subscription.put(
            Envelope(
                body=order.body,
                message_id=f"order-{order.order_id}",
                properties={"orderId": order.order_id},
                session_id=None,
                enqueued_time=datetime.now(UTC),
                units=units,
            )
        )
