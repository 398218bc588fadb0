"""One Service Bus double per test module, with a fresh lanes topology per test.

Starting a double and opening SDK links is what costs time, so a module shares one double; each
test takes its own entities from it (`Namespace.fresh`), so tests never see each other's
messages. The topology is the one the infrastructure deploys (see docs/DESIGN "The flow"):

    orders-<n>               topic, duplicate detection
      order-sync             subscription (default rule 1=1): the accept stage
    order-deliveries-<n>     topic, duplicate detection
      <lane subscription>    one per registered destination, rule  destination = '<name>'
      accept-retry           rule  destination = 'accept'  (the accept stage's retry copies)

The lanes come from the destination registry at `fresh()` time, so a destination registered for
a test (`order_processor.destinations.registered`) gets its lane too. `Entities.env()` and
`Entities.overrides()` point the app's settings at them. Use it from a test module as:

    namespace = module_namespace()          # a module-scoped fixture

    @pytest.fixture
    def entities(namespace: Namespace) -> Entities:
        return namespace.fresh()
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from order_processor.accept import ACCEPT_LANE
from order_processor.delivery import DESTINATION
from order_processor.destinations import DESTINATIONS
from tests.servicebus_double import ServiceBusDouble, StoredMessage

# As infra/main.bicep sets them (duplicateDetectionWindow, messageTimeToLive, lockDuration,
# maxDeliveryCount, deadLetteringOnMessageExpiration).
DUPLICATE_DETECTION_WINDOW = timedelta(hours=1)
MESSAGE_TIME_TO_LIVE = timedelta(days=14)
LOCK_DURATION_SECONDS = 60.0
MAX_DELIVERY_COUNT = 10
ORDERS_SUBSCRIPTION = "order-sync"
ACCEPT_RETRY_SUBSCRIPTION = "accept-retry"


def lane_rule(lane: str) -> str:
    """The SQL filter of a lane's subscription: its name in the `destination` property."""
    quoted = lane.replace("'", "''")
    return f"{DESTINATION} = '{quoted}'"


