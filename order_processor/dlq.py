"""Dead-letter tooling: peek at, replay and purge a dead-letter queue: the orders subscription's
(poison, found at accept), the accept stage's retry lane's, or one destination lane's.

The selection is made on a peek, so what `--dry-run` lists is exactly what a real run acts on.
A real run then receives the DLQ in peek-lock and settles only the selected messages: completed
once their re-send, processing or purge succeeded, abandoned (left in the DLQ) when it failed.
Messages not selected stay locked until the run ends, so the receive loop never meets them twice,
and are then released untouched. Bodies are never printed: they hold personal data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.servicebus import ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusSubQueue, aio
from azure.servicebus.exceptions import ServiceBusError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from order_processor.delivery import DESTINATION
from order_processor.destinations import DESTINATIONS
from order_processor.model import Settlement
from order_processor.outbound.redaction import redact, scrub
from order_processor.pipeline import Pipeline
from order_processor.redelivery import ORIGINAL_MESSAGE_ID, RETRY_BOOKKEEPING
from order_processor.servicebus import message_body, message_metadata, service_bus_client
from order_processor.settings import AppSettings, SettingsError

#: Dropped on replay: the service's dead-letter stamps, and the retry bookkeeping, so that the
#: retry window restarts and the ledger alone decides what is still owed. originalMessageId too:
#: retry copies are named after it (`<original>:retry-<n>`), so a replay that kept it would
#: restart at retry-1 under the old chain's names, and the topic's duplicate detection would
#: drop those copies (the event lost) while the old ones are still in its window.
NOT_REPLAYED = frozenset(
    {"DeadLetterReason", "DeadLetterErrorDescription", ORIGINAL_MESSAGE_ID, *RETRY_BOOKKEEPING}
)
PAGE = 100  # messages per peek and per receive
RECEIVE_WAIT_SECONDS = 5.0  # an empty receive this long means the selection is gone
LOCK_RENEWAL_SECONDS = 600.0  # processing one message can take the whole retry budget


class Target(StrEnum):
    TOPIC = "topic"
    PROCESS = "process"


#: `--destination accept`: the accept stage's own retry lane
ACCEPT = "accept"


@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """Which dead-letter queue: a subscription, and where its messages are replayed to."""

    #: None: the orders subscription; "accept": the accept retry lane; else a destination's lane
    lane: str | None
    topic: str
    subscription: str
    #: where `replay --to topic` sends: the orders topic, or the deliveries topic (same lane)
    replay_topic: str

    @property
    def path(self) -> str:
        return f"{self.topic}/subscriptions/{self.subscription}/$DeadLetterQueue"

    @classmethod
    def of(cls, settings: AppSettings, destination: str | None) -> DeadLetterSource:
        core = settings.core
        if destination is None:
            return cls(None, core.orders_topic, core.orders_subscription, core.orders_topic)
        if destination == ACCEPT:
            subscription = core.accept_retry_subscription
        elif destination in DESTINATIONS:
            block = settings.destinations.get(destination)
            subscription = (
                block.subscription_name
                if block is not None
                else DESTINATIONS[destination].settings_class.default_subscription()
            )
        else:
            names = ", ".join([ACCEPT, *DESTINATIONS])
            raise SettingsError([f"--destination {destination!r}: not a lane (one of {names})"])
        return cls(destination, core.deliveries_topic, subscription, core.deliveries_topic)


PipelineFactory = Callable[[AppSettings], Pipeline]


def default_pipeline(settings: AppSettings) -> Pipeline:
    """The same stages the functions run (publishing to the real deliveries topic)."""
    return Pipeline.from_settings(settings)


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'30m', '2h', '1d', '1h30m' -> timedelta."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h, 1d or 1h30m")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def _short(value: Any) -> str | None:
    return str(value)[:64] if isinstance(value, str | int) and not isinstance(value, bool) else None


def _identity(body: bytes, properties: Mapping[str, str]) -> tuple[str | None, str | None]:
    """orderId and eventType from the body when it is a JSON object, else from the application
    properties the ERP sets. Nothing else is read from the body."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        document = {}
    return (
        _short(document.get("orderId", properties.get("orderId"))),
        _short(document.get("eventType", properties.get("eventType"))),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """What is shown about a dead letter: identifiers and the reason, no personal data."""

    sequence_number: int
    message_id: str | None
    order_id: str | None
    event_type: str | None
    reason: str | None
    description: str | None
    enqueued_time: datetime | None
    delivery_count: int | None
    #: how many dead letters precede it in the DLQ (when browsed): sizes the receives
    position: int = 0

    @classmethod
    def of(cls, message: ServiceBusReceivedMessage, *, position: int = 0) -> DeadLetter:
        metadata = message_metadata(message)
        order_id, event_type = _identity(message_body(message), metadata.application_properties)
        return cls(
            sequence_number=message.sequence_number or 0,
            message_id=metadata.message_id,
            order_id=order_id,
            event_type=event_type,
            reason=message.dead_letter_reason,
            description=message.dead_letter_error_description,
            enqueued_time=metadata.enqueued_time,
            delivery_count=metadata.delivery_count,
            position=position,
        )

    @property
    def label(self) -> str:
        return f"#{self.sequence_number} {self.message_id or '-'} (order {self.order_id or '-'})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Filters:
    """Which dead letters a command acts on; empty means all."""

    reasons: frozenset[str] = field(default_factory=frozenset)
    message_ids: frozenset[str] = field(default_factory=frozenset)
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter, *, now: datetime) -> bool:
        reasons = {r.casefold() for r in self.reasons}
        if reasons and (letter.reason or "").casefold() not in reasons:
            return False
        if self.message_ids and letter.message_id not in self.message_ids:
            return False
        age = now - letter.enqueued_time if letter.enqueued_time else None
        if self.older_than is not None and (age is None or age < self.older_than):
            return False
        return self.newer_than is None or (age is not None and age <= self.newer_than)


