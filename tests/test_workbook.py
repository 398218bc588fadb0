"""The delivery overview workbook and the log alerts read what the app really emits.

Every KQL query of the deployed template (the workbook's tiles, from the evaluated main.json, and
every scheduled query rule) is read for what it depends on: the table, the metric names, span
names or log messages it filters on, each `customDimensions["..."]` it reads, and the literal
values it compares them with. A scenario then runs both stages on the loopback fakes (a delivery,
a vendor's refusal, a vendor down, poison, a loyalty cache hit and miss) and the `lane_metrics`
gauges, with OpenTelemetry's in-memory exporters for spans, metrics and logs, and every
dependency must be met: a metric the app records, an attribute it sets on that metric, span or
log record (as Application Insights keeps it: the exporter drops `messaging.*` and other
standard attributes from customDimensions), a value it writes. A renamed metric or attribute
fails here instead of leaving a tile blank.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.monitor.opentelemetry.exporter.export.trace._exporter import _is_standard_attribute
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from order_processor.infra_workbook import QUERY, TILES, workbook
from order_processor.overview.counts import Counts, Via
from order_processor.overview.lanes import read_lanes
from order_processor.settings import AppSettings
from tests.conftest import sample
from tests.contract import test_telemetry
from tests.contract.test_telemetry import Observed, points
from tests.fakes.base import FakeServer, Reply
from tests.infra_helpers import INFRA, Evaluator, read_bicepparam

TABLES = {"customMetrics", "requests", "traces"}
#: both stages on the fakes with in-memory telemetry (the telemetry contract test's fixture)
observed = test_telemetry.observed


def _evaluated() -> Evaluator:
    template = json.loads((INFRA / "main.json").read_text())
    return Evaluator(template, read_bicepparam(INFRA / "main.bicepparam")[1])


def deployed_queries() -> dict[str, str]:
    """Every KQL query the deployment creates: each workbook tile, each log alert."""
    evaluator = _evaluated()
    (book,) = evaluator.deployed("Microsoft.Insights/workbooks")
    content = json.loads(book.properties["serializedData"])
    found = {
        f"workbook {item['name']}": item["content"]["query"]
        for item in content["items"]
        if item["type"] == QUERY
    }
    for alert in evaluator.deployed("Microsoft.Insights/scheduledQueryRules"):
        (criterion,) = alert.properties["criteria"]["allOf"]
        found[f"alert {alert.name}"] = criterion["query"]
    return found


# -- what a query depends on ---------------------------------------------------------------------


@dataclass
class Needs:
    table: str
    names: set[str] = field(default_factory=set)
    name_prefixes: set[str] = field(default_factory=set)
    message_prefixes: set[str] = field(default_factory=set)
    dimensions: set[str] = field(default_factory=set)
    values: dict[str, set[str]] = field(default_factory=dict)


def _strings(text: str) -> set[str]:
    return set(re.findall(r'"([^"]*)"', text))


def needs(query: str) -> Needs:
    table = re.match(r"\s*(\w+)", query)
    assert table, query
    found = Needs(table=table[1])
    found.names = set(re.findall(r'\bname == "([^"]+)"', query))
    for listed in re.findall(r"\bname in \(([^)]*)\)", query):
        found.names |= _strings(listed)
    found.name_prefixes = set(re.findall(r'\bname startswith "([^"]+)"', query))
    found.message_prefixes = set(re.findall(r'\bmessage startswith "([^"]+)"', query))
    found.dimensions = set(re.findall(r'customDimensions\["([^"]+)"\]', query))
    aliases = dict(re.findall(r'(\w+) = tostring\(customDimensions\["([^"]+)"\]\)', query))

    def value(dimension: str, *literals: str) -> None:
        found.values.setdefault(dimension, set()).update(literals)

    for dimension, literal in re.findall(
        r'tostring\(customDimensions\["([^"]+)"\]\) == "([^"]*)"', query
    ):
        value(dimension, literal)
    for alias, literal in re.findall(r'\b(\w+) == "([^"]*)"', query):
        if alias in aliases:
            value(aliases[alias], literal)
    for alias, listed in re.findall(r"\b(\w+) in \(([^)]*)\)", query):
        if alias in aliases and _strings(listed):
            value(aliases[alias], *_strings(listed))
    return found


# -- what the app emits --------------------------------------------------------------------------

Attributes = dict[str, set[str]]


@dataclass
class Emitted:
    metrics: dict[str, Attributes]
    spans: dict[str, Attributes]
    logs: list[tuple[str, Attributes]]


def _merge(into: Attributes, attributes: dict[str, Any]) -> None:
    for key, item in attributes.items():
        if item is not None:
            into.setdefault(key, set()).add(str(item))


class _Counts:
    """The lane counts, as the management API would give them (no Service Bus needed here)."""

    via = Via.ATOM

    async def subscription(self, topic: str, subscription: str) -> Counts:
        return Counts(active=0, dead_letters=1 if subscription == "esputnik" else 0)

    async def scheduled(self, topic: str) -> int:
        return 3

    async def close(self) -> None:
        return None


async def _lane_gauges(settings: AppSettings, run: Observed) -> None:
    report = await read_lanes(
        settings,
        counts=_Counts(),
        client=None,
        environ={"AzureWebJobs.deliver_esputnik.Disabled": "true"},
        now=datetime.now(UTC),
    )
    run.pipeline.observer.lanes_read(*report.readings())


@pytest.fixture
async def emitted(observed: Observed, fakes: dict[str, FakeServer], loyalty: FakeServer) -> Emitted:
    logs = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=provider)
    logger = logging.getLogger("order_processor")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        fakes["richrelevance"].inject(Reply(400, {"message": "lineItems[0].productId required"}))
        await observed.run(sample("order-created.json"), "m-1")  # refused on one lane
        fakes["esputnik"].inject(*[Reply(503)] * 3)
        await observed.run(sample("order-updated.json"), "m-2")  # a vendor down; a cache hit
        await observed.run(b"not json", "m-3")  # poison
        await observed.run(sample("order-created-unknown-card.json"), "m-4")  # skips
        await _lane_gauges(observed.pipeline.settings, observed)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    metrics: dict[str, Attributes] = {}
    for name, found in points(observed.reader).items():
        for attributes, _ in found:
            _merge(metrics.setdefault(name, {}), attributes)
    spans: dict[str, Attributes] = {}
    for span in observed.spans.get_finished_spans():
        kept = {k: v for k, v in (span.attributes or {}).items() if not _is_standard_attribute(k)}
        _merge(spans.setdefault(span.name, {}), kept)
    records: list[tuple[str, Attributes]] = []
    for data in logs.get_finished_logs():
        attributes: Attributes = {}
        _merge(attributes, dict(data.log_record.attributes or {}))
        records.append((str(data.log_record.body), attributes))
    return Emitted(metrics=metrics, spans=spans, logs=records)


def _union(groups: list[Attributes]) -> Attributes:
    merged: Attributes = {}
    for group in groups:
        for key, values in group.items():
            merged.setdefault(key, set()).update(values)
    return merged


def problems(query: str, emitted: Emitted) -> list[str]:
    """What `query` reads that the app did not emit (empty: every dependency met)."""
    wanted = needs(query)
    found: list[str] = []
    if wanted.table == "customMetrics":
        if not wanted.names | wanted.name_prefixes:
            return ["reads no metric by name"]
        found += [f"metric {n!r} not emitted" for n in wanted.names - set(emitted.metrics)]
        for prefix in wanted.name_prefixes:
            if not any(n.startswith(prefix) for n in emitted.metrics):
                found.append(f"no metric named {prefix!r}...")
        read = [a for n, a in emitted.metrics.items() if n in wanted.names]
        read += [
            a for n, a in emitted.metrics.items() for p in wanted.name_prefixes if n.startswith(p)
        ]
        everywhere = _union(list(emitted.metrics.values()))
    elif wanted.table == "requests":
        read = [
            a
            for n, a in emitted.spans.items()
            if n in wanted.names or any(n.startswith(p) for p in wanted.name_prefixes)
        ]
        if not read:
            found.append(f"no span named {wanted.names or wanted.name_prefixes}")
        everywhere = _union(read)
    elif wanted.table == "traces":
        read = [
            a
            for message, a in emitted.logs
            if any(message.startswith(p) for p in wanted.message_prefixes)
        ]
        if not read:
            found.append(f"no log line starting {wanted.message_prefixes}")
        everywhere = _union(read)
    else:
        return [f"table {wanted.table!r}: not one the app writes to ({sorted(TABLES)})"]
    attributes = _union(read)
    found += [f"dimension {d!r} not emitted" for d in sorted(wanted.dimensions - set(attributes))]
    for dimension, literals in wanted.values.items():
        missing = literals - everywhere.get(dimension, set())
        found += [f"{dimension} == {v!r} never emitted" for v in sorted(missing)]
    return found


# -- the checks ----------------------------------------------------------------------------------


def test_every_tile_and_alert_query_is_found_in_the_template() -> None:
    found = deployed_queries()
    assert {f"workbook {name}" for name, *_ in TILES} <= set(found)
    assert sum(1 for name in found if name.startswith("alert ")) >= 5 * 4
    assert all(needs(query).table in TABLES for query in found.values()), found


async def test_every_query_reads_what_the_app_emits(emitted: Emitted) -> None:
    failing = {
        name: p for name, query in deployed_queries().items() if (p := problems(query, emitted))
    }
    assert failing == {}


async def test_the_check_catches_a_rename(emitted: Emitted) -> None:
    tiles = {name: query for name, _, _, _, query in TILES}
    assert problems(tiles["outcomes-per-lane"], emitted) == []
    renamed = tiles["outcomes-per-lane"].replace('"orders.result"', '"orders.status"')
    assert problems(renamed, emitted) == [
        "dimension 'orders.status' not emitted",
        "orders.status == 'delivered' never emitted",
        "orders.status == 'skipped' never emitted",
    ]
    renamed = tiles["backlog"].replace("orders.lane.active_messages", "orders.lane.active")
    assert problems(renamed, emitted)[0] == "metric 'orders.lane.active' not emitted"
    value = tiles["loyalty-cache"].replace('cache == "hit"', 'cache == "hits"')
    assert problems(value, emitted) == ["cache == 'hits' never emitted"]
    span = tiles["latency-p95"].replace('"orders.destination"', '"messaging.destination"')
    assert problems(span, emitted) == ["dimension 'messaging.destination' not emitted"]
    log = tiles["rejections"].replace('"description"', '"detail"')
    assert problems(log, emitted) == ["dimension 'detail' not emitted"]


def test_the_workbook_lists_the_lanes_and_every_tile_has_a_title() -> None:
    lanes = json.loads((INFRA / "lanes.json").read_text())["lanes"]
    content = workbook(lanes)
    (parameters,) = [item for item in content["items"] if item["type"] == 9]
    picker = next(p for p in parameters["content"]["parameters"] if p["name"] == "Lanes")
    listed = [choice["value"] for choice in json.loads(picker["jsonData"])]
    assert listed == ["orders", *(lane["name"] for lane in lanes)]
    for item in content["items"]:
        if item["type"] == QUERY:
            assert item["content"]["title"]
            assert item["content"]["resourceType"] == "microsoft.insights/components"
            uses_range = "{TimeRange" in item["content"]["query"]
            assert uses_range <= (item["content"].get("timeContextFromParameter") == "TimeRange")


def test_the_layout_picture_draws_every_tile(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/workbook_layout.py draws docs/workbook-layout.png from infra/workbook.json."""
    pytest.importorskip("matplotlib")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "workbook_layout", INFRA.parent / "docs" / "workbook_layout.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    content = json.loads((INFRA / "workbook.json").read_text())
    placed = module.draw(content, tmp_path / "layout.png")
    assert [box.item["name"] for box in placed] == [item["name"] for item in content["items"]]
    assert (tmp_path / "layout.png").read_bytes().startswith(b"\x89PNG")
    halves = [box for box in placed if box.item.get("customWidth") == "50"]
    assert len(halves) % 2 == 0  # no half-empty row
