"""Many events to one destination in as few requests as its bulk form allows (the batch trigger).

Each request carries up to `destination.bulk_limit()` elements and is retried as a whole on
transient failures. The vendors validate a bulk request as a whole (one bad element and the whole
request is refused), so a refusal about the content is split in halves until the bad elements
stand alone: the good ones are delivered, and only the bad ones fail, with the vendor's reason.
Splitting costs at most 2n - 1 requests for n elements; refusals that are not about the content
(auth, unknown resource) apply to every element alike and are not split.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from order_processor.destinations import Destination
from order_processor.destinations.base import Sent
from order_processor.model import DeliveryStatus, DestinationResult
from order_processor.outbound.errors import DeliveryError
from order_processor.outbound.retry import RetryPolicy, call_with_retries

#: refusals about what the request carries: one element can cause them, so they are split
CONTENT_REFUSALS = frozenset({400, 409, 413, 422})


async def send_in_bulk(
    destination: Destination,
    elements: Sequence[bytes],
    *,
    policy: RetryPolicy,
    deadline: float,
) -> list[DestinationResult]:
    """One result per element, in order (elements come from `destination.encode`)."""
    size = destination.bulk_limit()
    chunks = [elements[i : i + size] for i in range(0, len(elements), size)]
    sent = await asyncio.gather(
        *(_send(destination, chunk, policy=policy, deadline=deadline) for chunk in chunks)
    )
    return [result for results in sent for result in results]


async def _send(
    destination: Destination,
    chunk: Sequence[bytes],
    *,
    policy: RetryPolicy,
    deadline: float,
) -> list[DestinationResult]:
    attempts = 0

    async def attempt() -> Sent:
        nonlocal attempts
        attempts += 1
        return await destination.send(destination.prepare_bulk(chunk))

    try:
        sent = await call_with_retries(attempt, policy=policy, deadline=deadline)
    except DeliveryError as exc:
        if len(chunk) > 1 and not exc.transient and exc.status in CONTENT_REFUSALS:
            half = len(chunk) // 2
            left, right = await asyncio.gather(
                _send(destination, chunk[:half], policy=policy, deadline=deadline),
                _send(destination, chunk[half:], policy=policy, deadline=deadline),
            )
            return left + right
        return [DestinationResult.failed(destination.name, exc, attempts=attempts)] * len(chunk)
    ids = (
        sent.response_ids
        if len(sent.response_ids) == len(chunk)
        else (sent.response_id,) * len(chunk)
    )
    return [
        DestinationResult(
            destination=destination.name,
            status=DeliveryStatus.DELIVERED,
            detail=sent.note or f"in a bulk request of {len(chunk)}",
            response_id=response_id,
            attempts=attempts,
        )
        for response_id in ids
    ]
