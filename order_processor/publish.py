"""Publish order files to the topic the way the ERP does (README, "The inbound contract").

Every file is validated against contract v1 first; one invalid file means nothing is sent. The
MessageId is derived from the content (the order event key), so publishing the same file twice
is dropped by the topic's duplicate detection, and the ledger recognises it even past that window.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from azure.servicebus import ServiceBusMessage, aio

from order_processor.contract import MAX_BODY_BYTES, InvalidMessage, parse_order
from order_processor.model import event_key

#: Service Bus refuses a MessageId (and a SessionId) longer than this.
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """One validated file and the message it becomes."""

    path: Path
    body: bytes
    message_id: str
    session_id: str
    application_properties: dict[str, str]

    def message(self) -> ServiceBusMessage:
        return ServiceBusMessage(
            self.body,
            message_id=self.message_id,
            session_id=self.session_id,
            content_type="application/json",
            application_properties=dict(self.application_properties),  # type: ignore[arg-type]
        )


def message_id_for(key: str) -> str:
    """The event key itself when it fits, else its digest (still deterministic)."""
    if len(key) <= MAX_ID_LENGTH:
        return key
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def prepare(
    paths: Sequence[Path], *, max_bytes: int = MAX_BODY_BYTES
) -> tuple[list[Prepared], list[str]]:
    """Validated messages, and one 'path: problem' line per file that is not contract v1."""
    prepared: list[Prepared] = []
    problems: list[str] = []
    for path in paths:
        body = path.read_bytes()
        try:
            order = parse_order(body, max_bytes=max_bytes)
        except InvalidMessage as exc:
            problems.append(f"{path}: {exc.description}")
            continue
        prepared.append(
            Prepared(
                path=path,
                body=body,
                message_id=message_id_for(event_key(order)),
                # Used when the subscription requires sessions; ignored by one that does not.
                session_id=order.order_id,
                # The application properties the inbound contract says the ERP sets.
                application_properties={
                    "eventType": order.event_type.value,
                    "orderId": order.order_id,
                },
            )
        )
    return prepared, problems


async def send(
    *, client: aio.ServiceBusClient, topic: str, messages: Sequence[Prepared]
) -> AsyncIterator[Prepared]:
    """One sender for all files; yields each file once sent, so a failure names the next one."""
    # keep_alive=None: a short-lived sender needs no keep-alive loop (it only slows close).
    async with client.get_topic_sender(topic, keep_alive=None) as sender:
        for prepared in messages:
            await sender.send_messages(prepared.message())
            yield prepared
