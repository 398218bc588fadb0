"""In-memory Service Bus entities: queues, topics with subscriptions, dead-letter sub-queues.

The broker knows nothing about AMQP. The proton thread hands it decoded messages and asks it for
the next one to deliver; tests inspect it from their own thread. Every public method therefore
holds one lock and returns snapshots, never the stored objects themselves.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

DEAD_LETTER_QUEUE = "$deadletterqueue"
SUBSCRIPTIONS = "subscriptions"
# The application properties the service stamps on a dead-lettered copy (the SDK reads them).
DEAD_LETTER_REASON = "DeadLetterReason"
DEAD_LETTER_DESCRIPTION = "DeadLetterErrorDescription"

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
    #: the AMQP encoding as sent; deliveries re-encode it with the broker's annotations
    raw: bytes = field(default=b"", repr=False, compare=False)

    def snapshot(self) -> StoredMessage:
        return replace(self, application_properties=dict(self.application_properties))


def canonical(path: str) -> str:
    """Entity names are case-insensitive; the SDK writes `Subscriptions` and `$DeadLetterQueue`."""
    return "/".join(part for part in path.strip().lower().split("/") if part)


class _Entity:
    """What a receiver attaches to: a queue, a subscription or a dead-letter sub-queue."""

    def __init__(self, path: str, dead_letter: _Entity | None, target: _Target | None) -> None:
        self.path = path
        self.dead_letter = dead_letter  # None for a dead-letter sub-queue itself
        self.target = target  # the queue (or topic) whose schedule feeds this entity
        self.messages: dict[int, StoredMessage] = {}  # by sequence number, in enqueue order
        self.completed: list[StoredMessage] = []


class _Target:
    """What a sender attaches to: a queue or a topic. Scheduled messages wait here."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entities: list[_Entity] = []
        self.scheduled: dict[int, StoredMessage] = {}


class Broker:
    def __init__(
        self,
        *,
        topics: Mapping[str, Sequence[str]],
        queues: Sequence[str],
        lock_duration_seconds: float,
        max_delivery_count: int,
        now: Callable[[], datetime] | None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = now or (lambda: datetime.now(UTC))
        self._offset = timedelta()
        self._lock_duration = timedelta(seconds=lock_duration_seconds)
        self._max_delivery_count = max_delivery_count
        # One counter for all entities: a topic's copies share the number it assigned on send.
        self._sequence = itertools.count(1)
        self._targets: dict[str, _Target] = {}
        self._entities: dict[str, _Entity] = {}
        self._locks: dict[uuid.UUID, _Entity] = {}
        for topic, subscriptions in topics.items():
            target = self._targets[canonical(topic)] = _Target(canonical(topic))
            for name in subscriptions:
                self._add_entity(f"{target.path}/{SUBSCRIPTIONS}/{canonical(name)}", target)
        for queue in queues:
            target = self._targets[canonical(queue)] = _Target(canonical(queue))
            self._add_entity(target.path, target)

    def _add_entity(self, path: str, target: _Target) -> None:
        dead_letter = _Entity(f"{path}/{DEAD_LETTER_QUEUE}", None, None)
        entity = _Entity(path, dead_letter, target)
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
        """Apply the clock: enqueue scheduled messages that are due, expire stale locks."""
        with self._lock:
            now = self.now()
            for target in self._targets.values():
                due = [m for m in target.scheduled.values() if _due(m, now)]
                for message in sorted(due, key=lambda m: m.sequence_number):
                    del target.scheduled[message.sequence_number]
                    message.enqueued_time = message.scheduled_enqueue_time
                    self._fan_out(target, message)
            for entity in self._entities.values():
                for message in list(entity.messages.values()):
                    if message.locked_until is not None and message.locked_until <= now:
                        self._unlock(entity, message, failed=True)

    # -- lookups ------------------------------------------------------------------------------

    def is_target(self, path: str) -> bool:
        return canonical(path) in self._targets

    def is_entity(self, path: str) -> bool:
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
        """Accept messages for a queue or topic (or, for tests, straight into any entity)."""
        with self._lock:
            self.tick()
            numbers = []
            for message in messages:
                message.sequence_number = next(self._sequence)
                numbers.append(message.sequence_number)
                if not self.is_target(path):  # test seeding of a subscription or sub-queue
                    message.enqueued_time = self.now()
                    self._entity(path).messages[message.sequence_number] = message
                elif _due(message, self.now()):
                    message.enqueued_time = self.now()
                    self._fan_out(self._target(path), message)
                else:
                    self._target(path).scheduled[message.sequence_number] = message
            return numbers

    def _fan_out(self, target: _Target, message: StoredMessage) -> None:
        for entity in target.entities:
            entity.messages[message.sequence_number] = message.snapshot()

    def cancel_scheduled(self, path: str, numbers: Iterable[int]) -> None:
        with self._lock:
            scheduled = self._target(path).scheduled
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
        message.locked_until = self.now() + self._lock_duration
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
        if entity.dead_letter is not None and message.delivery_count >= self._max_delivery_count:
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
                _, message = self._locked(token)
                message.locked_until = self.now() + self._lock_duration
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
        entity = self._entity(path)
        return self.active(entity.dead_letter.path if entity.dead_letter else entity.path)

    def completed(self, path: str) -> list[StoredMessage]:
        with self._lock:
            return [m.snapshot() for m in self._entity(path).completed]

    def scheduled(self, path: str) -> list[StoredMessage]:
        """Pending messages of a queue or topic; a subscription shows its topic's schedule."""
        with self._lock:
            self.tick()
            if self.is_target(path):
                target = self._target(path)
            else:
                target = self._entity(path).target or self._target(path)
            return [m.snapshot() for m in target.scheduled.values()]


def _due(message: StoredMessage, now: datetime) -> bool:
    return message.scheduled_enqueue_time is None or message.scheduled_enqueue_time <= now
