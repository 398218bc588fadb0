"""One run's measurements and the per-message figures derived from them."""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.fakes import VendorStats
from bench.measure import Meter, percentile
from bench.orders import Order
from bench.vendors import DESTINATION_NAMES
from order_processor.model import DeliveryStatus, Outcome
from order_processor.observe import label

#: the worst wins when an order's messages are summed up in one word (observe.label's words: a
#: message completed because a retry copy was scheduled is not an order done)
_SEVERITY = {"complete": 0, "retry-scheduled": 1, "abandon": 2, "dead-letter": 3}


@dataclass(frozen=True)
class Check:
    """One thing a run claims to have done, verified after it (the report fails loudly when a
    check does not hold)."""

    name: str
    ok: bool
    detail: str = ""


def worst(outcomes: Sequence[Outcome]) -> str:
    return max((label(o) for o in outcomes), key=_SEVERITY.__getitem__)


@dataclass
class RunResult:
    name: str
    messages: int = 0
    concurrency: int = 0
    meter: Meter = field(default_factory=Meter)
    #: seconds per message (8 bytes each: the bench's own memory must not look like growth)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    outcomes: Counter[str] = field(default_factory=Counter)
    vendor: VendorStats | None = None
    #: orders that needed a lookup, and what the driver's cache saw
    lookups_needed: int = 0
    cache_misses: int | None = None
    cache_hits: int | None = None
    #: destination deliveries the plans call for, and what the core reported delivered
    planned_sends: int = 0
    delivered: int = 0
    #: per destination: seconds from message start to delivery accepted
    deliveries: dict[str, array[float]] = field(default_factory=dict)
    #: seconds the configured latencies put on the average message's critical path
    critical_path: float = 0.0
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    #: orders whose delivered destinations were not exactly the plan's (and a few examples)
    order_mismatches: int = 0
    mismatch_examples: list[str] = field(default_factory=list)
    #: the work-done checks, filled in after the run (bench.verify)
    checks: list[Check] = field(default_factory=list)
    #: deliveries the stages reported as done by an earlier copy (the ledger's "settled")
    previously: int = 0
    #: what the delivery ledger cost over the run (bench.ledgers.BenchLedger.cost)
    ledger_cost: dict[str, Any] | None = None

    def count(self, order: Order, outcomes: Sequence[Outcome], latency: float) -> None:
        """One order processed (its accept outcome and its lanes'): latency, worst settlement,
        new deliveries, and whether they are exactly the ones its plan calls for."""
        self.latencies.append(latency)
        self.outcomes[worst(outcomes)] += 1
        delivered = sorted(
            r.destination
            for outcome in outcomes
            for r in outcome.results
            if r.status is DeliveryStatus.DELIVERED and not r.previously
        )
        self.delivered += len(delivered)
        self.previously += sum(r.previously for outcome in outcomes for r in outcome.results)
        self.planned_sends += len(order.plan.sends)
        self.lookups_needed += order.plan.card is not None
        if delivered != sorted(order.plan.sends):
            self.mismatch(f"{order.order_id}: delivered {delivered}, planned {order.plan.sends}")

    def mismatch(self, example: str) -> None:
        self.order_mismatches += 1
        if len(self.mismatch_examples) < 5:
            self.mismatch_examples.append(example)

    @property
    def work_done(self) -> bool:
        """Every check held (a run without checks has not shown its work)."""
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def throughput(self) -> float:
        return self.messages / self.meter.wall if self.meter.wall else 0.0

    @property
    def cpu_per_message(self) -> float:
        return self.meter.cpu / self.messages if self.messages else 0.0

    def per_message(self, count: int) -> float:
        return count / self.messages if self.messages else 0.0

    def delivery_p99(self, names: tuple[str, ...] = DESTINATION_NAMES) -> float:
        values = [v for name in names for v in self.deliveries.get(name, ())]
        return percentile(values, 99)

    def summary(self) -> dict[str, Any]:
        if self.skipped:
            return {"name": self.name, "skipped": self.skipped}
        m = self.meter
        out: dict[str, Any] = {
            "name": self.name,
            "messages": self.messages,
            "concurrency": self.concurrency,
            "wall_s": round(m.wall, 3),
            "msgs_per_s": round(self.throughput, 1),
            "latency_ms": {
                f"p{q}": round(percentile(self.latencies, q) * 1000, 2) for q in (50, 95, 99)
            },
            "cpu_s": round(m.cpu, 3),
            "cpu_ms_per_msg": round(self.cpu_per_message * 1000, 3),
            # share of one core the driver got: ~1.0 means CPU-bound on its single event loop
            "cpu_utilisation": round(m.cpu / m.wall, 3) if m.wall else None,
            "load_average": [round(v, 2) for v in m.load],
            "rss_mib": {
                "start": round(m.rss_start, 1),
                "peak": round(m.rss_peak, 1),
                "end": round(m.rss_end, 1),
                **{name: round(value, 1) for name, value in m.marks.items()},
                "peak_is_per_run": m.peak_is_per_run,
            },
            "outcomes": dict(self.outcomes),
            "planned_sends": self.planned_sends,
            "delivered": self.delivered,
            "lookups_needed": self.lookups_needed,
            "cache_misses": self.cache_misses,
            "cache_hits": self.cache_hits,
            "critical_path_ms": round(self.critical_path * 1000, 2),
            "littles_law_bound_msgs_per_s": (
                round(self.concurrency / self.critical_path, 1) if self.critical_path else None
            ),
            "throughput_vs_littles_law": (
                round(self.throughput * self.critical_path / self.concurrency, 3)
                if self.critical_path and self.concurrency
                else None
            ),
            "notes": self.notes,
            "previously": self.previously,
            "ledger_cost": self.ledger_cost,
            "work_done": self.work_done,
            "checks": [
                {"name": c.name, "ok": c.ok, **({"detail": c.detail} if c.detail else {})}
                for c in self.checks
            ],
        }
        if self.deliveries:
            out["delivery_p99_ms"] = {
                name: round(percentile(values, 99) * 1000, 2)
                for name, values in sorted(self.deliveries.items())
            }
        if self.vendor is not None:
            v = self.vendor
            out["outbound_per_msg"] = {
                "destination": round(self.per_message(v.destination_requests), 4),
                "loyalty": round(self.per_message(v.loyalty_requests), 4),
                "token": round(self.per_message(v.token_requests), 5),
                "connections": round(self.per_message(v.connections), 5),
            }
            out["outbound"] = {
                "destination": v.destination_requests,
                "loyalty": v.loyalty_requests,
                "token": v.token_requests,
                "connections": v.connections,
                "connections_by_system": v.per_system("connections"),
                "max_in_flight_by_system": v.per_system("max_in_flight"),
                "validated": v.validated,
                "invalid": v.invalid,
                "problems": v.problems,
            }
            out["fakes_cpu_utilisation"] = (
                round(v.cpu_seconds / v.wall_seconds, 3) if v.wall_seconds else None
            )
        return out
