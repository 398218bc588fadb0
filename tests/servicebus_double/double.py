"""`ServiceBusDouble`: the broker and its AMQP server behind the API tests use."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from . import codec
from .broker import Broker, Discarded, StoredMessage
from .server import AmqpServer
from .sqlfilter import TRUE_FILTER

_DEFAULT_TOPICS: Mapping[str, Sequence[str]] = {"orders": ["order-sync"]}
STANDARD_MAX_MESSAGE_SIZE = 256 * 1024


class ServiceBusDouble:
    """A loopback Service Bus namespace for the real azure-servicebus client (sync and aio).

    Entity paths are case-insensitive: `orders/subscriptions/order-sync`, a queue's name, and
    either with `/$deadletterqueue`. Time is `now()` (wall clock by default) plus whatever
    `advance` added, so scheduled messages, lock expiry and time to live never need a real sleep.

    `topics` and `queues` are plain entities (subscriptions with the default rule `1=1`); the
    `create_*` methods add entities with rules, duplicate detection, time to live and their own
    max delivery count, before or after `start`. `max_message_size` is what the links advertise
    (the SDK sizes batches from it) and what a send may not exceed: 256 KiB, as on Standard.
    """

    def __init__(
        self,
        *,
        topics: Mapping[str, Sequence[str]] = _DEFAULT_TOPICS,
        queues: Sequence[str] = (),
        lock_duration_seconds: float = 30.0,
        max_delivery_count: int = 10,
        max_message_size: int = STANDARD_MAX_MESSAGE_SIZE,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._broker = Broker(
            topics=topics,
            queues=queues,
            lock_duration_seconds=lock_duration_seconds,
            max_delivery_count=max_delivery_count,
            max_message_size=max_message_size,
            now=now,
        )
        self._server: AmqpServer | None = None

    # -- entities (thread-safe; also while running) ------------------------------------------

    def create_topic(
        self,
        name: str,
        *,
        duplicate_detection_window: timedelta | None = None,
        default_message_time_to_live: timedelta | None = None,
    ) -> str:
        """A topic; with a window, duplicate detection drops a MessageId seen within it (the
        send still succeeds). Returns its path."""
        return self._broker.create_topic(
            name,
            duplicate_detection_window=duplicate_detection_window,
            default_message_time_to_live=default_message_time_to_live,
        )

    def create_subscription(
        self,
        topic: str,
        name: str,
        *,
        rule: str = TRUE_FILTER,
        max_delivery_count: int | None = None,
        lock_duration_seconds: float | None = None,
        default_message_time_to_live: timedelta | None = None,
        dead_lettering_on_message_expiration: bool = False,
    ) -> str:
        """A subscription whose one rule is a SQL filter on application properties (see
        `sqlfilter`: what it does not model raises FilterNotSupported here). Returns its path."""
        return self._broker.create_subscription(
            topic,
            name,
            rule=rule,
            max_delivery_count=max_delivery_count,
            lock_duration_seconds=lock_duration_seconds,
            default_message_time_to_live=default_message_time_to_live,
            dead_lettering_on_message_expiration=dead_lettering_on_message_expiration,
        )

    def create_queue(
        self,
        name: str,
        *,
        duplicate_detection_window: timedelta | None = None,
        max_delivery_count: int | None = None,
        lock_duration_seconds: float | None = None,
        default_message_time_to_live: timedelta | None = None,
        dead_lettering_on_message_expiration: bool = False,
    ) -> str:
        return self._broker.create_queue(
            name,
            duplicate_detection_window=duplicate_detection_window,
            max_delivery_count=max_delivery_count,
            lock_duration_seconds=lock_duration_seconds,
            default_message_time_to_live=default_message_time_to_live,
            dead_lettering_on_message_expiration=dead_lettering_on_message_expiration,
        )

    @property
    def max_message_size(self) -> int:
        return self._broker.max_message_size

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

    def expired(self, entity: str) -> list[StoredMessage]:
        """Dropped on expiry (an entity that dead-letters on expiry has them in its DLQ)."""
        return self._broker.expired(entity)

    def discarded(self, topic_or_queue: str) -> list[Discarded]:
        """Accepted from a sender but never enqueued: duplicates, and topic messages that no
        subscription's rule took."""
        return self._broker.discarded(topic_or_queue)

    def put(self, entity_or_topic: str, body: bytes, **props: Any) -> int:
        """Enqueue without the SDK; returns the sequence number.

        `props`: message_id, session_id, application_properties, subject, content_type,
        correlation_id, scheduled_enqueue_time, time_to_live. A topic applies duplicate
        detection and its subscriptions' rules; a subscription or a `/$deadletterqueue` path
        receives the message directly.
        """
        message = codec.decode(codec.encode_new(body, **props))
        return self._broker.send(entity_or_topic, [message])[0]
