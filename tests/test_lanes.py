"""`lanes`: one row per lane from Service Bus's runtime properties, through the command line.

The counts come from the management APIs' recorded responses (tests/servicebus_management.py,
replayed under the real ServiceBusAdministrationClient and azure-core pipeline); the oldest
message's age from a peek of the Service Bus double's subscriptions, where messages are seeded
back-dated. A lane is paused by the platform's app setting in the environment the command runs in.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from order_processor.cli import app
from order_processor.destinations import DESTINATIONS
from order_processor.overview import counts
from order_processor.overview.lanes import lanes_of, paused
from order_processor.settings import load_settings
from tests.conftest import sample
from tests.servicebus_fixtures import Entities, Namespace, module_namespace
from tests.servicebus_management import FakeCredential, Management

namespace = module_namespace()

NAMESPACE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ordersync"
    "/providers/Microsoft.ServiceBus/namespaces/sb-ordersync"
)
ORDER = sample("order-created.json")


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


@pytest.fixture
def management(
    namespace: Namespace, entities: Entities, monkeypatch: pytest.MonkeyPatch
) -> Management:
    """The entities' counts as the management APIs report them: eSputnik behind with dead
    letters, Product Recs with one fresh message, the rest empty; 7 retry copies scheduled."""
    found = Management(namespace_id=NAMESPACE_ID, host=f"127.0.0.1:{namespace.double.port}")
    found.subscription(entities.topic, entities.subscription)
    for lane in entities.lanes:
        found.subscription(entities.deliveries_topic, entities.lane_subscription(lane))
    found.subscription(entities.deliveries_topic, "esputnik", active=12, dead_letters=3)
    found.subscription(entities.deliveries_topic, "product-recs", active=1)
    found.topic(entities.deliveries_topic, scheduled=7)
    namespace.put(entities.lane("esputnik"), ORDER, age=timedelta(hours=2), message_id="old")
    namespace.put(entities.lane("esputnik"), ORDER, message_id="new")
    namespace.put(entities.lane("product_recs"), ORDER, age=timedelta(minutes=5), message_id="p")
    monkeypatch.setattr(counts, "transport", found.transport)
    return found


def cli(entities: Entities, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["lanes", *args], env=entities.env(**env))
    return result.exit_code, result.output


def _rows(output: str) -> dict[str, dict[str, Any]]:
    return {row["lane"]: row for row in json.loads(output)["lanes"]}


def test_one_row_per_lane_and_exit_1_past_a_threshold(
    entities: Entities, management: Management
) -> None:
    code, out = cli(entities, "--json", **{"AzureWebJobs.deliver_esputnik.Disabled": "true"})
    assert code == 1, out
    report = json.loads(out)
    assert report["via"] == "atom"
    rows = _rows(out)
    assert list(rows) == ["orders", *DESTINATIONS, "accept"]
    esputnik = rows["esputnik"]
    assert (esputnik["state"], esputnik["active"], esputnik["deadLetters"]) == ("paused", 12, 3)
    assert esputnik["subscription"] == "esputnik"
    assert esputnik["function"] == "deliver_esputnik"
    assert 2 * 3600 - 60 <= esputnik["oldestAgeSeconds"] <= 2 * 3600 + 60  # the peeked oldest
    assert 4 * 60 <= rows["product_recs"]["oldestAgeSeconds"] <= 6 * 60
    assert rows["profile_store"] == rows["profile_store"] | {
        "state": "enabled",
        "active": 0,
        "deadLetters": 0,
        "oldestAgeSeconds": None,
        "error": None,
    }
    assert rows["orders"]["subscription"] == entities.subscription
    assert rows["accept"]["function"] == "accept_order_retry"
    assert report["scheduled"] == {
        "topic": entities.deliveries_topic,
        "messages": 7,
        "error": None,
    }
    assert {o["lane"] for o in report["over"]} == {"esputnik"}
    # What was asked: each subscription's runtime properties, the topic's, over ATOM.
    paths = {seen.path.lower() for seen in management.requests}
    assert f"/{entities.deliveries_topic}/subscriptions/esputnik" in paths
    assert f"/{entities.deliveries_topic}" in paths
    assert all(seen.authorization for seen in management.requests)  # SAS from the string


def test_thresholds_are_options(entities: Entities, management: Management) -> None:
    code, out = cli(entities, "--max-dead-letters", "3", "--max-age", "3h")
    assert code == 0, out
    assert "every lane within" in out
    assert f"scheduled on {entities.deliveries_topic}: 7 (retry copies of every lane" in out
    code, out = cli(entities, "--max-dead-letters", "3", "--max-age", "1h")
    assert code == 1
    assert "esputnik (oldest message 2h 0m old)" in out
    code, out = cli(entities, "--max-age", "soon")
    assert code == 2


def test_the_table(entities: Entities, management: Management) -> None:
    code, out = cli(
        entities, **{"AzureWebJobs_deliver_esputnik_Disabled": "true", "ESPUTNIK_ENABLED": "true"}
    )
    assert code == 1
    assert "counts from the namespace's management API" in out
    (row,) = [line for line in out.splitlines() if line.startswith("│ esputnik ")]
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    assert cells[:7] == [
        "esputnik",
        f"{entities.deliveries_topic}/esputnik",
        "deliver_esputnik",
        "paused",
        "12",
        "3",
        "2h 0m",
    ]
    assert "esputnik (3 dead letters); esputnik (oldest message 2h 0m old)" in out


def test_counts_from_azure_resource_manager_with_reader(
    entities: Entities, management: Management, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = FakeCredential()
    monkeypatch.setattr(counts, "credential", lambda: credential)
    code, out = cli(entities, "--json", "--no-peek", SERVICE_BUS_RESOURCE_ID=NAMESPACE_ID)
    assert code == 1, out
    report = json.loads(out)
    assert report["via"] == "arm"
    rows = _rows(out)
    assert (rows["esputnik"]["active"], rows["esputnik"]["deadLetters"]) == (12, 3)
    assert rows["esputnik"]["oldestAgeSeconds"] is None  # --no-peek
    assert report["scheduled"]["messages"] == 7
    arm = [seen for seen in management.requests if "management.azure.com" in seen.url]
    assert len(arm) == len(rows) + 1
    expected = f"{NAMESPACE_ID}/topics/{entities.deliveries_topic}/subscriptions/esputnik"
    assert expected.lower() in {seen.path.lower() for seen in arm}
    assert all(seen.query["api-version"] == [counts.ARM_API_VERSION] for seen in arm)
    assert all(seen.authorization == "Bearer fake-arm-token" for seen in arm)
    assert credential.scopes[0] == ("https://management.azure.com/.default",)


def test_a_credential_without_manage_rights_says_so_per_lane(
    entities: Entities, management: Management
) -> None:
    management.unauthorized = True
    code, out = cli(entities, "--json")
    assert code == 1
    rows = _rows(out)
    assert all(
        row["error"] and "ClientAuthenticationError" in row["error"] for row in rows.values()
    )
    assert all(row["active"] is None for row in rows.values())


def test_a_missing_subscription_is_reported_not_raised(
    entities: Entities, management: Management
) -> None:
    del management.subscriptions[(entities.deliveries_topic, "richrelevance")]
    code, out = cli(entities, "--json", "--max-dead-letters", "9", "--max-age", "1d")
    assert code == 1
    rows = _rows(out)
    assert "ResourceNotFoundError" in rows["richrelevance"]["error"]
    assert rows["esputnik"]["error"] is None


def test_arm_needs_the_namespace_id(entities: Entities, management: Management) -> None:
    code, out = cli(entities, "--via", "arm")
    assert code == 2
    assert "SERVICE_BUS_RESOURCE_ID" in out


def test_paused_in_either_spelling_and_off_when_disabled() -> None:
    assert paused("deliver_esputnik", {"AzureWebJobs.deliver_esputnik.Disabled": "True"})
    assert paused("deliver_esputnik", {"AzureWebJobs_deliver_esputnik_Disabled": "1"})
    assert not paused("deliver_esputnik", {"AzureWebJobs.deliver_esputnik.Disabled": "false"})
    assert not paused("deliver_esputnik", {"AzureWebJobs.deliver_other.Disabled": "true"})
    settings = load_settings(service_bus_only=True)
    lanes = {lane.name: lane for lane in lanes_of(settings, {"ESPUTNIK_ENABLED": "off"})}
    assert not lanes["esputnik"].enabled
    assert lanes["profile_store"].enabled
    assert lanes["orders"].function == "accept_order"


# -- the lane_metrics function: the same status, as gauges --------------------------------------


def _gauges(reader: Any) -> dict[str, dict[tuple[str, ...], Any]]:
    """gauge name -> {attribute values: value}."""
    data = reader.get_metrics_data()
    found: dict[str, dict[tuple[str, ...], Any]] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = tuple(str(v) for v in (point.attributes or {}).values())
                    found.setdefault(metric.name, {})[key] = point.value
    return found


async def test_lane_metrics_report_every_lane_as_gauges(
    entities: Entities, management: Management
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from order_processor.observe import Observers
    from order_processor.overview.metrics import LaneMetrics
    from order_processor.telemetry import Telemetry

    reader = InMemoryMetricReader()
    telemetry = Telemetry.create(meter_provider=MeterProvider(metric_readers=[reader]))
    settings = load_settings(overrides=entities.overrides(), service_bus_only=True)
    paused_esputnik = {"AzureWebJobs.deliver_esputnik.Disabled": "true"}
    metrics = LaneMetrics(settings, Observers.standard(telemetry), environ=paused_esputnik)
    try:
        report = await metrics.run()
    finally:
        await metrics.aclose()
    assert report.via == "atom"
    gauges = _gauges(reader)
    esputnik = ("esputnik", "esputnik")  # orders.lane, orders.subscription
    assert gauges["orders.lane.active_messages"][esputnik] == 12
    assert gauges["orders.lane.dead_letter_messages"][esputnik] == 3
    assert 7140 <= gauges["orders.lane.oldest_message_age"][esputnik] <= 7260
    assert gauges["orders.lane.paused"][esputnik] == 1
    assert gauges["orders.lane.paused"][("profile_store", "profile-store")] == 0
    assert gauges["orders.lane.oldest_message_age"][("profile_store", "profile-store")] == 0
    assert gauges["orders.topic.scheduled_messages"] == {(entities.deliveries_topic,): 7}
    lanes = {key[0] for key in gauges["orders.lane.active_messages"]}
    assert lanes == {"orders", *DESTINATIONS, "accept"}


async def test_a_lane_not_read_reports_no_gauge_and_stale_readings_stop(
    entities: Entities, management: Management
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from order_processor.observe import MetricsObserver
    from order_processor.overview.metrics import LaneMetrics
    from order_processor.telemetry import LaneGauges, Telemetry

    reader = InMemoryMetricReader()
    telemetry = Telemetry.create(meter_provider=MeterProvider(metric_readers=[reader]))
    clock = [0.0]
    object.__setattr__(telemetry, "lanes", LaneGauges(clock=lambda: clock[0]))
    del management.subscriptions[(entities.deliveries_topic, "richrelevance")]
    settings = load_settings(overrides=entities.overrides(), service_bus_only=True)
    metrics = LaneMetrics(settings, MetricsObserver(telemetry), environ={})
    try:
        await metrics.run()
    finally:
        await metrics.aclose()
    active = _gauges(reader)["orders.lane.active_messages"]
    assert ("richrelevance", "richrelevance") not in active
    assert ("esputnik", "esputnik") in active
    clock[0] += 181  # the function stopped running: the gauges stop too
    assert _gauges(reader) == {}
