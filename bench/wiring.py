"""The real pipeline wired to the fake vendors: settings, ledger choice, outboxes, observers and
instrumentation. Every mode builds its stages with `build_pipeline` (`Pipeline.from_settings`)."""

from __future__ import annotations

import time
from array import array
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import httpx

from bench.azurite import Azurite
from bench.ledgers import BenchLedger
from order_processor.destinations import Destination, Sent
from order_processor.observe import Delivered, Observer, Observers
from order_processor.outbox import Outbox, Outgoing
from order_processor.pipeline import Pipeline
from order_processor.settings import AppSettings, load_settings
from order_processor.telemetry import Telemetry
from tests.fakes import esputnik as esputnik_fake
from tests.fakes import loyalty as loyalty_fake
from tests.fakes import product_recs as product_recs_fake
from tests.fakes import profile_store as profile_store_fake
from tests.fakes import richrelevance as richrelevance_fake

LEDGER_KINDS = ("memory", "azurite", "none")

#: when the current message started (perf_counter), for per-destination delivery latency
MESSAGE_START: ContextVar[float] = ContextVar("bench_message_start", default=0.0)


class SkipRun(Exception):
    """This run cannot happen here (say why); the report records it as skipped."""


def overrides(
    urls: dict[str, str], core: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every destination and the loyalty provider at its fake, with the fakes' credentials."""
    return {
        "loyalty": {"api_base_url": urls["loyalty"], "api_key": loyalty_fake.API_KEY},
        "profile_store": {
            "base_url": urls["profile_store"],
            "api_key": profile_store_fake.API_KEY,
            "scope": profile_store_fake.SCOPE,
        },
        "product_recs": {
            "url": urls["product_recs"] + product_recs_fake.PATH,
            "site": product_recs_fake.SITE,
            "site_token": product_recs_fake.SITE_TOKEN,
        },
        "richrelevance": {
            "base_url": urls["richrelevance"],
            "api_key": richrelevance_fake.API_KEY,
            "client_id": richrelevance_fake.CLIENT_ID,
            "client_secret": richrelevance_fake.CLIENT_SECRET,
        },
        "esputnik": {"base_url": urls["esputnik"], "api_key": esputnik_fake.API_KEY},
        # The ledger is passed in explicitly; the block only has to validate.
        "ledger": {"enabled": False},
        # The fakes speak plain http on loopback.
        "core": {"allow_insecure_http": True, **(core or {})},
    }


def bench_settings(urls: dict[str, str], core: Mapping[str, Any] | None = None) -> AppSettings:
    return load_settings(overrides=overrides(urls, core))


def make_ledger(
    kind: str, *, max_rows: int | None, azurite: Azurite | str | None = None
) -> BenchLedger:
    """A counting ledger for `kind` (memory: bounded to about `max_rows` rows when given; azurite:
    a fresh table on the bench's own Azurite, or SkipRun with the reason it could not start)."""
    if kind not in LEDGER_KINDS:
        raise ValueError(f"ledger must be one of {', '.join(LEDGER_KINDS)}")
    from bench import ledgers

    if kind == "memory":
        return ledgers.memory_ledger(max_rows)
    if kind == "none":
        return ledgers.no_ledger()
    if not isinstance(azurite, Azurite):
        raise SkipRun(azurite or "no Azurite was started for this run")
    return ledgers.azurite_ledger(azurite)


def build_pipeline(
    settings: AppSettings,
    *,
    ledger: BenchLedger,
    outbox: Outbox,
    observers: Sequence[Observer] = (),
) -> Pipeline:
    """The project's stages, as the function app builds them, with production's observers (logs,
    metrics, spans) plus the bench's own."""
    telemetry = Telemetry.create()
    standard = Observers.standard(telemetry)
    observer = Observers([*standard.observers, *observers]) if observers else standard
    return Pipeline.from_settings(
        settings,
        ledger=ledger.as_ledger(),
        outbox=outbox,
        telemetry=telemetry,
        observer=observer,
    )


class CollectingOutbox:
    """An Outbox for the inline run: what a stage publishes goes to the list of the order being
    processed (a context variable, so concurrent orders never see each other's messages)."""

    current: ContextVar[list[Outgoing] | None] = ContextVar("bench_outbox", default=None)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        collected = self.current.get()
        if collected is None:
            raise RuntimeError("published outside an order (CollectingOutbox.current unset)")
        collected.extend(messages)

    async def aclose(self) -> None:
        return None


class LatencyObserver(Observer):
    """End-to-end latency per lane: the order reaching the orders topic to the vendor accepting
    it (the stages compute it; `Delivered.end_to_end_ms`)."""

    def __init__(self) -> None:
        self.end_to_end_ms: dict[str, array[float]] = defaultdict(lambda: array("d"))

    def delivered(self, delivered: Delivered) -> None:
        if delivered.end_to_end_ms is not None:
            self.end_to_end_ms[delivered.lane].append(delivered.end_to_end_ms)


Send = Callable[[httpx.Request], Awaitable[Sent]]


def time_deliveries(destinations: Iterable[Destination]) -> dict[str, array[float]]:
    """Record, per destination, seconds from the message's start to each accepted delivery."""
    sink: dict[str, array[float]] = defaultdict(lambda: array("d"))
    for destination in destinations:
        setattr(destination, "send", _timed(destination.send, sink[destination.name]))  # noqa: B010
    return sink


def _timed(send: Send, sink: array[float]) -> Send:
    async def timed(request: httpx.Request) -> Sent:
        sent = await send(request)
        sink.append(time.perf_counter() - MESSAGE_START.get())
        return sent

    return timed
