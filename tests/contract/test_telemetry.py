"""Traces and metrics asserted with OpenTelemetry's in-memory exporter and reader, and the JSON
log lines' correlation fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from order_processor.handler import OrderHandler
from order_processor.processor import Processor

from order_processor.logs import JsonFormatter
from order_processor.model import MessageMetadata
from order_processor.redelivery import RecordingRetryQueue, RetrySchedule
from order_processor.settings import SettingsError, load_settings
from order_processor.telemetry import Telemetry
from tests.conftest import SAMPLE_CUSTOMERS, FakeClock, sample
from tests.fakes.base import FakeServer, Reply


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def observed(
    processor: Processor,
    spans: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    clock: FakeClock,
) -> OrderHandler:
    """The conftest processor, re-instrumented with in-memory providers."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry.create(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    processor.telemetry = telemetry
    counts = getattr(processor.lookup, "cache_counts", None)
    assert callable(counts)
    telemetry.observe_loyalty_cache(counts)
    return OrderHandler(
        processor=processor,
        retry_queue=RecordingRetryQueue(),
        schedule=RetrySchedule.from_settings(processor.settings.core),
        now=clock.utc,
    )


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    data = reader.get_metrics_data()
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", None)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), value))
    return found


async def test_one_trace_spans_the_message_the_loyalty_lookup_and_each_destination(
    observed: OrderHandler, spans: InMemorySpanExporter
) -> None:
    await observed.handle(sample("order-created.json"), MessageMetadata(message_id="m-1"))
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "process order message")
    assert root.attributes is not None
    assert root.attributes["messaging.message.id"] == "m-1"
    assert root.attributes["orders.outcome"] == "complete"
    assert root.attributes["orders.order_id"] == "100245"
    children = {s.name for s in finished if s.parent and s.parent.span_id == root.context.span_id}
    assert children == {
        "loyalty lookup",
        "deliver profile_store",
        "deliver product_recs",
        "deliver richrelevance",
        "deliver esputnik",
    }
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    text = json.dumps([dict(s.attributes or {}) for s in finished])
    assert "@" not in text  # no email in any attribute
    assert "6330001234567890" not in text


async def test_a_batch_is_one_trace_with_bulk_deliveries_and_per_message_metrics(
    observed: OrderHandler, spans: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    document = json.loads(sample("order-created.json"))
    messages = [
        (json.dumps({**document, "orderId": f"T{i}"}).encode(), MessageMetadata(message_id=f"b{i}"))
        for i in range(3)
    ]
    await observed.handle_batch([*messages, (b"not json", MessageMetadata(message_id="bad"))])
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "process order batch")
    assert root.attributes is not None
    assert root.attributes["messaging.batch.message_count"] == 4
    names = [s.name for s in finished]
    for name in ("profile_store", "richrelevance", "esputnik"):
        assert names.count(f"deliver {name} in bulk") == 1
    assert names.count("deliver product_recs") == 3  # no bulk form: one per order
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    found = points(reader)
    assert sorted((a["orders.outcome"], v) for a, v in found["orders.messages"]) == [
        ("complete", 3),
        ("dead-letter", 1),
    ]
    deliveries = {
        (a["orders.destination"], a["orders.result"]): v for a, v in found["orders.deliveries"]
    }
    assert deliveries[("profile_store", "delivered")] == 3


async def test_metrics_count_outcomes_deliveries_retries_dead_letters_and_cache_hits(
    observed: OrderHandler,
    reader: InMemoryMetricReader,
    fakes: dict[str, FakeServer],
) -> None:
    await observed.handle(sample("order-created.json"), MessageMetadata(message_id="m-1"))
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    await observed.handle(sample("order-updated.json"), MessageMetadata(message_id="m-2"))
    await observed.handle(b"not json", MessageMetadata(message_id="m-3"))
    found = points(reader)
    assert sorted((a["orders.outcome"], v) for a, v in found["orders.messages"]) == [
        ("complete", 1),
        ("dead-letter", 1),
        ("retry-scheduled", 1),
    ]
    assert found["orders.dead_letters"] == [({"orders.reason": "InvalidMessage"}, 1)]
    assert found["orders.retries_scheduled"] == [({"orders.reason": "DestinationUnavailable"}, 1)]
    deliveries = {
        (a["orders.destination"], a["orders.result"]): v for a, v in found["orders.deliveries"]
    }
    assert deliveries[("esputnik", "transient-error")] == 1
    assert deliveries[("esputnik", "delivered")] == 1
    assert deliveries[("product_recs", "skipped")] == 1  # OrderUpdated is not routed there
    durations = found["orders.destination.duration"]
    latency = {
        a["orders.destination"]: n for a, n in durations if a["orders.result"] == "delivered"
    }
    assert latency["profile_store"] == 2
    assert {a["cache"]: v for a, v in found["orders.loyalty.lookups"]} == {
        "hit": 1,
        "miss": 1,
    }


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("order_processor")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def test_json_log_lines_carry_the_correlation_fields(
    handler: OrderHandler, json_lines: io.StringIO
) -> None:
    await handler.handle(sample("order-created.json"), MessageMetadata(message_id="m-1"))
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    destinations = [line for line in lines if "destination" in line]
    assert {line["destination"] for line in destinations} == {
        "profile_store",
        "product_recs",
        "richrelevance",
        "esputnik",
    }
    assert all(line["order_id"] == "100245" and line["event_key"] for line in destinations)
    (message,) = [line for line in lines if "outcome" in line]
    assert (message["message_id"], message["outcome"]) == ("m-1", "complete")
    assert message["time"].endswith("+00:00")


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
