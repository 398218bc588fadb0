"""Traces, metrics and JSON log lines through both stages, asserted with OpenTelemetry's in-memory
exporter and reader: the pipeline is built with `Telemetry.create(tracer_provider=...,
meter_provider=...)`, so the standard observers (logs, metrics, spans) report there."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from order_processor.ledger import MemoryLedger
from order_processor.local import LocalRun, Run, received
from order_processor.logs import JsonFormatter
from order_processor.model import MessageMetadata
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from order_processor.settings import SettingsError, load_settings
from order_processor.telemetry import Telemetry
from tests.conftest import SAMPLE_CUSTOMERS, FakeClock, sample, settings_for
from tests.fakes.base import FakeServer, Reply
from tests.pii_guard import leaks

LANES = ("profile_store", "product_recs", "richrelevance", "esputnik")


@dataclass
class Observed:
    """Both stages on the conftest fakes, reporting to in-memory telemetry."""

    local: LocalRun
    pipeline: Pipeline
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    clock: FakeClock

    async def run(self, body: bytes, message_id: str, **metadata: Any) -> Run:
        return await self.local.run(body, MessageMetadata(message_id=message_id, **metadata))

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]


@pytest.fixture
async def observed(
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
    ledger: MemoryLedger,
    outbox: MemoryOutbox,
) -> AsyncIterator[Observed]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry.create(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    settings = settings_for(
        fakes["profile_store"].url,
        loyalty.url,
        others={name: fakes[name].url for name in LANES[1:]},
    )
    pipeline = Pipeline.from_settings(
        settings,
        retry=retry,
        clock=clock,
        now=clock.utc,
        ledger=ledger,
        outbox=outbox,
        telemetry=telemetry,
    )
    yield Observed(LocalRun(pipeline), pipeline, spans, reader, clock)
    await pipeline.aclose()


Point = tuple[dict[str, Any], Any]


def points(reader: InMemoryMetricReader) -> dict[str, list[Point]]:
    """metric name -> [(attributes, value)]: a counter's value, a histogram's data point."""
    data = reader.get_metrics_data()
    found: dict[str, list[Point]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


def by(found: list[Point], *keys: str) -> dict[tuple[Any, ...], Any]:
    """The points keyed by these attributes' values; the attributes must be exactly `keys`."""
    keyed = {}
    for attributes, value in found:
        assert set(attributes) == set(keys), attributes
        keyed[tuple(attributes[k] for k in keys)] = value
    assert len(keyed) == len(found)
    return keyed


def counts(found: list[Point], *keys: str) -> dict[tuple[Any, ...], int]:
    """A histogram's points keyed as `by` does: how many values each recorded."""
    return {key: point.count for key, point in by(found, *keys).items()}


# --- traces --------------------------------------------------------------------------------------


async def test_the_accept_span_holds_the_loyalty_lookup_and_names_the_lanes_published(
    observed: Observed,
) -> None:
    run = await observed.run(sample("order-created.json"), "m-1")
    (accept,) = observed.finished("accept order message")
    assert accept.kind is SpanKind.CONSUMER
    assert accept.attributes == {
        "messaging.system": "servicebus",
        "messaging.message.id": "m-1",
        "orders.order_id": "100245",
        "orders.event_key": run.accept.event_key,
        "orders.outcome": "complete",
        "orders.reason": "",
        "orders.routed": ",".join(LANES),
    }
    (lookup,) = observed.finished("loyalty lookup")
    assert lookup.kind is SpanKind.INTERNAL
    assert lookup.parent is not None
    assert lookup.parent.span_id == accept.context.span_id
    assert lookup.context.trace_id == accept.context.trace_id
    assert lookup.attributes == {"orders.customer_known": True}


async def test_each_lane_has_its_own_span_carrying_the_order_it_delivered(
    observed: Observed,
) -> None:
    run = await observed.run(sample("order-created.json"), "m-1")
    for name in LANES:
        (span,) = observed.finished(f"deliver {name}")
        assert span.kind is SpanKind.CONSUMER
        # The order id and event key join a lane's span to the accept stage's.
        assert span.attributes == {
            "messaging.system": "servicebus",
            "messaging.batch.message_count": 1,
            "orders.destination": name,
            "orders.order_id": "100245",
            "orders.event_key": run.accept.event_key,
            "orders.outcome": "complete",
            "orders.reason": "",
        }, name


