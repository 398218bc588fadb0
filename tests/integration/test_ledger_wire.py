"""TableStore's own HTTP: retries on azure-core's rules, the timeouts, and the credentials Azurite
does not exercise (a token, a SAS), against a scripted loopback server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.core.credentials import AccessToken, AzureSasCredential

from order_processor.ledger import (
    LedgerRejected,
    LedgerUnavailable,
    StorageError,
    TableLedger,
    TableStore,
)

ENTITY = {"PartitionKey": "esputnik-1", "RowKey": "A:OrderCreated:0123456789abcdef"}


@dataclass
class Script:
    """The answers the server gives, in order (then 204); what it received."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    seen: list[web.Request] = field(default_factory=list)
    drop: int = 0  # close this many connections without answering first
    delay: float = 0.0  # answer this late

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        await request.read()
        await asyncio.sleep(self.delay)
        if self.drop:
            self.drop -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        status, headers = self.answers.pop(0) if self.answers else (204, {})
        if status == 204:
            headers = {"ETag": 'W/"1"', **headers}
        if status == 200:
            return web.json_response({"Status": "delivered", **ENTITY}, headers={"ETag": 'W/"1"'})
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    async with TestServer(app) as running:
        yield script, str(running.make_url("/acct"))


def store(url: str, credential: object = None, **options: Any) -> TableStore:
    from azure.core.credentials import AzureNamedKeyCredential

    return TableStore(
        url,
        "ledger",
        credential=credential or AzureNamedKeyCredential("acct", "a2V5"),
        retry_backoff=0.01,
        **options,
    )


async def test_a_put_or_get_is_retried_on_a_server_error(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [(503, {}), (500, {})]
    tables = store(url)
    assert await tables.replace(ENTITY, 'W/"0"') == 'W/"1"'
    assert len(script.seen) == 3
    ids = {r.headers["x-ms-client-request-id"] for r in script.seen}
    assert len(ids) == 1  # one request id for every attempt
    script.answers, script.seen = [(502, {}), (200, {})], []
    assert await tables.get("esputnik-1", ENTITY["RowKey"]) is not None
    assert len(script.seen) == 2
    await tables.close()


async def test_retries_stop_after_retry_total(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [(503, {})] * 5
    tables = store(url)
    with pytest.raises(StorageError, match="503"):
        await tables.replace(ENTITY, 'W/"0"')
    assert len(script.seen) == 3  # the first attempt and retry_total=2 retries
    await tables.close()


@pytest.mark.parametrize(("status", "attempts"), [(503, 2), (500, 2), (502, 1), (429, 1)])
async def test_a_post_is_retried_only_where_azure_core_retries_it(
    server: tuple[Script, str], status: int, attempts: int
) -> None:
    script, url = server
    script.answers = [(status, {})]
    tables = store(url)
    if attempts == 2:
        assert await tables.insert(ENTITY) == 'W/"1"'
    else:
        with pytest.raises(StorageError):
            await tables.insert(ENTITY)
    assert len(script.seen) == attempts
    await tables.close()


async def test_retry_after_is_honoured_for_any_error_status(server: tuple[Script, str]) -> None:
    script, url = server
    script.answers = [(429, {"Retry-After": "0.2"})]
    tables = store(url)
    started = time.monotonic()
    assert await tables.insert(ENTITY) == 'W/"1"'
    assert time.monotonic() - started >= 0.2
    assert len(script.seen) == 2
    await tables.close()


async def test_a_dropped_connection_is_retried_for_a_put_never_for_a_post(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.drop = 1
    tables = store(url)
    assert await tables.replace(ENTITY, 'W/"0"') == 'W/"1"'
    script.drop, script.seen = 1, []
    ledger = TableLedger(tables)
    ledger._ready = True  # the table exists
    with pytest.raises(LedgerUnavailable):
        await ledger._insert(_entry())
    assert len(script.seen) == 1
    await tables.close()


async def test_a_refusal_is_rejected_and_an_outage_unavailable(server: tuple[Script, str]) -> None:
    script, url = server
    ledger = TableLedger(store(url))
    ledger._ready = True
    script.answers = [(400, {})]
    with pytest.raises(LedgerRejected):
        await ledger._insert(_entry())
    script.answers = [(503, {})] * 3
    with pytest.raises(LedgerUnavailable):
        await ledger._replace(_entry(), 'W/"0"')
    await ledger.aclose()


async def test_a_read_that_times_out_is_an_outage(server: tuple[Script, str]) -> None:
    script, url = server
    script.delay = 1.0
    ledger = TableLedger(store(url, read_timeout=0.1, retry_total=0))
    ledger._ready = True
    with pytest.raises(LedgerUnavailable, match="TimeoutError"):
        await ledger._insert(_entry())
    await ledger.aclose()


class FakeIdentity:
    """A token credential (the app's managed identity) that counts its token requests."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.fetched = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://storage.azure.com/.default",)
        self.fetched += 1
        await asyncio.sleep(0.01)
        return AccessToken(f"token-{self.fetched}", int(time.time() + self.lifetime))

    async def close(self) -> None:
        return None


async def test_a_token_is_fetched_once_and_renewed_before_it_expires(
    server: tuple[Script, str],
) -> None:
    script, url = server
    identity = FakeIdentity(lifetime=3600)
    tables = store(url, identity)
    await asyncio.gather(*(tables.replace(ENTITY, 'W/"0"') for _ in range(5)))
    assert identity.fetched == 1
    assert {r.headers["Authorization"] for r in script.seen} == {"Bearer token-1"}
    identity.lifetime = 200  # inside the 5-minute margin: renewed on every use
    tables._auth._token = None
    await tables.replace(ENTITY, 'W/"0"')
    await tables.replace(ENTITY, 'W/"0"')
    assert identity.fetched == 3
    await tables.close()


async def test_a_sas_goes_in_the_query_and_signs_nothing(server: tuple[Script, str]) -> None:
    script, url = server
    tables = store(url, AzureSasCredential("?sv=2020-08-04&sig=abc%2B"))
    await tables.replace(ENTITY, 'W/"0"')
    (request,) = script.seen
    assert request.query_string.endswith("sv=2020-08-04&sig=abc%2B")
    assert "Authorization" not in request.headers
    await tables.close()


def _entry() -> Any:
    from datetime import UTC, datetime

    from order_processor.ledger import LedgerEntry, LedgerStatus

    return LedgerEntry(
        event_key=ENTITY["RowKey"],
        destination="esputnik",
        status=LedgerStatus.IN_FLIGHT,
        first_attempt=datetime(2026, 11, 23, tzinfo=UTC),
    )
