"""`dlq peek|replay|purge` against the Service Bus double, through the real azure-servicebus client,
on the orders subscription's DLQ (the default) and on a lane's (`--destination LANE`).

Dead letters are seeded straight into the dead-letter sub-queues with the properties the service
stamps (DeadLetterReason, DeadLetterErrorDescription); the seeding can back-date them for the age
filters. The lanes are the fixtures' topology: the deliveries topic with one subscription per
destination (rule `destination = '<name>'`) and the accept stage's retry lane, so a replay that
reached the wrong lane would show up there.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus.aio import ServiceBusClient
from rich.console import Console
from typer.testing import CliRunner

from loyalty_client.customer import Customer
from order_processor import dlq
from order_processor.accept import ACCEPT_LANE
from order_processor.cli import app
from order_processor.contract import parse_order
from order_processor.delivery import DESTINATION, DeliveryMessage
from order_processor.destinations import DESTINATIONS
from order_processor.ledger import Claimed, LedgerStatus, MemoryLedger
from order_processor.model import (
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
    enriched_event,
    event_key,
)
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import MemoryOutbox, ServiceBusOutbox
from order_processor.pipeline import Pipeline
from order_processor.redelivery import (
    FIRST_SEEN,
    ORIGINAL_MESSAGE_ID,
    RETRY_ATTEMPT,
    RetryLater,
    RetrySchedule,
)
from order_processor.routing import route
from order_processor.settings import AppSettings
from tests.conftest import ROOT, business_requests, sample, settings_for
from tests.fakes.base import FakeServer, Reply
from tests.servicebus_double import STANDARD_MAX_MESSAGE_SIZE
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
LANE = "esputnik"
OTHER_LANES = [name for name in DESTINATIONS if name != LANE]
BOOKKEEPING: dict[str, Any] = {RETRY_ATTEMPT: 3, FIRST_SEEN: "2026-11-23T08:00:00+00:00"}


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
    """An order message (as the ERP sent it) dead-lettered at accept or on the accept lane."""
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


#: the customer the accept stage found for the samples' loyalty card (a lane needs a contact)
ANN = Customer(
    customer_id="C-000123",
    email="ann.shopper@example.com",
    phone="+447700900123",
    first_name="Ann",
    last_name="Shopper",
)


def delivery(body: bytes = ORDER, lane: str = LANE, message_id: str = "m-1") -> DeliveryMessage:
    order = parse_order(body)
    return DeliveryMessage.of(
        enriched_event(order, ANN, key=event_key(order), message_id=message_id),
        destination=lane,
        accepted_at=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        order_enqueued_at=None,
    )


def seed_delivery(
    namespace: Namespace,
    entities: Entities,
    message: DeliveryMessage,
    *,
    reason: str,
    retried: bool = True,
    age: timedelta = timedelta(),
    **properties: Any,
) -> int:
    """A delivery message dead-lettered on its lane: a retry copy that ran out of time, or (not
    `retried`) the accept stage's original refused by the vendor."""
    message_id = f"{message.message_id}:retry-3" if retried else message.message_id
    bookkeeping = {**BOOKKEEPING, ORIGINAL_MESSAGE_ID: message.message_id} if retried else {}
    return namespace.put(
        entities.lane_dead_letters(message.destination),
        message.encode(),
        age=age,
        message_id=message_id,
        session_id=message.session_id,
        content_type="application/json",
        application_properties=dead_letter_properties(
            reason,
            f"{reason} for {message_id}",
            **message.application_properties(),
            **bookkeeping,
            **properties,
        ),
    )


def cli(entities: Entities, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["dlq", *args], env=entities.env())
    return result.exit_code, result.output


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=250, highlight=False), out


async def replay_to_process(
    settings: AppSettings,
    lane: str | None,
    pipeline_factory: Callable[[AppSettings], Pipeline],
    *,
    filters: dlq.Filters | None = None,
) -> tuple[int, str]:
    """`dlq replay --to process` of `lane`'s dead letters (None: the orders subscription's):
    (failures, what it printed)."""
    out, text = console()
    failures = await dlq.replay(
        settings=settings,
        source=dlq.DeadLetterSource.of(settings, lane),
        filters=filters or dlq.Filters(),
        to=dlq.Target.PROCESS,
        dry_run=False,
        console=out,
        pipeline_factory=pipeline_factory,
    )
    return failures, text.getvalue()


