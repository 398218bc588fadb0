"""The lanes mode: the stages driven the way the Functions host drives them.

`accept_order` and each `deliver_<name>` are independent consumers (bench/host.py), each with its
own concurrency (`maxConcurrentCalls`, 32 as in host.json; a batch lane one batch of up to
`maxMessageBatchSize` at a time), fed by in-process subscriptions (bench/bus.py): the ERP keeps
the orders subscription topped up, the accept stage publishes one delivery message per routed
destination to the deliveries topic, each lane receives from its own subscription, and retry
copies come back when they are due. Everything runs in one process and one event loop (the worst
case: on a Premium or Dedicated plan the functions share a worker; on Flex Consumption each
function scales on its own instances).

Time: the bench's clock is the loop's and real time; only the retry schedule is compressed, through
the settings: RETRY_BACKOFF_MINUTES and RETRY_WINDOW_MINUTES divided by `compression` (300: the
1, 5, 15, 30, 60 min steps become 0.2, 1, 3, 6, 12 s and the 180 min window 36 s). Retries inside
one delivery (RetryPolicy), ledger leases and latencies stay in real time.

Scenarios (same orders, same concurrency, same bench run): `reference` (every vendor at the
configured latency), `slow` (one vendor at 2 s until every other lane has finished, then back to
normal so its lane finishes too), `down` (one vendor answers 503 to every call until every other
lane has finished; then it recovers and its lane drains what it owes).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bench.bus import DeliveriesTopic, Envelope, Operations, OrdersFeed, Subscription
from bench.fakes import FakeVendors
from bench.fakeserver import Config
from bench.host import Consumer
from bench.ledgers import BenchLedger
from bench.measure import percentile
from bench.orders import Order, OrderSet
from bench.result import Check, RunResult
from bench.verify import core_checks, ledger_checks
from bench.wiring import LatencyObserver, bench_settings, build_pipeline
from order_processor.accept import ACCEPT_LANE
from order_processor.model import DeliveryStatus, Outcome, Settlement
from order_processor.pipeline import Pipeline
from order_processor.settings import CoreSettings

DEFAULT_BACKOFF_MINUTES = CoreSettings().retry_backoff_minutes
DEFAULT_WINDOW_MINUTES = CoreSettings().retry_window_minutes


@dataclass(frozen=True)
class Scenario:
    label: str
    #: system -> answer time in seconds, while impaired
    slow: Mapping[str, float] = field(default_factory=dict)
    #: systems answering 503 to every call, while impaired
    down: tuple[str, ...] = ()
    #: ORDERS_BATCH_ENABLED: lanes whose vendor has a bulk form take batches
    batch: bool = False

    @property
    def impaired(self) -> tuple[str, ...]:
        return (*self.slow, *self.down)


@dataclass(frozen=True)
class LanesSetup:
    concurrency: int = 32
    batch_size: int = 100
    #: orders the ERP keeps ready in the orders subscription
    feed_depth: int = 32
    compression: float = 300.0
    #: give up waiting for a phase after this many seconds (the checks then fail)
    timeout: float = 600.0

    def core_overrides(self, batch: bool) -> dict[str, Any]:
        return {
            "retry_backoff_minutes": tuple(m / self.compression for m in DEFAULT_BACKOFF_MINUTES),
            "retry_window_minutes": DEFAULT_WINDOW_MINUTES / self.compression,
            "orders_batch_enabled": batch,
        }


@dataclass
class LaneStats:
    """One lane over one run."""

    name: str
    #: delivery messages the plans route here, and deliveries they call for
    routed: int
    planned: int
    concurrency: str = ""
    final: int = 0
    delivered: int = 0
    skipped: int = 0
    retries_scheduled: int = 0
    abandoned: int = 0
    dead_lettered: int = 0
    #: perf_counter of each vendor-accepted delivery; ms from receive to settled for those
    delivered_at: array[float] = field(default_factory=lambda: array("d"))
    handling_ms: array[float] = field(default_factory=lambda: array("d"))
    #: deliveries by the end of the measured period (the accept stage and unimpaired lanes done)
    delivered_measured: int = 0
    #: seconds the lane had work (a message ready or in flight)
    busy_s: float = 0.0
    first_available: float | None = None
    finished_at: float | None = None
    #: impaired lanes: what they still owed when their vendor recovered, and when that was
    backlog_at_recovery: int | None = None
    recovered_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def throughput(self) -> float:
        """Delivered events per second while work was available."""
        return self.delivered / self.busy_s if self.busy_s else 0.0

    def drain(self) -> dict[str, Any] | None:
        """After recovery: how long the backlog took and at what rate it went."""
        if self.recovered_at is None:
            return None
        after = [t for t in self.delivered_at if t >= self.recovered_at]
        seconds = (max(after) - self.recovered_at) if after else 0.0
        before = len(self.delivered_at) - len(after)
        impaired_for = self.recovered_at - (self.first_available or self.recovered_at)
        return {
            "backlog_at_recovery": self.backlog_at_recovery,
            "delivered_before_recovery": before,
            "impaired_s": round(impaired_for, 3),
            "rate_while_impaired_per_s": round(before / impaired_for, 2) if impaired_for else None,
            "delivered_after_recovery": len(after),
            "drain_s": round(seconds, 3),
            "drain_rate_per_s": round(len(after) / seconds, 1) if seconds else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "routed": self.routed,
            "planned": self.planned,
            "concurrency": self.concurrency,
            "final": self.final,
            "delivered": self.delivered,
            "skipped": self.skipped,
            "retries_scheduled": self.retries_scheduled,
            "abandoned": self.abandoned,
            "dead_lettered": self.dead_lettered,
            "busy_s": round(self.busy_s, 3),
            "throughput_per_s": round(self.throughput, 1),
            "handling_ms": {
                "p50": round(percentile(self.handling_ms, 50), 2),
                "p99": round(percentile(self.handling_ms, 99), 2),
            },
            "drain": self.drain(),
        }


@dataclass
class LanesResult(RunResult):
    """A run of the lanes mode: the usual per-order figures, plus each lane's."""

    scenario: Scenario = field(default_factory=lambda: Scenario("reference"))
    lanes: dict[str, LaneStats] = field(default_factory=dict)
    ops: Operations = field(default_factory=Operations)
    ledger_counts: dict[str, Any] = field(default_factory=dict)
    end_to_end_ms: dict[str, array[float]] = field(default_factory=dict)
    #: seconds from the start until the accept stage and every unimpaired lane had finished, and
    #: the worker's CPU seconds over that time
    measured_s: float = 0.0
    measured_cpu_s: float = 0.0
    compression: float = 1.0
    accept_concurrency: int = 0
    #: orders per second the ERP published at (None: saturating, see bench.bus.OrdersFeed)
    rate: float | None = None
    #: which part of the report the run belongs to: "lanes" (the isolation rounds and the paced
    #: runs), "batch" (the batch row), "ledger" (the memory/Azurite pairs)
    group: str = "lanes"

    def lane_throughput(self, name: str) -> float:
        return self.lanes[name].throughput

    def lane_per_cpu(self, name: str) -> float:
        """The lane's deliveries in the measured period per CPU second the worker spent in it."""
        lane = self.lanes[name]
        return lane.delivered_measured / self.measured_cpu_s if self.measured_cpu_s else 0.0

    def per_order(self, count: int) -> float:
        return count / self.messages if self.messages else 0.0

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.skipped:
            return out
        ops = self.ops
        ledger = self.ledger_counts
        out["lanes"] = {
            "group": self.group,
            "scenario": {
                "label": self.scenario.label,
                "slow": dict(self.scenario.slow),
                "down": list(self.scenario.down),
                "batch": self.scenario.batch,
            },
            "accept_concurrency": self.accept_concurrency,
            "feed": "saturating" if self.rate is None else f"paced at {self.rate:.1f} orders/s",
            "retry_schedule_compression": self.compression,
            "measured_s": round(self.measured_s, 3),
            "measured_cpu_s": round(self.measured_cpu_s, 3),
            "per_lane": {name: lane.summary() for name, lane in self.lanes.items()},
            "end_to_end_ms": {
                name: {
                    "p50": round(percentile(values, 50), 1),
                    "p99": round(percentile(values, 99), 1),
                    "count": len(values),
                }
                for name, values in sorted(self.end_to_end_ms.items())
            },
            "service_bus": {
                "operations": ops.as_dict(),
                "per_order": {
                    "receives": round(self.per_order(ops.receives), 3),
                    "sends": round(self.per_order(ops.sends), 3),
                    "settlements": round(self.per_order(ops.settlements), 3),
                    "app": round(self.per_order(ops.app), 3),
                    "erp_sends": round(self.per_order(ops.erp_sends), 3),
                    "total": round(self.per_order(ops.total), 3),
                    "send_calls": round(self.per_order(ops.send_calls), 3),
                },
            },
            "ledger": {
                **ledger,
                "per_order": {
                    "claims": round(self.per_order(ledger.get("claims", 0)), 3),
                    "records": round(self.per_order(ledger.get("records", 0)), 3),
                    "table_requests": round(self.per_order(ledger.get("table_requests", 0)), 3),
                },
            },
            "loyalty": self.loyalty(),
        }
        return out

    def loyalty(self) -> dict[str, Any]:
        hits, misses = self.cache_hits or 0, self.cache_misses or 0
        requests = self.vendor.loyalty_requests if self.vendor else 0
        return {
            "orders_with_card": self.lookups_needed,
            "lookups_per_card_order": round((hits + misses) / self.lookups_needed, 4)
            if self.lookups_needed
            else None,
            "requests_per_miss": round(requests / misses, 4) if misses else None,
            "requests_per_hit": round(max(0, requests - misses) / hits, 4) if hits else None,
            "cache_hits": hits,
            "cache_misses": misses,
            "requests": requests,
        }


