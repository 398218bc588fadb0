"""`trace`: where one order went. Every event of the order in the delivery ledger and, per
destination, what happened (status, attempts, first and last attempt, last error, the vendor's
response id, a retry copy's due time, a dead letter's reason), confirmed against the dead-letter
queues.

Lookups (docs/operations.md, "Where did this order go"):

- by order id: `Ledger.rows_for_order`, one RowKey range in one partition per destination;
- by event key, or by a MessageId the app made (`<event key>`, `<event key>:<destination>`, with
  `:retry-<n>` or `:replay-<n>`): a point read per destination;
- by any other MessageId (the ERP's own): the rows carry it, but no key holds it, so the whole
  ledger table is read (`Ledger.rows_for_message`): seconds to minutes on a large table.

A retry copy waits on the deliveries topic, where no peek of a lane's subscription sees it, so
the row says when it is due (`NextAttemptUtc`, written when the lane decided). Dead letters are
confirmed by peeking each dead-letter queue, at most `limit` messages from its oldest, for
messages whose `eventKey` (delivery messages) or `orderId` (order messages) matches. Ledger rows
hold no personal data; the free text (a vendor's error, a dead letter's description) is redacted
before it is shown.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from azure.servicebus import ServiceBusReceivedMessage, ServiceBusSubQueue, aio
from azure.servicebus.exceptions import ServiceBusError

from order_processor.contract import EventType
from order_processor.delivery import EVENT_KEY, ORDER_ID
from order_processor.destinations import DESTINATIONS
from order_processor.dlq import ACCEPT, PAGE, DeadLetterSource
from order_processor.ledger import Ledger, LedgerEntry, LedgerStatus, order_key_of
from order_processor.model import order_key
from order_processor.outbound.redaction import redact
from order_processor.servicebus import message_body, message_metadata
from order_processor.settings import AppSettings

#: dead letters peeked per queue, from the oldest (the bound of one trace)
DEFAULT_PEEK_LIMIT = 500

_EVENT_KEY = re.compile(
    r"(?P<key>(?P<order>[^:]+):(?P<type>"
    + "|".join(re.escape(t.value) for t in EventType)
    + r"):[0-9a-f]{16})(?::.*)?"
)


class By(StrEnum):
    AUTO = "auto"
    ORDER = "order"
    EVENT = "event"
    MESSAGE = "message"


def event_key_in(text: str) -> str | None:
    """The event key `text` is or starts with (an event key, or a MessageId the app made)."""
    match = _EVENT_KEY.fullmatch(text)
    return match["key"] if match else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Letter:
    """A dead letter of this order: identifiers, reason and description only (no body)."""

    lane: str
    queue: str
    sequence_number: int
    message_id: str | None
    event_key: str | None
    reason: str | None
    description: str | None
    enqueued_time: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "queue": self.queue,
            "sequenceNumber": self.sequence_number,
            "messageId": self.message_id,
            "eventKey": self.event_key,
            "reason": self.reason,
            "description": self.description,
            "enqueuedTime": _iso(self.enqueued_time),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Peeked:
    """How much of one dead-letter queue was read."""

    lane: str
    queue: str
    messages: int = 0
    #: the whole queue was read (fewer than `limit` dead letters in it)
    complete: bool = True
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    ref: str
    by: By
    #: how the rows were found, and what that cost
    lookup: str
    rows: tuple[LedgerEntry, ...]
    letters: tuple[Letter, ...] = ()
    peeked: tuple[Peeked, ...] = ()
    now: datetime

    @property
    def found(self) -> bool:
        return bool(self.rows or self.letters)

    def events(self) -> dict[str, list[LedgerEntry]]:
        """Event key -> its rows, by destination."""
        events: dict[str, list[LedgerEntry]] = {}
        for row in sorted(self.rows, key=lambda r: (r.event_key, r.destination)):
            events.setdefault(row.event_key, []).append(row)
        for letter in self.letters:
            if letter.event_key and letter.event_key not in events:
                events[letter.event_key] = []
        return events

    def letter_for(self, row: LedgerEntry) -> Letter | None:
        return next(
            (
                letter
                for letter in self.letters
                if letter.event_key == row.event_key and letter.lane == row.destination
            ),
            None,
        )

    def unrecorded_letters(self) -> list[Letter]:
        """Dead letters no row accounts for: refused at accept, or dead-lettered by the broker
        (expired while a lane was paused, MaxDeliveryCountExceeded) before any claim."""
        known = {(row.event_key, row.destination) for row in self.rows}
        return [letter for letter in self.letters if (letter.event_key, letter.lane) not in known]

    def what_next(self, row: LedgerEntry) -> str:
        """What became of the message after this row's last attempt, in words."""
        letter = self.letter_for(row)
        if row.dead_letter_reason or letter is not None:
            reason = row.dead_letter_reason or (letter.reason if letter else None) or "-"
            if letter is not None:
                return f"dead-lettered {reason}, in the DLQ (#{letter.sequence_number})"
            where = next((p for p in self.peeked if p.lane == row.destination), None)
            if where is not None and where.complete and where.error is None:
                return f"dead-lettered {reason}, no longer in the DLQ (replayed or purged)"
            return f"dead-lettered {reason}"
        if row.next_attempt is not None and row.status is LedgerStatus.FAILED:
            due = row.next_attempt.strftime("%Y-%m-%d %H:%M:%SZ")
            if row.next_attempt > self.now:
                return f"retry copy scheduled, due {due}"
            return f"retry copy was due {due} (waiting in the lane, or running)"
        if row.status is LedgerStatus.IN_FLIGHT:
            held = row.lease_until is not None and row.lease_until > self.now
            return "being delivered now" if held else "claim expired (the next copy takes over)"
        return "-"

    def as_json(self) -> dict[str, Any]:
        events = []
        for key, rows in self.events().items():
            events.append(
                {
                    "eventKey": key,
                    "eventType": event_type(key),
                    "destinations": [self._row_json(row) for row in rows],
                }
            )
        return {
            "ref": self.ref,
            "by": self.by.value,
            "lookup": self.lookup,
            "found": self.found,
            "events": events,
            "deadLetters": [letter.as_json() for letter in self.letters],
            "unrecordedDeadLetters": [letter.as_json() for letter in self.unrecorded_letters()],
            "peeked": [
                {
                    "lane": p.lane,
                    "queue": p.queue,
                    "messages": p.messages,
                    "complete": p.complete,
                    "error": p.error,
                }
                for p in self.peeked
            ],
        }

    def _row_json(self, row: LedgerEntry) -> dict[str, Any]:
        letter = self.letter_for(row)
        return {
            "destination": row.destination,
            "status": row.status.value,
            "attempts": row.attempts,
            "firstAttempt": _iso(row.first_attempt),
            "lastAttempt": _iso(row.last_attempt),
            "lastError": redact(row.last_error) if row.last_error else None,
            "httpStatus": row.http_status,
            "responseId": row.response_id,
            "messageId": row.message_id,
            "nextAttempt": _iso(row.next_attempt),
            "retryScheduled": row.status is LedgerStatus.FAILED
            and row.next_attempt is not None
            and row.next_attempt > self.now,
            "deadLetterReason": row.dead_letter_reason,
            "inDeadLetterQueue": None if letter is None else letter.sequence_number,
            "next": self.what_next(row),
        }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def event_type(event_key: str) -> str | None:
    match = _EVENT_KEY.fullmatch(event_key)
    return match["type"] if match else None


