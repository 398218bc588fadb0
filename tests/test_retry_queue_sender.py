"""ServiceBusRetryQueue against the Service Bus double: what the real SDK schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus.aio import ServiceBusClient
from order_processor.handler import OrderHandler
from order_processor.processor import Processor

from order_processor.redelivery import RetryCopy, RetrySchedule, ServiceBusRetryQueue
from tests.conftest import metadata, sample
from tests.fakes.base import Reply
from tests.servicebus_fixtures import Entities, Namespace, module_namespace

namespace = module_namespace()


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


def retry_queue(entities: Entities) -> ServiceBusRetryQueue:
    client = ServiceBusClient.from_connection_string(entities.connection_string, retry_total=0)
    return ServiceBusRetryQueue(client, queue=entities.retry_queue)


def milliseconds(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # what AMQP timestamps carry


async def test_a_retry_copy_is_scheduled_with_its_properties(
    namespace: Namespace, entities: Entities
) -> None:
    at = namespace.double.now() + timedelta(minutes=5)
    properties: dict[str, str | int] = {
        "eventType": "OrderCreated",
        "orderId": "100245",
        "retryAttempt": 2,
        "firstSeenUtc": "2026-11-23T09:00:00+00:00",
        "owedDestinations": "esputnik,profile_store",
        "originalMessageId": "m-1",
    }
    queue = retry_queue(entities)
    await queue.schedule(
        RetryCopy(
            body=sample("order-created.json"),
            message_id="m-1:retry-2",
            scheduled_at=at,
            application_properties=properties,
            session_id="100245",
        )
    )
    await queue.aclose()

    (copy,) = namespace.double.scheduled(entities.retry_queue)
    assert copy.body == sample("order-created.json")
    assert (copy.message_id, copy.session_id, copy.content_type) == (
        "m-1:retry-2",
        "100245",
        "application/json",
    )
    assert copy.application_properties == properties
    assert copy.scheduled_enqueue_time == milliseconds(at)
    assert namespace.double.active(entities.retry_queue) == []  # not before its time


async def test_the_handler_schedules_a_copy_when_a_destination_keeps_failing(
    namespace: Namespace, entities: Entities, processor: Processor, fakes: dict[str, Any]
) -> None:
    fakes["esputnik"].inject(*[Reply(503, {"error": "busy"})] * 3)  # every attempt of the budget
    handler = OrderHandler(
        processor=processor,
        retry_queue=retry_queue(entities),
        schedule=RetrySchedule.from_settings(processor.settings.core),
        now=lambda: datetime.now(UTC),  # the broker's clock: the copy must be in its future
    )
    before = datetime.now(UTC)
    outcome = await handler.handle(sample("order-created.json"), metadata("m-7"))
    await handler.retry_queue.aclose()

    assert outcome.retry_at is not None
    (copy,) = namespace.double.scheduled(entities.retry_queue)
    assert copy.message_id == "m-7:retry-1"
    assert copy.application_properties["retryAttempt"] == 1
    assert copy.application_properties["owedDestinations"] == "esputnik"
    assert copy.application_properties["originalMessageId"] == "m-7"
    assert copy.scheduled_enqueue_time == milliseconds(outcome.retry_at)
    assert copy.scheduled_enqueue_time >= milliseconds(before + timedelta(minutes=1))
