"""The loyalty client against a loopback provider: auth styles, 404, 401, 429, 5xx, field paths."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from loyalty_client import LoyaltyClient, LoyaltySettings
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.retry import RetryPolicy
from tests.conftest import FakeClock
from tests.fakes.base import FakeServer, Reply
from tests.fakes.loyalty import API_KEY, CLIENT_ID, CLIENT_SECRET, loyalty_server

CARD = "6330001234567890"

Factory = Callable[..., LoyaltyClient]


@pytest.fixture
async def make_client(retry: RetryPolicy) -> AsyncIterator[Factory]:
    clients: list[LoyaltyClient] = []

    def make(server: FakeServer, **settings: Any) -> LoyaltyClient:
        options: dict[str, Any] = {"api_base_url": server.url, "api_key": API_KEY} | settings
        client = LoyaltyClient(LoyaltySettings(**options), retry=retry)
        clients.append(client)
        return client

    yield make
    await asyncio.gather(*(c.aclose() for c in clients))


async def test_header_key_lookup_maps_the_default_contract(
    loyalty: FakeServer, make_client: Factory
) -> None:
    customer = await make_client(loyalty).lookup(CARD, deadline=1e9)
    assert customer is not None
    assert (customer.customer_id, customer.email, customer.name) == (
        "C-000123",
        "ann.shopper@example.com",
        "Ann Shopper",
    )
    request = loyalty.requests[-1]
    assert (request.method, request.path) == ("GET", f"/cards/{CARD}")
    assert request.header("Ocp-Apim-Subscription-Key") == API_KEY
    assert request.header("accept") == "application/json"


async def test_unknown_card_is_none_not_an_error(loyalty: FakeServer, make_client: Factory) -> None:
    assert await make_client(loyalty).lookup("6330000000000000", deadline=1e9) is None


async def test_wrong_key_is_a_permanent_failure(loyalty: FakeServer, make_client: Factory) -> None:
    with pytest.raises(DeliveryError) as caught:
        await make_client(loyalty, api_key="wrong").lookup(CARD, deadline=1e9)
    assert (caught.value.kind, caught.value.status) == (FailureKind.PERMANENT, 401)
    assert len(loyalty.requests) == 1


async def test_429_with_retry_after_is_retried(
    loyalty: FakeServer, make_client: Factory, clock: FakeClock
) -> None:
    loyalty.inject(Reply(429, {"error": "slow down"}, headers={"Retry-After": "2"}))
    customer = await make_client(loyalty).lookup(CARD, deadline=clock() + 30)
    assert customer is not None
    assert clock.sleeps == [2.0]
    assert len(loyalty.requests) == 2


async def test_persistent_5xx_is_a_transient_failure_of_the_message(
    loyalty: FakeServer, make_client: Factory
) -> None:
    loyalty.inject(*[Reply(500, {"error": "boom"})] * 3)
    with pytest.raises(DeliveryError) as caught:
        await make_client(loyalty).lookup(CARD, deadline=1e9)
    assert (caught.value.kind, caught.value.status) == (FailureKind.TRANSIENT, 500)
    assert len(loyalty.requests) == 3  # max_attempts of the test policy


async def test_a_dropped_connection_is_transient(loyalty: FakeServer, make_client: Factory) -> None:
    loyalty.inject(Reply(drop=True))
    assert await make_client(loyalty).lookup(CARD, deadline=1e9) is not None


async def test_html_200_is_not_mistaken_for_an_answer(
    loyalty: FakeServer, make_client: Factory
) -> None:
    loyalty.inject(
        *[Reply(200, "<html>maintenance</html>", headers={"Content-Type": "text/html"})] * 3
    )
    with pytest.raises(DeliveryError) as caught:
        await make_client(loyalty).lookup(CARD, deadline=1e9)
    assert caught.value.kind is FailureKind.TRANSIENT


async def test_prefixed_header_and_custom_header_name(make_client: Factory) -> None:
    with loyalty_server(header="X-Api-Key", prefix="Key ") as server:
        client = make_client(server, api_key_header="X-Api-Key", api_key_prefix="Key ")
        assert await client.lookup(CARD, deadline=1e9) is not None


async def test_basic_auth(make_client: Factory) -> None:
    with loyalty_server(auth="basic") as server:
        client = make_client(server, auth="basic", username=CLIENT_ID, password=CLIENT_SECRET)
        assert await client.lookup(CARD, deadline=1e9) is not None


async def test_oauth2_token_is_fetched_once_and_reused(make_client: Factory) -> None:
    with loyalty_server(auth="oauth2") as server:
        client = make_client(
            server,
            auth="oauth2",
            token_url=f"{server.url}/oauth/token",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        cards = [CARD, "6330001111111111", "6330000000000000"] * 5
        await asyncio.gather(*(client.lookup(card, deadline=1e9) for card in cards))
        token_requests = [r for r in server.requests if r.path == "/oauth/token"]
        assert len(token_requests) == 1
        assert token_requests[0].form()["grant_type"] == "client_credentials"


async def test_oauth2_token_refreshed_once_on_401(make_client: Factory) -> None:
    with loyalty_server(auth="oauth2") as server:
        rules = server._handler
        client = make_client(
            server,
            auth="oauth2",
            token_url=f"{server.url}/oauth/token",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        await client.lookup(CARD, deadline=1e9)
        rules.valid_tokens.clear()  # the provider revokes every token it issued
        assert await client.lookup(CARD, deadline=1e9) is not None
        assert [r.path for r in server.requests].count("/oauth/token") == 2


async def test_field_paths_and_path_template(make_client: Factory) -> None:
    with loyalty_server(wrap="data.profile") as server:
        client = make_client(
            server,
            email_field="data.profile.email",
            customer_id_field="data.profile.customerId",
            first_name_field="data.profile.firstName",
            last_name_field="data.profile.lastName",
        )
        customer = await client.lookup(CARD, deadline=1e9)
        assert customer is not None
        assert customer.customer_id == "C-000123"


async def test_path_template_quotes_the_card(loyalty: FakeServer, make_client: Factory) -> None:
    await make_client(loyalty, lookup_path="/cards/{card}?expand=profile").lookup(
        "63 30/00", deadline=1e9
    )
    assert loyalty.requests[-1].path == "/cards/6330%2F00"


def test_missing_auth_settings_are_named() -> None:
    with pytest.raises(ValueError, match="LOYALTY_PASSWORD"):
        LoyaltySettings(api_base_url="https://loyalty.example", auth="basic", username="u")


@pytest.mark.parametrize(
    "bad", ["not-an-email", "ann@example", "a b@example.com", "x" * 250 + "@e.co"]
)
async def test_an_email_that_is_not_an_email_is_treated_as_no_email(
    loyalty: FakeServer, make_client: Factory, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    loyalty.inject(Reply(200, {"customerId": "C-9", "email": bad, "firstName": "Ann"}))
    client = make_client(loyalty)
    customer = await client.lookup(CARD, deadline=1e9)
    assert customer is not None
    assert (customer.customer_id, customer.email) == ("C-9", None)
    assert client.invalid_emails.count == 1
    (line,) = [r.getMessage() for r in caplog.records if "not an email address" in r.getMessage()]
    assert bad not in line  # logged without personal data
    assert "C-9" not in line
