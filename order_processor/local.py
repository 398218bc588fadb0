"""Both stages in one process, no Service Bus: what `process` runs (dry run and --send), and what
tests use to follow one order through every lane.

The accept stage publishes into a MemoryOutbox; each delivery message is then handed to its lane
at once, as the lane's function would receive it. Scheduled retry copies are reported, not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from order_processor.destinations import DESTINATIONS
from order_processor.model import (
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
)
from order_processor.outbox import MemoryOutbox, Outgoing
from order_processor.pipeline import Pipeline

#: the worst settlement wins when a run is summed up in one word
_SEVERITY = {Settlement.COMPLETE: 0, Settlement.RETRY: 1, Settlement.DEAD_LETTER: 2}


def received(outgoing: Outgoing, *, now: datetime | None = None) -> MessageMetadata:
    """The metadata a lane's trigger would see for a message the outbox holds."""
    return MessageMetadata(
        message_id=outgoing.message_id,
        enqueued_time=now or datetime.now(UTC),
        session_id=outgoing.session_id,
        application_properties={k: str(v) for k, v in outgoing.application_properties.items()},
    )


@dataclass(frozen=True, slots=True)
class Run:
    """One order message through both stages: the accept outcome, then each lane's."""

    accept: Outcome
    lanes: Mapping[str, Outcome] = field(default_factory=dict)
    #: what the accept stage did not publish: not routed, or the destination disabled
    unrouted: tuple[DestinationResult, ...] = ()
    #: retry copies scheduled by either stage (not run here)
    scheduled: tuple[Outgoing, ...] = ()

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        return (self.accept, *self.lanes.values())

    @property
    def settlement(self) -> Settlement:
        """The worst settlement of all the run's messages."""
        return max((o.settlement for o in self.outcomes), key=_SEVERITY.__getitem__)

    @property
    def reason(self) -> str | None:
        worst = [o for o in self.outcomes if o.settlement is self.settlement and o.reason]
        return worst[0].reason if worst else None

    @property
    def retry_at(self) -> datetime | None:
        return next((o.retry_at for o in self.outcomes if o.retry_at is not None), None)

    @property
    def results(self) -> tuple[DestinationResult, ...]:
        return (*(r for o in self.lanes.values() for r in o.results), *self.unrouted)

    def result_for(self, destination: str) -> DestinationResult | None:
        return next((r for r in self.results if r.destination == destination), None)

    @property
    def description(self) -> str:
        parts = [f"accept: {self.accept.description}"] if self.accept.description else []
        parts += [f"{name}: {o.description}" for name, o in self.lanes.items() if o.description]
        return "; ".join(parts)


def _published(accept: Outcome) -> bool:
    """The accept stage completed by publishing (possibly nothing), not by a retry copy."""
    return accept.settlement is Settlement.COMPLETE and accept.retry_at is None


class LocalRun:
    """Runs order messages through a pipeline whose outbox is a MemoryOutbox."""

    def __init__(self, pipeline: Pipeline) -> None:
        if not isinstance(pipeline.outbox, MemoryOutbox):
            raise TypeError("a local run needs a pipeline built with a MemoryOutbox")
        self.pipeline = pipeline
        self.outbox: MemoryOutbox = pipeline.outbox

    async def run(self, body: bytes, metadata: MessageMetadata) -> Run:
        accept = await self.pipeline.accept.accept(body, metadata)
        published = self.outbox.take()
        scheduled = [m for m in published if m.scheduled_at is not None]
        now = [m for m in published if m.scheduled_at is None]
        # Concurrently, as independent functions would: no lane waits for another.
        outcomes = await asyncio.gather(
            *(self.pipeline.lanes[m.destination].deliver(m.body, received(m)) for m in now)
        )
        lanes = {m.destination: outcome for m, outcome in zip(now, outcomes, strict=True)}
        scheduled += [m for m in self.outbox.take() if m.scheduled_at is not None]
        return Run(
            accept=accept,
            lanes=lanes,
            unrouted=self._unrouted(accept) if accept.routed or _published(accept) else (),
            scheduled=tuple(scheduled),
        )

    def _unrouted(self, accept: Outcome) -> tuple[DestinationResult, ...]:
        skipped = []
        for name in DESTINATIONS:
            if name in accept.routed:
                continue
            detail = (
                "disabled"
                if name not in self.pipeline.lanes
                else f"{accept.event_type.value if accept.event_type else 'event'} is not "
                "routed here"
            )
            skipped.append(
                DestinationResult(destination=name, status=DeliveryStatus.SKIPPED, detail=detail)
            )
        return tuple(skipped)
