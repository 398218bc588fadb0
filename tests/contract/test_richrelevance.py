"""RichRelevance against a fake that enforces the Omnichannel Order API's documented rules."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from order_processor.destinations.base import Sent, Skip
from order_processor.destinations.richrelevance import RichRelevance, RichRelevanceSettings
from order_processor.dryrun import RecordingTransport
from order_processor.ledger import MemoryLedger
from order_processor.local import LocalRun, received
from order_processor.model import MessageMetadata, Settlement, TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import Timeouts, new_client
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from tests.conftest import FakeClock, business_requests, metadata, sample, settings_for
from tests.events import tracking_event as event
from tests.fakes.base import FakeServer, Reply
from tests.fakes.richrelevance import (
    API_KEY,
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_PATH,
    RichRelevanceRules,
    richrelevance_server,
)

ROUTE = "order-import"
EMAIL = "ann.shopper@example.com"


def make(url: str, transport: httpx.AsyncBaseTransport | None = None, **settings: Any) -> Any:
    values: dict[str, Any] = {
        "base_url": url,
        "api_key": API_KEY,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **settings,
    }
    timeouts = Timeouts()
    return RichRelevance(
        RichRelevanceSettings(**values),
        client=new_client(timeouts=timeouts, transport=transport),
        timeouts=timeouts,
    )


@pytest.fixture
def fake() -> Iterator[tuple[FakeServer, RichRelevanceRules]]:
    server, rules = richrelevance_server()
    with server:
        yield server, rules


@pytest.fixture
async def rr(fake: tuple[FakeServer, RichRelevanceRules]) -> AsyncIterator[RichRelevance]:
    destination = make(fake[0].url)
    yield destination
    await destination.client.aclose()


async def deliver(destination: RichRelevance, tracking: TrackingEvent) -> Sent:
    request = destination.prepare(tracking, ROUTE)
    assert isinstance(request, httpx.Request)
    return await destination.send(request)


def puts(server: FakeServer) -> list[Any]:
    return [r for r in server.requests if r.path != TOKEN_PATH]


def token_calls(server: FakeServer) -> list[Any]:
    return [r for r in server.requests if r.path == TOKEN_PATH]


async def test_created_then_updated_import_the_same_order(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    server, rules = fake
    first = await deliver(rr, event("order-created.json"))
    second = await deliver(rr, event("order-updated.json"))

    assert first.response_id == second.response_id == "100245"
    assert [o["id"] for o in rules.accepted] == [100245, 100245]
    assert list(rules.orders) == [("store", 100245)]  # the update replaced the order
    assert [i["quantity"] for i in rules.orders[("store", 100245)]["lineItems"]] == [1, 1]
    assert rules.modes == ["offline", "offline"]
    assert rules.token_requests == 1
    request = puts(server)[0]
    assert request.method == "PUT"
    assert request.path == f"/omnichannel/api/v1/{API_KEY}/orders"
    assert request.query == {"mode": ["offline"]}
    assert request.header("authorization") == "Bearer rr-token-1"
    assert request.header("content-type") == "application/json"


async def test_online_mode_is_the_query_parameter(
    fake: tuple[FakeServer, RichRelevanceRules],
) -> None:
    server, rules = fake
    destination = make(server.url, mode="online")
    try:
        await deliver(destination, event())
    finally:
        await destination.client.aclose()
    assert rules.modes == ["online"]


async def test_money_is_sent_as_exact_decimals(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    await deliver(rr, event("order-created-with-email.json"))
    body = puts(fake[0])[0].body
    assert b'"unitPrice":50.00' in body
    assert b'"couponValue":10.00' in body
    assert b'"couponCode":"WINTER10"' in body


async def test_token_is_fetched_once_for_concurrent_sends(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    server, rules = fake
    results = await asyncio.gather(*(deliver(rr, event()) for _ in range(20)))

    assert len(results) == 20
    assert rules.token_requests == 1
    assert len(token_calls(server)) == 1
    assert rr.token_requests == 1
    assert {r.header("authorization") for r in puts(server)} == {"Bearer rr-token-1"}
    assert len(rules.accepted) == 20


async def test_token_request_uses_client_credentials(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    await deliver(rr, event())
    token = token_calls(fake[0])[0]
    assert token.method == "POST"
    assert token.form() == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


async def test_a_401_refreshes_the_token_exactly_once_and_retries_the_put(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    server, rules = fake
    await deliver(rr, event())
    rules.revoke_tokens()

    sent = await deliver(rr, event("order-updated.json"))

    assert sent.response_id == "100245"
    assert rules.token_requests == 2
    assert rr.token_requests == 2
    assert [r.header("authorization") for r in puts(server)] == [
        "Bearer rr-token-1",
        "Bearer rr-token-1",  # answered 401
        "Bearer rr-token-2",  # the one retry, with the new token
    ]
    # the new token is reused afterwards
    await deliver(rr, event())
    assert rules.token_requests == 2


async def test_concurrent_401s_share_one_refresh(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    _, rules = fake
    await deliver(rr, event())
    rules.revoke_tokens()
    await asyncio.gather(*(deliver(rr, event()) for _ in range(10)))
    assert rules.token_requests == 2


async def test_a_second_401_after_refresh_is_permanent(
    fake: tuple[FakeServer, RichRelevanceRules], retry: RetryPolicy, clock: FakeClock
) -> None:
    server, rules = fake
    rules.accept_tokens = False  # e.g. credentials for another environment's gateway
    destination = make(server.url)
    tracking = event()
    try:
        with pytest.raises(DeliveryError) as caught:
            await call_with_retries(
                lambda: deliver(destination, tracking), policy=retry, deadline=clock() + 60
            )
    finally:
        await destination.client.aclose()

    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.status == 401
    assert rules.token_requests == 2
    assert len(puts(server)) == 2
    assert clock.sleeps == []
    text = str(caught.value)
    for secret in ("rr-token", CLIENT_SECRET, API_KEY, EMAIL):
        assert secret not in text


@pytest.mark.parametrize(
    "fault",
    [Reply(503, {"error": "unavailable"}), Reply(502), Reply(drop=True)],
    ids=["503", "502", "connection-dropped"],
)
async def test_token_endpoint_down_is_transient_and_retried(
    rr: RichRelevance,
    fake: tuple[FakeServer, RichRelevanceRules],
    retry: RetryPolicy,
    clock: FakeClock,
    fault: Reply,
) -> None:
    server, rules = fake
    server.inject(fault)
    tracking = event()
    with pytest.raises(DeliveryError) as caught:
        await deliver(rr, tracking)
    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.system == "richrelevance token"
    assert puts(server) == []

    server.inject(fault)
    sent = await call_with_retries(
        lambda: deliver(rr, tracking), policy=retry, deadline=clock() + 60
    )
    assert sent.response_id == "100245"
    assert len(clock.sleeps) == 1
    assert rules.token_requests == 1  # injected faults never reach the rules


async def test_token_endpoint_unreachable_is_transient() -> None:
    destination = make("http://127.0.0.1:9")  # discard port: nothing listens
    try:
        with pytest.raises(DeliveryError) as caught:
            await deliver(destination, event())
    finally:
        await destination.client.aclose()
    assert caught.value.kind is FailureKind.TRANSIENT


async def test_bad_client_credentials_are_permanent(
    fake: tuple[FakeServer, RichRelevanceRules], retry: RetryPolicy, clock: FakeClock
) -> None:
    server, rules = fake
    destination = make(server.url, client_secret="wrong-secret")
    tracking = event()
    try:
        with pytest.raises(DeliveryError) as caught:
            await call_with_retries(
                lambda: deliver(destination, tracking), policy=retry, deadline=clock() + 60
            )
    finally:
        await destination.client.aclose()
    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.status == 401
    assert caught.value.system == "richrelevance token"
    assert "wrong-secret" not in str(caught.value)
    assert rules.token_requests == 1
    assert puts(server) == []


async def test_orders_5xx_is_retried_with_the_same_token(
    rr: RichRelevance,
    fake: tuple[FakeServer, RichRelevanceRules],
    retry: RetryPolicy,
    clock: FakeClock,
) -> None:
    server, rules = fake
    await deliver(rr, event())  # token fetched and cached
    server.inject(Reply(503, {"error": "unavailable"}, headers={"Retry-After": "2"}))
    tracking = event()
    sent = await call_with_retries(
        lambda: deliver(rr, tracking), policy=retry, deadline=clock() + 60
    )
    assert sent.response_id == "100245"
    assert clock.sleeps == [2.0]
    assert rules.token_requests == 1


async def test_unknown_api_key_is_permanent(
    fake: tuple[FakeServer, RichRelevanceRules],
) -> None:
    server, _ = fake
    destination = make(server.url, api_key="not-our-key")
    try:
        with pytest.raises(DeliveryError) as caught:
            await deliver(destination, event())
    finally:
        await destination.client.aclose()
    assert caught.value.kind is FailureKind.PERMANENT
    assert caught.value.status == 403


def _hashed(erp_id: str, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(erp_id.encode()).digest()[:8], "big") & ((1 << bits) - 1)


async def test_non_numeric_order_id_gets_a_stable_31_bit_id_by_default(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    _, rules = fake
    erp_id = "ST042-2026/0001"
    expected = _hashed(erp_id, 31)

    created = await deliver(rr, event(orderId=erp_id))
    await deliver(rr, event("order-updated.json", orderId=erp_id))

    assert [o["id"] for o in rules.accepted] == [expected, expected]
    assert 0 <= expected <= 2**31 - 1  # the fake holds `id` to a 32-bit integer
    assert list(rules.orders) == [("store", expected)]  # the update replaced it
    assert rules.orders[("store", expected)]["externalOrderId"] == erp_id
    assert created.response_id == str(expected)  # recorded in the ledger


async def test_a_53_bit_id_is_refused_by_an_integer_id_and_taken_by_a_long_one() -> None:
    """Why 31 is the default: the earlier 53-bit hash overflows the documented integer."""
    erp_id = "ST042-2026/0001"
    for long_ids, accepted in ((False, False), (True, True)):
        server, rules = richrelevance_server(long_ids=long_ids)
        with server:
            destination = make(server.url, order_id_bits=53)
            try:
                if accepted:
                    sent = await deliver(destination, event(orderId=erp_id))
                    assert sent.response_id == str(_hashed(erp_id, 53))
                else:
                    with pytest.raises(DeliveryError) as caught:
                        await deliver(destination, event(orderId=erp_id))
                    assert caught.value.kind is FailureKind.PERMANENT
                    assert "id is mandatory and must be an integer (32-bit)" in str(caught.value)
            finally:
                await destination.client.aclose()
        assert len(rules.accepted) == (1 if accepted else 0)


async def test_a_numeric_order_id_above_the_range_is_refused_before_sending(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    server, _ = fake
    with pytest.raises(DeliveryError) as caught:
        await deliver(rr, event(orderId="2147483648"))
    assert caught.value.kind is FailureKind.PERMANENT
    assert "RICHRELEVANCE_ORDER_ID_BITS=31: 0 to 2147483647" in str(caught.value)
    assert server.requests == []  # never truncated, never sent

    sent = await deliver(rr, event(orderId="2147483647"))
    assert sent.response_id == "2147483647"


async def test_no_customer_id_is_skipped_and_nothing_is_sent(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    prepared = rr.prepare(event(customer_id=None), ROUTE)
    assert isinstance(prepared, Skip)
    assert "customer id" in prepared.reason
    assert fake[0].requests == []


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("sha256", hashlib.sha256(EMAIL.encode()).hexdigest()),
        ("md5", hashlib.md5(EMAIL.encode(), usedforsecurity=False).hexdigest()),
        ("off", None),
    ],
)
async def test_email_hash_setting(
    fake: tuple[FakeServer, RichRelevanceRules], algorithm: str, expected: str | None
) -> None:
    server, rules = fake
    destination = make(server.url, email_hash=algorithm)
    try:
        await deliver(destination, event(email="  Ann.Shopper@Example.COM "))
    finally:
        await destination.client.aclose()
    assert rules.accepted[0].get("emailHash") == expected
    assert b"example" not in puts(server)[0].body.lower()


async def test_dry_run_answers_both_the_token_and_the_put() -> None:
    transport = RecordingTransport(
        status=RichRelevance.dry_run_status, body=RichRelevance.dry_run_body
    )
    destination = make("https://gateway.richrelevance.com", transport=transport)
    try:
        sent = await deliver(destination, event())
    finally:
        await destination.client.aclose()
    assert sent.response_id == "100245"
    assert [str(r.url) for r in transport.requests] == [
        "https://gateway.richrelevance.com/omnichannel/v1/oauth2/token",
        f"https://gateway.richrelevance.com/omnichannel/api/v1/{API_KEY}/orders?mode=offline",
    ]
    assert (
        transport.requests[1].headers["authorization"]
        == f"Bearer {RichRelevance.dry_run_body['access_token']}"
    )


# --- the batch lane: the documented bulk POST of an order array ---------------------------------


async def _rr_lane_batch(pipeline: Pipeline, outbox: MemoryOutbox, bodies: list[bytes]) -> Any:
    """Accept each order, then hand the RichRelevance lane its delivery messages as one batch."""
    for index, body in enumerate(bodies):
        await pipeline.accept.accept(body, MessageMetadata(message_id=f"m-{index}"))
    mine = [m for m in outbox.take() if m.destination == "richrelevance"]
    return await pipeline.lanes["richrelevance"].deliver_batch(
        [(m.body, received(m)) for m in mine]
    )


def _order(order_id: str) -> bytes:
    document = json.loads(sample("order-created.json"))
    document["orderId"] = order_id
    return json.dumps(document).encode()


async def test_a_batch_is_one_bulk_post_and_each_order_id_is_recorded(
    pipeline: Pipeline,
    outbox: MemoryOutbox,
    ledger: MemoryLedger,
    richrelevance: tuple[FakeServer, RichRelevanceRules],
) -> None:
    server, rules = richrelevance
    outcomes = await _rr_lane_batch(pipeline, outbox, [_order(i) for i in ("71", "72", "73")])

    assert [o.settlement for o in outcomes] == [Settlement.COMPLETE] * 3
    (bulk,) = puts(server)
    assert (bulk.method, bulk.path, bulk.query) == (
        "POST",
        f"/omnichannel/api/v1/{API_KEY}/orders",
        {"mode": ["offline"]},
    )
    assert [o["id"] for o in bulk.json()] == [71, 72, 73]
    assert sorted(o["id"] for o in rules.accepted) == [71, 72, 73]
    # The ledger keeps each order's own RichRelevance id, not one id for the whole request.
    recorded = {
        ledger.rows[(o.event_key, "richrelevance")][0].response_id for o in outcomes if o.event_key
    }
    assert recorded == {"71", "72", "73"}


# --- the fake holds requests to the documented field table ----------------------------------------


async def _post_raw(server: FakeServer, order: dict[str, Any], method: str = "PUT") -> Any:
    """One order as written here, straight to the fake (what the real API would be sent)."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        token = await client.post(
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        return await client.request(
            method,
            f"/omnichannel/api/v1/{API_KEY}/orders",
            params={"mode": "offline"},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            json=order if method == "PUT" else [order],
        )


