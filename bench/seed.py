"""The seed's (the blog's) design, for comparison: a synchronous function run on a thread pool, one
message at a time per worker, a new HTTP client for every request, no loyalty cache, a new OAuth2
token for every RichRelevance call, and the destinations called one after another.

It reuses the project's parsing and mapping, so the difference measured is the design, not the
mapping code. A new `httpx.Client` builds its TLS context even for http:// URLs; that stands in
for the per-request TCP + TLS handshake the design pays in production, which loopback hides.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx

from bench.fakes import FakeVendors
from bench.orders import Order, OrderSet
from bench.result import RunResult
from bench.verify import all_complete, contract_fakes_agreed, vendors_accepted_the_plan
from bench.wiring import bench_settings
from loyalty_client.client import customer_from_document
from loyalty_client.customer import Customer
from order_processor.contract import InvalidMessage, parse_order
from order_processor.destinations import DESTINATIONS, Destination, Skip
from order_processor.destinations.richrelevance import OAUTH2_PATH, RichRelevance
from order_processor.model import TrackingEvent, enriched_event, event_key
from order_processor.outbound.errors import DeliveryError
from order_processor.routing import route
from order_processor.settings import AppSettings
from tests.fakes import richrelevance as richrelevance_fake


class SeedStyle:
    def __init__(self, settings: AppSettings, urls: dict[str, str]) -> None:
        self.settings = settings
        self.urls = urls
        timeouts = settings.core.destination_timeouts
        # Mapping only: requests are built here and sent on a fresh client each time.
        self._builder = httpx.AsyncClient()
        self.destinations: list[Destination] = [
            cls(settings.destinations[name], client=self._builder, timeouts=timeouts)
            for name, cls in DESTINATIONS.items()
        ]
        self.timeout = timeouts.httpx()

    def close(self) -> None:
        # Never used for I/O: dropping its (empty) pool needs no event loop.
        del self._builder

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False)

    def _lookup(self, card: str) -> Customer | None:
        loyalty = self.settings.loyalty
        assert loyalty.api_key is not None
        url = self.urls["loyalty"] + "/cards/" + quote(card, safe="")
        headers = {loyalty.api_key_header: loyalty.api_key.get_secret_value()}
        with self._client() as client:
            response = client.get(url, headers=headers)
        if response.status_code != 200:
            return None
        return customer_from_document(response.json(), loyalty)

    def _token(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": richrelevance_fake.CLIENT_ID,
            "client_secret": richrelevance_fake.CLIENT_SECRET,
        }
        with self._client() as client:
            response = client.post(self.urls["richrelevance"] + OAUTH2_PATH, data=form)
        return str(response.json()["access_token"])

    def handle(self, order: Order) -> tuple[float, str, int]:
        """(latency, outcome, deliveries) for one message, start to finish."""
        start = time.perf_counter()
        try:
            parsed = parse_order(order.body)
        except InvalidMessage:
            return time.perf_counter() - start, "dead-letter", 0
        ref = parsed.customer
        found = None
        if ref.loyalty_card_number and not ref.email:
            found = self._lookup(ref.loyalty_card_number)
        event = enriched_event(parsed, found, key=event_key(parsed))
        delivered = 0
        outcome = "complete"
        for destination in self.destinations:
            target = route(destination.name, event.event_type)
            if target is None:
                continue
            try:
                if self._deliver(destination, event, target):
                    delivered += 1
            except DeliveryError:
                outcome = "retry"
        return time.perf_counter() - start, outcome, delivered

    def _deliver(self, destination: Destination, event: TrackingEvent, target: str) -> bool:
        request = destination.prepare(event, target)
        if isinstance(request, Skip):
            return False
        if isinstance(destination, RichRelevance):
            request.headers["Authorization"] = f"Bearer {self._token()}"
        with self._client() as client:
            response = client.send(request)
            response.read()
        if isinstance(destination, RichRelevance):
            destination.interpret(response, request)
        else:
            destination.interpret(response)
        return True


def drive_seed(name: str, fakes: FakeVendors, orders: OrderSet, *, concurrency: int) -> RunResult:
    seed = SeedStyle(bench_settings(fakes.urls), fakes.urls)
    result = RunResult(name, messages=len(orders), concurrency=concurrency)
    result.cache_misses = None
    fakes.reset()
    with result.meter, ThreadPoolExecutor(max_workers=concurrency) as pool:
        for order, (latency, outcome, delivered) in zip(
            orders, pool.map(seed.handle, orders), strict=True
        ):
            result.latencies.append(latency)
            result.outcomes[outcome] += 1
            result.delivered += delivered
            result.planned_sends += len(order.plan.sends)
            result.lookups_needed += order.plan.card is not None
    seed.close()
    result.vendor = fakes.stats()
    result.checks += [
        all_complete(result),
        vendors_accepted_the_plan(result, orders),
        contract_fakes_agreed(result),
    ]
    return result