def ids(messages: list[Any]) -> list[str | None]:
    return [m.message_id for m in messages]


def lanes_holding(namespace: Namespace, entities: Entities) -> dict[str, list[str | None]]:
    return {lane: ids(held) for lane, held in namespace.by_lane(entities).items() if held}


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


# -- peek ---------------------------------------------------------------------------------------


async def test_peek_lists_reason_description_and_age_without_personal_data(
    namespace: Namespace, entities: Entities
) -> None:
    seed(namespace, entities.dead_letters, "m-old", reason=REJECTED, age=timedelta(hours=3))
    seed(namespace, entities.dead_letters, "m-new", reason=EXHAUSTED, body=UPDATE)
    namespace.put(entities.dead_letters, b"not json", message_id="m-junk")
    out, text = console()
    settings = settings_for("http://127.0.0.1:9", None, **entities.overrides())
    source = dlq.DeadLetterSource.of(settings, None)

    await dlq.peek(settings=settings, source=source, filters=dlq.Filters(), console=out)

    shown = text.getvalue()
    assert f"3 dead letter(s) in {entities.topic}/subscriptions/order-sync" in shown
    for expected in ("m-old", "m-new", "m-junk", "100245", "OrderCreated", "OrderUpdated"):
        assert expected in shown
    assert f"{REJECTED} for m-old" in shown
    assert f"{EXHAUSTED} for m-new" in shown
    assert "3h 0m" in shown  # enqueued age
    assert "6330001234567890" not in shown  # the loyalty card in the body
    assert len(namespace.double.dead_letters(entities.subscription_path)) == 3  # only peeked


def test_peek_a_lanes_dlq_through_the_cli(namespace: Namespace, entities: Entities) -> None:
    created, updated = delivery(ORDER), delivery(UPDATE)
    seed_delivery(namespace, entities, created, reason=REJECTED, retried=False)
    seed_delivery(namespace, entities, updated, reason=EXHAUSTED, age=timedelta(hours=2))
    seed(namespace, entities.dead_letters, "in-orders-dlq", reason=REJECTED)  # not this DLQ

    code, output = cli(entities, "peek", "--destination", LANE)

    assert code == 0, output
    lane_dlq = f"{entities.deliveries_topic}/subscriptions/esputnik/$DeadLetterQueue"
    assert f"2 dead letter(s) in {lane_dlq}" in output
    # A delivery message's body has no top-level orderId: the properties name the order.
    for expected in (created.message_id, f"{updated.message_id}:retry-3", "OrderUpdated"):
        assert expected in output
    assert "100245" in output
    assert "in-orders-dlq" not in output
    assert "ann.shopper" not in output
    assert "6330001234567890" not in output

    code, output = cli(entities, "peek", "--destination", LANE, "--reason", EXHAUSTED)
    assert code == 0, output
    assert "1 dead letter(s)" in output
    code, output = cli(entities, "peek", "--destination", ACCEPT_LANE)
    assert code == 0, output
    assert "0 dead letter(s) in" in output


