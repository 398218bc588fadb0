"""One Service Bus double per test module, with fresh entities per test.

Starting a double and opening SDK links is what costs time, so a module shares one double; each
test takes its own topic, subscription and retry queue from it (`Namespace.fresh`), so tests never
see each other's messages. Use it from a test module as:

    namespace = module_namespace()          # a module-scoped fixture

    @pytest.fixture
    def entities(namespace: Namespace) -> Entities:
        return namespace.fresh()
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.servicebus_double import ServiceBusDouble

SIZE = 16  # entity sets per module


@dataclass(frozen=True, slots=True)
class Entities:
    topic: str
    subscription: str
    retry_queue: str
    connection_string: str

    @property
    def subscription_path(self) -> str:
        return f"{self.topic}/subscriptions/{self.subscription}"

    @property
    def dead_letters(self) -> str:
        return f"{self.subscription_path}/$deadletterqueue"

    @property
    def retry_dead_letters(self) -> str:
        return f"{self.retry_queue}/$deadletterqueue"

    def env(self, **extra: str) -> dict[str, str]:
        """The app settings (environment) that point the CLI at these entities."""
        return {
            "ServiceBusConnection": self.connection_string,
            "ORDERS_TOPIC": self.topic,
            "ORDERS_SUBSCRIPTION": self.subscription,
            "ORDERS_RETRY_QUEUE": self.retry_queue,
            **extra,
        }

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The same as `load_settings` overrides (blocks `core` and `service_bus`)."""
        return {
            "core": {
                "orders_topic": self.topic,
                "orders_subscription": self.subscription,
                "orders_retry_queue": self.retry_queue,
            },
            "service_bus": {"connection": self.connection_string},
        }


class Namespace:
    def __init__(self) -> None:
        self._back = timedelta()
        self._lock = threading.Lock()
        self.double = ServiceBusDouble(
            topics={f"orders-{i}": ["order-sync"] for i in range(SIZE)},
            queues=[f"orders-retry-{i}" for i in range(SIZE)],
            now=lambda: datetime.now(UTC) - self._back,
        )
        self._numbers = itertools.count()

    def fresh(self) -> Entities:
        number = next(self._numbers)
        if number >= SIZE:
            raise RuntimeError(f"more than {SIZE} tests in one module: raise SIZE")
        return Entities(
            topic=f"orders-{number}",
            subscription="order-sync",
            retry_queue=f"orders-retry-{number}",
            connection_string=self.double.connection_string,
        )

    def put(self, entity: str, body: bytes, *, age: timedelta = timedelta(), **props: Any) -> int:
        """Seed a message enqueued `age` ago (the broker's clock is set back while it is put)."""
        with self._lock:
            self._back = age
            try:
                return self.double.put(entity, body, **props)
            finally:
                self._back = timedelta()


def module_namespace() -> Any:
    @pytest.fixture(scope="module")
    def namespace() -> Iterator[Namespace]:
        running = Namespace()
        with running.double:
            yield running

    return namespace


def dead_letter_properties(reason: str, description: str, **more: Any) -> dict[str, Any]:
    """What the service stamps on a dead letter (the SDK reads the reason from these)."""
    return {"DeadLetterReason": reason, "DeadLetterErrorDescription": description, **more}
