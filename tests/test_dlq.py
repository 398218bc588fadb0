"""`dlq peek|replay|purge` against the Service Bus double, through the real azure-servicebus client.

Dead letters are seeded straight into the dead-letter sub-queues with the properties the service
stamps (DeadLetterReason, DeadLetterErrorDescription); the seeding can back-date them for the age
filters.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from order_processor.handler import OrderHandler
from order_processor.processor import Processor
from rich.console import Console
from typer.testing import CliRunner

from order_processor import dlq
from order_processor.cli import app
from order_processor.contract import parse_order
from order_processor.ledger import Claimed, MemoryLedger
from order_processor.model import DeliveryStatus, DestinationResult, event_key
from order_processor.redelivery import RecordingRetryQueue, RetrySchedule
from order_processor.settings import AppSettings
from tests.conftest import business_requests, sample, settings_for
from tests.fakes.base import FakeServer
from tests.servicebus_fixtures import (
    Entities,
    Namespace,
    dead_letter_properties,
    module_namespace,
)

namespace = module_namespace()

ORDER = sample("order-created.json")
UPDATE = sample("order-updated.json")
REJECTED = "DestinationRejected"
EXHAUSTED = "RetriesExhausted"


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


def seed(
    namespace: Namespace,
    entity: str,
    message_id: str,
    *,
    reason: str,
    body: bytes = ORDER,
    age: timedelta = timedelta(),
    **properties: Any,
) -> int:
    order = parse_order(body)
    return namespace.put(
        entity,
        body,
        age=age,
        message_id=message_id,
        session_id=order.order_id,
        content_type="application/json",
        application_properties=dead_letter_properties(
            reason,
            f"{reason} for {message_id}",
            eventType=order.event_type.value,
            orderId=order.order_id,
            **properties,
        ),
    )


def cli(entities: Entities, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["dlq", *args], env=entities.env())
    return result.exit_code, result.output


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=250, highlight=False), out


def ids(messages: list[Any]) -> list[str | None]:
    return [m.message_id for m in messages]


def test_durations_and_filters() -> None:
    assert dlq.parse_duration("30m") == timedelta(minutes=30)
    assert dlq.parse_duration("1d") == timedelta(days=1)
    assert dlq.parse_duration("1h30m") == timedelta(minutes=90)
    for bad in ("", "2", "h", "3x", "1h 30m", "-1h"):
        with pytest.raises(ValueError, match="not a duration"):
            dlq.parse_duration(bad)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    letter = dlq.DeadLetter(
        sequence_number=1,
        message_id="m-1",
        order_id="100245",
        event_type="OrderCreated",
        reason=REJECTED,
        description="x",
        enqueued_time=now - timedelta(hours=2),
        delivery_count=0,
    )
    assert dlq.Filters().matches(letter, now=now)
    assert dlq.Filters(reasons=frozenset({"destinationrejected"})).matches(letter, now=now)
    assert not dlq.Filters(reasons=frozenset({EXHAUSTED})).matches(letter, now=now)
    assert dlq.Filters(older_than=timedelta(hours=1)).matches(letter, now=now)
    assert not dlq.Filters(newer_than=timedelta(hours=1)).matches(letter, now=now)
    assert not dlq.Filters(message_ids=frozenset({"m-2"})).matches(letter, now=now)


async def test_peek_lists_reason_description_and_age_without_personal_data(
    namespace: Namespace, entities: Entities
) -> None:
    seed(namespace, entities.dead_letters, "m-old", reason=REJECTED, age=timedelta(hours=3))
    seed(namespace, entities.dead_letters, "m-new", reason=EXHAUSTED, body=UPDATE)
    namespace.put(entities.dead_letters, b"not json", message_id="m-junk")
    out, text = console()
    settings = settings_for("http://127.0.0.1:9", None, **entities.overrides())

    await dlq.peek(
        settings=settings, entity=dlq.Entity.SUBSCRIPTION, filters=dlq.Filters(), console=out
    )

    shown = text.getvalue()
    assert "3 dead letter(s) in orders-" in shown
    for expected in ("m-old", "m-new", "m-junk", "100245", "OrderCreated", "OrderUpdated"):
        assert expected in shown
    assert f"{REJECTED} for m-old" in shown
    assert f"{EXHAUSTED} for m-new" in shown
    assert "3h 0m" in shown  # enqueued age
    assert "6330001234567890" not in shown  # the loyalty card in the body
    assert len(namespace.double.dead_letters(entities.subscription_path)) == 3  # only peeked


def test_peek_through_the_cli_filters_by_reason(namespace: Namespace, entities: Entities) -> None:
    seed(namespace, entities.dead_letters, "m-1", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-2", reason=EXHAUSTED)
    code, output = cli(entities, "peek", "--reason", EXHAUSTED, "--dry-run")
    assert code == 0, output
    assert "1 dead letter(s)" in output
    code, output = cli(entities, "peek", "--older-than", "soon")
    assert code == 2


def test_replay_to_the_topic_resends_only_the_selection(
    namespace: Namespace, entities: Entities
) -> None:
    bookkeeping = {"retryAttempt": 3, "firstSeenUtc": "2026-11-23T08:00:00+00:00"}
    old = seed(
        namespace,
        entities.dead_letters,
        "m-old",
        reason=REJECTED,
        age=timedelta(hours=2),
        owedDestinations="esputnik",
        **bookkeeping,
    )
    seed(namespace, entities.dead_letters, "m-new", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-other", reason=EXHAUSTED, body=UPDATE)

    code, output = cli(entities, "replay", "--reason", REJECTED, "--older-than", "1h")
    assert code == 0, output

    (replayed,) = namespace.double.active(entities.subscription_path)
    assert replayed.body == ORDER
    assert replayed.message_id == f"m-old:replay-{old}"  # new, so duplicate detection lets it in
    assert (replayed.session_id, replayed.content_type) == ("100245", "application/json")
    # The service's stamps and the retry bookkeeping are dropped; the ERP's properties stay.
    assert replayed.application_properties == {"eventType": "OrderCreated", "orderId": "100245"}
    dead = namespace.double.dead_letters(entities.subscription_path)
    assert ids(dead) == ["m-new", "m-other"]  # the others are untouched, and not locked
    assert all(m.lock_token is None for m in dead)
    assert ids(namespace.double.completed(entities.dead_letters)) == ["m-old"]

    code, output = cli(entities, "replay", "--message-id", "m-other")
    assert code == 0, output
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-new"]
    assert namespace.double.active(entities.subscription_path)[-1].body == UPDATE


def test_replay_from_the_retry_queue_goes_to_the_topic(
    namespace: Namespace, entities: Entities
) -> None:
    seed(namespace, entities.retry_dead_letters, "m-1:retry-3", reason=EXHAUSTED)
    code, output = cli(entities, "replay", "--entity", "retry", "--limit", "1")
    assert code == 0, output
    assert [m.body for m in namespace.double.active(entities.subscription_path)] == [ORDER]
    assert namespace.double.dead_letters(entities.retry_queue) == []


def test_dry_run_changes_nothing(namespace: Namespace, entities: Entities) -> None:
    seed(namespace, entities.dead_letters, "m-1", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-2", reason=EXHAUSTED)
    for command in (
        ["replay", "--dry-run"],
        ["purge", "--dry-run"],
        ["replay", "--to", "process", "--dry-run"],
    ):
        code, output = cli(entities, *command)
        assert code == 0, output
        assert "dry run, nothing changes" in output
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-1", "m-2"]
    assert namespace.double.active(entities.subscription_path) == []
    assert namespace.double.completed(entities.dead_letters) == []


def test_purge_needs_yes_and_removes_only_the_selection(
    namespace: Namespace, entities: Entities
) -> None:
    seed(namespace, entities.dead_letters, "m-1", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-2", reason=EXHAUSTED)
    code, output = cli(entities, "purge", "--reason", REJECTED)
    assert code == 2
    assert "--yes" in output
    assert len(namespace.double.dead_letters(entities.subscription_path)) == 2

    code, output = cli(entities, "purge", "--reason", REJECTED, "--yes")
    assert code == 0, output
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-2"]
    assert namespace.double.active(entities.subscription_path) == []


async def test_replay_to_process_calls_only_the_destinations_still_owed(
    namespace: Namespace,
    entities: Entities,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
) -> None:
    others = {name: fakes[name].url for name in ("product_recs", "richrelevance", "esputnik")}
    settings = settings_for(
        fakes["profile_store"].url, loyalty.url, others=others, **entities.overrides()
    )
    # An earlier copy delivered to Profile Store and RichRelevance; the ledger remembers.
    ledger = MemoryLedger()
    key = event_key(parse_order(ORDER))
    now = datetime.now(UTC)
    for done in ("profile_store", "richrelevance"):
        claim = await ledger.claim(key, done, message_id="m-1", now=now, lease=timedelta(1))
        assert isinstance(claim, Claimed)
        result = DestinationResult(destination=done, status=DeliveryStatus.DELIVERED)
        await ledger.record(claim, result, now=now)
    # owedDestinations says only eSputnik; it is dropped, so the ledger alone decides.
    seed(
        namespace,
        entities.dead_letters,
        "m-1",
        reason=EXHAUSTED,
        owedDestinations="esputnik",
        retryAttempt=5,
    )
    namespace.put(
        entities.dead_letters,
        b"{}",
        message_id="m-invalid",
        application_properties=dead_letter_properties("InvalidMessage", "orderId: missing"),
    )
    retry_queue = RecordingRetryQueue()

    def handler_factory(app_settings: AppSettings) -> OrderHandler:
        return OrderHandler(
            processor=Processor.from_settings(app_settings, ledger=ledger),
            retry_queue=retry_queue,
            schedule=RetrySchedule.from_settings(app_settings.core),
        )

    out, text = console()
    failures = await dlq.replay(
        settings=settings,
        entity=dlq.Entity.SUBSCRIPTION,
        filters=dlq.Filters(),
        to=dlq.Target.PROCESS,
        dry_run=False,
        console=out,
        handler_factory=handler_factory,
    )

    assert failures == 1, text.getvalue()  # the invalid one is dead-lettered again: left there
    assert business_requests(fakes["profile_store"]) == []
    assert business_requests(fakes["richrelevance"]) == []
    assert len(business_requests(fakes["product_recs"])) == 1
    assert len(business_requests(fakes["esputnik"])) == 1
    assert retry_queue.copies == []
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-invalid"]
    assert ids(namespace.double.completed(entities.dead_letters)) == ["m-1"]
    shown = text.getvalue()
    assert "processed" in shown
    assert "m-invalid" in shown
    assert "InvalidMessage" in shown
