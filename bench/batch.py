"""The batch trigger (ORDERS_BATCH_ENABLED), driven the way the Functions host drives it: the
listener receives up to `batch_size` messages (host.json maxMessageBatchSize) and hands them to
one invocation, `await processor.process_batch(...)`; the Service Bus extension runs one batch at a
time per instance (`batches` > 1 models more instances sharing one worker process's CPU)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.fakes import FakeVendors
from bench.orders import OrderSet
from bench.result import RunResult
from bench.wiring import bench_settings, build_processor
from order_processor.model import MessageMetadata


async def drive_batch(
    name: str, fakes: FakeVendors, orders: OrderSet, *, batch_size: int, batches: int, ledger: Any
) -> RunResult:
    processor = build_processor(bench_settings(fakes.urls), ledger)
    result = RunResult(name, messages=len(orders), concurrency=batch_size * batches)
    result.notes.append(f"{batches} batch(es) of {batch_size} in flight")
    pending = iter(orders)

    async def listener() -> None:
        while batch := [order for _, order in zip(range(batch_size), pending, strict=False)]:
            start = time.perf_counter()
            outcomes = await processor.process_batch(
                [(o.body, MessageMetadata(message_id=f"m-{o.index}")) for o in batch]
            )
            latency = time.perf_counter() - start
            for order, outcome in zip(batch, outcomes, strict=True):
                result.count(order, outcome, latency)

    fakes.reset()
    try:
        with result.meter:
            await asyncio.gather(*(listener() for _ in range(batches)))
    finally:
        await processor.aclose()
    result.vendor = fakes.stats()
    result.cache_hits = getattr(processor.lookup, "hits", None)
    result.cache_misses = getattr(processor.lookup, "misses", None)
    return result
