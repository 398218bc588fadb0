"""The pipeline inline, as the command line runs both stages in one process: for each order the
accept stage, then each lane it published for, concurrently; `concurrency` orders in flight (the
host's maxConcurrentCalls). No queues: what this row measures is the stages' own work per order,
comparable with the runs before the lanes (bench/lanes.py drives them as the host does)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from bench.fakes import FakeVendors
from bench.ledgers import BenchLedger
from bench.orders import Order, OrderSet
from bench.result import RunResult
from bench.verify import core_checks, ledger_checks
from bench.wiring import (
    MESSAGE_START,
    CollectingOutbox,
    bench_settings,
    build_pipeline,
    time_deliveries,
)
from order_processor.local import received
from order_processor.model import MessageMetadata, Outcome
from order_processor.outbox import Outgoing
from order_processor.pipeline import Pipeline


async def process(pipeline: Pipeline, order: Order) -> list[Outcome]:
    """The accept stage, then every lane it published for (each one's outcome after accept's)."""
    collected: list[Outgoing] = []
    CollectingOutbox.current.set(collected)
    now = datetime.now(UTC)
    metadata = MessageMetadata(message_id=f"m-{order.index}", enqueued_time=now)
    accepted = await pipeline.accept.accept(order.body, metadata)
    published = [m for m in collected if m.scheduled_at is None]
    collected.clear()  # retry copies a lane schedules land here: reported, not run
    lanes = await asyncio.gather(
        *(pipeline.lanes[m.destination].deliver(m.body, received(m, now=now)) for m in published)
    )
    return [accepted, *lanes]


async def drive_core(
    name: str,
    fakes: FakeVendors,
    orders: OrderSet,
    *,
    concurrency: int,
    ledger: BenchLedger,
    time_destinations: bool = True,
) -> RunResult:
    settings = bench_settings(fakes.urls)
    pipeline = build_pipeline(settings, ledger=ledger, outbox=CollectingOutbox())
    result = RunResult(name, messages=len(orders), concurrency=concurrency)
    if time_destinations:
        result.deliveries = time_deliveries(lane.destination for lane in pipeline.lanes.values())
    warm_at = max(1, len(orders) // 10)
    pending = iter(orders)
    meter = result.meter

    async def worker() -> None:
        for order in pending:
            start = time.perf_counter()
            MESSAGE_START.set(start)
            outcomes = await process(pipeline, order)
            result.count(order, outcomes, time.perf_counter() - start)
            if order.index == warm_at:
                meter.mark("after_warmup")

    fakes.reset()
    try:
        with meter:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.ledger_cost = ledger.cost()
    finally:
        await pipeline.aclose()
    result.vendor = fakes.stats()
    lookup = pipeline.lookup
    result.cache_hits = getattr(lookup, "hits", None)
    result.cache_misses = getattr(lookup, "misses", None)
    result.checks += core_checks(result, orders)
    result.checks += await ledger_checks(result, orders, ledger, pipeline.lanes)
    return result