@dataclass
class _Order:
    order: Order
    outcomes: list[Outcome] = field(default_factory=list)
    remaining: int | None = None
    event_key: str | None = None


class LanesRun:
    """One run of the lanes mode (build, drive, verify)."""

    def __init__(
        self,
        name: str,
        fakes: FakeVendors,
        orders: OrderSet,
        *,
        base: Config,
        scenario: Scenario,
        setup: LanesSetup,
        ledger: BenchLedger,
        rate: float | None = None,
    ) -> None:
        self.fakes = fakes
        self.orders = orders
        self.base = base
        self.scenario = scenario
        self.setup = setup
        self.ledger = ledger
        self.result = LanesResult(
            name,
            messages=len(orders),
            concurrency=setup.concurrency,
            scenario=scenario,
            compression=setup.compression,
            accept_concurrency=setup.concurrency,
            rate=rate,
        )
        settings = bench_settings(fakes.urls, setup.core_overrides(scenario.batch))
        self.ops = Operations()
        self.orders_subscription = Subscription("orders/order-sync", self.ops)
        self.accept_retry = Subscription("deliveries/accept-retry", self.ops)
        self.subscriptions = {
            name: Subscription(f"deliveries/{name}", self.ops) for name in settings.enabled
        }
        self.topic = DeliveriesTopic(
            {**self.subscriptions, ACCEPT_LANE: self.accept_retry}, self.ops
        )
        self.latency = LatencyObserver()
        self.pipeline: Pipeline = build_pipeline(
            settings, ledger=ledger, outbox=self.topic, observers=[self.latency]
        )
        self.tracked: dict[str, _Order] = {}
        routed: Counter[str] = Counter()
        planned: Counter[str] = Counter()
        for order in orders:
            self.tracked[order.order_id] = _Order(order)
            routed.update(order.plan.routes)
            planned.update(order.plan.sends)
        self.result.lanes = {
            name: LaneStats(name, routed=routed[name], planned=planned[name])
            for name in self.subscriptions
        }
        self.accept_final = 0
        self.accept_done = asyncio.Event()
        self.feed = OrdersFeed(self.orders_subscription, iter(orders), setup.feed_depth, rate)
        self.consumers = self._consumers()

    def _consumers(self) -> list[Consumer]:
        s, p = self.setup, self.pipeline
        consumers = [
            Consumer(
                "accept_order",
                self.orders_subscription,
                handler=p.accept.accept,
                settled=self._accepted,
                max_concurrent_calls=s.concurrency,
            ),
            Consumer(
                "accept_order_retry",
                self.accept_retry,
                handler=p.accept.accept,
                settled=self._accepted,
                max_concurrent_calls=s.concurrency,
            ),
        ]
        for name, lane in p.lanes.items():
            settled = self._lane_settled(self.result.lanes[name])
            if self.scenario.batch and lane.takes_batches:
                consumer = Consumer(
                    f"deliver_{name}",
                    self.subscriptions[name],
                    batch_handler=lane.deliver_batch,
                    settled=settled,
                    max_batch=s.batch_size,
                )
            else:
                consumer = Consumer(
                    f"deliver_{name}",
                    self.subscriptions[name],
                    handler=lane.deliver,
                    settled=settled,
                    max_concurrent_calls=s.concurrency,
                )
            self.result.lanes[name].concurrency = consumer.concurrency
            consumers.append(consumer)
        return consumers

    # -- settlement callbacks -----------------------------------------------------------------

    def _accepted(self, envelope: Envelope, outcome: Outcome | None) -> None:
        if outcome is None or outcome.retry_at is not None:
            return  # abandoned, or a retry copy scheduled: not final
        if outcome.settlement is Settlement.RETRY:
            return  # abandoned for redelivery
        tracked = self.tracked.get(outcome.order_id or "")
        if tracked is None:
            self.result.mismatch(f"accept: an outcome for no known order ({outcome.description})")
        else:
            tracked.outcomes.append(outcome)
            tracked.event_key = outcome.event_key
            tracked.remaining = len(outcome.routed)
            if outcome.settlement is Settlement.DEAD_LETTER or not outcome.routed:
                self._finish(tracked)
        self.accept_final += 1
        if self.accept_final >= len(self.tracked):
            self.accept_done.set()

    def _lane_settled(self, lane: LaneStats) -> Any:
        def settled(envelope: Envelope, outcome: Outcome | None) -> None:
            now = time.perf_counter()
            if outcome is None:
                lane.abandoned += 1
                return
            for result in outcome.results:
                if result.status is DeliveryStatus.DELIVERED and not result.previously:
                    lane.delivered += 1
                    lane.delivered_at.append(now)
                    lane.handling_ms.append((now - envelope.received_at) * 1000)
                elif result.status is DeliveryStatus.SKIPPED:
                    lane.skipped += 1
            if outcome.retry_at is not None:
                lane.retries_scheduled += 1
                return
            if outcome.settlement is Settlement.RETRY:
                lane.abandoned += 1
                return
            lane.final += 1
            if outcome.settlement is Settlement.DEAD_LETTER:
                lane.dead_lettered += 1
            tracked = self.tracked.get(outcome.order_id or "")
            if tracked is None:
                self.result.mismatch(f"{lane.name}: an outcome for no known order")
            else:
                tracked.outcomes.append(outcome)
                if tracked.remaining is not None:
                    tracked.remaining -= 1
                    if tracked.remaining == 0:
                        self._finish(tracked)
            if lane.final >= lane.routed and not lane.done.is_set():
                lane.finished_at = now
                lane.done.set()

        return settled

    def _finish(self, tracked: _Order) -> None:
        published = self.feed.published.get(tracked.order.order_id, time.perf_counter())
        self.result.count(tracked.order, tracked.outcomes, time.perf_counter() - published)

    # -- the run --------------------------------------------------------------------------------

    def _fake_config(self, impaired: bool) -> Config:
        if not impaired:
            return self.base
        overrides = {**self.base.overrides, **self.scenario.slow}
        return replace(self.base, overrides=overrides, down=list(self.scenario.down))

    async def _wait(self, events: list[asyncio.Event], what: str) -> bool:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(e.wait() for e in events)), timeout=self.setup.timeout
            )
        except TimeoutError:
            self.result.checks.append(
                Check(f"{what} within {self.setup.timeout:g} s", False, "timed out")
            )
            return False
        return True

    async def run(self) -> LanesResult:
        result, lanes = self.result, self.result.lanes
        impaired = [name for name in self.scenario.impaired if name in lanes]
        others = [name for name in lanes if name not in impaired]
        self.fakes.configure(self._fake_config(bool(impaired)))
        self.fakes.reset()
        down_accepted_before: dict[str, int] = {}
        feeding: asyncio.Task[None] | None = None
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            with result.meter:
                feeding = self.feed.start()
                for consumer in self.consumers:
                    consumer.start()
                await self._wait(
                    [self.accept_done, *(lanes[n].done for n in others)],
                    "the accept stage and the unimpaired lanes finished",
                )
                result.measured_s = time.perf_counter() - start
                result.measured_cpu_s = time.process_time() - cpu_start
                for lane in lanes.values():
                    lane.delivered_measured = lane.delivered
                if impaired:
                    if self.scenario.down:
                        stats = await asyncio.to_thread(self.fakes.stats)
                        for name in self.scenario.down:
                            down_accepted_before[name] = stats.accepted(name)["ids"]
                    for name in impaired:
                        lanes[name].backlog_at_recovery = lanes[name].routed - lanes[name].final
                    await asyncio.to_thread(self.fakes.configure, self._fake_config(False))
                    recovered = time.perf_counter()
                    for name in impaired:
                        lanes[name].recovered_at = recovered
                    await self._wait(
                        [lanes[n].done for n in impaired], "the impaired lanes drained"
                    )
                for name, lane in lanes.items():
                    lane.busy_s = self.subscriptions[name].busy_seconds()
                    lane.first_available = self.subscriptions[name].first_available
        finally:
            if feeding is not None:
                feeding.cancel()
            for consumer in self.consumers:
                await consumer.stop()
            result.vendor = self.fakes.stats()
            lookup = self.pipeline.lookup
            result.cache_hits = getattr(lookup, "hits", None)
            result.cache_misses = getattr(lookup, "misses", None)
            result.ops = self.ops
            result.end_to_end_ms = dict(self.latency.end_to_end_ms)
            result.ledger_cost = self.ledger.cost()
            result.ledger_counts = self.ledger.counts.as_dict()
            await self._verify(down_accepted_before)
            await self.pipeline.aclose()
        return result

    # -- did it do the work? --------------------------------------------------------------------

    async def _verify(self, down_accepted_before: dict[str, int]) -> None:
        result = self.result
        result.checks += core_checks(result, self.orders)
        dead = {
            s.name: len(s.dead)
            for s in (self.orders_subscription, self.accept_retry, *self.subscriptions.values())
            if s.dead
        }
        result.checks.append(
            Check(
                "nothing dead-lettered", not dead, ", ".join(f"{k}: {v}" for k, v in dead.items())
            )
        )
        unsettled = {
            name: f"{lane.final}/{lane.routed}"
            for name, lane in result.lanes.items()
            if lane.final != lane.routed or not self.subscriptions[name].idle
        }
        result.checks.append(
            Check(
                "every lane settled each delivery message routed to it, and is empty",
                not unsettled,
                ", ".join(f"{k}: {v}" for k, v in unsettled.items()),
            )
        )
        for name, accepted in down_accepted_before.items():
            result.checks.append(
                Check(
                    f"{name} was down: it accepted nothing before recovering",
                    accepted == 0,
                    f"{accepted} accepted",
                )
            )
        result.checks.append(await self._ledger_agrees())
        result.checks += await ledger_checks(result, self.orders, self.ledger, self.subscriptions)

    async def _ledger_agrees(self) -> Check:
        """Each routed (event, lane) row says delivered where the plan sends, skipped elsewhere."""
        wrong: list[str] = []
        rows = 0
        for tracked in self.tracked.values():
            if tracked.event_key is None:
                wrong.append(f"{tracked.order.order_id}: never accepted")
                continue
            for name in tracked.order.plan.routes:
                if name not in self.subscriptions:
                    continue
                entry = await self.ledger.read(tracked.event_key, name)
                rows += 1
                expected = "delivered" if name in tracked.order.plan.sends else "skipped"
                found = entry.status.value if entry is not None else "no row"
                if found != expected:
                    wrong.append(f"{tracked.order.order_id}/{name}: {found}, not {expected}")
        return Check(
            "the ledger holds each routed delivery as delivered or skipped, as planned",
            not wrong,
            f"{rows} rows" + (f"; {len(wrong)} wrong, e.g. {wrong[:3]}" if wrong else ""),
        )


