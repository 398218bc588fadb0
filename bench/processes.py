"""The processes mode: the pipeline in N OS processes at once, as `FUNCTIONS_WORKER_PROCESS_COUNT`
runs N Python workers on one instance (or as N instances would), sharing one Azurite ledger (one
fresh table) and one set of fake vendors.

**Competing for one orders queue**, not disjoint halves: the parent is the ERP and the
subscription's broker; it puts the orders, in chunks of `CHUNK` (a receive with prefetch), on one
queue that every worker process takes from as fast as it can, so a faster process takes more
(as Service Bus's competing consumers do). Disjoint halves would hand each process half the work
whatever its speed, measure the slower half, and never let two processes meet on one event.

**Re-sends**: every `resend_every`-th order is published a second time (another message id, as
an ERP re-sending an order after a timeout would), one chunk later, so the two copies usually
land in different processes at about the same time. Each process publishes its delivery messages
to its own in-process deliveries topic (bench/bus.py), whose duplicate detection cannot see the
other process's copies: both processes' lanes then claim the same (event, destination) rows in
the shared table, which is what Azure shows when a message's lock expires mid-delivery and
another worker receives it, or a copy arrives after the topic's duplicate-detection window. Only
the ledger keeps the vendor from getting it twice; the fakes' accepted ids check that it did.

Each process runs accept, accept-retry and one consumer per lane (bench/host.py, 32 calls in
flight each), its own pools, token and loyalty cache. Throughput = distinct orders / the wall time
from the common start (a barrier, after every process has built its pipeline) to the last process
going idle; CPU = the processes' CPU added up.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_module
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.azurite import Azurite, table_rows
from bench.bus import DeliveriesTopic, Envelope, Operations, Subscription, billed_units
from bench.fakes import FakeVendors
from bench.fakeserver import Config
from bench.host import Consumer
from bench.lanes import LanesSetup
from bench.orders import OrderSet
from bench.result import Check, RunResult
from bench.vendors import DESTINATION_NAMES
from bench.verify import (
    all_complete,
    contract_fakes_agreed,
    expected_rows,
    one_lookup_per_miss,
    stages_reported_the_plan,
    table_rows_as_planned,
    vendors_accepted_the_plan,
)

#: orders per take from the shared queue (what one receive with prefetch brings)
CHUNK = 4


@dataclass
class ProcessesResult(RunResult):
    processes: int = 1
    table: str = ""
    resent: int = 0
    #: deliveries a process found claimed or done by the other one (ledger answers: held, settled)
    contended: int = 0
    per_process: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.skipped:
            return out
        out["processes"] = {
            "count": self.processes,
            "table": self.table,
            "resent_orders": self.resent,
            "contended_deliveries": self.contended,
            "per_process": self.per_process,
        }
        return out


def plan_chunks(count: int, resend_every: int) -> list[list[tuple[int, int]]]:
    """The ERP's publishing order: (order index, copy) in chunks of CHUNK; a re-sent order's second
    copy goes in the next chunk (another taker, about the same time)."""
    chunks: list[list[tuple[int, int]]] = [
        [(i, 0) for i in range(start, min(count, start + CHUNK))]
        for start in range(0, count, CHUNK)
    ]
    if resend_every:
        for index in range(resend_every // 2, count, resend_every):
            target = min(len(chunks) - 1, index // CHUNK + 1)
            chunks[target].append((index, 1))
    return chunks


# -- the worker process -----------------------------------------------------------------------


def _child(spec: dict[str, Any], work: Any, results: Any, barrier: Any) -> None:
    """A worker process's entry point (multiprocessing, spawn)."""
    from bench.config import production_logging

    try:
        with production_logging(spec["log_level"]):
            summary = asyncio.run(_worker(spec, work, barrier))
    except BaseException as exc:  # the parent reports it as a failed check
        results.put({"index": spec["index"], "error": f"{type(exc).__name__}: {exc}"})
        raise
    results.put(summary)


@dataclass
class _Tally:
    accepted: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    lookups_needed: int = 0
    fresh: dict[str, list[str]] = field(default_factory=dict)
    previously: int = 0
    held: int = 0
    retries: int = 0
    abandoned: int = 0
    dead: int = 0
    final: Counter[str] = field(default_factory=Counter)