VALID_ORDER: dict[str, Any] = {
    "id": 123,
    "channel": "store",
    "userId": "userA1",
    "dateTime": "2022-04-25T12:21:55+09:00",
    "paymentMethod": "credit",
    "currency": "USD",
    "lineItems": [{"productId": 4556, "skuId": "sku1", "quantity": 10, "unitPrice": 256.678}],
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"id": "123"}, "id is mandatory and must be an integer"),
        ({"id": 2**31}, "id is mandatory and must be an integer"),
        ({"paymentMethod": "card"}, "paymentMethod must be one of"),
        ({"paymentMethod": "Credit card"}, "paymentMethod must be one of"),
        ({"lineItems": [{"productId": "4556", "quantity": 1, "unitPrice": 1}]}, "productId"),
        ({"lineItems": [{"productId": "CB4551-M", "quantity": 1, "unitPrice": 1}]}, "productId"),
        ({"lineItems": [{"productId": 4556, "quantity": 1.5, "unitPrice": 1}]}, "quantity"),
        ({"lineItems": [{"productId": 4556, "skuId": 12, "quantity": 1, "unitPrice": 1}]}, None),
        ({"regionId": "7"}, "regionId must be a long"),
    ],
)
@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_the_fake_refuses_what_the_field_table_forbids(
    fake: tuple[FakeServer, RichRelevanceRules],
    change: dict[str, Any],
    problem: str | None,
    method: str,
) -> None:
    server, rules = fake
    response = await _post_raw(server, {**VALID_ORDER, **change}, method)
    if problem is None:
        assert response.status_code == 200, response.text
        assert len(rules.accepted) == 1
    else:
        assert response.status_code == 400
        assert problem in response.json()["message"]
        assert rules.accepted == []