@dataclass(frozen=True, slots=True)
class Entities:
    """One test's topology: the orders topic and subscription, the deliveries topic and one
    subscription per lane (each destination's, and the accept stage's retry lane)."""

    topic: str
    subscription: str
    deliveries_topic: str
    accept_retry_subscription: str
    #: destination name -> its lane's subscription of the deliveries topic (registry order)
    lane_subscriptions: Mapping[str, str]
    connection_string: str

    @property
    def subscription_path(self) -> str:
        """The orders subscription (what the ERP's messages reach)."""
        return f"{self.topic}/subscriptions/{self.subscription}"

    @property
    def dead_letters(self) -> str:
        """The orders subscription's dead-letter queue (poison, found at accept)."""
        return f"{self.subscription_path}/$deadletterqueue"

    @property
    def lanes(self) -> tuple[str, ...]:
        """Every lane: the destinations', then `accept`."""
        return (*self.lane_subscriptions, ACCEPT_LANE)

    def lane_subscription(self, lane: str) -> str:
        if lane == ACCEPT_LANE:
            return self.accept_retry_subscription
        try:
            return self.lane_subscriptions[lane]
        except KeyError:
            raise KeyError(f"no lane {lane!r}; have {self.lanes}") from None

    def lane(self, lane: str) -> str:
        """The path of a lane's subscription (`lane`: a destination's name, or `accept`)."""
        return f"{self.deliveries_topic}/subscriptions/{self.lane_subscription(lane)}"

    def lane_dead_letters(self, lane: str) -> str:
        return f"{self.lane(lane)}/$deadletterqueue"

    def env(self, **extra: str) -> dict[str, str]:
        """The app settings (environment) that point the app and the CLI at these entities."""
        return {
            "ServiceBusConnection": self.connection_string,
            "ORDERS_TOPIC": self.topic,
            "ORDERS_SUBSCRIPTION": self.subscription,
            "DELIVERIES_TOPIC": self.deliveries_topic,
            "ACCEPT_RETRY_SUBSCRIPTION": self.accept_retry_subscription,
            **{
                DESTINATIONS[name].subscription_setting(): subscription
                for name, subscription in self.lane_subscriptions.items()
                if name in DESTINATIONS
            },
            **extra,
        }

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The same as `load_settings` overrides: blocks `core`, `service_bus` and each
        destination's `subscription` (merge them into a test's own destination blocks)."""
        return {
            "core": {
                "orders_topic": self.topic,
                "orders_subscription": self.subscription,
                "deliveries_topic": self.deliveries_topic,
                "accept_retry_subscription": self.accept_retry_subscription,
            },
            "service_bus": {"connection": self.connection_string},
            **{
                name: {"subscription": subscription}
                for name, subscription in self.lane_subscriptions.items()
            },
        }


class Namespace:
    def __init__(self, **options: Any) -> None:
        """`options` go to the ServiceBusDouble (e.g. max_message_size)."""
        self._back = timedelta()
        self._lock = threading.Lock()
        self.double = ServiceBusDouble(
            topics={}, now=lambda: datetime.now(UTC) - self._back, **options
        )
        self._numbers = itertools.count()

    def fresh(self) -> Entities:
        """A new topology (see the module's docstring), its lanes from the registry as it is."""
        number = next(self._numbers)
        orders, deliveries = f"orders-{number}", f"order-deliveries-{number}"
        for topic in (orders, deliveries):
            self.double.create_topic(
                topic,
                duplicate_detection_window=DUPLICATE_DETECTION_WINDOW,
                default_message_time_to_live=MESSAGE_TIME_TO_LIVE,
            )
        self._subscription(orders, ORDERS_SUBSCRIPTION, rule="1=1")
        lanes = {
            name: cls.settings_class.default_subscription() for name, cls in DESTINATIONS.items()
        }
        for name, subscription in lanes.items():
            self._subscription(deliveries, subscription, rule=lane_rule(name))
        self._subscription(deliveries, ACCEPT_RETRY_SUBSCRIPTION, rule=lane_rule(ACCEPT_LANE))
        return Entities(
            topic=orders,
            subscription=ORDERS_SUBSCRIPTION,
            deliveries_topic=deliveries,
            accept_retry_subscription=ACCEPT_RETRY_SUBSCRIPTION,
            lane_subscriptions=MappingProxyType(lanes),
            connection_string=self.double.connection_string,
        )

    def _subscription(self, topic: str, name: str, *, rule: str) -> None:
        self.double.create_subscription(
            topic,
            name,
            rule=rule,
            max_delivery_count=MAX_DELIVERY_COUNT,
            lock_duration_seconds=LOCK_DURATION_SECONDS,
            default_message_time_to_live=MESSAGE_TIME_TO_LIVE,
            dead_lettering_on_message_expiration=True,
        )

    def by_lane(self, entities: Entities) -> dict[str, list[StoredMessage]]:
        """What each lane's subscription holds (active, locked and deferred)."""
        return {lane: self.double.active(entities.lane(lane)) for lane in entities.lanes}

    def put(self, entity: str, body: bytes, *, age: timedelta = timedelta(), **props: Any) -> int:
        """Seed a message enqueued `age` ago (the broker's clock is set back while it is put)."""
        with self._lock:
            self._back = age
            try:
                return self.double.put(entity, body, **props)
            finally:
                self._back = timedelta()


def module_namespace(**options: Any) -> Any:
    """A module-scoped `namespace` fixture; `options` go to the ServiceBusDouble."""

    @pytest.fixture(scope="module")
    def namespace() -> Iterator[Namespace]:
        running = Namespace(**options)
        with running.double:
            yield running

    return namespace


def dead_letter_properties(reason: str, description: str, **more: Any) -> dict[str, Any]:
    """What the service stamps on a dead letter (the SDK reads the reason from these)."""
    return {"DeadLetterReason": reason, "DeadLetterErrorDescription": description, **more}