async def _worker(spec: dict[str, Any], work: Any, barrier: Any) -> dict[str, Any]:
    from bench.ledgers import table_ledger
    from bench.wiring import bench_settings, build_pipeline
    from order_processor.accept import ACCEPT_LANE
    from order_processor.deliver import IN_FLIGHT
    from order_processor.model import DeliveryStatus, Outcome, Settlement

    orders = list(OrderSet(spec["count"], cards=spec["cards"], tag=spec["tag"]))
    plans = {order.order_id: order.plan for order in orders}
    setup = LanesSetup(**spec["setup"])
    settings = bench_settings(spec["urls"], setup.core_overrides(False))
    ledger = table_ledger(spec["connection"], spec["table"])
    ops = Operations()
    orders_sub = Subscription("orders/order-sync", ops)
    accept_retry = Subscription("deliveries/accept-retry", ops)
    lanes = {name: Subscription(f"deliveries/{name}", ops) for name in settings.enabled}
    topic = DeliveriesTopic({**lanes, ACCEPT_LANE: accept_retry}, ops)
    pipeline = build_pipeline(settings, ledger=ledger, outbox=topic)
    tally = _Tally(fresh={name: [] for name in lanes})

    def accepted(envelope: Envelope, outcome: Outcome | None) -> None:
        if outcome is None or outcome.retry_at is not None:
            return
        if outcome.settlement is Settlement.RETRY:
            return
        if outcome.settlement is Settlement.DEAD_LETTER:
            tally.dead += 1
        order_id = outcome.order_id or ""
        tally.accepted[order_id] += 1
        tally.final["accept"] += 1

    def lane_settled(name: str) -> Any:
        def settled(envelope: Envelope, outcome: Outcome | None) -> None:
            if outcome is None:
                tally.abandoned += 1
                return
            for result in outcome.results:
                if result.previously:
                    tally.previously += 1
                elif result.status is DeliveryStatus.DELIVERED:
                    tally.fresh[name].append(outcome.order_id or "")
                if result.vendor_code == IN_FLIGHT:
                    tally.held += 1
            if outcome.retry_at is not None:
                tally.retries += 1
            elif outcome.settlement is Settlement.RETRY:
                tally.abandoned += 1
            else:
                tally.final[name] += 1
                if outcome.settlement is Settlement.DEAD_LETTER:
                    tally.dead += 1

        return settled

    p = pipeline
    consumers = [
        Consumer(
            "accept_order",
            orders_sub,
            handler=p.accept.accept,
            settled=accepted,
            max_concurrent_calls=setup.concurrency,
        ),
        Consumer(
            "accept_order_retry",
            accept_retry,
            handler=p.accept.accept,
            settled=accepted,
            max_concurrent_calls=setup.concurrency,
        ),
        *(
            Consumer(
                f"deliver_{name}",
                lanes[name],
                handler=lane.deliver,
                settled=lane_settled(name),
                max_concurrent_calls=setup.concurrency,
            )
            for name, lane in p.lanes.items()
        ),
    ]
    room = asyncio.Event()
    orders_sub.on_receive = room.set
    subscriptions = [orders_sub, accept_retry, *lanes.values()]

    await asyncio.to_thread(barrier.wait)
    started, cpu_start = time.monotonic(), time.process_time()
    for consumer in consumers:
        consumer.start()
    try:
        while True:
            while len(orders_sub.ready) >= setup.feed_depth:
                room.clear()
                await room.wait()
            chunk = await asyncio.to_thread(work.get)
            if chunk is None:
                break
            for index, copy in chunk:
                order = orders[index]
                tally.messages += 1
                tally.lookups_needed += order.plan.card is not None
                units = billed_units(len(order.body))
                ops.erp_sends += units
                orders_sub.put(
                    Envelope(
                        body=order.body,
                        message_id=f"order-{order.order_id}" + (f"-copy{copy}" if copy else ""),
                        properties={"orderId": order.order_id},
                        session_id=None,
                        enqueued_time=datetime.now(UTC),
                        units=units,
                    )
                )
        deadline = time.monotonic() + setup.timeout
        while not all(s.idle for s in subscriptions) and time.monotonic() < deadline:  # noqa: ASYNC110 - idle is several subscriptions' state; polled every 10 ms
            await asyncio.sleep(0.01)
        finished, cpu = time.monotonic(), time.process_time() - cpu_start
    finally:
        for consumer in consumers:
            await consumer.stop()
    cost = ledger.cost()
    lookup = pipeline.lookup
    await pipeline.aclose()
    unknown = [order_id for order_id in tally.accepted if order_id not in plans]
    return {
        "index": spec["index"],
        "started": started,
        "finished": finished,
        "cpu_s": cpu,
        "idle_at_end": all(s.idle for s in subscriptions),
        "messages": tally.messages,
        "accepted": dict(tally.accepted),
        "unknown_orders": unknown[:5],
        "lookups_needed": tally.lookups_needed,
        "cache_hits": getattr(lookup, "hits", 0),
        "cache_misses": getattr(lookup, "misses", 0),
        "fresh": tally.fresh,
        "previously": tally.previously,
        "held": tally.held,
        "retries": tally.retries,
        "abandoned": tally.abandoned,
        "dead": tally.dead,
        "final": dict(tally.final),
        "ops": ops.as_dict(),
        "ledger": cost,
        "claims": ledger.counts.claims,
    }


