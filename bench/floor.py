"""The bare floor: parse the JSON, then one POST per destination the order goes to, concurrently,
on the project's pooled clients (`order_processor.http.new_client`), and nothing else: no model,
no lookup, no mapping, no retries, no ledger, no logging. What the core's CPU per message is
compared with."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bench.fakes import FakeVendors
from bench.orders import OrderSet
from bench.result import RunResult
from bench.vendors import DESTINATION_NAMES
from bench.verify import floor_checks
from order_processor.destinations.richrelevance import OAUTH2_PATH
from order_processor.outbound.http import Timeouts, new_client
from tests.fakes import esputnik as esputnik_fake
from tests.fakes import product_recs as product_recs_fake
from tests.fakes import profile_store as profile_store_fake
from tests.fakes import richrelevance as richrelevance_fake


def _targets(urls: dict[str, str], token: str) -> dict[str, tuple[str, dict[str, str]]]:
    json_type = {"Content-Type": "application/json"}
    return {
        "profile_store": (
            urls["profile_store"] + "/api/v1.0/Track",
            {"Authorization": f"epi-single {profile_store_fake.API_KEY}", **json_type},
        ),
        "product_recs": (
            urls["product_recs"] + product_recs_fake.PATH,
            {
                "site": product_recs_fake.SITE,
                "siteToken": product_recs_fake.SITE_TOKEN,
                "channel": product_recs_fake.CHANNEL,
                **json_type,
            },
        ),
        "richrelevance": (
            f"{urls['richrelevance']}/omnichannel/api/v1/{richrelevance_fake.API_KEY}/orders",
            {"Authorization": f"Bearer {token}", **json_type},
        ),
        "esputnik": (
            urls["esputnik"] + "/api/v1/orders",
            {"Authorization": "Basic " + _basic(esputnik_fake.API_KEY), **json_type},
        ),
    }


def _basic(password: str) -> str:
    import base64

    return base64.b64encode(f"bench:{password}".encode()).decode()


async def _token(client: httpx.AsyncClient, urls: dict[str, str]) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": richrelevance_fake.CLIENT_ID,
        "client_secret": richrelevance_fake.CLIENT_SECRET,
    }
    response = await client.post(urls["richrelevance"] + OAUTH2_PATH, data=form)
    return str(response.json()["access_token"])


async def drive_floor(
    name: str, fakes: FakeVendors, orders: OrderSet, *, concurrency: int
) -> RunResult:
    timeouts = Timeouts()
    clients = {system: new_client(timeouts=timeouts) for system in DESTINATION_NAMES}
    targets = _targets(fakes.urls, await _token(clients["richrelevance"], fakes.urls))
    result = RunResult(name, messages=len(orders), concurrency=concurrency)
    pending = iter(orders)

    async def post(system: str, body: bytes) -> bool:
        url, headers = targets[system]
        response = await clients[system].post(url, content=body, headers=headers)
        return response.is_success

    async def worker() -> None:
        for order in pending:
            start = time.perf_counter()
            json.loads(order.body)
            sent = await asyncio.gather(*(post(s, order.body) for s in order.plan.sends))
            result.latencies.append(time.perf_counter() - start)
            result.outcomes["complete" if all(sent) else "retry"] += 1
            result.delivered += sum(sent)
            result.planned_sends += len(order.plan.sends)

    fakes.reset()
    try:
        with result.meter:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))
    result.vendor = fakes.stats()
    result.checks += floor_checks(result)
    return result
