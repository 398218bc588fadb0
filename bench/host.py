"""The Functions host, as far as the lanes mode needs it: one consumer per function, each with its
own concurrency (`maxConcurrentCalls` calls in flight; a batch function one batch of up to
`maxMessageBatchSize` at a time), settling each message the way `function_app.settle` does:
complete, dead-letter with the outcome's reason, abandon (Service Bus redelivers; past
MaxDeliveryCount it dead-letters). An exception from the stage abandons, as `run_one` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from bench.bus import Envelope, Subscription
from order_processor.model import MessageMetadata, Outcome, Settlement

log = logging.getLogger("bench.host")

Handler = Callable[[bytes, MessageMetadata], Awaitable[Outcome]]
BatchHandler = Callable[[Sequence[tuple[bytes, MessageMetadata]]], Awaitable[list[Outcome]]]
#: told each message's outcome once it is settled (None: the stage raised and it was abandoned)
Settled = Callable[[Envelope, Outcome | None], None]

MAX_DELIVERY_COUNT = 10  # the subscriptions' MaxDeliveryCount (infra/)


class Consumer:
    """One function: its subscription, its stage, its concurrency."""

    def __init__(
        self,
        name: str,
        subscription: Subscription,
        *,
        settled: Settled,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        max_concurrent_calls: int = 32,
        max_batch: int = 100,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("a consumer takes one message at a time or batches, not both")
        self.name = name
        self.subscription = subscription
        self.handler = handler
        self.batch_handler = batch_handler
        self.max_concurrent_calls = max_concurrent_calls
        self.max_batch = max_batch
        self.settled = settled
        self.failures = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def concurrency(self) -> str:
        if self.batch_handler is not None:
            return f"1 batch of <= {self.max_batch}"
        return str(self.max_concurrent_calls)

    def start(self) -> None:
        if self.batch_handler is not None:
            self._tasks = [asyncio.create_task(self._batches(self.batch_handler))]
        else:
            assert self.handler is not None
            self._tasks = [
                asyncio.create_task(self._one_at_a_time(self.handler))
                for _ in range(self.max_concurrent_calls)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _one_at_a_time(self, handler: Handler) -> None:
        while True:
            (envelope,) = await self.subscription.receive(1)
            try:
                outcome = await handler(envelope.body, envelope.metadata())
            except Exception:
                self._failed([envelope])
                continue
            self._settle(envelope, outcome)

    async def _batches(self, handler: BatchHandler) -> None:
        while True:
            envelopes = await self.subscription.receive(self.max_batch)
            try:
                outcomes = await handler([(e.body, e.metadata()) for e in envelopes])
            except Exception:
                self._failed(envelopes)
                continue
            for envelope, outcome in zip(envelopes, outcomes, strict=True):
                self._settle(envelope, outcome)

    def _failed(self, envelopes: Sequence[Envelope]) -> None:
        log.exception("%s: unexpected failure; abandoning %d message(s)", self.name, len(envelopes))
        self.failures += len(envelopes)
        for envelope in envelopes:
            self._abandon(envelope)
            self.settled(envelope, None)

    def _settle(self, envelope: Envelope, outcome: Outcome) -> None:
        match outcome.settlement:
            case Settlement.COMPLETE:
                self.subscription.complete(envelope)
            case Settlement.DEAD_LETTER:
                self.subscription.dead_letter(
                    envelope, outcome.reason or "", outcome.description or ""
                )
            case Settlement.RETRY:
                self._abandon(envelope)
        self.settled(envelope, outcome)

    def _abandon(self, envelope: Envelope) -> None:
        if envelope.delivery_count >= MAX_DELIVERY_COUNT:
            self.subscription.dead_letter(
                envelope, "MaxDeliveryCountExceeded", f"{envelope.delivery_count} deliveries"
            )
        else:
            self.subscription.abandon(envelope)