async def test_spans_say_which_message_was_dead_lettered_or_retried_and_why(
    observed: Observed, fakes: dict[str, FakeServer]
) -> None:
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    await observed.run(sample("order-created.json"), "m-1")
    await observed.run(b"not json", "m-2")
    (rejected,) = observed.finished("deliver richrelevance")
    assert rejected.attributes is not None
    assert (rejected.attributes["orders.outcome"], rejected.attributes["orders.reason"]) == (
        "dead-letter",
        "DestinationRejected",
    )
    (retried,) = observed.finished("deliver esputnik")  # completed: its retry copy is scheduled
    assert retried.attributes is not None
    assert (retried.attributes["orders.outcome"], retried.attributes["orders.reason"]) == (
        "complete",
        "DestinationUnavailable",
    )
    poison = next(
        s
        for s in observed.finished("accept order message")
        if s.attributes and s.attributes["messaging.message.id"] == "m-2"
    )
    assert poison.attributes is not None
    assert poison.attributes["orders.outcome"] == "dead-letter"
    assert poison.attributes["orders.reason"] == "InvalidMessage"
    assert poison.attributes["orders.order_id"] == ""
    assert poison.attributes["orders.routed"] == ""


async def test_a_lane_batch_is_one_span_with_bulk_delivery_and_per_message_metrics(
    observed: Observed, outbox: MemoryOutbox, fakes: dict[str, FakeServer]
) -> None:
    document = json.loads(sample("order-created.json"))
    batch = []
    for i in range(3):
        body = json.dumps({**document, "orderId": f"T{i}"}).encode()
        await observed.pipeline.accept.accept(body, MessageMetadata(message_id=f"b{i}"))
        (lane,) = [m for m in outbox.take() if m.destination == "profile_store"]
        batch.append((lane.body, received(lane)))
    batch.append((b"not json", MessageMetadata(message_id="bad")))
    observed.spans.clear()
    await observed.pipeline.lanes["profile_store"].deliver_batch(batch)
    (span,) = observed.spans.get_finished_spans()
    assert span.name == "deliver profile_store"
    assert span.attributes == {  # no one order's id on a span of many
        "messaging.system": "servicebus",
        "messaging.batch.message_count": 4,
        "orders.destination": "profile_store",
    }
    assert [r.path for r in fakes["profile_store"].requests] == ["/api/v1.0/TrackBulk"]
    found = points(observed.reader)
    lane = [(a, v) for a, v in found["orders.messages"] if a["orders.stage"] == "deliver"]
    assert by(lane, "orders.stage", "orders.lane", "orders.outcome") == {
        ("deliver", "profile_store", "complete"): 3,
        ("deliver", "profile_store", "dead-letter"): 1,
    }
    assert by(found["orders.deliveries"], "orders.destination", "orders.result") == {
        ("profile_store", "delivered"): 3
    }
    assert counts(found["orders.delivery.latency"], "orders.destination") == {("profile_store",): 3}


# --- metrics -------------------------------------------------------------------------------------