async def drive_lanes(
    name: str,
    fakes: FakeVendors,
    orders: OrderSet,
    *,
    base: Config,
    scenario: Scenario,
    setup: LanesSetup,
    ledger: BenchLedger,
    rate: float | None = None,
    group: str = "lanes",
) -> LanesResult:
    run = LanesRun(
        name, fakes, orders, base=base, scenario=scenario, setup=setup, ledger=ledger, rate=rate
    )
    run.result.group = group
    return await run.run()


def isolation(
    references: Sequence[LanesResult], impaired: LanesResult, *, per_cpu: bool = False
) -> tuple[float | None, str | None]:
    """The lowest unimpaired lane's throughput over its reference throughput (the mean of the
    references around the impaired run), and which lane. `per_cpu`: deliveries per CPU second of
    the worker instead of per second (what the impaired lane took from the shared worker, without
    the machine's noise)."""
    ratios: dict[str, float] = {}
    for name in impaired.lanes:
        if name in impaired.scenario.impaired:
            continue
        figures = [r.lane_per_cpu(name) if per_cpu else r.lane_throughput(name) for r in references]
        base = sum(figures) / len(figures) if figures else 0.0
        if base:
            value = impaired.lane_per_cpu(name) if per_cpu else impaired.lane_throughput(name)
            ratios[name] = value / base
    if not ratios:
        return None, None
    lowest = min(ratios, key=ratios.__getitem__)
    return ratios[lowest], lowest


__all__ = ["LanesResult", "LanesSetup", "Scenario", "drive_lanes", "isolation"]
