"""AMQP encoding beyond proton's Message: SDK batches, and the annotations the broker stamps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from proton import Data, DataException, Described, Message, symbol, timestamp, ubyte, uint, ulong

from .broker import StoredMessage

SEQUENCE_NUMBER = symbol("x-opt-sequence-number")
ENQUEUED_TIME = symbol("x-opt-enqueued-time")
LOCKED_UNTIL = symbol("x-opt-locked-until")
SCHEDULED_ENQUEUE_TIME = symbol("x-opt-scheduled-enqueue-time")
MESSAGE_STATE = symbol("x-opt-message-state")
SCHEDULED_STATE = 2  # ServiceBusMessageState.SCHEDULED, shown on peeked scheduled messages

_HEADER = 0x70
_DATA = 0x75
_BATCH_ENVELOPE = {0x72, 0x73, _DATA}  # message annotations, properties, data sections
_MESSAGE_SECTIONS = range(0x70, 0x79)  # header ... footer
_BODY_SECTIONS = {0x75, 0x76, 0x77}  # data, amqp-sequence, amqp-value


def split_transfer(payload: bytes) -> list[bytes]:
    """One transfer as the encoded messages it carries (see `batch_parts`)."""
    return batch_parts(payload) or [payload]


def batch_parts(payload: bytes) -> list[bytes] | None:
    """The messages of a batch transfer, or None when the transfer is one plain message.

    `ServiceBusMessageBatch` goes out as one transfer with message-format 0x80013700 whose data
    sections each hold a complete encoded message. Proton's Python API does not expose the
    message format (its FFI has no pn_delivery_format), so a batch is recognised by that shape
    instead; an application body would have to be a valid AMQP message itself to be mistaken
    for one.
    """
    sections = _sections(payload)
    if sections and {code for code, _ in sections} <= _BATCH_ENVELOPE:
        inner = [bytes(value) for code, value in sections if code == _DATA]
        if inner and all(_is_message(encoded) for encoded in inner):
            return inner
    return None


def _is_message(encoded: bytes) -> bool:
    sections = _sections(encoded)
    codes = {code for code, _ in sections or ()}
    return (
        bool(codes) and all(c in _MESSAGE_SECTIONS for c in codes) and bool(codes & _BODY_SECTIONS)
    )


def _sections(payload: bytes) -> list[tuple[int, Any]] | None:
    """The top-level described sections of an encoded message, or None if it is not one."""
    sections: list[tuple[int, Any]] = []
    rest = bytes(payload)
    while rest:
        if rest[0] != 0:  # every section starts with the described-type constructor
            return None
        data = Data()
        try:
            used = data.decode(rest)
        except DataException:
            return None
        data.rewind()
        data.next()
        value = data.get_object()
        if not isinstance(value, Described) or not isinstance(value.descriptor, int):
            return None
        # Copy binaries out now: proton hands out views of a buffer freed with `data`.
        inner = bytes(value.value) if isinstance(value.value, memoryview) else value.value
        sections.append((int(value.descriptor), inner))
        rest = rest[used:]
    return sections


def decode(raw: bytes) -> StoredMessage:
    """A message as a sender encoded it; the broker assigns sequence number and times."""
    message = Message()
    message.decode(raw)
    annotations: dict[Any, Any] = dict(message.annotations or {})
    return StoredMessage(
        body=_body_bytes(message.body),
        message_id=_text(message.id),
        session_id=message.group_id,
        application_properties=dict(message.properties or {}),
        scheduled_enqueue_time=_datetime(annotations.get(SCHEDULED_ENQUEUE_TIME)),
        subject=message.subject,
        content_type=_content_type(raw),
        correlation_id=_text(message.correlation_id),
        # proton reads the header's ttl (milliseconds) as seconds; 0 when there is none
        time_to_live=timedelta(seconds=message.ttl) if message.ttl else None,
        raw=bytes(raw),
    )


def encode_new(
    body: bytes,
    *,
    message_id: str | None = None,
    session_id: str | None = None,
    application_properties: dict[str, Any] | None = None,
    subject: str | None = None,
    content_type: str | None = None,
    correlation_id: str | None = None,
    scheduled_enqueue_time: datetime | None = None,
    time_to_live: timedelta | None = None,
) -> bytes:
    """A message as the SDK would send it (data body), for seeding the broker from tests."""
    message = Message(
        body=body,
        inferred=True,  # a data section, like ServiceBusMessage(bytes)
        id=message_id or str(uuid.uuid4()),
        group_id=session_id,
        properties=dict(application_properties or {}) or None,
        subject=subject,
        content_type=content_type,
        correlation_id=correlation_id,
    )
    if time_to_live is not None:
        message.ttl = time_to_live.total_seconds()
    if scheduled_enqueue_time is not None:
        message.annotations = {SCHEDULED_ENQUEUE_TIME: to_timestamp(scheduled_enqueue_time)}
    return bytes(message.encode())


def encode_delivery(
    stored: StoredMessage, *, locked_until: datetime | None = None, scheduled: bool = False
) -> bytes:
    """The stored message with the broker's state: header delivery count and x-opt annotations."""
    message = Message()
    message.decode(stored.raw)
    # Dead-lettering adds application properties, so they are taken from the store.
    message.properties = dict(stored.application_properties) or None
    if stored.time_to_live is not None:  # capped by the entity's default when enqueued
        message.ttl = stored.time_to_live.total_seconds()
    annotations = dict(message.annotations or {})
    annotations[SEQUENCE_NUMBER] = stored.sequence_number
    if stored.enqueued_time is not None:
        annotations[ENQUEUED_TIME] = to_timestamp(stored.enqueued_time)
    if locked_until is not None:
        annotations[LOCKED_UNTIL] = to_timestamp(locked_until)
    if stored.scheduled_enqueue_time is not None:
        annotations[SCHEDULED_ENQUEUE_TIME] = to_timestamp(stored.scheduled_enqueue_time)
    if scheduled:
        annotations[MESSAGE_STATE] = SCHEDULED_STATE
    message.annotations = annotations
    return _with_header(message, stored.delivery_count)


def _with_header(message: Message, delivery_count: int) -> bytes:
    """Encode with a header that always states delivery-count.

    Proton leaves out default header fields, and the SDK reports an absent count as None where
    the service says 0, so the header is written here instead of proton's.
    """
    encoded = bytes(message.encode())
    sections = _sections(encoded) or []
    if sections and sections[0][0] == _HEADER:
        data = Data()
        encoded = encoded[data.decode(encoded) :]
    ttl = uint(round(message.ttl * 1000)) if message.ttl else None
    fields = [message.durable, ubyte(message.priority), ttl, message.first_acquirer]
    header = Data()
    header.put_object(Described(ulong(_HEADER), [*fields, uint(delivery_count)]))
    return bytes(header.encode()) + encoded


def _content_type(raw: bytes) -> str | None:
    # Proton's getter turns an absent content type into symbol("None"); read the section instead.
    for code, value in _sections(raw) or ():
        if code == 0x73 and len(value) > 6:
            return _text(value[6])
    return None


def to_timestamp(at: datetime) -> timestamp:
    return timestamp(round(at.timestamp() * 1000))


def _datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return repr(body).encode()  # amqp-value/sequence bodies: readable, not round-trippable


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