# -- the parent -------------------------------------------------------------------------------


def drive_processes(
    name: str,
    fakes: FakeVendors,
    orders: OrderSet,
    *,
    processes: int,
    azurite: Azurite,
    base: Config,
    setup: LanesSetup,
    resend_every: int = 20,
    log_level: str = "INFO",
) -> ProcessesResult:
    """Run the pipeline in `processes` worker processes on `orders`; verify what they did."""
    table = azurite.new_table()
    chunks = plan_chunks(len(orders), resend_every)
    resent = sum(copy for chunk in chunks for _, copy in chunk)
    result = ProcessesResult(
        name,
        messages=len(orders),
        concurrency=setup.concurrency,
        processes=processes,
        table=table,
        resent=resent,
    )
    fakes.configure(base)
    fakes.reset()
    context = multiprocessing.get_context("spawn")
    work = context.Queue()
    results = context.Queue()
    barrier = context.Barrier(processes + 1)
    for chunk in chunks:
        work.put(chunk)
    for _ in range(processes):
        work.put(None)
    specs = [
        {
            "index": index,
            "count": len(orders),
            "cards": orders.cards,
            "tag": orders.tag,
            "urls": fakes.urls,
            "connection": azurite.connection,
            "table": table,
            "setup": asdict(setup),
            "log_level": log_level,
        }
        for index in range(processes)
    ]
    workers = [
        context.Process(target=_child, args=(spec, work, results, barrier), daemon=True)
        for spec in specs
    ]
    for worker in workers:
        worker.start()
    summaries: list[dict[str, Any]] = []
    errors: list[str] = []
    meter = result.meter
    try:
        barrier.wait(timeout=120)
        started, azurite_cpu = time.monotonic(), azurite.cpu_seconds()
        deadline = started + setup.timeout
        while len(summaries) + len(errors) < processes and time.monotonic() < deadline:
            try:
                got = results.get(timeout=1)
            except queue_module.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    errors.append("a worker process exited without a result")
                    break
                continue
            (errors.append(got["error"]) if "error" in got else summaries.append(got))
        azurite_cpu = azurite.cpu_seconds() - azurite_cpu
    except Exception as exc:  # a broken barrier, a timeout: reported as a failed check
        errors.append(f"{type(exc).__name__}: {exc}")
        azurite_cpu = 0.0
        started = time.monotonic()
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    if summaries:
        meter.wall = max(s["finished"] for s in summaries) - started
        meter.cpu = sum(s["cpu_s"] for s in summaries)
    result.vendor = fakes.stats()
    _merge(result, orders, summaries, azurite_cpu)
    copies = {index for chunk in chunks for index, copy in chunk if copy}
    resent_routes = sum(len(o.plan.routes) for i, o in enumerate(orders) if i in copies)
    result.checks += _checks(result, orders, summaries, errors, processes, resent_routes)
    expected = expected_rows(orders, DESTINATION_NAMES)
    found = asyncio.run(table_rows(azurite.connection, table))
    result.checks.append(table_rows_as_planned(found, expected, table))
    return result


