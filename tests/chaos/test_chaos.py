"""Chaos, seeded and bounded, through the lanes: order messages through the real function app on
the Service Bus double, to the four fake vendors, while they fail in every documented way and one
of them is down for the whole middle of the run.

Driven as the Functions host drives the app. The ERP's messages are published to the orders topic
with the real azure-servicebus client. One listener per function that `function_app.build_app`
declares (`accept_order` on the orders subscription, `accept_order_retry` on accept-retry, one
`deliver_<name>` per lane subscription, each bound as its trigger binding says) receives in
peek-lock with host.json's concurrency, calls the decorated function with real received messages
(a batch, one batch at a time, where the binding has cardinality many: ORDERS_BATCH_ENABLED) and a
ServiceBusMessageActions stand-in, then settles each message as the function asked: complete,
dead-letter with reason and description, or abandon. The stages publish through a real
`ServiceBusOutbox` to the double's deliveries topic, whose duplicate detection and SQL filters do
the fan-out to the lanes.

Chaos: duplicates re-published with new MessageIds (inside the duplicate detection window, and a
few after it, which only the ledger recognises), lock-lost redeliveries (a completion that comes
after the lock lapsed), accept publishes whose acknowledgement is lost (abandon; the re-publish is
dropped as a duplicate), retry copies that cannot be scheduled (abandon), vendor faults (500, 429 +
Retry-After, resets, timeouts) at every vendor and at the loyalty provider, a loyalty brown-out
(those orders go round the accept lane), orders a vendor refuses for good, poison, and eSputnik
down (503) from early in the run until OUTAGE of broker time later.

Time: the broker's clock is the stages' `now` (ledger leases, retry schedules, the retry window). It
runs with the wall clock while anything is in flight; when the namespace is quiet (nothing in
flight, nothing available) the driver moves it on past the next scheduled retry copy or lapsing
lock, as a discrete-event simulation would, so the outage's retries take seconds, not minutes.

Asserted: every routed (event, destination) was delivered exactly once (the vendor accepted it
once), skipped (never sent), or dead-lettered on its lane as DestinationRejected (the refused
ones); nothing is left in any subscription, scheduled, or dropped unrouted; every dead letter is
accounted for; poison is dead-lettered once, at accept, InvalidMessage; the other lanes made their
last delivery while eSputnik was still down (bar an event whose own retries, twice unlucky, took
it past the outage), and eSputnik drained after it came back. The figures are printed (`pytest
-s`), with each lane's deliveries per second before and during the outage.

Seeded: the workload (orders, duplicates, refusals, poison) is the same every run; each fault
generator is seeded too, but which request draws which fault follows the order requests arrive in,
which concurrency varies, so the counts differ a little from run to run.

Size: CHAOS_ORDERS orders (600 by default) plus 40 poison. Everything (the double, the fakes, the
SDK's pure-Python AMQP) shares one process, so each order costs about 0.1 s of wall time over both
variants on two cores: the default runs both in about a minute, CHAOS_ORDERS=2000 in about four.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from azure.servicebus.exceptions import MessageLockLostError, ServiceBusError

import function_app
from order_processor.accept import ACCEPT_LANE
from order_processor.contract import EventType, parse_order
from order_processor.delivery import EVENT_KEY, ORDER_ID
from order_processor.ledger import LedgerStatus, MemoryLedger
from order_processor.model import DeliveryStatus, MessageMetadata, Outcome, event_key
from order_processor.observe import Delivered, Observer, Observers, label
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import Outgoing, ServiceBusOutbox
from order_processor.pipeline import Pipeline
from order_processor.routing import column
from order_processor.servicebus import service_bus_client
from order_processor.settings import AppSettings
from order_processor.telemetry import Telemetry
from tests.conftest import ROOT, sample, settings_for
from tests.fakes.base import Chaos, FakeServer, Recorded, Reply
from tests.fakes.loyalty import CUSTOMERS
from tests.servicebus_fixtures import (
    DUPLICATE_DETECTION_WINDOW,
    Entities,
    Namespace,
    module_namespace,
)

namespace = module_namespace()

SEED = 20261123
ORDERS = int(os.environ.get("CHAOS_ORDERS", "600"))
POISON = 40
DUPLICATE_SHARE = 0.10  # re-published with a new MessageId, inside the duplicate window
LATE_DUPLICATE_SHARE = 0.02  # re-published after the window: only the ledger knows them
REFUSED_SHARE = 0.012  # of the orders that every vendor takes: one vendor refuses it for good
LOCK_LOST_SHARE = 0.05  # the function completed, but after the lock lapsed: redelivered
ACK_LOST_SHARE = 0.02  # the accept stage's publish went out, its acknowledgement did not
SCHEDULE_FAILURE_SHARE = 0.01  # a retry copy cannot be scheduled: abandon
#: generous against a loaded machine: an answer that merely arrives late would be a lost ack (the
#: vendor has it, we retry), a duplicate no ledger can prevent; injected timeouts exceed it.
TIMEOUT = 2.0
VENDOR_FAULTS = (  # share of requests, label, reply
    (0.03, "500", Reply(500, {"message": "internal error"})),
    (0.03, "429+Retry-After", Reply(429, {"message": "slow down"}, {"Retry-After": "1"})),
    (0.01, "reset", Reply(drop=True)),
    (0.001, "timeout", Reply(200, delay=TIMEOUT + 0.5)),
)
DOWN = "esputnik"
#: eSputnik goes down (503) once it has delivered this share of the orders, for OUTAGE of broker
#: time: from early on until well after the other lanes are done
OUTAGE_AFTER = 0.10
OUTAGE = timedelta(minutes=10)
#: RETRY_BACKOFF_MINUTES: a retry copy after 1 minute, then every 15 (the default is 1,5,15,30,60)
BACKOFF_MINUTES = (1.0, 15.0)
#: the loyalty provider answers 503 from its (ORDERS / 3)th lookup for this long (broker time):
#: those orders go round the accept lane (a retry copy a minute later, when it answers again)
LOYALTY_BROWN_OUT = timedelta(seconds=1)
CARDS = [*CUSTOMERS, "6330009999999999"]  # the last one is unknown to the provider
TEMPLATES = {
    EventType.ORDER_CREATED: "order-created.json",
    EventType.ORDER_UPDATED: "order-updated.json",
    EventType.ORDER_DELIVERED: "order-delivered.json",
    EventType.ORDER_CANCELLED: "order-cancelled.json",
}
#: the Functions host's Service Bus options (prefetchCount, maxConcurrentCalls, maxMessageBatchSize)
HOST = json.loads((ROOT / "host.json").read_text())["extensions"]["serviceBus"]
#: the ERP publishes this many at a time, while the orders subscription holds at most BACKLOG
PUBLISH_BATCH = 50
BACKLOG = 150
#: how long a listener's receive waits for a first message (it is called in a loop)
RECEIVE_WAIT = 0.05
OPEN_WAIT = 10.0
#: how far past the first thing due the driver moves the clock when the namespace is quiet
WAVE = 60.0
#: wall-clock bound of each phase, whatever the machine: a hang fails, saying what was left where
PHASE_BOUND = 120.0 + ORDERS * 0.15


# --- the workload (seeded) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    body: bytes
    message_id: str
    properties: dict[str, str | int]


@dataclass
class Workload:
    #: what the ERP publishes, in order: originals, duplicates and poison interleaved
    messages: list[Published] = field(default_factory=list)
    #: published again once the duplicate detection window has passed
    late: list[Published] = field(default_factory=list)
    #: order id (one event each) -> (event key, event type)
    events: dict[str, tuple[str, EventType]] = field(default_factory=dict)
    #: MessageIds of the poison messages
    poison: set[str] = field(default_factory=set)
    #: lane -> the order ids its vendor refuses
    refused: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    duplicates: int = 0


def order_body(rng: random.Random, number: int) -> tuple[str, EventType, str, bytes]:
    event_type = rng.choices(list(TEMPLATES), weights=[70, 10, 10, 10])[0]
    document = json.loads(sample(TEMPLATES[event_type]))
    order_id, card = f"CH{number:06d}", rng.choice(CARDS)
    document["orderId"] = order_id
    document["customer"] = {"loyaltyCardNumber": card}
    return order_id, event_type, card, json.dumps(document).encode()


def poison_body(rng: random.Random, number: int) -> bytes:
    created = json.loads(sample("order-created.json"))
    return rng.choice(
        [
            rng.randbytes(rng.randint(1, 64)),
            b'{"orderId": "P%d", "eventType": "OrderCreated"' % number,
            json.dumps({"schemaVersion": "9.0", "orderId": f"P{number}"}).encode(),
            json.dumps({**created, "orderId": f"P{number}", "lines": []}).encode(),
            json.dumps({**created, "orderId": f"P{number}", "total": "ninety"}).encode(),
        ]
    )


def workload(lanes: Sequence[str]) -> Workload:
    rng = random.Random(SEED)
    made = Workload()
    slots: list[tuple[float, Published]] = []
    refusals = 0
    for number in range(ORDERS):
        order_id, event_type, card, body = order_body(rng, number)
        made.events[order_id] = (event_key(parse_order(body)), event_type)
        properties: dict[str, str | int] = {"eventType": event_type.value, "orderId": order_id}
        original = Published(body, f"erp-{order_id}", properties)
        slots.append((number, original))
        if rng.random() < DUPLICATE_SHARE:  # the ERP sends it again a little later
            made.duplicates += 1
            again = Published(body, f"{original.message_id}-dup", properties)
            slots.append((number + rng.uniform(0, 300), again))
        # A created order of a known customer is sent to every lane: one of them may refuse it.
        refusable = event_type is EventType.ORDER_CREATED and card in CUSTOMERS
        if refusable and rng.random() < REFUSED_SHARE:
            made.refused[lanes[refusals % len(lanes)]].add(order_id)
            refusals += 1
            continue  # (a late re-publish of a refused order would be refused again)
        if rng.random() < LATE_DUPLICATE_SHARE:
            made.late.append(Published(body, f"{original.message_id}-late", properties))
    for number in range(POISON):
        message_id = f"poison-{number}"
        made.poison.add(message_id)
        slots.append((rng.uniform(0, ORDERS), Published(poison_body(rng, number), message_id, {})))
    made.messages = [published for _, published in sorted(slots, key=lambda slot: slot[0])]
    return made


# --- what happened, for the assertions and the figures -------------------------------------------


@dataclass
class Figures:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: Counter[str] = field(default_factory=Counter)
    #: the waits the immediate retries asked for (Retry-After and backoff), not slept for real
    pauses: list[float] = field(default_factory=list)
    received: Counter[str] = field(default_factory=Counter)  # function -> messages
    invocations: Counter[str] = field(default_factory=Counter)  # function -> calls
    settlements: Counter[tuple[str, str]] = field(default_factory=Counter)  # (function, action)
    #: (lane, complete | retry-scheduled | dead-letter | abandon, reason) as the stages decided
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: (lane or accept, order id) -> retry copies scheduled for it there
    retried: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: lane -> (broker time, perf_counter, order id) of each delivery its vendor accepted (those
    #: the ledger found done earlier are not counted)
    deliveries: dict[str, list[tuple[datetime, float, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    lock_lost: int = 0
    lock_lost_confirmed: int = 0
    ack_lost: int = 0
    schedule_failures: int = 0
    problems: list[str] = field(default_factory=list)  # what must not happen, to show at the end
    #: (perf_counter, broker seconds) of each time the driver moved the clock on
    jumps: list[tuple[float, float]] = field(default_factory=list)

    def fault(self, name: str) -> None:
        with self.lock:
            self.faults[name] += 1


class Outage:
    """`lane`'s vendor answers 503 from when it has delivered `after` events until `length` of
    broker time later."""

    def __init__(self, lane: str, after: int, length: timedelta, now: Callable[[], datetime]):
        self.lane = lane
        self.after = after
        self.length = length
        self.now = now
        self.start: datetime | None = None
        self.end: datetime | None = None
        self.real_start: float | None = None  # perf_counter

    def delivered(self, lane: str, count: int) -> None:
        if lane == self.lane and self.start is None and count >= self.after:
            self.start = self.now()
            self.end = self.start + self.length
            self.real_start = time.perf_counter()

    def down(self, lane: str) -> bool:
        if lane != self.lane or self.start is None or self.end is None:
            return False
        return self.start <= self.now() < self.end


def vendor_chaos(
    name: str, figures: Figures, outage: Outage, refused: set[str], rng: random.Random
) -> Chaos:
    marks = [json.dumps(order_id).encode() for order_id in refused]
    lock = threading.Lock()

    def fault(request: Recorded) -> Reply | None:
        if outage.down(name):
            figures.fault("outage 503")
            return Reply(503, {"message": "down for maintenance"})
        if any(mark in request.body for mark in marks):
            figures.fault("refused")
            return refusal(name)
        with lock:
            roll = rng.random()
        return random_fault(roll, figures)

    return fault


def refusal(name: str) -> Reply:
    if name == "product_recs":  # its documented way: the body says so, whatever the status
        return Reply(200, {"status": "fail", "errors": [{"code": "X", "message": "refused"}]})
    return Reply(400, {"message": "chaos: this order is refused"})


def random_fault(roll: float, figures: Figures) -> Reply | None:
    for share, name, reply in VENDOR_FAULTS:
        if roll < share:
            figures.fault(name)
            return reply
        roll -= share
    return None


def loyalty_chaos(figures: Figures, rng: random.Random, now: Callable[[], datetime]) -> Chaos:
    lock = threading.Lock()
    lookups = 0
    brown_out: datetime | None = None  # when it began

    def fault(request: Recorded) -> Reply | None:
        nonlocal lookups, brown_out
        with lock:
            lookups += 1
            if lookups == ORDERS // 3:
                brown_out = now()
            roll = rng.random()
        if brown_out is not None and now() < brown_out + LOYALTY_BROWN_OUT:
            figures.fault("loyalty brown-out 503")
            return Reply(503, {"message": "busy"})
        return random_fault(roll, figures)

    return fault


class Recorder(Observer):
    """Attached to the stages beside the standard observers: what each delivery and each message
    came to."""

    def __init__(self, figures: Figures, outage: Outage, now: Callable[[], datetime]) -> None:
        self.figures = figures
        self.outage = outage
        self.now = now

    def delivered(self, delivered: Delivered) -> None:
        result = delivered.result
        if result.status is DeliveryStatus.DELIVERED and not result.previously:
            times = self.figures.deliveries[delivered.lane]
            times.append((self.now(), time.perf_counter(), delivered.order_id))
            self.outage.delivered(delivered.lane, len(times))

    def settled(self, stage: str, metadata: MessageMetadata, outcome: Outcome) -> None:
        lane = outcome.destination or ACCEPT_LANE
        self.figures.outcomes[(lane, label(outcome), outcome.reason or "")] += 1
        if outcome.retry_at is not None and outcome.order_id:
            self.figures.retried[(lane, outcome.order_id)] += 1


class ChaosOutbox:
    """The real ServiceBusOutbox, failing as a namespace does: a retry copy that cannot be
    scheduled (nothing sent), or a publish whose acknowledgement is lost (it was sent)."""

    def __init__(self, inner: ServiceBusOutbox, figures: Figures, rng: random.Random) -> None:
        self.inner = inner
        self.figures = figures
        self.rng = rng

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        scheduled = any(m.scheduled_at is not None for m in messages)
        roll = self.rng.random()
        if scheduled and roll < SCHEDULE_FAILURE_SHARE:
            self.figures.schedule_failures += 1
            raise ConnectionError("chaos: the namespace cannot be reached")
        await self.inner.publish(messages)
        if not scheduled and roll < ACK_LOST_SHARE:
            self.figures.ack_lost += 1
            raise ConnectionError("chaos: the send went out, its acknowledgement was lost")

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the Functions host, as far as Service Bus triggers go ---------------------------------------


class HostActions:
    """ServiceBusMessageActions as the function sees it: each call is recorded, then the listener
    settles the message through its receiver (the host settles over its own link too)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ServiceBusReceivedMessage, dict[str, Any]]] = []

    def complete(self, message: ServiceBusReceivedMessage) -> None:
        self.calls.append(("complete", message, {}))

    def abandon(self, message: ServiceBusReceivedMessage) -> None:
        self.calls.append(("abandon", message, {}))

    def deadletter(
        self,
        message: ServiceBusReceivedMessage,
        deadletter_reason: str | None = None,
        deadletter_error_description: str | None = None,
    ) -> None:
        options = {"reason": deadletter_reason, "error_description": deadletter_error_description}
        self.calls.append(("deadletter", message, options))