async def find_rows(ledger: Ledger, ref: str, by: By) -> tuple[By, str, list[LedgerEntry]]:
    """The rows `ref` names, how they were looked up and what that cost."""
    key = event_key_in(ref)
    if by is By.AUTO:
        by = By.EVENT if key is not None else By.ORDER
    if by is By.ORDER:
        names = list(DESTINATIONS)
        rows = await ledger.rows_for_order(ref, names)
        return by, f"rows_for_order: one range query per destination ({len(names)})", rows
    if key is not None:
        names = list(DESTINATIONS)
        found = await asyncio.gather(*(ledger.read(key, name) for name in names))
        rows = [row for row in found if row is not None]
        how = f"event key {key}: one point read per destination ({len(names)})"
        return by, how, rows
    if by is By.EVENT:
        raise ValueError(f"{ref!r} is not an event key (<order key>:<eventType>:<16 hex>)")
    rows = await ledger.rows_for_message(ref)
    return by, "MessageId: a scan of the whole ledger table (no key holds it)", rows


def sources(settings: AppSettings) -> list[DeadLetterSource]:
    """Every dead-letter queue an order's messages can end in: the orders subscription's, each
    destination lane's, the accept retry lane's."""
    return [
        DeadLetterSource.of(settings, None),
        *(DeadLetterSource.of(settings, name) for name in DESTINATIONS),
        DeadLetterSource.of(settings, ACCEPT),
    ]