def test_peek_through_the_cli_filters_by_reason(namespace: Namespace, entities: Entities) -> None:
    seed(namespace, entities.dead_letters, "m-1", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-2", reason=EXHAUSTED)
    code, output = cli(entities, "peek", "--reason", EXHAUSTED, "--dry-run")
    assert code == 0, output
    assert "1 dead letter(s)" in output
    code, output = cli(entities, "peek", "--older-than", "soon")
    assert code == 2


def test_an_unknown_lane_exits_2_naming_the_lanes(entities: Entities) -> None:
    for command in (["peek"], ["replay"], ["purge", "--yes"]):
        code, output = cli(entities, *command, "--destination", "nonsense")
        assert code == 2, output
        assert "'nonsense': not a lane" in output
        assert f"one of {', '.join([ACCEPT_LANE, *DESTINATIONS])}" in output


def test_a_missing_entity_exits_2(entities: Entities) -> None:
    result = CliRunner().invoke(
        app,
        ["dlq", "peek", "--destination", LANE],
        env=entities.env(DELIVERIES_TOPIC="no-such-topic"),
    )
    assert result.exit_code == 2, result.output
    assert "no such entity" in result.output


# -- replay to the topic ------------------------------------------------------------------------


def test_replay_to_the_topic_resends_only_the_selection(
    namespace: Namespace, entities: Entities
) -> None:
    old = seed(
        namespace,
        entities.dead_letters,
        "m-old",
        reason=REJECTED,
        age=timedelta(hours=2),
        **BOOKKEEPING,
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
    assert lanes_holding(namespace, entities) == {}  # an order goes to the orders topic

    code, output = cli(entities, "replay", "--message-id", "m-other")
    assert code == 0, output
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-new"]
    assert namespace.double.active(entities.subscription_path)[-1].body == UPDATE


def test_replay_from_a_lane_reaches_that_lane_only(
    namespace: Namespace, entities: Entities
) -> None:
    created, updated = delivery(ORDER), delivery(UPDATE)
    retried = seed_delivery(namespace, entities, created, reason=EXHAUSTED)
    # Dead-lettered by an older version, without the destination property: it gets the lane's.
    bare = namespace.put(
        entities.lane_dead_letters(LANE),
        updated.encode(),
        message_id=updated.message_id,
        application_properties=dead_letter_properties(REJECTED, "400 bad request"),
    )
    other = seed_delivery(
        namespace, entities, delivery(ORDER, "profile_store"), reason=EXHAUSTED
    )  # another lane's DLQ: not touched

    code, output = cli(entities, "replay", "--destination", LANE)

    assert code == 0, output
    assert lanes_holding(namespace, entities) == {
        LANE: [
            f"{created.message_id}:retry-3:replay-{retried}",
            f"{updated.message_id}:replay-{bare}",
        ]
    }
    first, second = namespace.by_lane(entities)[LANE]
    assert DeliveryMessage.model_validate_json(first.body) == created
    # The bookkeeping is dropped (the retry window and the copy chain restart); the delivery's
    # own properties stay.
    assert first.application_properties == created.application_properties()
    assert first.session_id == created.session_id
    assert second.application_properties == {DESTINATION: LANE}
    assert namespace.double.dead_letters(entities.lane(LANE)) == []
    assert [
        m.sequence_number for m in namespace.double.dead_letters(entities.lane("profile_store"))
    ] == [other]
    assert namespace.double.discarded(entities.deliveries_topic) == []


def test_replay_from_the_accept_lane_reaches_the_accept_lane_only(
    namespace: Namespace, entities: Entities
) -> None:
    number = seed(
        namespace,
        entities.lane_dead_letters(ACCEPT_LANE),
        "erp-1:retry-5",
        reason=EXHAUSTED,
        destination=ACCEPT_LANE,
        **BOOKKEEPING,
    )
    code, output = cli(entities, "replay", "--destination", ACCEPT_LANE)
    assert code == 0, output
    assert lanes_holding(namespace, entities) == {ACCEPT_LANE: [f"erp-1:retry-5:replay-{number}"]}
    (replayed,) = namespace.double.active(entities.lane(ACCEPT_LANE))
    assert replayed.body == ORDER
    assert replayed.application_properties == {
        "eventType": "OrderCreated",
        "orderId": "100245",
        DESTINATION: ACCEPT_LANE,
    }


def test_a_failed_replay_leaves_the_dead_letter_where_it_was(
    namespace: Namespace, entities: Entities
) -> None:
    fine = delivery(ORDER)
    number = seed_delivery(namespace, entities, fine, reason=EXHAUSTED)
    # Too large to send again (say the topic was moved to a smaller tier): the send is refused.
    huge = namespace.put(
        entities.lane_dead_letters(LANE),
        b"x" * STANDARD_MAX_MESSAGE_SIZE,
        message_id="huge",
        application_properties=dead_letter_properties(REJECTED, "too big", destination=LANE),
    )

    code, output = cli(entities, "replay", "--destination", LANE)

    assert code == 1, output
    assert "failed" in output
    assert "left in the DLQ" in output
    assert lanes_holding(namespace, entities) == {
        LANE: [f"{fine.message_id}:retry-3:replay-{number}"]
    }
    (left,) = namespace.double.dead_letters(entities.lane(LANE))
    assert (left.sequence_number, left.lock_token) == (huge, None)


# -- dry run and purge --------------------------------------------------------------------------


@pytest.mark.parametrize("lane", [None, LANE])
def test_dry_run_changes_nothing(
    namespace: Namespace, entities: Entities, lane: str | None
) -> None:
    if lane is None:
        dead_letters, option = entities.dead_letters, []
        seed(namespace, dead_letters, "m-1", reason=REJECTED)
        seed(namespace, dead_letters, "m-2", reason=EXHAUSTED)
    else:
        dead_letters, option = entities.lane_dead_letters(lane), ["--destination", lane]
        seed_delivery(namespace, entities, delivery(ORDER), reason=REJECTED)
        seed_delivery(namespace, entities, delivery(UPDATE), reason=EXHAUSTED)
    before = ids(namespace.double.active(dead_letters))
    for command in (
        ["replay", "--dry-run"],
        ["purge", "--dry-run"],
        ["replay", "--to", "process", "--dry-run"],
    ):
        code, output = cli(entities, *command, *option)
        assert code == 0, output
        assert "dry run, nothing changes" in output
        assert "2 dead letter(s)" in output
    assert ids(namespace.double.active(dead_letters)) == before
    assert namespace.double.active(entities.subscription_path) == []
    assert lanes_holding(namespace, entities) == {}
    assert namespace.double.completed(dead_letters) == []


@pytest.mark.parametrize("lane", [None, LANE])
def test_purge_needs_yes_and_removes_only_the_selection(
    namespace: Namespace, entities: Entities, lane: str | None
) -> None:
    if lane is None:
        dead_letters, option = entities.dead_letters, []
        seed(namespace, dead_letters, "m-1", reason=REJECTED)
        seed(namespace, dead_letters, "m-2", reason=EXHAUSTED)
        kept = "m-2"
    else:
        dead_letters, option = entities.lane_dead_letters(lane), ["--destination", lane]
        seed_delivery(namespace, entities, delivery(ORDER), reason=REJECTED, retried=False)
        seed_delivery(namespace, entities, delivery(UPDATE), reason=EXHAUSTED, retried=False)
        kept = delivery(UPDATE).message_id
    code, output = cli(entities, "purge", "--reason", REJECTED, *option)
    assert code == 2
    assert "--yes" in output
    assert len(namespace.double.active(dead_letters)) == 2

    code, output = cli(entities, "purge", "--reason", REJECTED, "--yes", *option)
    assert code == 0, output
    assert ids(namespace.double.active(dead_letters)) == [kept]
    assert namespace.double.active(entities.subscription_path) == []
    assert lanes_holding(namespace, entities) == {}


async def test_a_selected_dead_letter_settled_meanwhile_is_reported_not_found(
    namespace: Namespace, entities: Entities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dlq, "RECEIVE_WAIT_SECONDS", 1.0)  # how long "gone" takes to tell
    seed(namespace, entities.dead_letters, "m-1", reason=REJECTED)
    seed(namespace, entities.dead_letters, "m-2", reason=REJECTED)
    out, text = console()
    settings = settings_for("http://127.0.0.1:9", None, **entities.overrides())
    source = dlq.DeadLetterSource.of(settings, None)
    async with ServiceBusClient.from_connection_string(
        entities.connection_string, retry_total=0
    ) as client:
        async with dlq._receiver(client, source) as receiver:
            letters = await dlq.select(receiver, dlq.Filters(), now=datetime.now(UTC))
        namespace.double.put(entities.dead_letters, b"later", message_id="m-3")
        async with dlq._receiver(client, source) as other:  # someone else takes m-1 away
            (taken,) = await other.receive_messages(max_wait_time=2)
            await other.complete_message(taken)
        async with dlq._receiver(client, source) as receiver:

            async def nothing(_: Any) -> str:
                return ""

            failed = await dlq.settle(receiver, letters, action=nothing, verb="purged", console=out)

    assert failed == 1
    assert "not found" in text.getvalue()
    assert "m-1" in text.getvalue()
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-3"]


# -- replay to process --------------------------------------------------------------------------


def lane_settings(
    entities: Entities, fakes: dict[str, FakeServer], loyalty: FakeServer
) -> AppSettings:
    others = {name: fakes[name].url for name in DESTINATIONS if name != "profile_store"}
    settings: AppSettings = settings_for(
        fakes["profile_store"].url, loyalty.url, others=others, **entities.overrides()
    )
    return settings


async def test_replay_to_process_runs_the_lane_and_the_ledger_prevents_a_second_send(
    namespace: Namespace,
    entities: Entities,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
) -> None:
    settings = lane_settings(entities, fakes, loyalty)
    delivered, owed = delivery(ORDER), delivery(UPDATE)
    # An earlier copy of the created event reached eSputnik; the ledger remembers it.
    ledger = MemoryLedger()
    now = datetime.now(UTC)
    claim = await ledger.claim(
        delivered.event_key, LANE, message_id="m-1", now=now, lease=timedelta(1)
    )
    assert isinstance(claim, Claimed)
    result = DestinationResult(destination=LANE, status=DeliveryStatus.DELIVERED)
    await ledger.record(claim, result, now=now)
    seed_delivery(namespace, entities, delivered, reason=EXHAUSTED)
    seed_delivery(namespace, entities, owed, reason=EXHAUSTED)
    namespace.put(
        entities.lane_dead_letters(LANE),
        b"{}",
        message_id="m-invalid",
        application_properties=dead_letter_properties("InvalidMessage", "not a delivery"),
    )
    outbox = MemoryOutbox()

    def pipeline_factory(app_settings: AppSettings) -> Pipeline:
        return Pipeline.from_settings(
            app_settings, ledger=ledger, outbox=outbox, retry=RetryPolicy(max_attempts=1)
        )

    failures, shown = await replay_to_process(settings, LANE, pipeline_factory)

    assert failures == 1, shown  # the invalid one is dead-lettered again: left there
    # One request: the updated event's. The ledger had the created one delivered already.
    assert len(business_requests(fakes[LANE])) == 1
    rows = {key: entry for (key, _), (entry, _) in ledger.rows.items()}
    assert rows[owed.event_key].status is LedgerStatus.DELIVERED
    assert rows[delivered.event_key].attempts == 0  # untouched since the earlier copy
    for name in OTHER_LANES:
        assert business_requests(fakes[name]) == [], name
    assert outbox.messages == []  # nothing to retry
    assert ids(namespace.double.dead_letters(entities.lane(LANE))) == ["m-invalid"]
    assert ids(namespace.double.completed(entities.lane_dead_letters(LANE))) == [
        f"{delivered.message_id}:retry-3",
        f"{owed.message_id}:retry-3",
    ]
    assert lanes_holding(namespace, entities) == {}
    assert "processed" in shown
    assert "m-invalid" in shown
    assert "InvalidMessage" in shown

    # Replaying the same event again (say from another copy) sends nothing more.
    seed_delivery(namespace, entities, owed, reason=EXHAUSTED, retried=False)
    just_owed = dlq.Filters(message_ids=frozenset({owed.message_id}))
    failures, _ = await replay_to_process(settings, LANE, pipeline_factory, filters=just_owed)
    assert failures == 0
    assert len(business_requests(fakes[LANE])) == 1


async def test_replay_to_process_from_the_orders_dlq_publishes_to_the_lanes(
    namespace: Namespace,
    entities: Entities,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
) -> None:
    settings = lane_settings(entities, fakes, loyalty)
    seed(namespace, entities.dead_letters, "m-1", reason="LoyaltyLookupFailed")
    namespace.put(
        entities.dead_letters,
        b"{}",
        message_id="m-invalid",
        application_properties=dead_letter_properties("InvalidMessage", "orderId: missing"),
    )

    def pipeline_factory(app_settings: AppSettings) -> Pipeline:
        # The outbox the settings describe: the deliveries topic of this test's namespace.
        return Pipeline.from_settings(app_settings, ledger=MemoryLedger())

    failures, shown = await replay_to_process(settings, None, pipeline_factory)

    assert failures == 1, shown
    key = event_key(parse_order(ORDER))
    routed = [name for name in DESTINATIONS if route(name, parse_order(ORDER).event_type)]
    assert lanes_holding(namespace, entities) == {name: [f"{key}:{name}"] for name in routed}
    for name in DESTINATIONS:  # the accept stage only publishes; the lanes deliver
        assert business_requests(fakes[name]) == [], name
    assert len(loyalty.requests) == 1
    assert ids(namespace.double.dead_letters(entities.subscription_path)) == ["m-invalid"]


# -- the command line as a separate process ----------------------------------------------------


def test_the_cli_works_as_a_subprocess(namespace: Namespace, entities: Entities) -> None:
    message = delivery(ORDER)
    number = seed_delivery(namespace, entities, message, reason=EXHAUSTED)
    env = {**os.environ, **entities.env()}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own CLI, fixed arguments)
            [sys.executable, "-m", "order_processor", "dlq", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    peeked = run("peek", "--destination", LANE)
    assert peeked.returncode == 0, peeked.stderr + peeked.stdout
    assert f"{message.message_id}:retry-3" in peeked.stdout
    replayed = run("replay", "--destination", LANE)
    assert replayed.returncode == 0, replayed.stderr + replayed.stdout
    assert lanes_holding(namespace, entities) == {
        LANE: [f"{message.message_id}:retry-3:replay-{number}"]
    }
    nonsense = run("peek", "--destination", "nonsense")
    assert nonsense.returncode == 2
    assert "not a lane" in nonsense.stdout + nonsense.stderr


async def test_a_replayed_dead_letter_that_fails_again_gets_a_retry_copy_the_topic_keeps(
    namespace: Namespace,
    entities: Entities,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
) -> None:
    """A copy chain restarts with the replay: its copies must not reuse the MessageIds of the
    chain before it, or the topic's duplicate detection drops them and the event is lost."""
    settings = lane_settings(entities, fakes, loyalty)
    message = delivery(ORDER)
    outbox = ServiceBusOutbox(
        ServiceBusClient.from_connection_string(entities.connection_string, retry_total=0),
        topic=entities.deliveries_topic,
    )
    # Minutes ago: eSputnik was down, so the lane scheduled its first retry copy...
    first_seen = namespace.double.now()
    metadata = MessageMetadata(
        message_id=message.message_id,
        enqueued_time=first_seen,
        session_id=message.session_id,
        application_properties=message.application_properties(),
    )
    failed = Outcome(settlement=Settlement.RETRY, reason="DestinationUnavailable", description="")
    retry_later = RetryLater(
        outbox=outbox, schedule=RetrySchedule.from_settings(settings.core), now=lambda: first_seen
    )
    await retry_later(message.encode(), metadata, failed, lane=LANE)
    await outbox.aclose()
    (earlier,) = namespace.double.scheduled(entities.deliveries_topic)
    assert earlier.message_id == f"{message.message_id}:retry-1"
    # ... and a later copy of the chain was refused for good: it is in the lane's DLQ.
    seed_delivery(namespace, entities, message, reason=REJECTED)
    # The operator fixes the cause and replays while eSputnik is briefly down again.
    fakes[LANE].inject(*[Reply(503, {"error": "busy"})] * 3)

    def pipeline_factory(app_settings: AppSettings) -> Pipeline:
        # The default outbox: this test's deliveries topic, with its duplicate detection.
        return Pipeline.from_settings(
            app_settings, ledger=MemoryLedger(), retry=RetryPolicy(max_attempts=1)
        )

    failures, shown = await replay_to_process(settings, LANE, pipeline_factory)

    assert failures == 0, shown
    assert "retry scheduled" in shown
    assert namespace.double.dead_letters(entities.lane(LANE)) == []  # so the copy must exist
    assert namespace.double.discarded(entities.deliveries_topic) == []
    scheduled = namespace.double.scheduled(entities.deliveries_topic)
    assert [m.application_properties[RETRY_ATTEMPT] for m in scheduled] == [1, 1]
    assert len({m.message_id for m in scheduled}) == 2
