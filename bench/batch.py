"""The batch trigger, simulated: `cardinality=many` hands the function a list of messages; each is
parsed and enriched (the same cached lookup), then every destination that has a bulk form gets
one request for the whole batch (Profile Store TrackBulk, RichRelevance POST of an array,
eSputnik v1/orders with an `orders` array); Product Recommendations, which takes one order per
request, gets one each, concurrently. The ledger is claimed and recorded per (event,
destination) as in the core, and each message is settled on its own.

Skip decisions come from the orders' plans (the same rules as `prepare`); a production batch path
would need each destination's skip checks split from its body building, so that the bulk body
is the only serialisation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.fakes import FakeVendors
from bench.orders import Order, OrderSet
from bench.result import RunResult
from bench.wiring import bench_settings, build_processor
from order_processor import jsonbody
from order_processor.contract import InvalidMessage, parse_order
from order_processor.destinations import Destination
from order_processor.destinations.esputnik import MAX_BULK_ORDERS, Esputnik
from order_processor.destinations.profile_store import MAX_BULK_EVENTS, ProfileStore
from order_processor.destinations.richrelevance import RichRelevance, order_body
from order_processor.errors import DeliveryError
from order_processor.model import (
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    TrackingEvent,
    event_key,
)
from order_processor.processor import Processor
from order_processor.routing import route

Pair = tuple[TrackingEvent, str]


def _chunks(items: Sequence[Pair], size: int) -> list[Sequence[Pair]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _richrelevance_bulk(destination: RichRelevance, pairs: Sequence[Pair]) -> httpx.Request:
    body = [order_body(event, destination.settings) for event, _ in pairs]
    return destination.client.build_request(
        "POST",
        destination.orders_url(),
        params={"mode": destination.settings.mode.value},
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        content=jsonbody.dumps(body),
    )


def bulk_requests(destination: Destination, pairs: Sequence[Pair]) -> list[httpx.Request]:
    """The fewest requests that carry `pairs` to `destination`."""
    if isinstance(destination, ProfileStore):
        return [destination.prepare_bulk(c) for c in _chunks(pairs, MAX_BULK_EVENTS)]
    if isinstance(destination, Esputnik):
        return [destination.prepare_bulk(c) for c in _chunks(pairs, MAX_BULK_ORDERS)]
    if isinstance(destination, RichRelevance):
        return [_richrelevance_bulk(destination, c) for c in _chunks(pairs, 100)]
    requests = []
    for event, target in pairs:
        prepared = destination.prepare(event, target)
        if isinstance(prepared, httpx.Request):
            requests.append(prepared)
    return requests


class BatchPath:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.ledger: Any = getattr(processor, "ledger", None)
        self.lease = getattr(processor.settings.core, "ledger_lease", None)

    async def _event(self, order: Order, deadline: float) -> TrackingEvent | None:
        try:
            parsed = parse_order(order.body)
        except InvalidMessage:
            return None
        return await self.processor.enrich(
            parsed, event_key(parsed), MessageMetadata(message_id=f"m-{order.index}"), deadline
        )

    async def _claim(self, event: TrackingEvent, name: str) -> Any:
        if self.ledger is None:
            return None
        return await self.ledger.claim(
            event.key, name, message_id=event.message_id, now=datetime.now(UTC), lease=self.lease
        )

    async def _record(self, claim: Any, name: str) -> None:
        if self.ledger is None or claim is None:
            return
        result = DestinationResult(destination=name, status=DeliveryStatus.DELIVERED, attempts=1)
        await self.ledger.record(claim, result, now=datetime.now(UTC))

    async def _deliver(self, destination: Destination, pairs: list[Pair]) -> int:
        """Deliver `pairs` in bulk; how many events were accepted."""
        if not pairs:
            return 0
        claims = await asyncio.gather(*(self._claim(e, destination.name) for e, _ in pairs))
        try:
            await asyncio.gather(*(destination.send(r) for r in bulk_requests(destination, pairs)))
        except DeliveryError:
            return 0
        await asyncio.gather(*(self._record(c, destination.name) for c in claims))
        return len(pairs)

    async def handle(self, batch: list[Order]) -> list[tuple[str, int]]:
        """(outcome, deliveries) per message of the batch."""
        deadline = time.monotonic() + self.processor.settings.core.retry_budget_seconds
        events = await asyncio.gather(*(self._event(order, deadline) for order in batch))
        per_destination: dict[str, list[Pair]] = {}
        for order, event in zip(batch, events, strict=True):
            if event is None:
                continue
            for name in order.plan.sends:
                target = route(name, event.event_type)
                assert target is not None
                per_destination.setdefault(name, []).append((event, target))
        accepted = await asyncio.gather(
            *(
                self._deliver(d, per_destination.get(d.name, []))
                for d in self.processor.destinations
            )
        )
        failed = {
            d.name for d, n in zip(self.processor.destinations, accepted, strict=True) if not n
        }
        outcomes = []
        for order, event in zip(batch, events, strict=True):
            if event is None:
                outcomes.append(("dead-letter", 0))
                continue
            ok = not failed.intersection(order.plan.sends)
            outcomes.append(("complete" if ok else "retry", len(order.plan.sends) if ok else 0))
        return outcomes


async def drive_batch(
    name: str, fakes: FakeVendors, orders: OrderSet, *, batch_size: int, batches: int, ledger: Any
) -> RunResult:
    processor = build_processor(bench_settings(fakes.urls), ledger)
    path = BatchPath(processor)
    result = RunResult(name, messages=len(orders), concurrency=batch_size * batches)
    result.notes.append(f"{batches} batches of {batch_size} in flight")
    pending = iter(orders)

    async def worker() -> None:
        while batch := [order for _, order in zip(range(batch_size), pending, strict=False)]:
            start = time.perf_counter()
            outcomes = await path.handle(batch)
            latency = time.perf_counter() - start
            for order, (outcome, delivered) in zip(batch, outcomes, strict=True):
                result.latencies.append(latency)
                result.outcomes[outcome] += 1
                result.delivered += delivered
                result.planned_sends += len(order.plan.sends)
                result.lookups_needed += order.plan.card is not None

    fakes.reset()
    try:
        with result.meter:
            await asyncio.gather(*(worker() for _ in range(batches)))
    finally:
        await processor.aclose()
    result.vendor = fakes.stats()
    result.cache_hits = getattr(processor.lookup, "hits", None)
    result.cache_misses = getattr(processor.lookup, "misses", None)
    return result
