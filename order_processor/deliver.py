"""Stage 2, `deliver_<name>`: a lane's delivery messages reach its vendor, once.

delivery message -> routing check -> ledger claim -> map -> send (in bulk where the vendor has a
bulk form and the trigger handed over a batch) -> one Outcome per message: complete (delivered
or skipped, now or by an earlier copy), retry later (a copy scheduled on the deliveries topic for
this lane only), or dead-letter on this lane (DestinationRejected, RetriesExhausted,
LedgerRejected, InvalidMessage for a message no stage could have written) -> ledger record (the
result, and that outcome: when the retry copy is due, or the dead-letter reason).

One pipeline serves one message and a batch alike: a batch of one is sent as a single request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from order_processor.bulk import send_in_bulk
from order_processor.contract import InvalidMessage
from order_processor.delivery import DeliveryMessage, parse_delivery
from order_processor.destinations import Destination, Skip
from order_processor.ledger import (
    Claimed,
    ClaimRequest,
    Decided,
    Held,
    Ledger,
    LedgerRejected,
    LedgerUnavailable,
    Settled,
)
from order_processor.model import (
    DeadLetterReason,
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
    TrackingEvent,
)
from order_processor.observe import Delivered, Observer
from order_processor.outbound.errors import DeliveryError
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from order_processor.redelivery import RetryLater
from order_processor.settings import CoreSettings

IN_FLIGHT = "InFlight"
LEDGER_UNAVAILABLE = "LedgerUnavailable"
LEDGER_REJECTED = "LedgerRejected"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _decided(outcome: Outcome) -> Decided:
    """What the ledger row keeps of a message's outcome."""
    return Decided(
        next_attempt=outcome.retry_at,
        dead_letter_reason=outcome.reason if outcome.settlement is Settlement.DEAD_LETTER else None,
    )


@dataclass(frozen=True, slots=True)
class _Work:
    """One valid delivery message on its way through the pipeline."""

    index: int
    message: DeliveryMessage
    event: TrackingEvent


@dataclass(frozen=True, slots=True)
class _Cleared:
    """The ledger let this delivery go ahead: the claim to record the result on, and the route."""

    work: _Work
    claim: Claimed
    target: str


