"""Immediate retries inside one delivery: exponential backoff with full jitter, honouring
Retry-After, and never waiting past the message's deadline (a budget well inside the lock)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from order_processor.outbound.errors import DeliveryError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard one call is retried. `sleep`, `clock` and `rng` are testing hooks."""

    max_attempts: int = 5
    initial_wait: float = 0.2
    max_wait: float = 5.0
    retry_after_cap: float = 10.0
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter (uniform 0..min(cap, base*2^n)); a server's Retry-After wins, up to a cap."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        ceiling = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        return self.rng.uniform(0, ceiling)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.transient


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: float,
) -> T:
    """Run `call`, retrying transient DeliveryErrors while attempts and the deadline allow.

    The last error is re-raised as it is, so callers see the real status and vendor message.
    """
    try:
        # Nearly every call succeeds first time: building tenacity's machinery for it cost 13% of
        # the core's CPU (docs/performance.md), so it is only entered after a transient failure.
        return await call()
    except DeliveryError as exc:
        if not exc.transient or policy.max_attempts <= 1:
            raise
        first = exc
    pause = policy.backoff(1, first.retry_after)
    if policy.clock() + pause >= deadline:
        raise first
    await policy.sleep(pause)

    # tenacity's attempt n is our attempt n + 1 (the first one is above).
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        return policy.backoff(state.attempt_number + 1, retry_after)

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number + 1 >= policy.max_attempts:
            return True
        # Stop rather than sleep into the lock's margin: the next wait must end before the deadline.
        return policy.clock() + (state.upcoming_sleep or 0.0) >= deadline

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_transient),
        wait=wait,
        stop=stop,
        sleep=policy.sleep,
        reraise=True,
    )

    async def invoke() -> T:  # tenacity awaits only coroutine functions, not lambdas
        return await call()

    return await retrying(invoke)
