"""Product Recommendations offline orders against a fake that enforces the documented rules
(tests/fakes/product_recs.py): the destination alone through the real `call_with_retries`, and
both stages in process (accept, then the lane) as `tests.conftest`'s `local` runs them. The
FakeClock makes every wait instant."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from loyalty_client.customer import Customer
from order_processor.destinations.base import Sent, Skip
from order_processor.destinations.product_recs import (
    ANONYMOUS,
    ANONYMOUS_CANCELLATION,
    CANCEL_OFFLINE_ORDER,
    ProductRecs,
    ProductRecsSettings,
)
from order_processor.ledger import MemoryLedger
from order_processor.local import LocalRun
from order_processor.model import DeliveryStatus, Settlement, TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from tests.conftest import FakeClock, metadata, sample, settings_for
from tests.events import tracking_event as event
from tests.fakes.base import FakeServer, Reply
from tests.fakes.product_recs import (
    CANCEL_PATH,
    CHANNEL,
    PATH,
    SITE,
    SITE_TOKEN,
    ProductRecsRules,
    product_recs_server,
)

ANN = Customer(customer_id="C-000123", email="ann.shopper@example.com")


@pytest.fixture
def recs() -> Iterator[tuple[FakeServer, ProductRecsRules]]:
    server, rules = product_recs_server()
    with server:
        yield server, rules


def make_destination(server: FakeServer, **overrides: Any) -> ProductRecs:
    values: dict[str, Any] = {
        "url": f"{server.url}{PATH}",
        "site": SITE,
        "site_token": SITE_TOKEN,
        **overrides,
    }
    timeouts = Timeouts()
    return ProductRecs(
        ProductRecsSettings(**values), client=new_client(timeouts=timeouts), timeouts=timeouts
    )


@contextlib.asynccontextmanager
async def destination_at(server: FakeServer, **overrides: Any) -> AsyncIterator[ProductRecs]:
    """A destination on `server` with some settings changed; its client closed afterwards."""
    built = make_destination(server, **overrides)
    try:
        yield built
    finally:
        await built.client.aclose()


@pytest.fixture
async def destination(recs: tuple[FakeServer, ProductRecsRules]) -> AsyncIterator[ProductRecs]:
    async with destination_at(recs[0]) as built:
        yield built


async def deliver(
    destination: ProductRecs,
    tracking: TrackingEvent,
    retry: RetryPolicy,
    clock: FakeClock,
    route: str = "offline-order",
) -> Sent:
    prepared = destination.prepare(tracking, route)
    assert isinstance(prepared, httpx.Request)

    async def attempt() -> Sent:
        return await destination.send(prepared)

    return await call_with_retries(attempt, policy=retry, deadline=clock() + 30)


def fail_body(*errors: tuple[str, str]) -> dict[str, Any]:
    return {"status": "fail", "errors": [{"code": c, "message": m} for c, m in errors]}


async def test_order_created_is_delivered_with_the_documented_headers_and_body(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs

    sent = await deliver(destination, event(), retry, clock)

    assert sent == Sent()
    [request] = server.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.header("site") == SITE
    assert request.header("siteToken") == SITE_TOKEN
    assert request.header("channel") == CHANNEL == "store"
    assert request.header("content-type") == "application/json"
    # Money keeps the ERP's digits: "50.00" is written 50.00, never 50.0 or a float.
    assert b'"price":50.00' in request.body
    assert b'"subTotal":90.00' in request.body
    assert json.loads(request.body, parse_float=Decimal) == {
        "lang": "en-gb",
        "user": {"id": "C-000123"},
        "order": {
            "refCode": "100245",
            "customerId": "C-000123",
            "orderDate": "2026-11-20T14:25:00 GMT",
            "currency": "GBP",
            "shipping": 0,
            "subTotal": Decimal("90.00"),
            "total": Decimal("90.0"),
            "items": [
                {
                    "refCode": "4551",
                    "qty": 1,
                    "price": Decimal("50.00"),
                    "attributes": {"size": "M"},
                },
                {"refCode": "2020", "qty": 2, "price": Decimal("20.0"), "attributes": {}},
            ],
            "attributes": {
                "till": "12",
                "store": "Regent Street",
                "storePostcode": "W1B 4HX",
                "storeId": "S042",
            },
        },
    }
    assert rules.accepted == [request.json()]
    assert clock.sleeps == []


def test_an_order_without_a_known_customer_is_skipped_by_default(
    recs: tuple[FakeServer, ProductRecsRules], destination: ProductRecs
) -> None:
    tracking = event("order-created-unknown-card.json", customer=Customer(), known=False)

    assert destination.prepare(tracking, "offline-order") == Skip(ANONYMOUS)
    assert "PRODUCT_RECS_SEND_ANONYMOUS=true" in ANONYMOUS
    assert recs[0].requests == []


@pytest.mark.parametrize(
    ("customer", "known"),
    [(Customer(), False), (ANN, False), (Customer(phone="+447700900123"), True)],
    ids=["unknown-card", "unknown-card-with-erp-details", "known-without-id-or-email"],
)
async def test_send_anonymous_sends_it_without_user_or_customer_id(
    recs: tuple[FakeServer, ProductRecsRules],
    retry: RetryPolicy,
    clock: FakeClock,
    customer: Customer,
    known: bool,
) -> None:
    tracking = event("order-created-unknown-card.json", customer=customer, known=known)
    async with destination_at(recs[0], send_anonymous=True) as anonymous:
        assert await deliver(anonymous, tracking, retry, clock) == Sent()

    [accepted] = recs[1].accepted
    assert "user" not in accepted
    assert "customerId" not in accepted["order"]
    assert b"C-000123" not in recs[0].requests[0].body


async def test_customer_without_id_is_sent_by_email_only(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    tracking = event(customer=Customer(email="ann.shopper@example.com"))

    await deliver(destination, tracking, retry, clock)

    assert recs[1].accepted[0]["user"] == {"email": "ann.shopper@example.com"}
    assert "customerId" not in recs[1].accepted[0]["order"]


async def test_fail_with_http_200_is_permanent_with_codes_and_messages(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs
    server.inject(
        Reply(
            200,
            fail_body(
                ("MalformedJson", "unexpected token at 12"),
                ("SiteNotRecognized", "site xyz is unknown"),
            ),
        )
    )

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, event(), retry, clock)

    error = caught.value
    assert error.kind is FailureKind.PERMANENT
    assert error.status == 200
    assert error.vendor_code == "MalformedJson,SiteNotRecognized"
    assert "MalformedJson: unexpected token at 12" in error.describe()
    assert "SiteNotRecognized: site xyz is unknown" in error.describe()
    assert len(server.requests) == 1  # never retried
    assert rules.accepted == []


async def test_fake_refuses_a_bad_currency_with_the_documented_code(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    tracking = event()
    order = tracking.order.model_copy(update={"currency": "gbp"})
    bad = TrackingEvent(order=order, customer=ANN, customer_known=True, key="k")

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, bad, retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.vendor_code == "MissingOrMalformedCurrency"


async def test_vendor_text_is_redacted_before_it_reaches_the_error(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    recs[0].inject(
        Reply(
            200,
            fail_body(("UserNotFound", "no user ann.shopper@example.com, card 6330001234567890")),
        )
    )

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, event(), retry, clock)

    text = caught.value.describe()
    assert "ann.shopper@example.com" not in text
    assert "6330001234567890" not in text
    assert "UserNotFound: no user <email>, card <number>" in text


async def test_warning_is_delivered_with_a_note_and_logs_codes_only(
    retry: RetryPolicy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, rules = product_recs_server(
        warnings=[
            {"code": "UnknownInfoKey", "message": "info key ann.shopper@example.com ignored"},
            {"code": "UnknownProduct", "message": "refCode 4551 is not in the catalogue"},
        ]
    )
    with server, caplog.at_level(logging.WARNING):
        async with destination_at(server) as warned:
            sent = await deliver(warned, event(), retry, clock)

    assert sent == Sent(note="warning: UnknownInfoKey, UnknownProduct")
    assert len(rules.accepted) == 1
    [record] = [r for r in caplog.records if r.name.endswith("product_recs")]
    assert record.levelno == logging.WARNING
    assert "UnknownInfoKey, UnknownProduct" in record.getMessage()
    assert "ann.shopper" not in record.getMessage()
    assert "catalogue" not in record.getMessage()


async def test_500_is_transient_and_retried(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs
    server.inject(Reply(500, "Internal Server Error"))

    assert await deliver(destination, event(), retry, clock) == Sent()

    assert len(server.requests) == 2
    assert len(clock.sleeps) == 1
    assert len(rules.accepted) == 1


async def test_500_every_time_ends_transient_after_the_attempts(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, _ = recs
    server.inject(*[Reply(503, "Service Unavailable")] * retry.max_attempts)

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, event(), retry, clock)

    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.status == 503
    assert len(server.requests) == retry.max_attempts


async def test_429_honours_retry_after(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs
    server.inject(Reply(429, {"message": "slow down"}, headers={"Retry-After": "7"}))

    assert await deliver(destination, event(), retry, clock) == Sent()

    assert clock.sleeps == [7.0]
    assert len(rules.accepted) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"<html>Gateway maintenance</html>", headers={"Content-Type": "text/html"}),
        Reply(200, {"result": "accepted"}),
        Reply(200, {"status": "queued"}),
        Reply(200, b""),
    ],
    ids=["html-page", "no-status", "unknown-status", "empty"],
)
async def test_2xx_without_a_recognised_status_is_transient(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
    reply: Reply,
) -> None:
    server, _ = recs
    server.inject(*[reply] * retry.max_attempts)

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, event(), retry, clock)

    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.status == 200
    assert len(server.requests) == retry.max_attempts


async def test_wrong_site_token_is_permanent(
    recs: tuple[FakeServer, ProductRecsRules], retry: RetryPolicy, clock: FakeClock
) -> None:
    server, rules = recs
    async with destination_at(server, site_token="not-the-token") as wrong:
        with pytest.raises(DeliveryError) as caught:
            await deliver(wrong, event(), retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.vendor_code == "InvalidSiteToken"
    assert "not-the-token" not in caught.value.describe()
    assert len(server.requests) == 1
    assert rules.accepted == []


async def test_wrong_site_is_permanent(
    recs: tuple[FakeServer, ProductRecsRules], retry: RetryPolicy, clock: FakeClock
) -> None:
    server, _ = recs
    async with destination_at(server, site="othersite") as wrong:
        with pytest.raises(DeliveryError) as caught:
            await deliver(wrong, event(), retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.vendor_code == "SiteNotRecognized"


async def test_4xx_with_a_fail_body_is_permanent_and_keeps_the_codes(
    recs: tuple[FakeServer, ProductRecsRules],
    destination: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    recs[0].inject(Reply(400, fail_body(("MalformedJson", "bad body"))))

    with pytest.raises(DeliveryError) as caught:
        await deliver(destination, event(), retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.status == 400
    assert caught.value.vendor_code == "MalformedJson"
    assert len(recs[0].requests) == 1


# Through both stages: loyalty lookup, routing, the lane's ledger claim, retries and settlement.


@contextlib.asynccontextmanager
async def stages(
    server: FakeServer,
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
    **product_recs: Any,
) -> AsyncIterator[LocalRun]:
    """Both stages with only Product Recommendations enabled (at `server`), its settings
    changed by `product_recs`."""
    settings = settings_for(
        "http://127.0.0.1:9",
        loyalty.url,
        others={"product_recs": server.url},
        profile_store={"enabled": False},
        product_recs=product_recs,
    )
    pipeline = Pipeline.from_settings(
        settings,
        retry=retry,
        clock=clock,
        now=clock.utc,
        ledger=MemoryLedger(),
        outbox=MemoryOutbox(),
    )
    try:
        yield LocalRun(pipeline)
    finally:
        await pipeline.aclose()


@pytest.fixture
async def local_recs(
    recs: tuple[FakeServer, ProductRecsRules],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
) -> AsyncIterator[LocalRun]:
    async with stages(recs[0], loyalty, retry, clock) as run:
        yield run


async def test_order_created_is_delivered_with_the_loyalty_customer_id(
    recs: tuple[FakeServer, ProductRecsRules], local_recs: LocalRun
) -> None:
    run = await local_recs.run(sample("order-created.json"), metadata())

    assert run.settlement is Settlement.COMPLETE, run.description
    assert run.accept.routed == ("product_recs",)
    result = run.result_for("product_recs")
    assert result is not None
    assert result.status is DeliveryStatus.DELIVERED
    [accepted] = recs[1].accepted
    assert accepted["user"] == {"id": "C-000123"}


async def test_an_unknown_card_is_recorded_as_skipped_with_the_reason(
    recs: tuple[FakeServer, ProductRecsRules], local_recs: LocalRun
) -> None:
    run = await local_recs.run(sample("order-created-unknown-card.json"), metadata())

    assert run.settlement is Settlement.COMPLETE, run.description
    assert run.accept.routed == ("product_recs",)  # decided by the mapping, on the lane
    result = run.result_for("product_recs")
    assert result is not None
    assert (result.status, result.detail) == (DeliveryStatus.SKIPPED, ANONYMOUS)
    assert recs[0].requests == []


async def test_with_send_anonymous_an_unknown_card_is_delivered_without_user(
    recs: tuple[FakeServer, ProductRecsRules],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    async with stages(recs[0], loyalty, retry, clock, send_anonymous=True) as local:
        run = await local.run(sample("order-created-unknown-card.json"), metadata())

    result = run.result_for("product_recs")
    assert result is not None
    assert result.status is DeliveryStatus.DELIVERED
    [accepted] = recs[1].accepted
    assert "user" not in accepted
    assert accepted["order"]["refCode"] == "100247"


@pytest.mark.parametrize("name", ["order-updated.json", "order-delivered.json"])
async def test_other_events_are_not_published_to_the_lane(
    recs: tuple[FakeServer, ProductRecsRules], local_recs: LocalRun, name: str
) -> None:
    run = await local_recs.run(sample(name), metadata())

    assert run.settlement is Settlement.COMPLETE
    assert run.accept.routed == ()
    assert run.lanes == {}
    result = run.result_for("product_recs")
    assert result is not None
    assert result.status is DeliveryStatus.SKIPPED
    assert recs[0].requests == []


async def test_a_fail_answer_is_dead_lettered_on_the_lane_with_the_vendor_error(
    recs: tuple[FakeServer, ProductRecsRules], local_recs: LocalRun
) -> None:
    recs[0].inject(Reply(200, fail_body(("MissingOrMalformedCurrency", "currency XYZ unknown"))))

    run = await local_recs.run(sample("order-created.json"), metadata())

    lane = run.lanes["product_recs"]
    assert (lane.settlement, lane.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert lane.description is not None
    assert "MissingOrMalformedCurrency: currency XYZ unknown" in lane.description
    result = run.result_for("product_recs")
    assert result is not None
    assert result.vendor_code == "MissingOrMalformedCurrency"
    assert result.status is DeliveryStatus.PERMANENT_ERROR


# Cancellations: DELETE {PRODUCT_RECS_URL without /tracker}/<order number>, when enabled.


def cancelled_event(order_id: str = "100245", **changes: Any) -> TrackingEvent:
    return event("order-cancelled.json", orderId=order_id, **changes)


async def cancel(
    destination: ProductRecs, tracking: TrackingEvent, retry: RetryPolicy, clock: FakeClock
) -> Sent:
    return await deliver(destination, tracking, retry, clock, route=CANCEL_OFFLINE_ORDER)


@pytest.fixture
async def cancelling(recs: tuple[FakeServer, ProductRecsRules]) -> AsyncIterator[ProductRecs]:
    async with destination_at(recs[0], cancellations_enabled=True) as built:
        yield built


async def test_a_cancellation_deletes_the_offline_order_with_the_same_headers(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs
    await deliver(cancelling, event(), retry, clock)

    assert await cancel(cancelling, cancelled_event(), retry, clock) == Sent()

    request = server.requests[-1]
    assert (request.method, request.path) == ("DELETE", f"{CANCEL_PATH}/100245")
    assert not request.path.startswith("/tracker")
    assert request.header("site") == SITE
    assert request.header("siteToken") == SITE_TOKEN
    assert request.header("channel") == CHANNEL
    assert request.header("content-type") == "application/json"
    assert request.body == b""
    assert rules.cancelled == ["100245"]


async def test_the_order_number_is_one_percent_encoded_path_segment(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = recs
    odd = "ST/42 #7?x=1&y=%é"
    await deliver(cancelling, event(orderId=odd), retry, clock)

    await cancel(cancelling, cancelled_event(odd), retry, clock)

    assert server.requests[-1].path == f"{CANCEL_PATH}/ST%2F42%20%237%3Fx%3D1%26y%3D%25%C3%A9"
    assert server.requests[-1].query == {}
    assert rules.cancelled == [odd]


@pytest.mark.parametrize("order_id", [".", ".."])
def test_a_dot_segment_order_number_is_refused_before_sending(
    recs: tuple[FakeServer, ProductRecsRules], cancelling: ProductRecs, order_id: str
) -> None:
    with pytest.raises(DeliveryError) as caught:
        cancelling.prepare(cancelled_event(order_id), CANCEL_OFFLINE_ORDER)

    assert caught.value.kind is FailureKind.PERMANENT
    assert "cannot be a URL path segment" in caught.value.describe()
    assert recs[0].requests == []


@pytest.mark.parametrize(
    ("rules", "overrides", "code"),
    [
        ({"cancellations_enabled": False}, {}, "CancellationsNotEnabled"),
        ({}, {"site_token": "not-the-token"}, "InvalidSiteToken"),
        ({}, {"channel": "callcentre"}, "ChannelNotRecognized"),
        ({}, {"site": "othersite"}, "SiteNotRecognized"),
    ],
    ids=["not-enabled-for-the-site", "wrong-token", "wrong-channel", "wrong-site"],
)
async def test_a_refused_cancellation_is_permanent_with_the_code(
    retry: RetryPolicy,
    clock: FakeClock,
    rules: dict[str, Any],
    overrides: dict[str, Any],
    code: str,
) -> None:
    server, fake = product_recs_server(**rules)
    with server:
        async with destination_at(server, cancellations_enabled=True) as created:
            await deliver(created, event(), retry, clock)
        async with destination_at(server, cancellations_enabled=True, **overrides) as wrong:
            with pytest.raises(DeliveryError) as caught:
                await cancel(wrong, cancelled_event(), retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.vendor_code == code
    assert "not-the-token" not in caught.value.describe()
    assert len(server.requests) == 2  # never retried
    assert fake.cancelled == []


async def test_cancelling_an_order_the_tracker_never_received_is_permanent(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    with pytest.raises(DeliveryError) as caught:
        await cancel(cancelling, cancelled_event("999999"), retry, clock)

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.vendor_code == "OrderNotFound"


async def test_a_cancellation_retried_after_a_lost_answer_is_still_ok(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    _, rules = recs
    await deliver(cancelling, event(), retry, clock)
    await cancel(cancelling, cancelled_event(), retry, clock)

    assert await cancel(cancelling, cancelled_event(), retry, clock) == Sent()
    assert rules.cancelled == ["100245"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200, {"status": "OK"}), Sent()),
        (Reply(204), Sent()),
        (Reply(200, {"status": "warning", "errors": [{"code": "W1", "message": "m"}]}), None),
    ],
    ids=["ok-body", "no-content", "warning"],
)
async def test_what_a_delete_answer_means(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
    reply: Reply,
    expected: Sent | None,
) -> None:
    recs[0].inject(reply)

    sent = await cancel(cancelling, cancelled_event(), retry, clock)

    assert sent == (expected or Sent(note="warning: W1"))


async def test_a_2xx_delete_answer_that_is_not_the_trackers_is_transient(
    recs: tuple[FakeServer, ProductRecsRules],
    cancelling: ProductRecs,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    recs[0].inject(*[Reply(200, b"<html>maintenance</html>")] * retry.max_attempts)

    with pytest.raises(DeliveryError) as caught:
        await cancel(cancelling, cancelled_event(), retry, clock)

    assert caught.value.kind is FailureKind.TRANSIENT


def test_a_cancellation_of_an_order_without_a_known_customer_is_skipped(
    recs: tuple[FakeServer, ProductRecsRules], cancelling: ProductRecs
) -> None:
    tracking = event("order-cancelled.json", customer=Customer(), known=False)

    assert cancelling.prepare(tracking, CANCEL_OFFLINE_ORDER) == Skip(ANONYMOUS_CANCELLATION)
    assert recs[0].requests == []


async def test_with_send_anonymous_it_is_cancelled_too(
    recs: tuple[FakeServer, ProductRecsRules], retry: RetryPolicy, clock: FakeClock
) -> None:
    anonymous = {"customer": Customer(), "known": False}
    async with destination_at(recs[0], cancellations_enabled=True, send_anonymous=True) as built:
        await deliver(built, event(**anonymous), retry, clock)
        assert await cancel(built, cancelled_event(**anonymous), retry, clock) == Sent()

    assert recs[1].cancelled == ["100245"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", f"{PATH}/100245", 404),  # under /tracker: not the documented path
        ("POST", f"{CANCEL_PATH}/100245", 405),
        ("GET", f"{CANCEL_PATH}/100245", 405),
        ("DELETE", PATH, 405),
        ("DELETE", f"{CANCEL_PATH}/", 404),
        ("DELETE", f"{CANCEL_PATH}/100/245", 404),
    ],
)
def test_the_fake_refuses_what_the_tracker_does_not_serve(
    recs: tuple[FakeServer, ProductRecsRules], method: str, path: str, status: int
) -> None:
    headers = {
        "site": SITE,
        "siteToken": SITE_TOKEN,
        "channel": CHANNEL,
        "Content-Type": "application/json",
    }
    answer = httpx.request(method, f"{recs[0].url}{path}", headers=headers)

    assert answer.status_code == status
    assert recs[1].cancelled == []


async def test_through_both_stages_a_cancellation_is_published_and_sent_when_enabled(
    recs: tuple[FakeServer, ProductRecsRules],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    async with stages(recs[0], loyalty, retry, clock, cancellations_enabled=True) as local:
        created = await local.run(sample("order-created.json"), metadata("m-1"))
        run = await local.run(sample("order-cancelled.json"), metadata("m-2"))

    assert created.settlement is Settlement.COMPLETE, created.description
    assert run.settlement is Settlement.COMPLETE, run.description
    assert run.accept.routed == ("product_recs",)
    result = run.result_for("product_recs")
    assert result is not None
    assert result.status is DeliveryStatus.DELIVERED
    assert (recs[0].requests[-1].method, recs[0].requests[-1].path) == (
        "DELETE",
        f"{CANCEL_PATH}/100245",
    )
    assert recs[1].cancelled == ["100245"]


async def test_by_default_a_cancellation_is_not_even_published(
    recs: tuple[FakeServer, ProductRecsRules], local_recs: LocalRun
) -> None:
    run = await local_recs.run(sample("order-cancelled.json"), metadata())

    assert run.settlement is Settlement.COMPLETE
    assert run.accept.routed == ()
    assert run.lanes == {}
    result = run.result_for("product_recs")
    assert result is not None
    assert (result.status, result.detail) == (
        DeliveryStatus.SKIPPED,
        "OrderCancelled is not routed here",
    )
    assert recs[0].requests == []


async def test_through_both_stages_a_refused_cancellation_is_dead_lettered_on_the_lane(
    recs: tuple[FakeServer, ProductRecsRules],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    async with stages(recs[0], loyalty, retry, clock, cancellations_enabled=True) as local:
        run = await local.run(sample("order-cancelled.json"), metadata())  # never created

    lane = run.lanes["product_recs"]
    assert (lane.settlement, lane.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert "OrderNotFound" in (lane.description or "")
