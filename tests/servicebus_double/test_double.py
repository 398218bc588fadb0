"""The Service Bus double, exercised through the real azure-servicebus client.

Each test checks both what the SDK returns and what the broker holds afterwards, so a double
that merely accepted frames would fail. Receivers are closed inside the tests: the SDK drains
and releases its prefetch on close, which must not count as a failed delivery.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusClient as SyncServiceBusClient
from azure.servicebus import (
    ServiceBusMessage,
    ServiceBusMessageState,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.aio import ServiceBusClient
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessageSizeExceededError,
    MessagingEntityNotFoundError,
    ServiceBusError,
)
from proton import Message

from tests.servicebus_double import (
    STANDARD_MAX_MESSAGE_SIZE,
    FilterNotSupported,
    FilterSyntaxError,
    ServiceBusDouble,
    codec,
    management,
)
from tests.servicebus_double.broker import EntityNotFound

SUBSCRIPTION = "orders/subscriptions/order-sync"
AUDIT = "orders/subscriptions/audit"
QUEUE = "jobs"
WAIT = 0.3  # max_wait_time for receives that should come back empty
# Senders get keep_alive=None: otherwise closing one waits ~0.5 s for the SDK's keep-alive loop.
# (Receivers without prefetch always run one, so each costs ~0.5 s to close.)


@pytest.fixture
def double() -> Iterator[ServiceBusDouble]:
    topics = {"orders": ["order-sync", "audit"]}
    with ServiceBusDouble(topics=topics, queues=[QUEUE], max_delivery_count=2) as running:
        yield running


@pytest.fixture
async def client(double: ServiceBusDouble) -> AsyncIterator[ServiceBusClient]:
    # No retries: a refused request should fail the test now, not after backoff.
    async with ServiceBusClient.from_connection_string(
        double.connection_string, retry_total=0
    ) as sb_client:
        yield sb_client


async def test_topic_send_single_and_batch_fans_out_and_complete(
    double: ServiceBusDouble, client: ServiceBusClient
) -> None:
    async with client.get_topic_sender("orders", keep_alive=None) as sender:
        await sender.send_messages(
            ServiceBusMessage(
                b'{"order": 1}',
                message_id="order-1",
                application_properties={"store": "kyiv-01", "attempt": 2},
                subject="order",
                content_type="application/json",
                correlation_id="corr-1",
            )
        )
        batch = await sender.create_message_batch()
        batch.add_message(ServiceBusMessage(b"two", message_id="order-2"))
        batch.add_message(ServiceBusMessage("three", message_id="order-3"))
        await sender.send_messages(batch)

    for entity in (SUBSCRIPTION, AUDIT):
        stored = double.active(entity)
        assert [m.message_id for m in stored] == ["order-1", "order-2", "order-3"]
        assert [m.body for m in stored] == [b'{"order": 1}', b"two", b"three"]
    first = double.active(SUBSCRIPTION)[0]
    assert first.application_properties == {"store": "kyiv-01", "attempt": 2}
    assert (first.subject, first.content_type, first.correlation_id) == (
        "order",
        "application/json",
        "corr-1",
    )
    numbers = [m.sequence_number for m in double.active(SUBSCRIPTION)]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3

    async with client.get_subscription_receiver("orders", "order-sync") as receiver:
        received = await receiver.receive_messages(max_message_count=3, max_wait_time=2)
        assert [str(m.message_id) for m in received] == ["order-1", "order-2", "order-3"]
        message = received[0]
        assert message.application_properties == {b"store": b"kyiv-01", b"attempt": 2}
        assert message.sequence_number == first.sequence_number
        assert message.delivery_count == 0
        assert message.enqueued_time_utc is not None
        assert abs(message.enqueued_time_utc - first.enqueued_time) < timedelta(milliseconds=2)
        assert message.locked_until_utc > datetime.now(UTC) + timedelta(seconds=25)
        locked = double.active(SUBSCRIPTION)
        assert isinstance(message.lock_token, uuid.UUID)
        assert message.lock_token == locked[0].lock_token
        assert message._delivery_tag == message.lock_token.bytes_le  # 16 bytes
        for each in received:
            await receiver.complete_message(each)

    assert double.active(SUBSCRIPTION) == []
    assert [m.message_id for m in double.completed(SUBSCRIPTION)] == [
        "order-1",
        "order-2",
        "order-3",
    ]
    assert len(double.active(AUDIT)) == 3  # each subscription has its own copy


async def test_queue_batch_and_receive_and_delete(
    double: ServiceBusDouble, client: ServiceBusClient
) -> None:
    async with client.get_queue_sender(QUEUE, keep_alive=None) as sender:
        await sender.send_messages([ServiceBusMessage(f"m{i}".encode()) for i in range(4)])
    assert [m.body for m in double.active(QUEUE)] == [b"m0", b"m1", b"m2", b"m3"]

    async with client.get_queue_receiver(
        QUEUE, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        received = await receiver.receive_messages(max_message_count=4, max_wait_time=2)
        assert [b"".join(m.body) for m in received] == [b"m0", b"m1", b"m2", b"m3"]
        assert [m.lock_token for m in received] == [None] * 4

    assert double.active(QUEUE) == []
    assert [m.body for m in double.completed(QUEUE)] == [b"m0", b"m1", b"m2", b"m3"]


async def test_abandon_dead_letter_and_the_dead_letter_sub_queue(
    double: ServiceBusDouble, client: ServiceBusClient
) -> None:
    poison = double.put("orders", b"poison", message_id="poison")
    bad = double.put("orders", b"bad order", message_id="bad", application_properties={"n": 5})
    async with client.get_subscription_receiver("orders", "order-sync") as receiver:
        first, second = await receiver.receive_messages(max_message_count=2, max_wait_time=2)
        assert (first.sequence_number, second.sequence_number) == (poison, bad)
        assert first.delivery_count == 0
        await receiver.abandon_message(first)
        abandoned = double.active(SUBSCRIPTION)[0]
        assert (abandoned.delivery_count, abandoned.lock_token) == (1, None)
        await receiver.dead_letter_message(
            second, reason="SchemaInvalid", error_description="order.total is missing"
        )

        (again,) = await receiver.receive_messages(max_wait_time=2)
        assert (again.sequence_number, again.delivery_count) == (poison, 1)
        await receiver.abandon_message(again)  # the 2nd failure reaches max_delivery_count=2

    assert double.active(SUBSCRIPTION) == []
    assert len(double.active(AUDIT)) == 2  # the other subscription is untouched
    dead = {m.message_id: m for m in double.dead_letters(SUBSCRIPTION)}
    assert dead["poison"].dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead["poison"].delivery_count == 2
    assert (dead["bad"].dead_letter_reason, dead["bad"].dead_letter_error_description) == (
        "SchemaInvalid",
        "order.total is missing",
    )
    assert dead["bad"].application_properties["DeadLetterReason"] == "SchemaInvalid"

    async with client.get_subscription_receiver(
        "orders", "order-sync", sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as dlq:
        from_dlq = await dlq.receive_messages(max_message_count=2, max_wait_time=2)
        by_id = {str(m.message_id): m for m in from_dlq}
        assert by_id["poison"].dead_letter_reason == "MaxDeliveryCountExceeded"
        assert by_id["bad"].dead_letter_reason == "SchemaInvalid"
        assert by_id["bad"].dead_letter_error_description == "order.total is missing"
        assert by_id["bad"].application_properties[b"n"] == 5
        await dlq.complete_message(by_id["bad"])

    assert [m.message_id for m in double.dead_letters(SUBSCRIPTION)] == ["poison"]
    assert [m.message_id for m in double.completed(SUBSCRIPTION + "/$DeadLetterQueue")] == ["bad"]


async def test_scheduling_both_ways_waits_for_the_clock_and_peek_shows_it(
    double: ServiceBusDouble, client: ServiceBusClient
) -> None:
    now = double.now()
    at_60 = now + timedelta(seconds=60)
    async with client.get_queue_sender(QUEUE, keep_alive=None) as sender:
        by_property = ServiceBusMessage(b"in 60s", message_id="prop")
        by_property.scheduled_enqueue_time_utc = at_60
        await sender.send_messages(by_property)
        (number,) = await sender.schedule_messages(
            ServiceBusMessage(b"in 120s", message_id="call"), now + timedelta(seconds=120)
        )
        (cancelled,) = await sender.schedule_messages(
            ServiceBusMessage(b"never", message_id="cancel"), now + timedelta(seconds=30)
        )
        await sender.cancel_scheduled_messages(cancelled)

    assert [m.message_id for m in double.scheduled(QUEUE)] == ["prop", "call"]
    assert double.scheduled(QUEUE)[1].sequence_number == number
    assert double.active(QUEUE) == []
    ready = double.put(QUEUE, b"ready now", message_id="ready")

    async with client.get_queue_receiver(QUEUE) as receiver:
        # Like the service, a queue's peek lists its scheduled messages too, by sequence number.
        peeked = await receiver.peek_messages(max_message_count=10)
        assert [(str(m.message_id), m.state) for m in peeked] == [
            ("prop", ServiceBusMessageState.SCHEDULED),
            ("call", ServiceBusMessageState.SCHEDULED),
            ("ready", ServiceBusMessageState.ACTIVE),
        ]
        assert [m.lock_token for m in peeked] == [None] * 3
        assert await receiver.peek_messages(sequence_number=10_000) == []

        (now_ready,) = await receiver.receive_messages(max_wait_time=2)
        assert now_ready.sequence_number == ready
        await receiver.complete_message(now_ready)
        assert await receiver.receive_messages(max_wait_time=WAIT) == []  # nothing due yet

        double.advance(61)
        (due,) = await receiver.receive_messages(max_wait_time=2)
        assert str(due.message_id) == "prop"
        assert due.scheduled_enqueue_time_utc == at_60.replace(
            microsecond=at_60.microsecond // 1000 * 1000
        )
        await receiver.complete_message(due)
        assert [m.message_id for m in double.scheduled(QUEUE)] == ["call"]

        double.advance(60)
        (later,) = await receiver.receive_messages(max_wait_time=2)
        assert (str(later.message_id), later.sequence_number) == ("call", number)
        await receiver.complete_message(later)

    assert double.scheduled(QUEUE) == []
    assert double.active(QUEUE) == []


async def test_renew_lock_expiry_and_deferral_on_an_injected_clock() -> None:
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    with ServiceBusDouble(queues=[QUEUE], now=lambda: start) as double:
        slow = double.put(QUEUE, b"slow")
        later = double.put(QUEUE, b"later please")
        async with (
            ServiceBusClient.from_connection_string(
                double.connection_string, retry_total=0
            ) as sb_client,
            sb_client.get_queue_receiver(QUEUE) as receiver,
        ):
            message, to_defer = await receiver.receive_messages(
                max_message_count=2, max_wait_time=2
            )
            assert message.sequence_number == slow
            assert message.enqueued_time_utc == start
            assert double.active(QUEUE)[0].locked_until == start + timedelta(seconds=30)
            double.advance(20)
            renewed = await receiver.renew_message_lock(message)
            assert double.active(QUEUE)[0].locked_until == start + timedelta(seconds=50)
            # Lock times go out in real time, since the SDK checks them against its own clock.
            assert renewed - datetime.now(UTC) > timedelta(seconds=29)

            await receiver.defer_message(to_defer)
            double.advance(31)  # past the renewed lock: the broker takes the message back
            first, deferred_copy = double.active(QUEUE)
            assert (first.sequence_number, first.lock_token, first.delivery_count) == (
                slow,
                None,
                1,
            )
            assert deferred_copy.deferred
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(message)

            (deferred,) = await receiver.receive_deferred_messages([later])
            assert b"".join(deferred.body) == b"later please"
            await receiver.complete_message(deferred)  # settled through $management

        assert [m.sequence_number for m in double.active(QUEUE)] == [slow]
        assert [m.sequence_number for m in double.completed(QUEUE)] == [later]


async def test_unknown_entity_is_refused(client: ServiceBusClient) -> None:
    with pytest.raises(MessagingEntityNotFoundError, match="no-such-queue"):
        async with client.get_queue_sender("no-such-queue", keep_alive=None) as sender:
            await sender.send_messages(ServiceBusMessage(b"lost"))


def test_sync_client_send_receive_and_dead_letter(double: ServiceBusDouble) -> None:
    with SyncServiceBusClient.from_connection_string(
        double.connection_string, retry_total=0
    ) as sb_client:
        with sb_client.get_queue_sender(QUEUE, keep_alive=None) as sender:
            batch = sender.create_message_batch()
            batch.add_message(ServiceBusMessage(b"sync", application_properties={"n": 7}))
            batch.add_message(ServiceBusMessage(b"fine"))
            sender.send_messages(batch)
        with sb_client.get_queue_receiver(QUEUE) as receiver:
            bad, fine = receiver.receive_messages(max_message_count=2, max_wait_time=2)
            assert bad.application_properties == {b"n": 7}
            receiver.dead_letter_message(bad, reason="Rejected", error_description="by test")
            receiver.complete_message(fine)
            assert receiver.peek_messages() == []  # dead letters live in the sub-queue

    (dead_letter,) = double.dead_letters(QUEUE)
    assert (dead_letter.body, dead_letter.application_properties["n"]) == (b"sync", 7)
    assert (dead_letter.dead_letter_reason, dead_letter.dead_letter_error_description) == (
        "Rejected",
        "by test",
    )
    assert [m.body for m in double.completed(QUEUE)] == [b"fine"]


def test_put_fans_out_and_inspection_rejects_unknown_entities() -> None:
    with ServiceBusDouble(topics={"orders": ["a", "b"]}, queues=[]) as double:
        number = double.put("Orders", b"x", application_properties={"k": "v"})
        assert [m.sequence_number for m in double.active("orders/Subscriptions/A")] == [number]
        assert double.active("orders/subscriptions/b")[0].application_properties == {"k": "v"}
        double.put("orders/subscriptions/a/$DeadLetterQueue", b"seeded")
        assert [m.body for m in double.dead_letters("orders/subscriptions/a")] == [b"seeded"]
        with pytest.raises(EntityNotFound):
            double.active("orders")  # a topic holds no messages itself
        with pytest.raises(EntityNotFound):
            double.put("nope", b"x")
        started = time.monotonic()
    assert time.monotonic() - started < 0.5  # stop is fast


def test_management_refuses_unknown_operations_and_cbs_accepts_tokens() -> None:
    with ServiceBusDouble() as double:
        broker = double._broker
        request = Message(id=uuid.uuid4(), properties={"operation": "com.microsoft:add-rule"})
        reply = management.execute(broker, "orders/subscriptions/order-sync", request)
        assert (reply.status, reply.condition) == (501, "amqp:not-implemented")
        assert "com.microsoft:add-rule" in reply.description
        token = Message(id=uuid.uuid4(), properties={"operation": "put-token"}, body="SharedAccess")
        assert management.put_token(token).status == 202
        encoded = Message()
        encoded.decode(management.encode_reply(token, management.put_token(token), cbs=True))
        assert encoded.correlation_id == token.id
        assert encoded.properties == {"status-code": 202, "status-description": "Accepted"}


def test_a_plain_body_is_not_mistaken_for_a_batch() -> None:
    raw = codec.encode_new(b"\x00Su\xa0\x01x")  # starts like a data section, but is a body
    assert codec.split_transfer(raw) == [raw]
    assert codec.decode(raw).body == b"\x00Su\xa0\x01x"


# -- subscription rules, duplicate detection, size, time to live, per-entity delivery count ------


def lanes_double(**options: Any) -> ServiceBusDouble:
    """A deliveries-like topic: one subscription per lane (filter on `destination`), one that
    takes everything, and one with a compound rule."""
    double = ServiceBusDouble(topics={}, **options)
    double.create_topic("deliveries")
    double.create_subscription("deliveries", "a", rule="destination = 'a'")
    double.create_subscription("deliveries", "b", rule="user.Destination = 'b'")
    double.create_subscription(
        "deliveries", "a-or-none", rule="(destination = 'a' OR destination IS NULL) AND NOT n = 0"
    )
    return double


def on(double: ServiceBusDouble, subscription: str) -> list[str | None]:
    return [m.message_id for m in double.active(f"deliveries/subscriptions/{subscription}")]


async def test_subscription_rules_route_each_message_and_drop_what_none_takes() -> None:
    with lanes_double() as double:
        async with (
            ServiceBusClient.from_connection_string(double.connection_string, retry_total=0) as c,
            c.get_topic_sender("deliveries", keep_alive=None) as sender,
        ):
            await sender.send_messages(
                ServiceBusMessage(
                    b"1", message_id="to-a", application_properties={"destination": "a"}
                )
            )
            batch = await sender.create_message_batch()  # one batch, routed message by message
            sent: list[tuple[str, dict[str | bytes, Any]]] = [
                ("to-b", {"destination": "b"}),
                ("to-A", {"destination": "A"}),  # values compare ordinally: no lane takes it
                ("none", {"n": 1}),
                ("none-zero", {"n": 0}),
                ("to-c", {"destination": "c"}),
                ("quote", {"destination": "it's"}),
            ]
            for message_id, properties in sent:
                batch.add_message(
                    ServiceBusMessage(
                        b"x", message_id=message_id, application_properties=properties
                    )
                )
            await sender.send_messages(batch)  # no error: the service drops silently too

        assert on(double, "a") == ["to-a"]
        assert on(double, "b") == ["to-b"]  # user. scope, property names case-insensitive
        # to-a has no n: `NOT n = 0` is unknown, TRUE AND unknown is unknown, so not taken.
        assert on(double, "a-or-none") == ["none"]
        dropped = {d.message.message_id: d.reason for d in double.discarded("deliveries")}
        assert dropped == {
            "to-A": "unmatched",
            "none-zero": "unmatched",
            "to-c": "unmatched",
            "quote": "unmatched",
        }


def test_rules_outside_the_modelled_subset_are_refused_at_set_up() -> None:
    double = ServiceBusDouble(topics={"t": []})
    for rule in (
        "sys.Label = 'x'",
        "priority > 5",
        "destination IN ('a', 'b')",
        "destination LIKE 'a%'",
        "EXISTS (destination)",
        "amount = 1.5",
        "destination = @lane",
        "destination = NULL",
        "newid() = 'x'",
        "n + 1 = 2",
    ):
        with pytest.raises(FilterNotSupported, match="does not support"):
            double.create_subscription("t", "s", rule=rule)
    for rule in ("", "destination =", "destination = 'a", "destination 'a'", "x.a = 1", "a ~ 1"):
        with pytest.raises(FilterSyntaxError):
            double.create_subscription("t", "s", rule=rule)
    with pytest.raises(EntityNotFound):
        double.active("t/subscriptions/s")  # nothing was created
    # The forms the infrastructure uses, and the SQL quoting rules, are accepted.
    double.create_subscription("t", "s", rule="destination = 'profile_store'")
    double.create_subscription("t", "q", rule="[my-prop] = 'it''s' AND \"x y\" <> 3 OR f = TRUE")


async def test_a_comparison_the_double_does_not_model_refuses_the_whole_send() -> None:
    with ServiceBusDouble(topics={"t": ["all"]}) as double:
        double.create_subscription("t", "numbered", rule="n = 5")
        async with (
            ServiceBusClient.from_connection_string(double.connection_string, retry_total=0) as c,
            c.get_topic_sender("t", keep_alive=None) as sender,
        ):
            with pytest.raises(ServiceBusError, match="comparing a string with a number"):
                await sender.send_messages(
                    [
                        ServiceBusMessage(b"ok", application_properties={"n": 5}),
                        ServiceBusMessage(b"text", application_properties={"n": "5"}),
                    ]
                )
            assert double.active("t/subscriptions/all") == []  # all or nothing, like a batch
            await sender.send_messages(ServiceBusMessage(b"ok", application_properties={"n": 5}))
        assert [m.body for m in double.active("t/subscriptions/numbered")] == [b"ok"]


async def test_duplicate_detection_drops_a_message_id_seen_within_the_window() -> None:
    with ServiceBusDouble(topics={"plain": ["s"]}) as double:
        double.create_topic("t", duplicate_detection_window=timedelta(minutes=10))
        double.create_subscription("t", "s")
        double.create_queue("q", duplicate_detection_window=timedelta(seconds=20))
        at = double.now() + timedelta(minutes=5)
        async with ServiceBusClient.from_connection_string(
            double.connection_string, retry_total=0
        ) as c:
            async with c.get_topic_sender("t", keep_alive=None) as sender:
                await sender.send_messages(
                    [ServiceBusMessage(b"first", message_id=i) for i in ("m-1", "m-2")]
                )
                # A re-send (a retried publish): accepted, and dropped; only the MessageId counts.
                await sender.send_messages(ServiceBusMessage(b"again", message_id="m-1"))
                await sender.send_messages(
                    [ServiceBusMessage(b"x", message_id=i) for i in ("m-2", "m-3", "m-3")]
                )
                # Scheduled messages count when sent, and a duplicate of them is dropped at once.
                scheduled = ServiceBusMessage(b"later", message_id="m-4")
                scheduled.scheduled_enqueue_time_utc = at
                await sender.send_messages(scheduled)
                await sender.send_messages(ServiceBusMessage(b"now", message_id="m-4"))
                (cancelled,) = await sender.schedule_messages(
                    ServiceBusMessage(b"never", message_id="m-1"), at
                )
            async with c.get_topic_sender("plain", keep_alive=None) as sender:
                for _ in range(2):  # no duplicate detection: both are kept
                    await sender.send_messages(ServiceBusMessage(b"p", message_id="same"))
            async with c.get_queue_sender("q", keep_alive=None) as sender:
                await sender.send_messages(ServiceBusMessage(b"q1", message_id="q-1"))
                double.advance(19)
                await sender.send_messages(ServiceBusMessage(b"q2", message_id="q-1"))
                double.advance(2)  # 21 s after the first: outside the window again
                await sender.send_messages(ServiceBusMessage(b"q3", message_id="q-1"))

        assert [(m.message_id, m.body) for m in double.active("t/subscriptions/s")] == [
            ("m-1", b"first"),
            ("m-2", b"first"),
            ("m-3", b"x"),
        ]
        assert [m.message_id for m in double.scheduled("t")] == ["m-4"]
        assert [(d.message.message_id, d.reason) for d in double.discarded("t")] == [
            ("m-1", "duplicate"),
            ("m-2", "duplicate"),
            ("m-3", "duplicate"),
            ("m-4", "duplicate"),
            ("m-1", "duplicate"),
        ]
        assert cancelled > 0  # the schedule call gets a number even for a dropped duplicate
        double.advance(5 * 60)
        assert [m.body for m in double.active("t/subscriptions/s")][-1] == b"later"
        assert [m.message_id for m in double.active("plain/subscriptions/s")] == ["same", "same"]
        assert [m.body for m in double.active("q")] == [b"q1", b"q3"]
    with pytest.raises(ValueError, match="20 seconds to 7 days"):
        ServiceBusDouble().create_topic("t", duplicate_detection_window=timedelta(seconds=5))


async def test_batches_are_decoded_into_their_messages_up_to_the_advertised_size() -> None:
    with lanes_double() as double:
        async with (
            ServiceBusClient.from_connection_string(double.connection_string, retry_total=0) as c,
            c.get_topic_sender("deliveries", keep_alive=None) as sender,
        ):
            batch = await sender.create_message_batch()
            assert batch.max_size_in_bytes == STANDARD_MAX_MESSAGE_SIZE
            assert sender._max_message_size_on_link == STANDARD_MAX_MESSAGE_SIZE
            count = 0
            while True:  # fill it to the limit: a transfer of many frames
                lane = "ab"[count % 2]
                try:
                    batch.add_message(
                        ServiceBusMessage(
                            f"{count}".encode() * 500,
                            message_id=f"{lane}-{count}",
                            session_id=f"order-{count}",
                            application_properties={"destination": lane, "n": count},
                        )
                    )
                except MessageSizeExceededError:
                    break
                count += 1
            await sender.send_messages(batch)
            assert batch.size_in_bytes > STANDARD_MAX_MESSAGE_SIZE - 2000

        a = double.active("deliveries/subscriptions/a")
        b = double.active("deliveries/subscriptions/b")
        assert len(a) + len(b) == count
        assert [m.message_id for m in a] == [f"a-{n}" for n in range(0, count, 2)]
        assert [m.message_id for m in b] == [f"b-{n}" for n in range(1, count, 2)]
        assert b[0].application_properties == {"destination": "b", "n": 1}
        assert (b[0].session_id, b[0].body) == ("order-1", b"1" * 500)
        assert len({m.sequence_number for m in a + b}) == count


async def test_the_max_message_size_is_advertised_and_enforced() -> None:
    with lanes_double(max_message_size=16 * 1024) as double:
        async with (
            ServiceBusClient.from_connection_string(double.connection_string, retry_total=0) as c,
            c.get_topic_sender("deliveries", keep_alive=None) as sender,
        ):
            batch = await sender.create_message_batch()
            assert batch.max_size_in_bytes == 16 * 1024  # the SDK sizes batches from the link
            with pytest.raises(MessageSizeExceededError, match="message-size-exceeded"):
                await sender.send_messages(  # a single message: only the double can refuse it
                    ServiceBusMessage(b"x" * 16 * 1024, application_properties={"destination": "a"})
                )
            await sender.send_messages(
                ServiceBusMessage(b"x" * 15 * 1024, application_properties={"destination": "a"})
            )
        assert [len(m.body) for m in double.active("deliveries/subscriptions/a")] == [15 * 1024]


async def test_time_to_live_expires_or_dead_letters_and_waits_for_a_lock() -> None:
    with ServiceBusDouble(topics={}) as double:
        double.create_topic("t", default_message_time_to_live=timedelta(hours=1))
        double.create_subscription(
            "t",
            "keeps",
            default_message_time_to_live=timedelta(minutes=1),
            dead_lettering_on_message_expiration=True,
            lock_duration_seconds=120,
        )
        double.create_subscription("t", "drops")
        async with ServiceBusClient.from_connection_string(
            double.connection_string, retry_total=0
        ) as c:
            async with c.get_topic_sender("t", keep_alive=None) as sender:
                await sender.send_messages(
                    [
                        ServiceBusMessage(b"short", message_id="short", time_to_live=timedelta(1)),
                        ServiceBusMessage(b"default", message_id="default"),
                    ]
                )
            short = double.active("t/subscriptions/keeps")[0]
            assert short.time_to_live == timedelta(minutes=1)  # the entity's default caps it
            assert double.active("t/subscriptions/drops")[0].time_to_live == timedelta(hours=1)

            async with c.get_subscription_receiver("t", "keeps") as receiver:
                (locked,) = await receiver.receive_messages(max_wait_time=2)
                assert locked.time_to_live == timedelta(minutes=1)
                double.advance(90)
                # Expired while locked: kept until the lock ends; the other one is gone.
                assert [m.message_id for m in double.active("t/subscriptions/keeps")] == ["short"]
                await receiver.abandon_message(locked)

        dead = double.dead_letters("t/subscriptions/keeps")
        assert [(m.message_id, m.dead_letter_reason) for m in dead] == [
            ("default", "TTLExpiredException"),  # when it expired
            ("short", "TTLExpiredException"),  # once its lock ended
        ]
        assert dead[1].dead_letter_error_description == "The message expired and was dead lettered."
        assert double.active("t/subscriptions/drops") != []  # an hour on the topic's default
        double.advance(60 * 60)
        assert double.active("t/subscriptions/drops") == []
        assert [m.message_id for m in double.expired("t/subscriptions/drops")] == [
            "short",
            "default",
        ]
        assert double.dead_letters("t/subscriptions/drops") == []


async def test_max_delivery_count_and_lock_duration_are_per_subscription() -> None:
    start = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    with ServiceBusDouble(topics={}, now=lambda: start) as double:
        double.create_topic("t")
        double.create_subscription("t", "strict", max_delivery_count=1, lock_duration_seconds=5)
        double.create_subscription("t", "lenient")
        double.put("t", b"x", message_id="m")
        async with ServiceBusClient.from_connection_string(
            double.connection_string, retry_total=0
        ) as c:
            for name in ("strict", "lenient"):
                async with c.get_subscription_receiver("t", name) as receiver:
                    (message,) = await receiver.receive_messages(max_wait_time=2)
                    await receiver.abandon_message(message)
            assert double.active("t/subscriptions/strict") == []
            (dead,) = double.dead_letters("t/subscriptions/strict")
            assert (dead.dead_letter_reason, dead.delivery_count) == ("MaxDeliveryCountExceeded", 1)
            (kept,) = double.active("t/subscriptions/lenient")
            assert kept.delivery_count == 1

            double.put("t", b"y", message_id="locked")
            async with c.get_subscription_receiver("t", "strict") as receiver:
                (message,) = await receiver.receive_messages(max_wait_time=2)
                (locked,) = double.active("t/subscriptions/strict")
                assert locked.locked_until == start + timedelta(seconds=5)
                double.advance(6)  # past this subscription's lock: one failed delivery, the max
                assert double.active("t/subscriptions/strict") == []
        assert [m.message_id for m in double.dead_letters("t/subscriptions/strict")] == [
            "m",
            "locked",
        ]
        assert double.active("t/subscriptions/lenient")[-1].locked_until is None