async def test_every_metric_and_attribute_the_observers_emit(
    observed: Observed,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
    outbox: MemoryOutbox,
) -> None:
    # m-1: a new card (cache miss); RichRelevance refuses, the other lanes deliver.
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    await observed.run(sample("order-created.json"), "m-1")
    # m-2: the same card (cache hit); eSputnik down: a retry copy for its lane. Not routed to
    # Product Recs, so no message there.
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    await observed.run(sample("order-updated.json"), "m-2")
    # m-3: poison, dead-lettered at accept.
    await observed.run(b"not json", "m-3")
    # m-4: the loyalty provider down: a retry copy for the accept stage.
    loyalty.inject(*[Reply(503)] * 3)
    await observed.run(sample("order-created-unknown-card.json"), "m-4")
    # m-5: a card the provider does not know: delivered where the customer is not needed.
    await observed.run(sample("order-created-unknown-card.json"), "m-5")
    # m-6: the deliveries topic unreachable: abandoned at accept.
    outbox.failure = ConnectionError("namespace unreachable")
    await observed.run(sample("order-cancelled.json"), "m-6")
    outbox.failure = None
    # m-7: a loyalty record whose email is not an email address.
    document = json.loads(sample("order-created.json"))
    document["customer"] = {"loyaltyCardNumber": "6330002222222222"}
    loyalty.inject(Reply(200, {"customerId": "C-000789", "email": "not-an-email"}))
    await observed.run(json.dumps({**document, "orderId": "100789"}).encode(), "m-7")

    found = points(observed.reader)
    assert set(found) == {
        "orders.messages",
        "orders.deliveries",
        "orders.dead_letters",
        "orders.retries_scheduled",
        "orders.destination.duration",
        "orders.delivery.latency",
        "orders.loyalty.lookups",
        "orders.loyalty.invalid_emails",
    }
    assert by(found["orders.messages"], "orders.stage", "orders.lane", "orders.outcome") == {
        ("accept", "accept", "complete"): 4,  # m-1, m-2, m-5, m-7
        ("accept", "accept", "dead-letter"): 1,  # m-3
        ("accept", "accept", "retry-scheduled"): 1,  # m-4
        ("accept", "accept", "abandon"): 1,  # m-6
        ("deliver", "profile_store", "complete"): 4,
        ("deliver", "product_recs", "complete"): 3,
        ("deliver", "richrelevance", "complete"): 3,
        ("deliver", "richrelevance", "dead-letter"): 1,
        ("deliver", "esputnik", "complete"): 3,
        ("deliver", "esputnik", "retry-scheduled"): 1,
    }
    assert by(found["orders.dead_letters"], "orders.stage", "orders.lane", "orders.reason") == {
        ("accept", "accept", "InvalidMessage"): 1,
        ("deliver", "richrelevance", "DestinationRejected"): 1,
    }
    assert by(
        found["orders.retries_scheduled"], "orders.stage", "orders.lane", "orders.reason"
    ) == {
        ("accept", "accept", "LoyaltyUnavailable"): 1,
        ("deliver", "esputnik", "DestinationUnavailable"): 1,
    }
    # m-5's customer is unknown and m-7's has no usable email: Profile Store (needs an email),
    # Product Recs (a known customer), RichRelevance (a customer id) and eSputnik (an email or a
    # phone) skip what they cannot take.
    deliveries = {
        ("profile_store", "delivered"): 2,
        ("profile_store", "skipped"): 2,
        ("product_recs", "delivered"): 2,
        ("product_recs", "skipped"): 1,
        ("richrelevance", "delivered"): 2,
        ("richrelevance", "skipped"): 1,
        ("richrelevance", "permanent-error"): 1,
        ("esputnik", "delivered"): 1,
        ("esputnik", "skipped"): 2,
        ("esputnik", "transient-error"): 1,
    }
    assert by(found["orders.deliveries"], "orders.destination", "orders.result") == deliveries
    # Time to the result, for every delivery the ledger let through (a skip the mapping decides
    # included); a delivery the ledger answers is not timed (see the test below).
    assert (
        counts(found["orders.destination.duration"], "orders.destination", "orders.result")
        == deliveries
    )
    # End to end, for every delivered event and nothing else.
    assert counts(found["orders.delivery.latency"], "orders.destination") == {
        ("profile_store",): 2,
        ("product_recs",): 2,
        ("richrelevance",): 2,
        ("esputnik",): 1,
    }
    # m-1, m-4 (failed), m-5 and m-7 asked the provider; m-2 and m-6 were answered by the cache.
    assert by(found["orders.loyalty.lookups"], "cache") == {("hit",): 2, ("miss",): 4}
    assert found["orders.loyalty.invalid_emails"] == [({}, 1)]


async def test_end_to_end_latency_runs_from_the_orders_topic_to_the_vendors_answer(
    observed: Observed, fakes: dict[str, FakeServer]
) -> None:
    enqueued = observed.clock.utc() - timedelta(seconds=5)
    await observed.run(sample("order-created.json"), "m-1", enqueued_time=enqueued)
    latency = by(points(observed.reader)["orders.delivery.latency"], "orders.destination")
    assert set(latency) == {(name,) for name in LANES}
    for (name,), point in latency.items():
        assert (point.count, point.sum) == (1, 5000.0), name  # the clock did not move