async def test_a_strict_fake_refuses_the_examples_string_sku_id() -> None:
    server, _ = richrelevance_server(strict_sku_id=True)
    with server:
        response = await _post_raw(server, VALID_ORDER)
    assert response.status_code == 400
    assert "skuId must be an integer" in response.json()["message"]


# --- productId: integers, per RICHRELEVANCE_NON_NUMERIC_PRODUCT -----------------------------------


def _line(product_id: str | None, sku: str) -> dict[str, Any]:
    line: dict[str, Any] = {"sku": sku, "quantity": 1, "unitPrice": "12.50"}
    if product_id is not None:
        line["productId"] = product_id
    return line


MIXED_LINES = [_line("4551", "CB4551-M"), _line("CB-77", "CB-77"), _line(None, "9001")]


async def test_product_ids_are_sent_as_integers(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    server, rules = fake
    await deliver(rr, event())
    assert b'"productId":4551' in puts(server)[0].body
    assert [i["productId"] for i in rules.accepted[0]["lineItems"]] == [4551, 2020]


async def test_skip_line_sends_the_order_without_its_non_numeric_lines(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    _, rules = fake
    sent = await deliver(rr, event(lines=MIXED_LINES))
    (order,) = rules.accepted
    # Neither the SKU string nor the numeric-looking SKU "9001" stands in for a product id.
    assert order["lineItems"] == [
        {"productId": 4551, "skuId": "CB4551-M", "quantity": 1, "unitPrice": 12.5}
    ]
    assert sent.note == "2 of 3 lines left out (no integer productId): lines 1, 2"


async def test_skip_line_with_no_numeric_line_left_sends_nothing(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules]
) -> None:
    prepared = rr.prepare(event(lines=MIXED_LINES[1:]), ROUTE)
    assert isinstance(prepared, Skip)
    assert "no line has an integer productId" in prepared.reason
    assert fake[0].requests == []


async def _rr_only(
    rr_server: FakeServer, profile_store_url: str, loyalty_url: str, **rr_settings: Any
) -> Pipeline:
    settings = settings_for(
        profile_store_url,
        loyalty_url,
        others={"richrelevance": rr_server.url},
        richrelevance=rr_settings,
    )
    return Pipeline.from_settings(settings, outbox=MemoryOutbox())


async def test_reject_dead_letters_the_order_on_this_lane_only(
    richrelevance: tuple[FakeServer, RichRelevanceRules],
    profile_store: tuple[FakeServer, Any],
    loyalty: FakeServer,
) -> None:
    server, rules = richrelevance
    pipeline = await _rr_only(
        server, profile_store[0].url, loyalty.url, non_numeric_product="reject"
    )
    document = json.loads(sample("order-created.json"))
    document["lines"] = MIXED_LINES
    try:
        run = await LocalRun(pipeline).run(json.dumps(document).encode(), metadata())
    finally:
        await pipeline.aclose()
    refused = run.lanes["richrelevance"]
    assert (refused.settlement, refused.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert "lines[1] has no integer productId (sku CB-77)" in (refused.description or "")
    assert run.lanes["profile_store"].settlement is Settlement.COMPLETE
    assert business_requests(server) == []
    assert rules.accepted == []


async def test_an_order_id_above_the_range_dead_letters_with_the_setting_named(
    richrelevance: tuple[FakeServer, RichRelevanceRules],
    profile_store: tuple[FakeServer, Any],
    loyalty: FakeServer,
) -> None:
    server, _ = richrelevance
    pipeline = await _rr_only(server, profile_store[0].url, loyalty.url)
    document = json.loads(sample("order-created.json"))
    document["orderId"] = "9000000000"
    try:
        run = await LocalRun(pipeline).run(json.dumps(document).encode(), metadata())
    finally:
        await pipeline.aclose()
    refused = run.lanes["richrelevance"]
    assert (refused.settlement, refused.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert "RICHRELEVANCE_ORDER_ID_BITS=31" in (refused.description or "")
    assert business_requests(server) == []


# --- skuId ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "strict", "expected"),
    [
        ("string", False, ["CB4551-M", "SK-2020"]),
        ("integer", True, [None, 2020]),
    ],
)
async def test_sku_id_forms_are_accepted(
    form: str, strict: bool, expected: list[str | int | None]
) -> None:
    server, rules = richrelevance_server(strict_sku_id=strict)
    lines = [_line("4551", "CB4551-M"), _line("2020", "2020")]
    if form == "string":
        lines = None  # the sample's own SKUs
    with server:
        destination = make(server.url, sku_id=form)
        try:
            await deliver(destination, event(lines=lines) if lines else event())
        finally:
            await destination.client.aclose()
    assert [i.get("skuId") for i in rules.accepted[0]["lineItems"]] == expected


# --- paymentMethod --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("erp", "sent"),
    [
        ("cash", "cash"),
        ("card", "credit"),
        ("cheque", "check"),
        ("Apple Pay", "digital"),
        ("gift-card", "other"),
    ],
)
async def test_payment_method_is_a_documented_value(
    rr: RichRelevance, fake: tuple[FakeServer, RichRelevanceRules], erp: str, sent: str
) -> None:
    _, rules = fake
    await deliver(rr, event(paymentMethod=erp))
    assert rules.accepted[0]["paymentMethod"] == sent


# --- bulk: one order refused before sending, the rest in the POST ---------------------------------


async def test_a_batch_sends_the_others_when_one_order_is_refused_before_sending(
    pipeline: Pipeline,
    outbox: MemoryOutbox,
    richrelevance: tuple[FakeServer, RichRelevanceRules],
) -> None:
    server, rules = richrelevance
    bodies = [_order("81"), _order("9000000000"), _order("83")]
    outcomes = await _rr_lane_batch(pipeline, outbox, bodies)

    assert [o.settlement for o in outcomes] == [
        Settlement.COMPLETE,
        Settlement.DEAD_LETTER,
        Settlement.COMPLETE,
    ]
    assert "RICHRELEVANCE_ORDER_ID_BITS" in (outcomes[1].description or "")
    (bulk,) = puts(server)
    assert bulk.method == "POST"
    assert [o["id"] for o in rules.accepted] == [81, 83]
