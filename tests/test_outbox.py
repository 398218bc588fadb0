"""ServiceBusOutbox against the Service Bus double: what the real SDK publishes to the deliveries
topic, and what each lane's subscription then holds.

The double applies the lanes' rules (`destination = '<name>'`), the topic's duplicate detection
and its maximum message size as the service does, so these tests check the app's side of each:
every delivery message reaches its lane and no other, a re-publish is dropped, a retry copy
waits for its time on its lane only, and the batching never loses or over-fills a message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import httpx
import pytest
from azure.servicebus.aio import ServiceBusClient
from pydantic_settings import SettingsConfigDict

from order_processor.accept import ACCEPT_LANE, outgoing
from order_processor.contract import EventType, parse_order
from order_processor.delivery import DESTINATION, DeliveryMessage
from order_processor.destinations import DESTINATIONS, Destination, registered
from order_processor.destinations.base import DestinationSettings, Skip
from order_processor.model import (
    MessageMetadata,
    Outcome,
    Settlement,
    TrackingEvent,
    enriched_event,
    event_key,
)
from order_processor.outbox import MessageTooLarge, Outgoing, ServiceBusOutbox
from order_processor.redelivery import (
    FIRST_SEEN,
    ORIGINAL_MESSAGE_ID,
    RETRY_ATTEMPT,
    RetryLater,
    RetrySchedule,
)
from tests.conftest import sample
from tests.servicebus_double import STANDARD_MAX_MESSAGE_SIZE, StoredMessage
from tests.servicebus_fixtures import Entities, Namespace, module_namespace

namespace = module_namespace()

ORDERS = ("order-created.json", "order-updated.json")
ACCEPTED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


def service_bus_outbox(entities: Entities) -> ServiceBusOutbox:
    client = ServiceBusClient.from_connection_string(entities.connection_string, retry_total=0)
    return ServiceBusOutbox(client, topic=entities.deliveries_topic)


@pytest.fixture
async def sb_outbox(entities: Entities) -> AsyncIterator[ServiceBusOutbox]:
    box = service_bus_outbox(entities)
    yield box
    await box.aclose()


def event_of(name: str, message_id: str = "m-1") -> TrackingEvent:
    order = parse_order(sample(name))
    return enriched_event(order, None, key=event_key(order), message_id=message_id)


def delivery(name: str, destination: str) -> DeliveryMessage:
    return DeliveryMessage.of(
        event_of(name), destination=destination, accepted_at=ACCEPTED_AT, order_enqueued_at=None
    )


def deliveries() -> list[DeliveryMessage]:
    """What the accept stage publishes for two orders: one message per destination each."""
    return [delivery(name, lane) for name in ORDERS for lane in DESTINATIONS]


def sized(number: int, size: int) -> Outgoing:
    """A delivery message with a body of about `size` bytes, for a lane by turns."""
    lane = list(DESTINATIONS)[number % len(DESTINATIONS)]
    return Outgoing(
        body=b'{"pad": "' + b"x" * size + b'"}',
        message_id=f"sized-{number}:{lane}",
        destination=lane,
        application_properties={DESTINATION: lane, "n": number},
    )


async def test_each_delivery_message_lands_in_its_lane_only_with_its_identity(
    namespace: Namespace, entities: Entities, sb_outbox: ServiceBusOutbox
) -> None:
    published = deliveries()
    await sb_outbox.publish([outgoing(m) for m in published])

    assert sb_outbox.sends == 1  # eight small messages: one batch
    held = namespace.by_lane(entities)
    assert held.pop(ACCEPT_LANE) == []
    assert list(held) == list(DESTINATIONS)
    for lane, messages in held.items():
        expected = [m for m in published if m.destination == lane]
        assert [m.message_id for m in messages] == [m.message_id for m in expected]
        for stored, message in zip(messages, expected, strict=True):
            assert stored.message_id == f"{message.event_key}:{lane}"
            assert stored.session_id == message.order.order_id
            assert stored.content_type == "application/json"
            assert stored.application_properties == message.application_properties()
            assert stored.application_properties[DESTINATION] == lane
            assert DeliveryMessage.model_validate_json(stored.body) == message
    assert namespace.double.discarded(entities.deliveries_topic) == []


async def test_a_re_publish_is_dropped_by_duplicate_detection(
    namespace: Namespace, entities: Entities, sb_outbox: ServiceBusOutbox
) -> None:
    messages = [outgoing(m) for m in deliveries()]
    await sb_outbox.publish(messages)
    before = namespace.by_lane(entities)

    # The accept stage's message redelivered after its publish went out: the same MessageIds.
    await sb_outbox.publish(messages)
    await sb_outbox.publish(messages[:1])

    assert namespace.by_lane(entities) == before
    dropped = namespace.double.discarded(entities.deliveries_topic)
    assert [d.reason for d in dropped] == ["duplicate"] * (len(messages) + 1)
    assert [d.message.message_id for d in dropped] == [
        *(m.message_id for m in messages),
        messages[0].message_id,
    ]


async def test_a_retry_copy_waits_for_its_time_and_reaches_its_lane_only(
    namespace: Namespace, entities: Entities, sb_outbox: ServiceBusOutbox
) -> None:
    first_seen = namespace.double.now()
    retry_later = RetryLater(
        outbox=sb_outbox,
        schedule=RetrySchedule(
            backoff=(timedelta(minutes=1), timedelta(minutes=5)),
            window=timedelta(hours=3),
            min_attempts=3,
        ),
        now=lambda: first_seen,  # the broker's clock (when the lanes failed)
    )
    outcomes: dict[str, Outcome] = {}
    for lane in entities.lanes:  # each destination's lane, and the accept stage's own
        if lane == ACCEPT_LANE:
            body, message_id, properties = sample(ORDERS[0]), "erp-1", {"orderId": "100245"}
        else:
            message = outgoing(delivery(ORDERS[0], lane))
            body, message_id = message.body, message.message_id
            properties = {k: str(v) for k, v in message.application_properties.items()}
        metadata = MessageMetadata(
            message_id=message_id,
            enqueued_time=first_seen,
            session_id="100245",
            application_properties=properties,
        )
        failed = Outcome(
            settlement=Settlement.RETRY,
            reason="DestinationUnavailable",
            description="503 busy",
            destination=lane,
        )
        outcomes[lane] = await retry_later(body, metadata, failed, lane=lane)
        # The same attempt scheduled again (the settle failed, the message came back): the
        # copy's MessageId is deterministic, so the topic drops the second one.
        await retry_later(body, metadata, failed, lane=lane)

    due = first_seen + timedelta(minutes=1)
    assert {(o.settlement, o.retry_at) for o in outcomes.values()} == {(Settlement.COMPLETE, due)}
    scheduled = namespace.double.scheduled(entities.deliveries_topic)
    assert len(scheduled) == len(entities.lanes)
    dropped = namespace.double.discarded(entities.deliveries_topic)
    assert [d.reason for d in dropped] == ["duplicate"] * len(entities.lanes)
    assert all(messages == [] for messages in namespace.by_lane(entities).values())

    namespace.double.advance(59)
    assert all(messages == [] for messages in namespace.by_lane(entities).values())
    namespace.double.advance(2)
    held = namespace.by_lane(entities)
    for lane in entities.lanes:
        (copy,) = held[lane]
        assert copy.application_properties[DESTINATION] == lane
        assert copy.application_properties[RETRY_ATTEMPT] == 1
        assert copy.application_properties[FIRST_SEEN] == first_seen.isoformat()
        original = copy.application_properties[ORIGINAL_MESSAGE_ID]
        assert copy.message_id == f"{original}:retry-1"
        assert copy.session_id == "100245"
        assert copy.enqueued_time == milliseconds(due)
    assert held[ACCEPT_LANE][0].body == sample(ORDERS[0])


def milliseconds(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # what AMQP timestamps carry


async def test_a_message_over_the_maximum_size_is_message_too_large(
    namespace: Namespace, entities: Entities, sb_outbox: ServiceBusOutbox
) -> None:
    with pytest.raises(MessageTooLarge, match="maximum message size"):
        await sb_outbox.publish([sized(0, STANDARD_MAX_MESSAGE_SIZE)])
    assert sb_outbox.sends == 0
    await sb_outbox.publish([sized(1, STANDARD_MAX_MESSAGE_SIZE - 1024)])  # just fits
    assert [len(m) for m in namespace.by_lane(entities).values()] == [0, 1, 0, 0, 0]


async def test_more_than_one_batch_holds_is_sent_as_several_and_nothing_is_lost(
    namespace: Namespace, entities: Entities, sb_outbox: ServiceBusOutbox
) -> None:
    messages = [sized(n, 20 * 1024) for n in range(30)]  # ~600 KiB: twelve per 256 KiB batch
    await sb_outbox.publish(messages)

    assert sb_outbox.sends == 3
    held = namespace.by_lane(entities)
    assert sum(len(m) for m in held.values()) == 30
    for lane, stored in held.items():
        assert [m.message_id for m in stored] == [
            m.message_id for m in messages if m.destination == lane
        ]
    assert namespace.double.discarded(entities.deliveries_topic) == []


async def test_the_limits_are_the_ones_the_topic_advertises() -> None:
    small = Namespace(max_message_size=64 * 1024)
    with small.double:
        entities = small.fresh()
        box = service_bus_outbox(entities)
        try:
            with pytest.raises(MessageTooLarge):
                await box.publish([sized(0, 65 * 1024)])  # would fit a Standard topic
            messages = [sized(n, 30 * 1024) for n in range(5)]  # two per 64 KiB batch
            await box.publish(messages)
            assert box.sends == 3
        finally:
            await box.aclose()
        assert sum(len(m) for m in small.by_lane(entities).values()) == 5


class GiftCardsSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="GIFT_CARDS_")


class GiftCards(Destination):
    """A destination registered for one test: its lane must appear with no other edit."""

    name: ClassVar[str] = "gift_cards"
    title: ClassVar[str] = "Gift cards"
    settings_class = GiftCardsSettings
    routes = {EventType.ORDER_CREATED: "order"}
    fake = "tests.fakes.esputnik"

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        return Skip("never sent")


async def test_the_fixtures_lanes_come_from_the_registry(namespace: Namespace) -> None:
    with registered(GiftCards):
        entities = namespace.fresh()
        env = entities.env()
    assert entities.lane_subscriptions["gift_cards"] == "gift-cards"
    assert env["GIFT_CARDS_SUBSCRIPTION"] == "gift-cards"
    assert entities.overrides()["gift_cards"] == {"subscription": "gift-cards"}
    assert entities.lanes == (*DESTINATIONS, "gift_cards", ACCEPT_LANE)
    box = service_bus_outbox(entities)
    try:
        await box.publish([outgoing(delivery(ORDERS[0], "gift_cards"))])
    finally:
        await box.aclose()
    held: dict[str, list[StoredMessage]] = namespace.by_lane(entities)
    assert [lane for lane, messages in held.items() if messages] == ["gift_cards"]