def _receiver(
    client: aio.ServiceBusClient, source: DeadLetterSource, **options: Any
) -> aio.ServiceBusReceiver:
    return client.get_subscription_receiver(
        source.topic, source.subscription, sub_queue=ServiceBusSubQueue.DEAD_LETTER, **options
    )


async def select(
    receiver: aio.ServiceBusReceiver, filters: Filters, *, now: datetime
) -> list[DeadLetter]:
    """Browse the DLQ page by page (nothing is locked) and keep what the filters select."""
    chosen: list[DeadLetter] = []
    after = seen = 0
    while filters.limit is None or len(chosen) < filters.limit:
        page = await receiver.peek_messages(max_message_count=PAGE, sequence_number=after + 1)
        if not page:
            break
        for message in page:
            letter = DeadLetter.of(message, position=seen)
            seen += 1
            after = max(after, letter.sequence_number)
            if filters.matches(letter, now=now) and (
                filters.limit is None or len(chosen) < filters.limit
            ):
                chosen.append(letter)
    return chosen


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // small_size}{smaller}"
    return f"{seconds // 60}m {seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def show(letters: Sequence[DeadLetter], *, title: str, console: Console, now: datetime) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("seq", "message id", "order", "event", "reason", "description"):
        table.add_column(column, overflow="fold")
    table.add_column("age", no_wrap=True)
    table.add_column("deliveries", justify="right")
    for letter in letters:
        age = _age(now - letter.enqueued_time) if letter.enqueued_time else "-"
        cells = (
            str(letter.sequence_number),
            letter.message_id or "-",
            letter.order_id or "-",
            letter.event_type or "-",
            # Dead-lettered by anyone (an older version, Service Bus, a person): redacted as
            # `trace` shows them, personal data and secrets alike.
            redact(letter.reason or "-"),
            redact(letter.description or "-"),
            age,
            "-" if letter.delivery_count is None else str(letter.delivery_count),
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: no markup from message content
    console.print(table)


def replay_message(
    message: ServiceBusReceivedMessage, *, lane: str | None = None
) -> ServiceBusMessage:
    """A new message with the dead letter's body, content type, session and properties (minus
    NOT_REPLAYED). Its MessageId is new, or the topic's duplicate detection would drop it, but
    deterministic per dead letter, so replaying one twice is dropped as a duplicate. A lane's
    dead letter keeps (or gets) `destination` = that lane, so only that lane receives it."""
    properties: dict[str | bytes, Any] = {}
    for key, value in (message.application_properties or {}).items():
        name = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        if name not in NOT_REPLAYED:
            properties[name] = value.decode("utf-8") if isinstance(value, bytes) else value
    if lane is not None:
        properties[DESTINATION] = lane
    original = str(message.message_id) if message.message_id is not None else "message"
    message_id = f"{original}:replay-{message.sequence_number}"
    if len(message_id) > 128:
        message_id = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    return ServiceBusMessage(
        message_body(message),
        message_id=message_id,
        session_id=message.session_id,
        content_type=message.content_type,
        subject=message.subject,
        correlation_id=message.correlation_id,
        application_properties=properties,
    )


class NotProcessed(Exception):
    """The stage did not complete the message (dead-letter or abandon again)."""


async def process_message(
    pipeline: Pipeline, source: DeadLetterSource, message: ServiceBusReceivedMessage
) -> str:
    """Run the source's stage as if the message had just arrived: without the retry bookkeeping
    and without the old enqueued time (the retry window restarts); the ledger decides what is
    still owed."""
    metadata = message_metadata(message)
    properties = {k: v for k, v in metadata.application_properties.items() if k not in NOT_REPLAYED}
    metadata = replace(metadata, enqueued_time=None, application_properties=properties)
    body = message_body(message)
    if source.lane is None or source.lane == ACCEPT:
        outcome = await pipeline.accept.accept(body, metadata)
    else:
        lane = pipeline.lanes.get(source.lane)
        if lane is None:
            raise NotProcessed(f"{source.lane} is disabled ({source.lane.upper()}_ENABLED)")
        outcome = await lane.deliver(body, metadata)
    if outcome.settlement is not Settlement.COMPLETE:
        raise NotProcessed(f"{outcome.settlement.value} {outcome.reason}: {outcome.description}")
    return f"retry scheduled for {outcome.retry_at.isoformat()}" if outcome.retry_at else "done"


Action = Callable[[ServiceBusReceivedMessage], Awaitable[str]]


async def settle(
    receiver: aio.ServiceBusReceiver,
    letters: Sequence[DeadLetter],
    *,
    action: Action,
    verb: str,
    console: Console,
) -> int:
    """Receive the DLQ in peek-lock, run `action` on each selected message and complete it only
    when that succeeded; returns how many selected messages failed or could not be found."""
    pending = {letter.sequence_number: letter for letter in letters}
    # Ask for no more than the DLQ held up to the last selected one when browsed: credit left
    # over makes each receive wait for more and the receiver drain it on close.
    span = max((letter.position + 1 for letter in letters), default=0)
    held: list[ServiceBusReceivedMessage] = []
    failed = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(verb, total=len(pending))
        say = progress.console.print
        try:
            while pending:
                wanted = span - len(held) - (len(letters) - len(pending))
                batch = await receiver.receive_messages(
                    max_message_count=max(1, min(PAGE, wanted)),
                    max_wait_time=RECEIVE_WAIT_SECONDS,
                )
                if not batch:
                    break
                for message in batch:
                    letter = pending.pop(message.sequence_number or 0, None)
                    if letter is None:
                        held.append(message)
                        continue
                    progress.advance(task)
                    label = escape(letter.label)
                    try:
                        note = await action(message)
                    except Exception as exc:  # reported, and the message stays in the DLQ
                        failed += 1
                        say(f"[red]failed[/red] {label}: {escape(_error(exc))}; left in the DLQ")
                        await _release(receiver, message)
                        continue
                    try:
                        await receiver.complete_message(message)
                    except ServiceBusError as exc:
                        failed += 1
                        say(
                            f"[yellow]{verb} but not removed[/yellow] {label}: "
                            f"{escape(_error(exc))}; running it again is safe"
                        )
                        continue
                    say(f"[green]{verb}[/green] {label}{escape(': ' + note if note else '')}")
        finally:
            for message in held:
                await _release(receiver, message)
    for letter in pending.values():
        failed += 1
        console.print(f"[red]not found[/red] {escape(letter.label)}: settled by someone else?")
    return failed


def _error(exc: Exception) -> str:
    return scrub(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


async def _release(receiver: aio.ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
    with contextlib.suppress(ServiceBusError):  # a lapsed lock releases it all the same
        await receiver.abandon_message(message)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def peek(
    *, settings: AppSettings, source: DeadLetterSource, filters: Filters, console: Console
) -> int:
    async with (
        service_bus_client(settings.service_bus) as client,
        _receiver(client, source) as receiver,
    ):
        now = _utcnow()
        letters = await select(receiver, filters, now=now)
    show(letters, title=f"{len(letters)} dead letter(s) in {source.path}", console=console, now=now)
    return 0


async def replay(
    *,
    settings: AppSettings,
    source: DeadLetterSource,
    filters: Filters,
    to: Target,
    dry_run: bool,
    console: Console,
    pipeline_factory: PipelineFactory = default_pipeline,
) -> int:
    """Re-send the selected dead letters (a lane's go back to that lane only), or process them
    here; returns failures. `pipeline_factory` is the testing hook for `--to process`."""
    renewer = aio.AutoLockRenewer(max_lock_renewal_duration=LOCK_RENEWAL_SECONDS)
    try:
        async with (
            service_bus_client(settings.service_bus) as client,
            _receiver(client, source, auto_lock_renewer=renewer) as receiver,
        ):
            now = _utcnow()
            letters = await select(receiver, filters, now=now)
            where = source.replay_topic if to is Target.TOPIC else "processing here"
            title = f"{len(letters)} dead letter(s) from {source.path} to replay ({where})"
            if dry_run:
                title += ": dry run, nothing changes"
            show(letters, title=title, console=console, now=now)
            if dry_run or not letters:
                return 0
            if to is Target.TOPIC:
                async with client.get_topic_sender(source.replay_topic, keep_alive=None) as sender:

                    async def resend(message: ServiceBusReceivedMessage) -> str:
                        await sender.send_messages(replay_message(message, lane=source.lane))
                        return ""

                    return await settle(
                        receiver, letters, action=resend, verb="replayed", console=console
                    )
            pipeline = pipeline_factory(settings)
            try:
                return await settle(
                    receiver,
                    letters,
                    action=lambda message: process_message(pipeline, source, message),
                    verb="processed",
                    console=console,
                )
            finally:
                await pipeline.aclose()
    finally:
        await renewer.close()


async def purge(
    *,
    settings: AppSettings,
    source: DeadLetterSource,
    filters: Filters,
    dry_run: bool,
    console: Console,
) -> int:
    """Delete the selected dead letters for good; returns failures."""

    async def nothing(_: ServiceBusReceivedMessage) -> str:
        return ""

    async with (
        service_bus_client(settings.service_bus) as client,
        _receiver(client, source) as receiver,
    ):
        now = _utcnow()
        letters = await select(receiver, filters, now=now)
        title = f"{len(letters)} dead letter(s) to purge from {source.path}"
        if dry_run:
            title += ": dry run, nothing changes"
        show(letters, title=title, console=console, now=now)
        if dry_run or not letters:
            return 0
        return await settle(receiver, letters, action=nothing, verb="purged", console=console)