class DeliveryStage:
    """One lane. Built once per process; shares the ledger with the other lanes."""

    def __init__(
        self,
        *,
        destination: Destination,
        core: CoreSettings,
        ledger: Ledger,
        retry_later: RetryLater,
        policy: RetryPolicy,
        observer: Observer,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.destination = destination
        self.name = destination.name
        self.core = core
        self.ledger = ledger
        self.retry_later = retry_later
        self.policy = policy
        self.observer = observer
        self._clock = clock
        self._now = now

    @property
    def takes_batches(self) -> bool:
        """Whether the vendor has a bulk form (then the lane's trigger may take batches)."""
        return self.destination.bulk_limit() > 1

    async def deliver(self, body: bytes, metadata: MessageMetadata) -> Outcome:
        (outcome,) = await self.deliver_batch([(body, metadata)])
        return outcome

    async def deliver_batch(
        self, messages: Sequence[tuple[bytes, MessageMetadata]]
    ) -> list[Outcome]:
        """One Outcome per message, in order; a message that fails fails alone."""
        with self.observer.span(
            f"deliver {self.name}",
            {
                "messaging.system": "servicebus",
                "messaging.batch.message_count": len(messages),
                "orders.destination": self.name,
            },
            consumer=True,
        ) as span:
            outcomes = await self._deliver(messages)
            if len(outcomes) == 1:
                (only,) = outcomes
                span.set(
                    {
                        "orders.order_id": only.order_id or "",
                        "orders.event_key": only.event_key or "",
                        "orders.outcome": only.settlement.value,
                        "orders.reason": only.reason or "",
                    }
                )
        for (_, metadata), outcome in zip(messages, outcomes, strict=True):
            self.observer.settled("deliver", metadata, outcome)
        return outcomes

    async def _deliver(self, messages: Sequence[tuple[bytes, MessageMetadata]]) -> list[Outcome]:
        deadline = self._clock() + self.core.retry_budget_seconds
        outcomes: dict[int, Outcome] = {}
        work: list[_Work] = []
        for index, (body, _) in enumerate(messages):
            try:
                message = parse_delivery(body)
            except InvalidMessage as exc:
                outcomes[index] = self._invalid(exc.description)
                continue
            if message.destination != self.name:
                outcomes[index] = self._invalid(
                    f"(delivery) destination {message.destination!r} reached the {self.name} "
                    "lane: check the subscription's filter"
                )
                continue
            work.append(_Work(index, message, message.event()))
        started = time.perf_counter()
        results, cleared = await self._gate(work)
        results |= await self._send(cleared, deadline)
        elapsed_ms = (time.perf_counter() - started) * 1000
        sent = {c.work.index for c in cleared}
        decided = await asyncio.gather(
            *(
                self._decide(
                    w, results[w.index], messages[w.index], elapsed_ms if w.index in sent else None
                )
                for w in work
            )
        )
        outcomes |= {w.index: outcome for w, outcome in zip(work, decided, strict=True)}
        # Recorded after deciding, so each row also says what became of the message (a retry
        # copy due at a time, or a dead letter and why): `trace` reads it there.
        await self._record(
            [(c.claim, results[c.work.index]) for c in cleared],
            [_decided(outcomes[c.work.index]) for c in cleared],
        )
        return [outcomes[i] for i in range(len(messages))]

    async def _gate(
        self, work: Sequence[_Work]
    ) -> tuple[dict[int, DestinationResult], list[_Cleared]]:
        """Which events still go to the vendor: the routing table, then the ledger's claims (one
        call for the whole batch). A result for each one that does not, and the cleared rest."""
        results: dict[int, DestinationResult] = {}
        routed: list[tuple[_Work, str]] = []
        for w in work:
            target = self.destination.routing.get(w.event.event_type)
            if target is None:
                detail = f"{w.event.event_type.value} is not routed here"
                results[w.index] = self._result(DeliveryStatus.SKIPPED, detail)
            else:
                routed.append((w, target))
        gates = await self.ledger.claim_many(
            [ClaimRequest(w.event.key, w.event.message_id) for w, _ in routed],
            self.name,
            now=self._now(),
            lease=self.core.ledger_lease,
        )
        cleared: list[_Cleared] = []
        for (w, target), gate in zip(routed, gates, strict=True):
            if isinstance(gate, Claimed):
                cleared.append(_Cleared(w, gate, target))
            else:
                results[w.index] = self._refused(gate)
        return results, cleared

    def _refused(
        self, gate: Settled | Held | LedgerUnavailable | LedgerRejected
    ) -> DestinationResult:
        """What a ledger answer other than "go ahead" means for this delivery."""
        if isinstance(gate, LedgerUnavailable):
            return self._result(
                DeliveryStatus.TRANSIENT_ERROR,
                f"delivery ledger unavailable ({gate}); not sent",
                vendor_code=LEDGER_UNAVAILABLE,
            )
        if isinstance(gate, LedgerRejected):
            return self._result(
                DeliveryStatus.PERMANENT_ERROR,
                f"the delivery ledger refused the request ({gate}); not sent",
                vendor_code=LEDGER_REJECTED,
            )
        if isinstance(gate, Settled):
            status = DeliveryStatus(gate.entry.status.value)
            return DestinationResult(
                destination=self.name,
                status=status,
                detail=f"{status.value} earlier (ledger)",
                response_id=gate.entry.response_id,
                previously=True,
            )
        return self._result(
            DeliveryStatus.TRANSIENT_ERROR,
            "another copy of this event is being delivered (ledger claim held)",
            vendor_code=IN_FLIGHT,
        )

    async def _send(
        self, cleared: Sequence[_Cleared], deadline: float
    ) -> dict[int, DestinationResult]:
        """Each cleared event's result: in bulk when the vendor has a bulk form and there is more
        than one, else one request each (concurrently)."""
        if len(cleared) > 1 and self.takes_batches:
            return await self._send_bulk(cleared, deadline)
        sent = await asyncio.gather(*(self._attempt(c, deadline) for c in cleared))
        return {c.work.index: result for c, result in zip(cleared, sent, strict=True)}

    async def _send_bulk(
        self, cleared: Sequence[_Cleared], deadline: float
    ) -> dict[int, DestinationResult]:
        results: dict[int, DestinationResult] = {}
        to_send: list[int] = []
        elements: list[bytes] = []
        for c in cleared:
            try:
                encoded = self.destination.encode(c.work.event, c.target)
            except DeliveryError as exc:
                results[c.work.index] = DestinationResult.failed(self.name, exc, attempts=1)
                continue
            if isinstance(encoded, Skip):
                results[c.work.index] = self._result(DeliveryStatus.SKIPPED, encoded.reason)
            else:
                to_send.append(c.work.index)
                elements.append(encoded)
        sent = await send_in_bulk(self.destination, elements, policy=self.policy, deadline=deadline)
        results.update(zip(to_send, sent, strict=True))
        return results

    async def _attempt(self, cleared: _Cleared, deadline: float) -> DestinationResult:
        attempts = 0

        async def attempt() -> DestinationResult:
            nonlocal attempts
            attempts += 1
            prepared = self.destination.prepare(cleared.work.event, cleared.target)
            if isinstance(prepared, Skip):
                return self._result(DeliveryStatus.SKIPPED, prepared.reason)
            sent = await self.destination.send(prepared)
            return DestinationResult(
                destination=self.name,
                status=DeliveryStatus.DELIVERED,
                detail=sent.note,
                response_id=sent.response_id,
                attempts=attempts,
            )

        try:
            return await call_with_retries(attempt, policy=self.policy, deadline=deadline)
        except DeliveryError as exc:
            return DestinationResult.failed(self.name, exc, attempts=attempts)

    async def _record(
        self,
        recorded: Sequence[tuple[Claimed, DestinationResult]],
        decided: Sequence[Decided],
    ) -> None:
        failures = await self.ledger.record_many(recorded, now=self._now(), decided=decided)
        for (claim, result), failure in zip(recorded, failures, strict=True):
            if failure is not None:
                # The vendor's answer stands; a later copy may call again once the claim's
                # lease ends (only if this message is retried): the one duplicate window.
                self.observer.record_failed(claim.entry.event_key, result)

    async def _decide(
        self,
        work: _Work,
        result: DestinationResult,
        received: tuple[bytes, MessageMetadata],
        elapsed_ms: float | None,
    ) -> Outcome:
        event = work.event
        self.observer.delivered(
            Delivered(
                lane=self.name,
                order_id=event.order.order_id,
                event_key=event.key,
                result=result,
                elapsed_ms=elapsed_ms,
                end_to_end_ms=self._end_to_end_ms(work.message, result),
            )
        )
        outcome = Outcome(
            settlement=Settlement.COMPLETE,
            results=(result,),
            order_id=event.order.order_id,
            event_type=event.event_type,
            event_key=event.key,
            destination=self.name,
            description=result.describe(),
        )
        if result.status is DeliveryStatus.TRANSIENT_ERROR:
            retry = replace(
                outcome,
                settlement=Settlement.RETRY,
                reason=LEDGER_UNAVAILABLE
                if result.vendor_code == LEDGER_UNAVAILABLE
                else "DestinationUnavailable",
            )
            body, metadata = received
            return await self.retry_later(body, metadata, retry, lane=self.name)
        if result.status is DeliveryStatus.PERMANENT_ERROR:
            return replace(
                outcome,
                settlement=Settlement.DEAD_LETTER,
                reason=LEDGER_REJECTED
                if result.vendor_code == LEDGER_REJECTED
                else DeadLetterReason.DESTINATION_REJECTED,
                description=f"rejected by {self.name}: {result.detail}",
            )
        return outcome

    def _end_to_end_ms(self, message: DeliveryMessage, result: DestinationResult) -> float | None:
        if result.status is not DeliveryStatus.DELIVERED or result.previously:
            return None
        start = message.order_enqueued_at or message.accepted_at
        return (self._now() - start).total_seconds() * 1000

    def _result(
        self, status: DeliveryStatus, detail: str, *, vendor_code: str | None = None
    ) -> DestinationResult:
        return DestinationResult(
            destination=self.name, status=status, detail=detail, vendor_code=vendor_code
        )

    def _invalid(self, description: str) -> Outcome:
        return Outcome(
            settlement=Settlement.DEAD_LETTER,
            reason=DeadLetterReason.INVALID_MESSAGE,
            description=description,
            destination=self.name,
        )
