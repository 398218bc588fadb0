"""Pausing a lane (`AzureWebJobs.deliver_<name>.Disabled=true`) on the Service Bus double: the
host stops receiving from that lane's subscription; nothing is lost there while the others
deliver, and on resume the lane drains it without sending anything twice.

The functions are driven as the host drives them: peek-lock receives from each subscription,
settled from the stage's Outcome exactly as function_app.settle does; the accept stage publishes
through the real ServiceBusOutbox. Pausing is simply not running that lane's consumer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient

from order_processor.accept import outgoing
from order_processor.contract import parse_order
from order_processor.delivery import DeliveryMessage
from order_processor.ledger import MemoryLedger
from order_processor.model import MessageMetadata, Outcome, Settlement, event_key
from order_processor.outbox import ServiceBusOutbox
from order_processor.pipeline import Pipeline
from order_processor.servicebus import message_body, message_metadata
from tests.conftest import FakeClock, business_requests, sample, settings_for
from tests.fakes.base import FakeServer
from tests.servicebus_fixtures import Entities, Namespace, module_namespace

namespace = module_namespace()

PAUSED = "esputnik"
ORDERS = 12
Stage = Callable[[bytes, MessageMetadata], Awaitable[Outcome]]


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


@pytest.fixture
async def lanes(
    entities: Entities,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
    clock: FakeClock,
) -> AsyncIterator[Pipeline]:
    overrides = entities.overrides()
    others = {name: server.url for name, server in fakes.items() if name != "profile_store"}
    settings = settings_for(
        fakes["profile_store"].url,
        loyalty.url,
        others=others,
        core=overrides["core"],
        service_bus=overrides["service_bus"],
    )
    client = ServiceBusClient.from_connection_string(entities.connection_string, retry_total=0)
    pipeline = Pipeline.from_settings(
        settings,
        ledger=MemoryLedger(),
        outbox=ServiceBusOutbox(client, topic=entities.deliveries_topic),
    )
    yield pipeline
    await pipeline.aclose()


def orders(count: int) -> list[tuple[bytes, str]]:
    """Distinct OrderCreated bodies (routed to every lane) and their MessageIds."""
    template = json.loads(sample("order-created.json"))
    found = []
    for i in range(count):
        template["orderId"] = f"P{i:04d}"
        found.append((json.dumps(template).encode(), f"erp-{i}"))
    return found


async def publish(entities: Entities, bodies: list[tuple[bytes, str]]) -> None:
    async with (
        ServiceBusClient.from_connection_string(entities.connection_string) as client,
        client.get_topic_sender(entities.topic) as sender,
    ):
        await sender.send_messages(
            [ServiceBusMessage(body, message_id=message_id) for body, message_id in bodies]
        )


async def run_function(
    entities: Entities, topic: str, subscription: str, stage: Stage
) -> list[Outcome]:
    """What the host does for one function until its subscription is empty: receive in
    peek-lock, run the stage, settle each message from its Outcome."""
    outcomes = []
    async with (
        ServiceBusClient.from_connection_string(entities.connection_string) as client,
        client.get_subscription_receiver(topic, subscription) as receiver,
    ):
        while batch := await receiver.receive_messages(max_message_count=32, max_wait_time=1):
            for message in batch:
                outcome = await stage(message_body(message), message_metadata(message))
                outcomes.append(outcome)
                if outcome.settlement is Settlement.COMPLETE:
                    await receiver.complete_message(message)
                elif outcome.settlement is Settlement.DEAD_LETTER:
                    await receiver.dead_letter_message(
                        message, reason=outcome.reason, error_description=outcome.description
                    )
                else:
                    await receiver.abandon_message(message)
    return outcomes


async def run_lane(entities: Entities, pipeline: Pipeline, name: str) -> list[Outcome]:
    return await run_function(
        entities,
        entities.deliveries_topic,
        entities.lane_subscriptions[name],
        pipeline.lanes[name].deliver,
    )


async def test_a_paused_lane_keeps_its_messages_and_drains_them_once_on_resume(
    entities: Entities, namespace: Namespace, lanes: Pipeline, fakes: dict[str, FakeServer]
) -> None:
    await publish(entities, orders(ORDERS))
    accepted = await run_function(
        entities, entities.topic, entities.subscription, lanes.accept.accept
    )
    assert [o.settlement for o in accepted] == [Settlement.COMPLETE] * ORDERS

    # Paused: every lane but eSputnik's runs; eSputnik's subscription keeps its messages.
    for name in lanes.lanes:
        if name != PAUSED:
            delivered = await run_lane(entities, lanes, name)
            assert [o.settlement for o in delivered] == [Settlement.COMPLETE] * ORDERS
    held = namespace.by_lane(entities)
    assert len(held[PAUSED]) == ORDERS
    assert all(len(held[name]) == 0 for name in lanes.lanes if name != PAUSED)
    assert business_requests(fakes[PAUSED]) == []

    # The ERP re-publishes some orders while the lane is paused (new MessageIds): the same
    # events, so the deliveries topic drops the copies as duplicates; nothing more waits.
    await publish(entities, [(body, f"again-{i}") for i, (body, _) in enumerate(orders(4))])
    await run_function(entities, entities.topic, entities.subscription, lanes.accept.accept)
    assert len(namespace.by_lane(entities)[PAUSED]) == ORDERS

    # Resumed: the lane drains its backlog; every order reaches eSputnik exactly once.
    resumed = await run_lane(entities, lanes, PAUSED)
    assert [o.settlement for o in resumed] == [Settlement.COMPLETE] * ORDERS
    sent = [r.json()["orders"][0]["externalOrderId"] for r in fakes[PAUSED].accepted]
    assert sorted(sent) == sorted(f"P{i:04d}" for i in range(ORDERS))
    assert namespace.by_lane(entities)[PAUSED] == []

    # A delivery message seen again after the resume (a redelivery, a replay) sends nothing.
    for name in lanes.lanes:
        before = len(business_requests(fakes[name]))
        await publish_again(entities, lanes, name)
        assert len(business_requests(fakes[name])) == before


async def publish_again(entities: Entities, pipeline: Pipeline, name: str) -> None:
    """One order's delivery message for `name`, re-sent under a new MessageId (past the
    duplicate window, as a replay is), then run through the lane: the ledger answers."""
    order = parse_order(orders(1)[0][0])
    event = await pipeline.accept.enrich(order, event_key(order), MessageMetadata(), 1e12)
    message = DeliveryMessage.of(
        event, destination=name, accepted_at=datetime.now(UTC), order_enqueued_at=None
    )
    replay = replace(outgoing(message), message_id=f"{message.message_id}:replay-1")
    await pipeline.outbox.publish([replay])
    outcomes = await run_lane(entities, pipeline, name)
    assert [o.results[0].previously for o in outcomes] == [True]