async def test_a_delivery_already_made_is_not_counted_in_the_latency_again(
    observed: Observed, outbox: MemoryOutbox
) -> None:
    await observed.pipeline.accept.accept(sample("order-created.json"), MessageMetadata())
    (message,) = [m for m in outbox.take() if m.destination == "esputnik"]
    for _ in range(2):  # a redelivery: the ledger says it was delivered
        await observed.pipeline.lanes["esputnik"].deliver(message.body, received(message))
    found = points(observed.reader)
    assert by(found["orders.deliveries"], "orders.destination", "orders.result") == {
        ("esputnik", "delivered"): 2
    }
    assert counts(found["orders.delivery.latency"], "orders.destination") == {("esputnik",): 1}
    durations = counts(found["orders.destination.duration"], "orders.destination", "orders.result")
    assert durations == {("esputnik", "delivered"): 1}


# --- logs ----------------------------------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("order_processor", "loyalty_client")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger, level in zip(loggers, previous, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_json_log_lines_carry_the_correlation_fields(
    observed: Observed, json_lines: io.StringIO, fakes: dict[str, FakeServer]
) -> None:
    fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId is required"}))
    run = await observed.run(sample("order-created.json"), "m-1")
    lines = _lines(json_lines)
    results = [line for line in lines if "result" in line]
    assert {line["destination"] for line in results} == set(LANES)
    for line in results:
        assert line["order_id"] == "100245"
        assert line["event_key"] == run.accept.event_key
        assert line["attempts"] == 1
        assert line["result"] == (
            "permanent-error" if line["destination"] == "richrelevance" else "delivered"
        )
    (rejected,) = [line for line in results if line["destination"] == "richrelevance"]
    assert rejected["http_status"] == 400
    settled = {line.get("destination", "accept"): line for line in lines if "outcome" in line}
    assert set(settled) == {"accept", *LANES}
    assert (settled["accept"]["message_id"], settled["accept"]["outcome"]) == ("m-1", "complete")
    assert settled["accept"]["event_key"] == run.accept.event_key
    for name in LANES:
        assert settled[name]["message_id"] == f"{run.accept.event_key}:{name}"
        assert settled[name]["order_id"] == "100245"
    assert (settled["richrelevance"]["outcome"], settled["richrelevance"]["reason"]) == (
        "dead-letter",
        "DestinationRejected",
    )
    assert all(line["time"].endswith("+00:00") for line in lines)
    assert all(line["logger"] in {"order_processor", "loyalty_client"} for line in lines)


# --- personal data -------------------------------------------------------------------------------


async def test_no_personal_data_in_any_span_metric_attribute_or_log_line(
    observed: Observed,
    json_lines: io.StringIO,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
) -> None:
    # Vendors and the loyalty provider echoing personal data back in their errors.
    fakes["profile_store"].inject(
        Reply(400, {"message": "bad user ann.shopper@example.com 6330001234567890"})
    )
    fakes["esputnik"].inject(*[Reply(503, {"error": "+447700900123 unavailable"})] * 3)
    for name in ("order-created.json", "order-created-with-email.json", "order-updated.json"):
        await observed.run(sample(name), f"m-{name}")
    loyalty.inject(*[Reply(500, {"error": "card 6330001111111111 lookup failed"})] * 3)
    document = json.loads(sample("order-created.json"))
    document["customer"] = {"loyaltyCardNumber": "6330001111111111"}
    await observed.run(json.dumps(document).encode(), "m-outage")
    await observed.run(b'{"customer": {"email": "ann.shopper@example.com"}}', "m-poison")

    attributes = [dict(s.attributes or {}) for s in observed.spans.get_finished_spans()]
    attributes += [a for found in points(observed.reader).values() for a, _ in found]
    text = json.dumps(attributes) + "\n" + json_lines.getvalue()
    assert len(attributes) > 20
    assert "DestinationRejected" in text  # the scenarios did reach the failure paths
    assert "LoyaltyUnavailable" in text
    assert leaks(text) == []


def test_plain_http_is_refused_at_start_up_unless_allowed() -> None:
    overrides: dict[str, dict[str, Any]] = {
        "profile_store": {"base_url": "http://ps.example", "api_key": "k", "scope": "s"},
        "product_recs": {"enabled": False},
        "richrelevance": {"enabled": False},
        "esputnik": {"enabled": False},
        "ledger": {"enabled": False},
        "loyalty": {"file": SAMPLE_CUSTOMERS},
    }
    with pytest.raises(SettingsError, match="PROFILE_STORE_BASE_URL: outbound calls must use"):
        load_settings(overrides=overrides)
    allowed = load_settings(overrides={**overrides, "core": {"allow_insecure_http": True}})
    assert allowed.destinations["profile_store"].enabled
