"""The project's real core, driven like the Functions host drives it: `concurrency` messages in
flight (maxConcurrentCalls), each `await processor.process(body, metadata)`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.fakes import FakeVendors
from bench.orders import OrderSet
from bench.result import RunResult
from bench.wiring import MESSAGE_START, bench_settings, build_processor, time_deliveries
from order_processor.model import MessageMetadata


async def drive_core(
    name: str,
    fakes: FakeVendors,
    orders: OrderSet,
    *,
    concurrency: int,
    ledger: Any,
    time_destinations: bool = True,
) -> RunResult:
    settings = bench_settings(fakes.urls)
    processor = build_processor(settings, ledger)
    result = RunResult(name, messages=len(orders), concurrency=concurrency)
    if time_destinations:
        result.deliveries = time_deliveries(processor.destinations)
    warm_at = max(1, len(orders) // 10)
    pending = iter(orders)
    meter = result.meter

    async def worker() -> None:
        for order in pending:
            start = time.perf_counter()
            MESSAGE_START.set(start)
            metadata = MessageMetadata(message_id=f"m-{order.index}")
            outcome = await processor.process(order.body, metadata)
            result.count(order, outcome, time.perf_counter() - start)
            if order.index == warm_at:
                meter.mark("after_warmup")

    fakes.reset()
    try:
        with meter:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await processor.aclose()
    result.vendor = fakes.stats()
    lookup = processor.lookup
    result.cache_hits = getattr(lookup, "hits", None)
    result.cache_misses = getattr(lookup, "misses", None)
    return result