def _lane(source: DeadLetterSource) -> str:
    return source.lane or "orders"


async def peek_letters(
    client: aio.ServiceBusClient,
    source: DeadLetterSource,
    *,
    event_keys: Iterable[str],
    order_keys: Iterable[str],
    whole_order: bool,
    limit: int,
) -> tuple[Peeked, list[Letter]]:
    """Browse one dead-letter queue from its oldest message, at most `limit` messages, for this
    order's (see `_match`). Nothing is locked or removed."""
    keys, orders = set(event_keys), set(order_keys)
    lane, queue = _lane(source), source.path
    found: list[Letter] = []
    seen = after = 0
    try:
        async with client.get_subscription_receiver(
            source.topic, source.subscription, sub_queue=ServiceBusSubQueue.DEAD_LETTER
        ) as receiver:
            while seen < limit:
                page = await receiver.peek_messages(
                    max_message_count=min(PAGE, limit - seen), sequence_number=after + 1
                )
                if not page:
                    return Peeked(lane=lane, queue=queue, messages=seen), found
                for message in page:
                    seen += 1
                    after = max(after, message.sequence_number or 0)
                    letter = _match(message, source, keys, orders, whole_order=whole_order)
                    if letter is not None:
                        found.append(letter)
    except ServiceBusError as exc:
        detail = redact(f"{type(exc).__name__}: {exc}")
        return Peeked(lane=lane, queue=queue, messages=seen, complete=False, error=detail), found
    return Peeked(lane=lane, queue=queue, messages=seen, complete=False), found


def _match(
    message: ServiceBusReceivedMessage,
    source: DeadLetterSource,
    event_keys: set[str],
    order_keys: set[str],
    *,
    whole_order: bool,
) -> Letter | None:
    """A delivery message (it carries `eventKey`) is ours when its event is, or, tracing a whole
    order, when its event is one of the order's (an event may have no row: a message the broker
    dead-lettered before any claim). An order message (no `eventKey`) is ours by its orderId."""
    metadata = message_metadata(message)
    properties = metadata.application_properties
    key = properties.get(EVENT_KEY)
    if key is not None:
        ours = key in event_keys or (whole_order and order_key_of(key) in order_keys)
    else:
        order_id = properties.get(ORDER_ID) or _order_id_in(message_body(message))
        ours = order_id is not None and order_key(order_id) in order_keys
    if not ours:
        return None
    return Letter(
        lane=_lane(source),
        queue=source.path,
        sequence_number=message.sequence_number or 0,
        message_id=metadata.message_id,
        event_key=key,
        reason=message.dead_letter_reason,
        description=redact(message.dead_letter_error_description or "") or None,
        enqueued_time=metadata.enqueued_time,
    )


def _order_id_in(body: bytes) -> str | None:
    """The order message's orderId (nothing else is read from the body)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = document.get("orderId") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


async def trace(
    *,
    ledger: Ledger,
    ref: str,
    by: By = By.AUTO,
    client: aio.ServiceBusClient | None,
    queues: Sequence[DeadLetterSource] = (),
    limit: int = DEFAULT_PEEK_LIMIT,
    now: datetime,
) -> Trace:
    """Rows from the ledger, then (with a client) this order's dead letters from each queue."""
    by, lookup, rows = await find_rows(ledger, ref, by)
    event_keys = {row.event_key for row in rows}
    order_keys = {order_key_of(key) for key in event_keys}
    if by is By.ORDER:
        order_keys.add(order_key(ref))
    elif (key := event_key_in(ref)) is not None:
        event_keys.add(key)
        order_keys.add(order_key_of(key))
    letters: list[Letter] = []
    peeked: list[Peeked] = []
    if client is not None and limit > 0 and (event_keys or order_keys):
        done = await asyncio.gather(
            *(
                peek_letters(
                    client,
                    source,
                    event_keys=event_keys,
                    order_keys=order_keys,
                    whole_order=by is By.ORDER,
                    limit=limit,
                )
                for source in queues
            )
        )
        for seen, found in done:
            peeked.append(seen)
            letters += found
    return Trace(
        ref=ref,
        by=by,
        lookup=lookup,
        rows=tuple(rows),
        letters=tuple(letters),
        peeked=tuple(peeked),
        now=now,
    )
