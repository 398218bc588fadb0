"""Where the stages put messages: the deliveries topic.

The accept stage publishes one delivery message per routed destination; any stage schedules a
retry copy there for one lane only (the `destination` application property, which each lane's
subscription filters on). `ServiceBusOutbox` sends with one pooled sender per process;
`MemoryOutbox` keeps the messages (the command line's in-process run, tests, the bench).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from azure.servicebus import ServiceBusMessage, aio
from azure.servicebus.exceptions import MessageSizeExceededError


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    """One message for the deliveries topic (a delivery, or a scheduled retry copy)."""

    body: bytes
    message_id: str
    #: which lane's subscription takes it (its SQL filter reads the `destination` property)
    destination: str
    application_properties: dict[str, str | int] = field(default_factory=dict)
    session_id: str | None = None
    #: None: now; else Service Bus holds it until then (retry later)
    scheduled_at: datetime | None = None


class MessageTooLarge(Exception):
    """A message is over the topic's maximum message size: sending it again cannot help."""


class Outbox(Protocol):
    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """Send all of them, or raise (MessageTooLarge, or any error meaning try again)."""

    async def aclose(self) -> None: ...


class ServiceBusOutbox:
    """The deliveries topic through one async sender per process, opened on first use.

    One publish at a time: the SDK's async sender is not safe for concurrent use. Every caller
    that finds its link closed (on first use, or after a link error) opens it again, closing the
    others' half-open handler, and concurrent first sends then all fail with "Handler shutting
    down" (Azure/azure-sdk-for-python#36334, #35618; azure-servicebus 7.15 still does it).
    """

    def __init__(self, client: aio.ServiceBusClient, *, topic: str) -> None:
        self._client = client
        self._topic = topic
        self._sender: aio.ServiceBusSender | None = None
        self._lock = asyncio.Lock()
        self._sending = asyncio.Lock()
        #: send operations made (the bench counts Service Bus operations per order)
        self.sends = 0

    async def _get_sender(self) -> aio.ServiceBusSender:
        async with self._lock:
            if self._sender is None:
                self._sender = self._client.get_topic_sender(self._topic)
            return self._sender

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        async with self._sending:
            await self._publish(messages)

    async def _publish(self, messages: Sequence[Outgoing]) -> None:
        sender = await self._get_sender()
        batch = await sender.create_message_batch()
        try:
            for outgoing in messages:
                message = _message(outgoing)
                try:
                    batch.add_message(message)
                except ValueError:
                    # The batch is full (a batch is at most one maximum-size message): send
                    # it and start the next. Re-sends after a failure are duplicates the
                    # topic's duplicate detection drops.
                    if len(batch) == 0:
                        raise _too_large(outgoing) from None
                    await self._send(sender, batch)
                    batch = await sender.create_message_batch()
                    try:
                        batch.add_message(message)
                    except ValueError:
                        raise _too_large(outgoing) from None
            if len(batch):
                await self._send(sender, batch)
        except MessageSizeExceededError as exc:
            raise MessageTooLarge(str(exc)) from exc

    async def _send(self, sender: aio.ServiceBusSender, batch: object) -> None:
        self.sends += 1
        await sender.send_messages(batch)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        if self._sender is not None:
            await self._sender.close()
        await self._client.close()


def _too_large(outgoing: Outgoing) -> MessageTooLarge:
    return MessageTooLarge(
        f"a delivery message of {len(outgoing.body)} bytes is over the topic's maximum message size"
    )


def _message(outgoing: Outgoing) -> ServiceBusMessage:
    return ServiceBusMessage(
        outgoing.body,
        message_id=outgoing.message_id,
        session_id=outgoing.session_id,
        content_type="application/json",
        application_properties=dict(outgoing.application_properties),  # type: ignore[arg-type]
        scheduled_enqueue_time_utc=outgoing.scheduled_at,
    )


class MemoryOutbox:
    """Keeps what was published, in order: for the in-process run, tests and the bench."""

    def __init__(self) -> None:
        self.messages: list[Outgoing] = []
        #: testing hook: when set, `publish` raises it (the namespace unreachable)
        self.failure: Exception | None = None

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        if self.failure is not None:
            raise self.failure
        self.messages.extend(messages)

    def take(self) -> list[Outgoing]:
        """What was published since the last take (and forget it)."""
        taken, self.messages = self.messages, []
        return taken

    async def aclose(self) -> None:
        return None
