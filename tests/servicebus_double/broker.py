"""In-memory Service Bus entities: queues, topics with subscriptions, dead-letter sub-queues.

Per entity, as the service has them: a subscription's rule (a SQL filter, `sqlfilter`), duplicate
detection on a queue or topic, message time to live (with or without dead-lettering on expiry),
max delivery count and lock duration. The broker knows nothing about AMQP. The proton thread
hands it decoded messages and asks it for the next one to deliver; tests inspect it (and create
entities) from their own thread. Every public method therefore holds one lock and returns
snapshots, never the stored objects themselves.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .sqlfilter import TRUE_FILTER, FilterNotSupported, SqlFilter

DEAD_LETTER_QUEUE = "$deadletterqueue"
SUBSCRIPTIONS = "subscriptions"
# The application properties the service stamps on a dead-lettered copy (the SDK reads them).
DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"
#: what the service stamps on a message that expired in an entity dead-lettering on expiry
EXPIRED_REASON = "TTLExpiredException"
EXPIRED_DESCRIPTION = "The message expired and was dead lettered."
#: the service's bounds of a duplicate detection window
MIN_DUPLICATE_WINDOW = timedelta(seconds=20)
MAX_DUPLICATE_WINDOW = timedelta(days=7)

Outcome = Literal["complete", "abandon", "release", "defer", "dead-letter"]


class BrokerError(Exception):
    """A request the service would refuse; `condition` is the AMQP error condition it uses."""

    condition = "amqp:internal-error"
    status = 500


class EntityNotFound(BrokerError):
    condition = "amqp:not-found"
    status = 404


class MessageNotFound(BrokerError):
    condition = "com.microsoft:message-not-found"
    status = 404


class LockLost(BrokerError):
    condition = "com.microsoft:message-lock-lost"
    status = 410


class NotAllowed(BrokerError):
    condition = "amqp:not-allowed"
    status = 400


class NotModelled(BrokerError):
    """Valid on the service, but outside what the double models: refused loudly."""

    condition = "amqp:not-implemented"
    status = 501


class MessageTooLarge(BrokerError):
    condition = "amqp:link:message-size-exceeded"
    status = 413


@dataclass
class StoredMessage:
    body: bytes
    message_id: str | None = None
    session_id: str | None = None
    application_properties: dict[str, Any] = field(default_factory=dict)
    scheduled_enqueue_time: datetime | None = None
    enqueued_time: datetime | None = None
    sequence_number: int = 0
    #: failed deliveries so far (abandons, lock expiries): what the AMQP header carries
    delivery_count: int = 0
    dead_letter_reason: str | None = None
    dead_letter_error_description: str | None = None
    subject: str | None = None
    content_type: str | None = None
    correlation_id: str | None = None
    lock_token: uuid.UUID | None = None
    locked_until: datetime | None = None
    deferred: bool = False
    #: the sender's time to live (the header's ttl), capped by the entities' defaults once enqueued
    time_to_live: timedelta | None = None
    #: enqueued time + the effective time to live, once in an entity
    expires_at: datetime | None = None
    #: the AMQP encoding as sent; deliveries re-encode it with the broker's annotations
    raw: bytes = field(default=b"", repr=False, compare=False)

    def snapshot(self) -> StoredMessage:
        return replace(self, application_properties=dict(self.application_properties))


def canonical(path: str) -> str:
    """Entity names are case-insensitive; the SDK writes `Subscriptions` and `$DeadLetterQueue`."""
    return "/".join(part for part in path.strip().lower().split("/") if part)


@dataclass(frozen=True, slots=True)
class Discarded:
    """A message a queue or topic accepted from its sender but never enqueued anywhere."""

    message: StoredMessage
    #: "duplicate" (duplicate detection), "unmatched" (no subscription's rule took it), or
    #: "filter-error: ..." (a rule could not be evaluated; the double does not model it)
    reason: str


class _Entity:
    """What a receiver attaches to: a queue, a subscription or a dead-letter sub-queue."""

    def __init__(
        self,
        path: str,
        dead_letter: _Entity | None,
        target: _Target | None,
        *,
        rule: SqlFilter | None = None,
        max_delivery_count: int = 10,
        lock_duration: timedelta = timedelta(seconds=30),
        default_ttl: timedelta | None = None,
        dead_letter_on_expiration: bool = False,
    ) -> None:
        self.path = path
        self.dead_letter = dead_letter  # None for a dead-letter sub-queue itself
        self.target = target  # the queue (or topic) whose schedule feeds this entity
        self.rule = rule  # a subscription's; None: takes everything (a queue)
        self.max_delivery_count = max_delivery_count
        self.lock_duration = lock_duration
        self.default_ttl = default_ttl
        self.dead_letter_on_expiration = dead_letter_on_expiration
        self.messages: dict[int, StoredMessage] = {}  # by sequence number, in enqueue order
        self.completed: list[StoredMessage] = []
        self.expired: list[StoredMessage] = []  # dropped on expiry (no dead-lettering)

    def takes(self, message: StoredMessage) -> bool:
        return self.rule is None or self.rule.matches(message.application_properties)


class _Target:
    """What a sender attaches to: a queue or a topic. Scheduled messages wait here."""

    def __init__(
        self,
        path: str,
        *,
        topic: bool,
        duplicate_window: timedelta | None = None,
        default_ttl: timedelta | None = None,
    ) -> None:
        self.path = path
        self.topic = topic
        self.entities: list[_Entity] = []
        self.scheduled: dict[int, StoredMessage] = {}
        self.duplicate_window = duplicate_window
        self.default_ttl = default_ttl
        #: duplicate detection's history: MessageId -> when a message with it was accepted
        self.seen: dict[str, datetime] = {}
        self.discarded: list[Discarded] = []


def _check_duplicate_window(window: timedelta | None) -> None:
    if window is not None and not MIN_DUPLICATE_WINDOW <= window <= MAX_DUPLICATE_WINDOW:
        raise ValueError(
            f"a duplicate detection window is 20 seconds to 7 days on the service, not {window}"
        )


def _check_ttl(ttl: timedelta | None) -> None:
    if ttl is not None and ttl <= timedelta():
        raise ValueError(f"a default message time to live must be positive, not {ttl}")


class Broker:
    def __init__(
        self,
        *,
        topics: Mapping[str, Sequence[str]],
        queues: Sequence[str],
        lock_duration_seconds: float,
        max_delivery_count: int,
        max_message_size: int = 256 * 1024,
        now: Callable[[], datetime] | None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = now or (lambda: datetime.now(UTC))
        self._offset = timedelta()
        self._lock_duration = timedelta(seconds=lock_duration_seconds)
        self._max_delivery_count = max_delivery_count
        if max_message_size < 1024:
            raise ValueError(f"a max message size of {max_message_size} bytes is too small")
        #: what the double advertises on its links and refuses above (a single message)
        self.max_message_size = max_message_size
        # One counter for all entities: a topic's copies share the number it assigned on send.
        self._sequence = itertools.count(1)
        self._targets: dict[str, _Target] = {}
        self._entities: dict[str, _Entity] = {}
        self._locks: dict[uuid.UUID, _Entity] = {}
        for topic, subscriptions in topics.items():
            self.create_topic(topic)
            for name in subscriptions:
                self.create_subscription(topic, name)
        for queue in queues:
            self.create_queue(queue)

    @property
    def max_batch_size(self) -> int:
        """A batch is at most one maximum-size message, and never over 1 MiB (Premium)."""
        return min(self.max_message_size, 1024 * 1024)

    # -- set-up -------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        *,
        duplicate_detection_window: timedelta | None = None,
        default_message_time_to_live: timedelta | None = None,
    ) -> str:
        _check_duplicate_window(duplicate_detection_window)
        _check_ttl(default_message_time_to_live)
        with self._lock:
            path = self._new_path(name)
            self._targets[path] = _Target(
                path,
                topic=True,
                duplicate_window=duplicate_detection_window,
                default_ttl=default_message_time_to_live,
            )
            return path

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
        """A subscription with one rule (a SQL filter; the default rule `1=1` takes all)."""
        parsed = SqlFilter(rule)  # refuses what it does not model, here rather than later
        _check_ttl(default_message_time_to_live)
        with self._lock:
            target = self._target(topic)
            if not target.topic:
                raise ValueError(f"{topic!r} is a queue: only a topic has subscriptions")
            path = self._new_path(f"{target.path}/{SUBSCRIPTIONS}/{name}")
            self._add_entity(
                path,
                target,
                rule=parsed,
                max_delivery_count=max_delivery_count,
                lock_duration_seconds=lock_duration_seconds,
                default_ttl=default_message_time_to_live,
                dead_letter_on_expiration=dead_lettering_on_message_expiration,
            )
            return path

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
        _check_duplicate_window(duplicate_detection_window)
        _check_ttl(default_message_time_to_live)
        with self._lock:
            path = self._new_path(name)
            target = self._targets[path] = _Target(
                path, topic=False, duplicate_window=duplicate_detection_window
            )
            self._add_entity(
                path,
                target,
                rule=None,
                max_delivery_count=max_delivery_count,
                lock_duration_seconds=lock_duration_seconds,
                default_ttl=default_message_time_to_live,
                dead_letter_on_expiration=dead_lettering_on_message_expiration,
            )
            return path

    def _new_path(self, name: str) -> str:
        path = canonical(name)
        if not path or path in self._targets or path in self._entities:
            raise ValueError(f"an entity named {name!r} already exists (or the name is empty)")
        return path

    def _add_entity(
        self,
        path: str,
        target: _Target,
        *,
        rule: SqlFilter | None,
        max_delivery_count: int | None,
        lock_duration_seconds: float | None,
        default_ttl: timedelta | None,
        dead_letter_on_expiration: bool,
    ) -> None:
        dead_letter = _Entity(f"{path}/{DEAD_LETTER_QUEUE}", None, None)
        lock_duration = (
            self._lock_duration
            if lock_duration_seconds is None
            else timedelta(seconds=lock_duration_seconds)
        )
        entity = _Entity(
            path,
            dead_letter,
            target,
            rule=rule,
            max_delivery_count=max_delivery_count or self._max_delivery_count,
            lock_duration=lock_duration,
            default_ttl=default_ttl,
            dead_letter_on_expiration=dead_letter_on_expiration,
        )
        dead_letter.lock_duration = lock_duration
        target.entities.append(entity)
        self._entities[entity.path] = entity
        self._entities[dead_letter.path] = dead_letter

    # -- clock --------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)
            self.tick()

    def to_wall_clock(self, at: datetime) -> datetime:
        """Lock expiries go on the wire in real time: the SDK checks them against its own clock."""
        return datetime.now(UTC) + (at - self.now())

    def tick(self) -> None:
        """Apply the clock: enqueue scheduled messages that are due, expire stale locks, then
        expire messages past their time to live."""
        with self._lock:
            now = self.now()
            for target in self._targets.values():
                due = [m for m in target.scheduled.values() if _due(m, now)]
                for message in sorted(due, key=lambda m: m.sequence_number):
                    del target.scheduled[message.sequence_number]
                    message.enqueued_time = message.scheduled_enqueue_time
                    try:
                        self._fan_out(target, message)
                    except FilterNotSupported as error:  # a subscription added since the send
                        target.discarded.append(Discarded(message, f"filter-error: {error}"))
            for entity in self._entities.values():
                for message in list(entity.messages.values()):
                    if message.locked_until is not None and message.locked_until <= now:
                        self._unlock(entity, message, failed=True)
            for entity in self._entities.values():
                if entity.dead_letter is None:
                    continue  # a dead-letter queue does not observe time to live
                for message in list(entity.messages.values()):
                    if _expired(message, now):
                        self._expire(entity, message)

    def _expire(self, entity: _Entity, message: StoredMessage) -> None:
        if entity.dead_letter_on_expiration:
            self._dead_letter(entity, message, EXPIRED_REASON, EXPIRED_DESCRIPTION)
        else:
            del entity.messages[message.sequence_number]
            entity.expired.append(message)

    # -- lookups ------------------------------------------------------------------------------

    def is_target(self, path: str) -> bool:
        with self._lock:
            return canonical(path) in self._targets

    def is_entity(self, path: str) -> bool:
        with self._lock:
            return canonical(path) in self._entities

    def _target(self, path: str) -> _Target:
        try:
            return self._targets[canonical(path)]
        except KeyError:
            raise EntityNotFound(
                f"no queue or topic {path!r}; have {sorted(self._targets)}"
            ) from None

    def _entity(self, path: str) -> _Entity:
        try:
            return self._entities[canonical(path)]
        except KeyError:
            known = sorted(self._entities)
            raise EntityNotFound(f"no queue or subscription {path!r}; have {known}") from None

    # -- sending ------------------------------------------------------------------------------

    def send(self, path: str, messages: Iterable[StoredMessage]) -> list[int]:
        """Accept messages for a queue or topic (or, for tests, straight into any entity).

        All or nothing, as a batch is on the service: a message the double cannot route (a rule
        it does not model) refuses the whole send before anything is enqueued. Duplicates (by
        MessageId, within the window) are accepted and dropped, scheduled ones included.
        """
        messages = list(messages)
        with self._lock:
            self.tick()
            if not self.is_target(path):  # test seeding of a subscription or sub-queue
                entity = self._entity(path)
                numbers = []
                for message in messages:
                    message.sequence_number = next(self._sequence)
                    message.enqueued_time = self.now()
                    self._enqueue(entity, message)
                    numbers.append(message.sequence_number)
                return numbers
            target = self._target(path)
            for message in messages:
                try:
                    self._routes(target, message)
                except FilterNotSupported as error:
                    raise NotModelled(str(error)) from None
            numbers = []
            now = self.now()
            for message in messages:
                message.sequence_number = next(self._sequence)
                numbers.append(message.sequence_number)
                if self._duplicate(target, message, now):
                    target.discarded.append(Discarded(message, "duplicate"))
                elif _due(message, now):
                    message.enqueued_time = now
                    self._fan_out(target, message)
                else:
                    target.scheduled[message.sequence_number] = message
            return numbers

    def _duplicate(self, target: _Target, message: StoredMessage, now: datetime) -> bool:
        """Whether duplicate detection drops it; otherwise its MessageId joins the history."""
        if target.duplicate_window is None or message.message_id is None:
            return False
        seen = target.seen.get(message.message_id)
        if seen is not None and now - seen < target.duplicate_window:
            return True
        target.seen[message.message_id] = now
        return False

    def _routes(self, target: _Target, message: StoredMessage) -> list[_Entity]:
        return [entity for entity in target.entities if entity.takes(message)]

    def _fan_out(self, target: _Target, message: StoredMessage) -> None:
        """Enqueue a copy in every subscription whose rule takes it; a topic message that no
        subscription takes is dropped, as the service drops it."""
        routes = self._routes(target, message)
        if not routes:
            target.discarded.append(Discarded(message.snapshot(), "unmatched"))
        for entity in routes:
            self._enqueue(entity, message.snapshot())

    def _enqueue(self, entity: _Entity, message: StoredMessage) -> None:
        if entity.dead_letter is not None:  # a dead-letter queue does not observe time to live
            ceilings = [
                ttl
                for ttl in (
                    entity.target.default_ttl if entity.target else None,
                    entity.default_ttl,
                )
                if ttl is not None
            ]
            if message.time_to_live is not None:
                message.time_to_live = min([message.time_to_live, *ceilings])
            effective = min(
                [t for t in (message.time_to_live, *ceilings) if t is not None], default=None
            )
            if effective is not None and message.enqueued_time is not None:
                message.expires_at = message.enqueued_time + effective
        entity.messages[message.sequence_number] = message

    def cancel_scheduled(self, path: str, numbers: Iterable[int]) -> None:
        with self._lock:
            scheduled = self._target(path).scheduled
            numbers = list(numbers)
            missing = [n for n in numbers if n not in scheduled]
            if missing:
                raise MessageNotFound(f"no scheduled messages with sequence numbers {missing}")
            for number in numbers:
                del scheduled[number]

    # -- receiving and settling ---------------------------------------------------------------

    def acquire(self, path: str, *, lock: bool) -> StoredMessage | None:
        """The next available message: locked (peek-lock) or removed (receive-and-delete)."""
        with self._lock:
            self.tick()
            entity = self._entity(path)
            for message in entity.messages.values():
                if message.lock_token is None and not message.deferred:
                    return self._take(entity, message, lock=lock)
            return None

    def _take(self, entity: _Entity, message: StoredMessage, *, lock: bool) -> StoredMessage:
        if not lock:
            del entity.messages[message.sequence_number]
            entity.completed.append(message)
            return message.snapshot()
        message.lock_token = uuid.uuid4()
        message.locked_until = self.now() + entity.lock_duration
        self._locks[message.lock_token] = entity
        return message.snapshot()

    def settle(
        self,
        token: uuid.UUID,
        outcome: Outcome,
        *,
        reason: str | None = None,
        description: str | None = None,
    ) -> None:
        with self._lock:
            self.tick()
            entity, message = self._locked(token)
            if outcome == "complete":
                self._unlock(entity, message, failed=False)
                del entity.messages[message.sequence_number]
                entity.completed.append(message)
            elif outcome == "dead-letter":
                if entity.dead_letter is None:
                    raise NotAllowed("a dead-lettered message cannot be dead-lettered again")
                self._unlock(entity, message, failed=False)
                self._dead_letter(entity, message, reason, description)
            else:
                message.deferred = message.deferred or outcome == "defer"
                # Released means "never handed to the application" (the SDK releases its unused
                # prefetch on close), so only an abandon counts as a failed delivery.
                self._unlock(entity, message, failed=outcome == "abandon")
                # Expiry waits while a message is locked, and applies as soon as it is not.
                if (
                    message.sequence_number in entity.messages
                    and entity.dead_letter is not None
                    and _expired(message, self.now())
                ):
                    self._expire(entity, message)

    def _locked(self, token: uuid.UUID) -> tuple[_Entity, StoredMessage]:
        entity = self._locks.get(token)
        if entity is not None:
            for message in entity.messages.values():
                if message.lock_token == token:
                    return entity, message
        raise LockLost(f"the lock {token} has expired or the message was already settled")

    def _unlock(self, entity: _Entity, message: StoredMessage, *, failed: bool) -> None:
        if message.lock_token is not None:
            self._locks.pop(message.lock_token, None)
        message.lock_token = None
        message.locked_until = None
        if not failed:
            return
        message.delivery_count += 1
        if entity.dead_letter is not None and message.delivery_count >= entity.max_delivery_count:
            description = f"Message could not be consumed after {message.delivery_count} attempts."
            self._dead_letter(entity, message, "MaxDeliveryCountExceeded", description)

    def _dead_letter(
        self, entity: _Entity, message: StoredMessage, reason: str | None, description: str | None
    ) -> None:
        assert entity.dead_letter is not None
        del entity.messages[message.sequence_number]
        message.dead_letter_reason = reason
        message.dead_letter_error_description = description
        message.deferred = False
        if reason is not None:
            message.application_properties[DEAD_LETTER_REASON] = reason
        if description is not None:
            message.application_properties[DEAD_LETTER_DESCRIPTION] = description
        entity.dead_letter.messages[message.sequence_number] = message

    def renew(self, tokens: Iterable[uuid.UUID]) -> list[datetime]:
        with self._lock:
            self.tick()
            expiries = []
            for token in tokens:
                entity, message = self._locked(token)
                message.locked_until = self.now() + entity.lock_duration
                expiries.append(message.locked_until)
            return expiries

    def peek(self, path: str, from_sequence: int, count: int) -> list[StoredMessage]:
        """Browse without locking; like the service, a queue's peek also shows its schedule."""
        with self._lock:
            self.tick()
            entity = self._entity(path)
            candidates = list(entity.messages.values())
            if entity.target is not None and entity.target.path == entity.path:
                candidates += entity.target.scheduled.values()
            chosen = [m for m in candidates if m.sequence_number >= from_sequence]
            chosen.sort(key=lambda m: m.sequence_number)
            return [m.snapshot() for m in chosen[:count]]

    def receive_deferred(
        self, path: str, numbers: Iterable[int], *, lock: bool
    ) -> list[StoredMessage]:
        with self._lock:
            self.tick()
            entity = self._entity(path)
            found = []
            for number in numbers:
                message = entity.messages.get(number)
                if message is None or not message.deferred or message.lock_token is not None:
                    raise MessageNotFound(f"no deferred message with sequence number {number}")
                found.append(self._take(entity, message, lock=lock))
            return found

    # -- inspection ---------------------------------------------------------------------------

    def active(self, path: str) -> list[StoredMessage]:
        with self._lock:
            self.tick()
            return [m.snapshot() for m in self._entity(path).messages.values()]

    def dead_letters(self, path: str) -> list[StoredMessage]:
        with self._lock:
            entity = self._entity(path)
            return self.active(entity.dead_letter.path if entity.dead_letter else entity.path)

    def completed(self, path: str) -> list[StoredMessage]:
        with self._lock:
            return [m.snapshot() for m in self._entity(path).completed]

    def expired(self, path: str) -> list[StoredMessage]:
        with self._lock:
            self.tick()
            return [m.snapshot() for m in self._entity(path).expired]

    def scheduled(self, path: str) -> list[StoredMessage]:
        """Pending messages of a queue or topic; a subscription shows its topic's schedule."""
        with self._lock:
            self.tick()
            if self.is_target(path):
                target = self._target(path)
            else:
                target = self._entity(path).target or self._target(path)
            return [m.snapshot() for m in target.scheduled.values()]

    def discarded(self, path: str) -> list[Discarded]:
        with self._lock:
            self.tick()
            return [Discarded(d.message.snapshot(), d.reason) for d in self._target(path).discarded]


def _due(message: StoredMessage, now: datetime) -> bool:
    return message.scheduled_enqueue_time is None or message.scheduled_enqueue_time <= now


def _expired(message: StoredMessage, now: datetime) -> bool:
    """Past its time to live, and neither locked nor deferred (those are not expired)."""
    return (
        message.expires_at is not None
        and message.expires_at <= now
        and message.lock_token is None
        and not message.deferred
    )