def _merge(
    result: ProcessesResult,
    orders: OrderSet,
    summaries: list[dict[str, Any]],
    azurite_cpu: float,
) -> None:
    fresh: dict[str, list[str]] = {}
    accepted: Counter[str] = Counter()
    for s in summaries:
        accepted.update(s["accepted"])
        for lane, ids in s["fresh"].items():
            for order_id in ids:
                fresh.setdefault(order_id, []).append(lane)
    for order in orders:
        delivered = sorted(fresh.get(order.order_id, []))
        result.delivered += len(delivered)
        result.planned_sends += len(order.plan.sends)
        if accepted[order.order_id]:
            result.outcomes["complete"] += 1
        else:
            result.outcomes["never accepted"] += 1
        if delivered != sorted(order.plan.sends):
            result.mismatch(f"{order.order_id}: delivered {delivered}, planned {order.plan.sends}")
    result.lookups_needed = sum(s["lookups_needed"] for s in summaries)
    result.cache_hits = sum(s["cache_hits"] for s in summaries)
    result.cache_misses = sum(s["cache_misses"] for s in summaries)
    result.previously = sum(s["previously"] for s in summaries)
    result.contended = sum(s["previously"] + s["held"] for s in summaries)
    claims = sum(s["claims"] for s in summaries)
    client_cpu = sum(s["ledger"]["client_cpu_s"] for s in summaries)
    requests = sum(s["ledger"]["http_requests"] or 0 for s in summaries)
    result.ledger_cost = {
        "ledger": "azurite",
        "table": result.table,
        "deliveries": claims,
        "client_cpu_ms_per_delivery": round(client_cpu * 1000 / claims, 4) if claims else None,
        "round_trips_per_delivery": round(requests / claims, 4) if claims else None,
        "azurite_cpu_ms_per_delivery": round(azurite_cpu * 1000 / claims, 4) if claims else None,
        "azurite_cpu_s": round(azurite_cpu, 3),
        "client_cpu_s": round(client_cpu, 4),
        "http_requests": requests,
    }
    wall = result.meter.wall
    for s in sorted(summaries, key=lambda s: s["index"]):
        result.per_process.append(
            {
                "index": s["index"],
                "orders_taken": s["messages"],
                "orders_per_s": round(s["messages"] / wall, 1) if wall else None,
                "cpu_s": round(s["cpu_s"], 3),
                "cpu_utilisation": round(s["cpu_s"] / wall, 3) if wall else None,
                "busy_s": round(s["finished"] - s["started"], 3),
                "fresh_deliveries": sum(len(ids) for ids in s["fresh"].values()),
                "previously": s["previously"],
                "held": s["held"],
                "retries": s["retries"],
                "service_bus_ops": s["ops"]["total"],
            }
        )


def _checks(
    result: ProcessesResult,
    orders: OrderSet,
    summaries: list[dict[str, Any]],
    errors: list[str],
    processes: int,
    resent_routes: int,
) -> list[Check]:
    checks = [
        Check(
            f"all {processes} worker process(es) finished and went idle",
            not errors and len(summaries) == processes and all(s["idle_at_end"] for s in summaries),
            "; ".join(errors) or f"{len(summaries)} summaries",
        ),
        all_complete(result),
        stages_reported_the_plan(result),
        vendors_accepted_the_plan(result, orders),
        one_lookup_per_miss(result),
        contract_fakes_agreed(result),
    ]
    dead = sum(s["dead"] for s in summaries)
    abandoned = sum(s["abandoned"] for s in summaries)
    checks.append(
        Check("nothing dead-lettered or abandoned", dead == abandoned == 0, f"{dead} / {abandoned}")
    )
    taken = [s["messages"] for s in sorted(summaries, key=lambda s: s["index"])]
    checks.append(
        Check(
            "the processes competed for the one queue: each took orders from it",
            len(taken) == processes and all(taken),
            "orders taken per process: " + ", ".join(map(str, taken)),
        )
    )
    twice = 0
    if result.vendor is not None:
        twice = sum(int(result.vendor.accepted(s)["duplicates"]) for s in DESTINATION_NAMES)
    checks.append(
        Check(
            "every delivery found done earlier was a re-sent order's other copy",
            result.previously <= resent_routes,
            f"table {result.table} (new); {result.previously} found done earlier, at most "
            f"{resent_routes} (the re-sent orders' routed deliveries)",
        )
    )
    checks.append(
        Check(
            "no (order event, vendor) was sent twice",
            twice == 0,
            f"{twice} sent twice; {result.resent} orders published twice, "
            f"{result.contended} deliveries found claimed or done by another copy",
        )
    )
    return checks


__all__ = ["CHUNK", "ProcessesResult", "drive_processes", "plan_chunks"]
