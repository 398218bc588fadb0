"""`ServiceBusDouble`: the broker and its AMQP server behind the API tests use."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from . import codec
from .broker import Broker, StoredMessage
from .server import AmqpServer

_DEFAULT_TOPICS: Mapping[str, Sequence[str]] = {"orders": ["order-sync"]}


class ServiceBusDouble:
    """A loopback Service Bus namespace for the real azure-servicebus client (sync and aio).

    Entity paths are case-insensitive: `orders/subscriptions/order-sync`, `orders-retry`, and
    either with `/$deadletterqueue`. Time is `now()` (wall clock by default) plus whatever
    `advance` added, so scheduled messages and lock expiry never need a real sleep.
    """

    def __init__(
        self,
        *,
        topics: Mapping[str, Sequence[str]] = _DEFAULT_TOPICS,
        queues: Sequence[str] = ("orders-retry",),
        lock_duration_seconds: float = 30.0,
        max_delivery_count: int = 10,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._broker = Broker(
            topics=topics,
            queues=queues,
            lock_duration_seconds=lock_duration_seconds,
            max_delivery_count=max_delivery_count,
            now=now,
        )
        self._server: AmqpServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the Service Bus double is already started")
        self._server = AmqpServer(self._broker)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> ServiceBusDouble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Service Bus double is not started")
        return self._server.port

    @property
    def connection_string(self) -> str:
        # UseDevelopmentEmulator=true makes the SDK keep the port and skip TLS (>= 7.12).
        return (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName=RootManageSharedAccessKey;"
            "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
        )

    # -- time ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._broker.now()

    def advance(self, seconds: float) -> None:
        """Move the broker clock: due scheduled messages become active, stale locks expire."""
        self._broker.advance(seconds)

    def release_due(self) -> None:
        """Apply the clock now (it is also applied on every broker operation and poll)."""
        self._broker.tick()

    # -- inspection and seeding (thread-safe) -------------------------------------------------

    def active(self, entity: str) -> list[StoredMessage]:
        """Available and locked-but-unsettled (and deferred) messages, in enqueue order."""
        return self._broker.active(entity)

    def dead_letters(self, entity: str) -> list[StoredMessage]:
        return self._broker.dead_letters(entity)

    def scheduled(self, entity: str) -> list[StoredMessage]:
        """Not yet due; for a subscription, what its topic holds scheduled."""
        return self._broker.scheduled(entity)

    def completed(self, entity: str) -> list[StoredMessage]:
        """Completed in peek-lock or removed by receive-and-delete."""
        return self._broker.completed(entity)

    def put(self, entity_or_topic: str, body: bytes, **props: Any) -> int:
        """Enqueue without the SDK; returns the sequence number.

        `props`: message_id, session_id, application_properties, subject, content_type,
        correlation_id, scheduled_enqueue_time. A topic fans out; a subscription or a
        `/$deadletterqueue` path receives the message directly.
        """
        message = codec.decode(codec.encode_new(body, **props))
        return self._broker.send(entity_or_topic, [message])[0]