class Listener:
    """One function's trigger: receives in peek-lock, invokes, settles. A single-message function
    runs up to maxConcurrentCalls invocations at a time; a batch function one batch of up to
    maxMessageBatchSize at a time."""

    def __init__(
        self,
        name: str,
        function: Any,
        binding: dict[str, Any],
        receiver: ServiceBusReceiver,
        figures: Figures,
    ) -> None:
        self.name = name
        self.call = function.get_user_function()
        self.argument = binding["name"]
        self.batch = str(binding.get("cardinality", "one")).lower() == "many"
        self.receiver = receiver
        self.figures = figures
        self.rng = random.Random(f"{SEED}:lock:{name}")
        self.size = HOST["maxMessageBatchSize"] if self.batch else HOST["maxConcurrentCalls"]
        #: received and not yet settled
        self.busy = 0
        self.stopping = False
        #: completed too late: lock token -> message, until the driver sees the lock lapse
        self.limbo: dict[uuid.UUID, ServiceBusReceivedMessage] = {}
        self._freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        opened = False
        while not self.stopping:
            if self.busy >= (1 if self.batch else self.size):
                self._freed.clear()
                await self._freed.wait()
                continue
            wanted = self.size if self.batch else self.size - self.busy
            try:
                # The SDK opens the link within the receive's own wait: give the first one time.
                messages = await self.receiver.receive_messages(
                    max_message_count=wanted, max_wait_time=RECEIVE_WAIT if opened else OPEN_WAIT
                )
            except ServiceBusError as exc:  # the host would log it and receive again
                self.figures.problems.append(f"{self.name}: receive failed: {exc!r}")
                opened = False
                continue
            opened = True
            if not messages:
                continue
            self.busy += len(messages)
            self.figures.received[self.name] += len(messages)
            groups = [messages] if self.batch else [[m] for m in messages]
            for group in groups:
                task = asyncio.create_task(self._invoke(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _invoke(self, messages: list[ServiceBusReceivedMessage]) -> None:
        actions = HostActions()
        self.figures.invocations[self.name] += 1
        try:
            argument = messages if self.batch else messages[0]
            await self.call(**{self.argument: argument, "message_actions": actions})
        except Exception as exc:  # the function settles everything itself: never expected
            self.figures.problems.append(f"{self.name} raised {exc!r}")
        # The host settles each as the function asks; a batch's messages are settled together.
        settled = {id(message) for _, message, _ in actions.calls}
        await asyncio.gather(*(self._settle(*call) for call in actions.calls))
        unsettled = [m.message_id for m in messages if id(m) not in settled]
        if unsettled:
            self.figures.problems.append(f"{self.name} left {unsettled} unsettled")
        self.busy -= len(messages)
        self._freed.set()

    async def _settle(
        self, action: str, message: ServiceBusReceivedMessage, options: dict[str, Any]
    ) -> None:
        self.figures.settlements[(self.name, action)] += 1
        try:
            if action == "complete":
                if self.rng.random() < LOCK_LOST_SHARE:
                    self.figures.lock_lost += 1
                    assert message.lock_token is not None
                    self.limbo[uuid.UUID(str(message.lock_token))] = message
                    return
                await self.receiver.complete_message(message)
            elif action == "deadletter":
                await self.receiver.dead_letter_message(message, **options)
            else:
                await self.receiver.abandon_message(message)
        except ServiceBusError as exc:
            self.figures.problems.append(f"{self.name}: {action} failed: {exc!r}")

    def lapsed(self, locked: set[uuid.UUID]) -> list[ServiceBusReceivedMessage]:
        """The messages completed too late whose lock Service Bus no longer holds."""
        tokens = [token for token in self.limbo if token not in locked]
        return [self.limbo.pop(token) for token in tokens]

    async def complete_late(self, message: ServiceBusReceivedMessage) -> None:
        """The late completion itself: Service Bus refuses it (and has redelivered the message)."""
        try:
            await self.receiver.complete_message(message)
        except MessageLockLostError:
            self.figures.lock_lost_confirmed += 1
        else:
            self.figures.problems.append(f"{self.name}: completed after its lock lapsed")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Host:
    """A listener per declared function, bound as its trigger binding says; and the driver that
    moves the broker's clock on whenever the namespace is quiet."""

    def __init__(
        self,
        namespace: Namespace,
        entities: Entities,
        settings: AppSettings,
        figures: Figures,
    ) -> None:
        self.double = namespace.double
        self.entities = entities
        self.figures = figures
        self.clients: list[ServiceBusClient] = []
        self.listeners: list[Listener] = []
        self.publishing = False
        resolved = function_app.binding_settings(settings)
        for function in function_app.build_app(settings).get_functions():
            (binding,) = json.loads(function.get_function_json())["bindings"]
            topic = resolved[binding["topicName"].strip("%")]
            subscription = resolved[binding["subscriptionName"].strip("%")]
            client = ServiceBusClient.from_connection_string(entities.connection_string)
            receiver = client.get_subscription_receiver(
                topic, subscription, prefetch_count=HOST["prefetchCount"]
            )
            self.clients.append(client)
            name = str(function.get_function_name())
            self.listeners.append(Listener(name, function, binding, receiver, figures))
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def subscriptions(self) -> list[str]:
        return [self.entities.subscription_path, *map(self.entities.lane, self.entities.lanes)]

    def start(self) -> None:
        self._tasks = [asyncio.create_task(listener.run()) for listener in self.listeners]

    async def publish(self, messages: Sequence[Published]) -> None:
        """What the ERP does: send to the orders topic, in batches, keeping ahead of the app by
        a few batches (a steady stream rather than one heap: the double's every operation walks
        every message it holds)."""
        self.publishing = True
        try:
            client = ServiceBusClient.from_connection_string(self.entities.connection_string)
            async with client, client.get_topic_sender(self.entities.topic) as sender:
                for start in range(0, len(messages), PUBLISH_BATCH):
                    await self._room_for_more()
                    batch = await sender.create_message_batch()
                    for published in messages[start : start + PUBLISH_BATCH]:
                        batch.add_message(
                            ServiceBusMessage(
                                published.body,
                                message_id=published.message_id,
                                content_type="application/json",
                                application_properties=dict(published.properties),  # type: ignore[arg-type]
                            )
                        )
                    await sender.send_messages(batch)
        finally:
            self.publishing = False

    async def _room_for_more(self) -> None:
        while True:
            if len(self.double.active(self.entities.subscription_path)) <= BACKLOG:
                return
            await asyncio.sleep(0.02)

    async def run_until_quiet(self, *, bound: float = PHASE_BOUND) -> None:
        """Until nothing is left anywhere: moving the clock on to the next due retry copy or
        lapsing lock whenever nothing else can happen."""
        deadline = time.monotonic() + bound
        while True:
            await asyncio.sleep(0.05)
            if time.monotonic() > deadline:
                raise AssertionError(f"not done after {bound:.0f} s: {self.where()}")
            if self.publishing or any(listener.busy for listener in self.listeners):
                continue
            held = [m for path in self.subscriptions for m in self.double.active(path)]
            limbo = {token for listener in self.listeners for token in listener.limbo}
            if any(m.lock_token not in limbo for m in held):
                continue  # available, or locked by a receiver that has yet to hand it over
            # (which messages lapsed is decided here, before any await lets more arrive)
            locked = {m.lock_token for m in held if m.lock_token is not None}
            late = [(lt, m) for lt in self.listeners for m in lt.lapsed(locked)]
            await asyncio.gather(*(listener.complete_late(m) for listener, m in late))
            due = [
                m.scheduled_enqueue_time
                for topic in (self.entities.topic, self.entities.deliveries_topic)
                for m in self.double.scheduled(topic)
                if m.scheduled_enqueue_time is not None
            ] + [m.locked_until for m in held if m.locked_until is not None]
            if not due:
                if not held:
                    return
                continue
            # On to the first thing due, and a little past it: what falls due close together (a
            # wave of retry copies from a burst of failures) is released at once.
            step = (min(due) - self.double.now()).total_seconds() + WAVE
            if step > 0:
                self.double.advance(step)
                self.figures.jumps.append((time.perf_counter(), step))

    def where(self) -> str:
        held = {path: len(self.double.active(path)) for path in self.subscriptions}
        scheduled = len(self.double.scheduled(self.entities.deliveries_topic))
        busy = {listener.name: listener.busy for listener in self.listeners if listener.busy}
        return f"held {held}, scheduled {scheduled}, busy {busy}"

    async def stop(self) -> None:
        """Let each listener's loop end (its receive returns within RECEIVE_WAIT), then close
        every receiver and client at once."""
        for listener in self.listeners:
            listener.stopping = True
        _, pending = await asyncio.wait(self._tasks, timeout=OPEN_WAIT) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        await asyncio.gather(
            *pending, *(lt.stop() for lt in self.listeners), return_exceptions=True
        )
        await asyncio.gather(
            *(listener.receiver.close() for listener in self.listeners),
            *(client.close() for client in self.clients),
            return_exceptions=True,
        )


# --- what the vendors accepted -------------------------------------------------------------------


def accepted_orders(rules: dict[str, Any]) -> dict[str, Counter[str]]:
    """Lane -> how many times its vendor accepted each order (one event per order here)."""
    esputnik = rules["esputnik"]
    return {
        "profile_store": Counter(e["payload"]["orderId"] for e in rules["profile_store"].accepted),
        "product_recs": Counter(d["order"]["refCode"] for d in rules["product_recs"].accepted),
        "richrelevance": Counter(o["externalOrderId"] for o in rules["richrelevance"].accepted),
        "esputnik": Counter(o["externalOrderId"] for o in esputnik.accepted_orders)
        + Counter(
            p["value"]
            for e in esputnik.accepted_events
            for p in e["params"]
            if p["name"] == "externalOrderId"
        ),
    }


# --- the run -------------------------------------------------------------------------------------


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


@pytest.fixture
def vendors(
    profile_store: tuple[FakeServer, Any],
    product_recs: tuple[FakeServer, Any],
    richrelevance: tuple[FakeServer, Any],
    esputnik: tuple[FakeServer, Any],
) -> dict[str, tuple[FakeServer, Any]]:
    """Lane -> (its vendor's fake, the fake's rules)."""
    return {
        "profile_store": profile_store,
        "product_recs": product_recs,
        "richrelevance": richrelevance,
        "esputnik": esputnik,
    }


def chaos_settings(
    entities: Entities, servers: dict[str, FakeServer], loyalty: FakeServer, *, batched: bool
) -> AppSettings:
    bound = entities.overrides()
    return settings_for(  # type: ignore[no-any-return]
        servers["profile_store"].url,
        loyalty.url,
        others={name: server.url for name, server in servers.items() if name != "profile_store"},
        core={
            **bound["core"],
            "destination_connect_timeout_seconds": TIMEOUT,
            "destination_read_timeout_seconds": TIMEOUT,
            "destination_timeout_seconds": TIMEOUT,
            "retry_backoff_minutes": BACKOFF_MINUTES,
            "orders_batch_enabled": batched,
        },
        service_bus=bound["service_bus"],
        # No cache: every order looks its customer up, as with many distinct customers.
        loyalty={
            "timeout_seconds": TIMEOUT,
            "read_timeout_seconds": TIMEOUT,
            "cache_ttl_seconds": 0,
            "negative_cache_ttl_seconds": 0,
        },
        **{name: bound[name] for name in servers},
    )


@contextlib.contextmanager
def app_on(pipeline: Pipeline) -> Iterator[None]:
    function_app.use_pipeline(pipeline)
    try:
        yield
    finally:
        function_app.use_pipeline(None)


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
async def test_chaos_through_the_lanes_every_event_delivered_exactly_once_or_dead_lettered(
    namespace: Namespace,
    entities: Entities,
    vendors: dict[str, tuple[FakeServer, Any]],
    loyalty: FakeServer,
    batched: bool,
) -> None:
    started = time.perf_counter()
    double = namespace.double
    lanes = list(vendors)
    work = workload(lanes)
    figures = Figures()
    outage = Outage(DOWN, int(ORDERS * OUTAGE_AFTER), OUTAGE, double.now)
    servers = {name: server for name, (server, _) in vendors.items()}
    for name, server in servers.items():
        rng = random.Random(f"{SEED}:{name}")
        server.chaos = vendor_chaos(name, figures, outage, work.refused[name], rng)
    loyalty.chaos = loyalty_chaos(figures, random.Random(f"{SEED}:loyalty"), double.now)

    settings = chaos_settings(entities, servers, loyalty, batched=batched)
    telemetry = Telemetry.create()
    outbox = ChaosOutbox(
        ServiceBusOutbox(
            service_bus_client(settings.service_bus), topic=settings.core.deliveries_topic
        ),
        figures,
        random.Random(f"{SEED}:outbox"),
    )

    async def pause(seconds: float) -> None:  # the immediate retries' waits, compressed
        figures.pauses.append(seconds)
        await asyncio.sleep(0)

    ledger = MemoryLedger()
    pipeline = Pipeline.from_settings(
        settings,
        outbox=outbox,
        ledger=ledger,
        retry=RetryPolicy(max_attempts=3, sleep=pause),
        now=double.now,
        telemetry=telemetry,
        observer=Observers(
            [*Observers.standard(telemetry).observers, Recorder(figures, outage, double.now)]
        ),
    )
    host = Host(namespace, entities, settings, figures)
    with app_on(pipeline):
        host.start()
        try:
            begun = double.now()
            await host.publish(work.messages)
            await host.run_until_quiet()
            main_phase = time.perf_counter() - started
            # Past the duplicate detection window, the ERP sends some orders once more.
            double.advance((DUPLICATE_DETECTION_WINDOW + timedelta(minutes=1)).total_seconds())
            await host.publish(work.late)
            await host.run_until_quiet()
        finally:
            await host.stop()
            await pipeline.aclose()
    elapsed = time.perf_counter() - started

    # What is left, what was dropped, what was dead-lettered where, what each vendor accepted.
    left = {path: len(double.active(path)) for path in host.subscriptions}
    dropped = Counter(d.reason for d in double.discarded(entities.deliveries_topic))
    at_accept = double.dead_letters(entities.subscription_path)
    letters = {lane: double.dead_letters(entities.lane(lane)) for lane in entities.lanes}
    reasons = Counter(f"{m.dead_letter_reason} (accept)" for m in at_accept)
    for lane, messages in letters.items():
        reasons.update(f"{m.dead_letter_reason} ({lane})" for m in messages)
    accepted = accepted_orders({name: rules for name, (_, rules) in vendors.items()})
    columns = {name: column(name, settings.destinations[name]) for name in lanes}
    final: Counter[tuple[str, str]] = Counter()
    wrong = []
    for order_id, (key, event_type) in work.events.items():
        for lane in lanes:
            row = ledger.rows.get((key, lane))
            status = row[0].status if row else None
            times = accepted[lane][order_id]
            final[(lane, status.value if status else "not routed")] += 1
            if event_type not in columns[lane]:
                expected: tuple[LedgerStatus | None, int] = (None, 0)
            elif order_id in work.refused[lane]:
                expected = (LedgerStatus.REJECTED, 0)
            elif status is LedgerStatus.SKIPPED:
                expected = (LedgerStatus.SKIPPED, 0)
            else:
                expected = (LedgerStatus.DELIVERED, 1)
            if (status, times) != expected:
                wrong.append((order_id, lane, status, times, expected))
    sent_twice = sum(n - 1 for counts in accepted.values() for n in counts.values() if n > 1)
    report(
        batched=batched,
        work=work,
        figures=figures,
        outage=outage,
        begun=begun,
        reasons=reasons,
        final=final,
        dropped=dropped,
        sent_twice=sent_twice,
        started=started,
        main_phase=main_phase,
        elapsed=elapsed,
    )

    assert figures.problems == []
    assert figures.lock_lost_confirmed == figures.lock_lost
    # -- nothing lost: nothing left in any subscription, nothing scheduled, nothing unrouted
    assert left == dict.fromkeys(host.subscriptions, 0)
    assert double.scheduled(entities.deliveries_topic) == []
    assert double.scheduled(entities.topic) == []
    assert set(dropped) <= {"duplicate"}, dropped
    assert double.discarded(entities.topic) == []

    # -- poison: dead-lettered once each, at accept, on its first delivery, InvalidMessage
    assert sorted(m.message_id or "" for m in at_accept) == sorted(work.poison)
    assert {(m.dead_letter_reason, m.delivery_count) for m in at_accept} == {("InvalidMessage", 0)}
    assert all(m.dead_letter_error_description for m in at_accept)
    # -- the lanes' dead letters: the refused orders, each once, on the refusing lane only
    assert letters.pop(ACCEPT_LANE) == []
    for lane, messages in letters.items():
        assert {m.dead_letter_reason for m in messages} <= {"DestinationRejected"}, lane
        assert all(m.dead_letter_error_description for m in messages)
        refused = Counter(str(m.application_properties[ORDER_ID]) for m in messages)
        assert refused == Counter(work.refused[lane]), lane
        for m in messages:
            order_id = str(m.application_properties[ORDER_ID])
            assert m.application_properties[EVENT_KEY] == work.events[order_id][0]

    # -- exactly once: per routed (event, lane), the vendor accepted it once, or skipped, or it was
    # refused and is in that lane's dead letters; nothing at all for an event not routed there
    assert wrong == []
    unknown = {lane: set(counts) - set(work.events) for lane, counts in accepted.items()}
    assert unknown == {lane: set() for lane in lanes}
    assert sent_twice == 0

    # -- the outage: the other lanes were done while eSputnik was down; eSputnik drained after
    assert outage.start is not None
    assert outage.end is not None
    assert figures.faults["outage 503"] > 0
    down = [at for at, _, _ in figures.deliveries[DOWN]]
    assert [at for at in down if at >= outage.end], "eSputnik never delivered after recovering"
    # (unless its own retries took it there: twice unlucky is 1 + 15 minutes of backoff)
    late = [
        (lane, order_id, f"{(at - outage.start).total_seconds() / 60:+.1f} min")
        for lane in lanes
        if lane != DOWN
        for at, _, order_id in figures.deliveries[lane]
        if at >= outage.end
        and figures.retried[(lane, order_id)] + figures.retried[(ACCEPT_LANE, order_id)]
        < len(BACKOFF_MINUTES)
    ]
    assert late == [], "other lanes delivered after the outage ended"
    # -- the accept lane was used (the loyalty brown-out), and so were the retry copies
    assert figures.invocations["accept_order_retry"] > 0
    assert sum(n for (_, kind, _), n in figures.outcomes.items() if kind == "retry-scheduled")


def report(
    *,
    batched: bool,
    work: Workload,
    figures: Figures,
    outage: Outage,
    begun: datetime,
    reasons: Counter[str],
    final: Counter[tuple[str, str]],
    dropped: Counter[str],
    sent_twice: int,
    started: float,
    main_phase: float,
    elapsed: float,
) -> None:
    outcomes = Counter[str]()
    for (lane, kind, reason), n in figures.outcomes.items():
        outcomes[f"{lane} {kind}{f' ({reason})' if reason else ''}"] += n
    print(
        f"\nchaos through the lanes ({'batched' if batched else 'one by one'}), seed {SEED}:\n"
        f"  published: {len(work.events)} orders, {work.duplicates} duplicates (new MessageIds), "
        f"{len(work.late)} more after the duplicate window, {len(work.poison)} poison\n"
        f"  received per function: {dict(figures.received)}\n"
        f"  invocations: {dict(figures.invocations)}\n"
        f"  faults injected: {dict(figures.faults)}; immediate retries' waits asked for: "
        f"{len(figures.pauses)} ({sum(figures.pauses):.0f} s, not slept)\n"
        f"  lock lost (completed too late, redelivered): {figures.lock_lost}; accept publishes "
        f"whose ack was lost: {figures.ack_lost}; retry copies that failed to schedule: "
        f"{figures.schedule_failures}\n"
        f"  outcomes: {dict(sorted(outcomes.items()))}\n"
        f"  settlements: {dict(sorted(figures.settlements.items()))}\n"
        f"  dead letters: {dict(reasons)}; deliveries topic dropped: {dict(dropped)}\n"
        f"  ledger rows per lane: {dict(sorted(final.items()))}; sent twice: {sent_twice}"
    )
    if outage.start is not None and outage.end is not None and outage.real_start is not None:
        into = (outage.start - begun).total_seconds()
        print(
            f"  {DOWN} down (503) {into:.0f} s into the run, for {OUTAGE.total_seconds() / 60:.0f}"
            " min of broker time. Deliveries per lane before, during and after the outage (per "
            "wall-clock second while busy) and the last one, from the outage's start:"
        )
        quiet = figures.jumps[0][0] if figures.jumps else time.perf_counter()
        for lane, times in sorted(figures.deliveries.items()):
            before = [real for at, real, _ in times if at < outage.start]
            during = [real for at, real, _ in times if outage.start <= at < outage.end]
            busy = [real for real in during if real < quiet]  # before the clock first moved
            after = [at for at, _, _ in times if at >= outage.end]
            rate_before = len(before) / max(1e-3, outage.real_start - min(before, default=0.0))
            rate_busy = len(busy) / max(1e-3, max(busy, default=0.0) - outage.real_start)
            pace = "in flight as it went down" if lane == DOWN else f"{rate_busy:3.0f}/s"
            last = (max(at for at, _, _ in times) - outage.start).total_seconds() / 60
            print(
                f"    {lane:14} before {len(before):4} ({rate_before:3.0f}/s)  during "
                f"{len(during):4} ({pace})  after {len(after):4}  last at {last:+5.1f} min"
            )
    moves = ", ".join(f"{at - started:.0f} s: {step / 60:+.1f} min" for at, step in figures.jumps)
    print(
        f"  the clock moved on when quiet (wall clock: broker time): {moves}\n"
        f"  wall time {main_phase:.1f} s to drain, {elapsed:.1f} s with the late re-publishes"
    )
