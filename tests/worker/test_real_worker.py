"""The app under Microsoft's own Python worker, as Azure runs it on Python 3.13.

The rest of the suite calls the decorated functions directly; what the worker checks when it
loads them (annotations, bindings, the settlement client parameter) and how it decodes the host's
payloads only show up here. Each test runs tests/worker/harness.py in a Python 3.13 environment
built from PyPI (tests/worker/worker_env.py): worker init, functions metadata, a load request for
every function and an invocation for every Service Bus trigger, with settlement going to a fake
of the host's Settlement gRPC service. Functions are discovered, never named: the table below
says which messages a trigger gets and how each must be settled.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loyalty_client.customer import Customer
from order_processor.contract import parse_order
from order_processor.delivery import DeliveryMessage
from order_processor.destinations import DESTINATIONS
from order_processor.model import enriched_event, event_key
from tests.conftest import BASELINE_ENV, ROOT, SAMPLES, destination_overrides
from tests.fakes.base import FakeServer
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY
from tests.servicebus_fixtures import Namespace, module_namespace
from tests.worker.plan import PLAN_ENV, REPORT_ENV, Plan, Report
from tests.worker.worker_env import WorkerPythonMissing, WorkerVenvFailed, worker_python


@dataclass(frozen=True)
class Case:
    """One message body and the settlement it must get, whatever the trigger's cardinality."""

    label: str
    body: bytes
    action: str  # complete | deadletter | abandon
    reason: str | None = None


NOT_JSON = Case("not JSON", b"not json {", "deadletter", reason="InvalidMessage")
VALID_ORDER = Case(
    "valid order: published for every routed lane",
    (SAMPLES / "valid" / "order-created.json").read_bytes(),
    "complete",
)


def delivery_for(name: str) -> Case:
    """A delivery message for `name`'s lane, as the accept stage publishes it."""
    order = parse_order(VALID_ORDER.body)
    customer = Customer(customer_id="C-000123", email="ann.shopper@example.com")
    event = enriched_event(order, customer, key=event_key(order), message_id="worker-test")
    message = DeliveryMessage.of(
        event, destination=name, accepted_at=datetime.now(UTC), order_enqueued_at=None
    )
    return Case(f"delivery message for {name}", message.encode(), "complete")


# Which messages each Service Bus trigger is sent, by fnmatch pattern on the function name: the
# first row that matches applies; a trigger no row matches fails the test (give it a row). A
# cardinality=many trigger gets a row's messages as one batch, any other one per invocation.
Expectations = tuple[tuple[str, tuple[Case, ...]], ...]
EXPECTATIONS: Expectations = (
    ("accept_order*", (NOT_JSON, VALID_ORDER)),
    *((f"deliver_{name}", (NOT_JSON, delivery_for(name))) for name in DESTINATIONS),
)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def python313() -> Path:
    """Built once per run (a minute at most from PyPI; seconds when cached)."""
    try:
        return worker_python()
    except WorkerPythonMissing as exc:
        problem, may_skip = f"needs Python 3.13: {exc}", True
    except WorkerVenvFailed as exc:
        problem, may_skip = f"could not build its Python 3.13 environment: {exc}", False
    # Outside the except blocks: the report shows one sentence, not a chained traceback.
    if may_skip and not _ci():
        pytest.skip(f"the real-worker test {problem}")
    never_skipped = " (CI=true: never skipped)" if may_skip else ""
    pytest.fail(f"the real-worker test {problem}{never_skipped}", pytrace=False)


namespace = module_namespace()


@pytest.fixture
def vendors(
    profile_store: tuple[FakeServer, Any],
    product_recs: tuple[FakeServer, Any],
    richrelevance: tuple[FakeServer, Any],
    esputnik: tuple[FakeServer, Any],
    loyalty: FakeServer,
    namespace: Namespace,
) -> dict[str, str]:
    """App settings with every lane on: each destination at its loopback fake, the loyalty
    provider at its fake, and Service Bus at the double's lanes topology (the accept stage
    publishes there). No ledger: the harness sends each message once."""
    urls = {
        "profile_store": profile_store[0].url,
        "product_recs": product_recs[0].url,
        "richrelevance": richrelevance[0].url,
        "esputnik": esputnik[0].url,
    }
    settings = namespace.fresh().env(
        ALLOW_INSECURE_HTTP="true",
        LOYALTY_API_BASE_URL=loyalty.url,
        LOYALTY_API_KEY=LOYALTY_KEY,
    )
    for name, cls in DESTINATIONS.items():
        prefix = str(cls.settings_class.model_config.get("env_prefix", ""))
        for field, value in destination_overrides(name, urls[name]).items():
            settings[f"{prefix}{field.upper()}"] = str(value)
    return settings


def app_settings(vendors: dict[str, str], **overrides: str) -> dict[str, str]:
    """Complete app settings for the worker: `vendors`, no ledger; `overrides` on top."""
    settings = {
        **BASELINE_ENV,
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsScriptRoot": str(ROOT),
        "DELIVERY_LEDGER_ENABLED": "false",
        # The timer is loaded with the rest (the harness invokes Service Bus triggers only).
        "LANE_METRICS_ENABLED": "true",
    }
    return settings | vendors | overrides


def _plan(expectations: Expectations) -> Plan:
    return {
        "app_directory": str(ROOT),
        "messages": [
            (
                pattern,
                [{"label": c.label, "body_b64": base64.b64encode(c.body).decode()} for c in cases],
            )
            for pattern, cases in expectations
        ],
    }


@dataclass
class Run:
    report: Report
    stderr: str

    def log_tail(self) -> str:
        return "\n".join(self.stderr.splitlines()[-40:])


def run_harness(
    python: Path,
    tmp_path: Path,
    settings: dict[str, str],
    expectations: Expectations = EXPECTATIONS,
) -> Run:
    plan_file, report_file = tmp_path / "plan.json", tmp_path / "report.json"
    plan_file.write_text(json.dumps(_plan(expectations)))
    # The worker's environment is the app settings, as on Azure; nothing of this process leaks in.
    passed = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    files = {PLAN_ENV: str(plan_file), REPORT_ENV: str(report_file)}
    env = passed | settings | files | {"PYTHONDONTWRITEBYTECODE": "1"}  # no 3.13 .pyc in the tree
    done = subprocess.run(  # noqa: S603 - our harness in our environment
        [str(python), "-W", "default::ResourceWarning", "-m", "tests.worker.harness"],
        cwd=ROOT,  # the host starts the worker in the app's directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"the harness failed:\n{done.stderr[-6000:]}"
    return Run(json.loads(report_file.read_text()), done.stderr)


def assert_every_function_loaded(run: Run) -> None:
    report = run.report
    for step in ("init", "metadata"):
        result = report[step]
        assert result["status"] == "Success", (
            f"worker {step} request failed:\n{result['exception']}\n--- log ---\n{run.log_tail()}"
        )
    assert report["functions"], f"the worker indexed no function\n{run.log_tail()}"
    failed = {n: s["exception"] for n, s in report["loads"].items() if s["status"] != "Success"}
    assert not failed, f"functions failed to load: {failed}"
    assert set(report["loads"]) == {f["name"] for f in report["functions"]}


def service_bus_triggers(report: Report) -> dict[str, dict[str, Any]]:
    return {
        f["name"]: b
        for f in report["functions"]
        for b in f["bindings"]
        if b.get("type") == "serviceBusTrigger"
    }


def expected_cases(function: str) -> tuple[Case, ...]:
    from fnmatch import fnmatchcase

    return next(cases for pattern, cases in EXPECTATIONS if fnmatchcase(function, pattern))


def assert_each_message_settled_on_its_own(run: Run) -> None:
    report = run.report
    assert not report["unplanned"], f"no EXPECTATIONS row for {report['unplanned']}: add one"
    triggers = service_bus_triggers(report)
    assert triggers, "no Service Bus trigger was indexed"
    assert {i["function"] for i in report["invocations"]} == set(triggers)
    settled: dict[str, list[dict[str, Any]]] = {}
    for settlement in report["settlements"]:
        settled.setdefault(settlement["lock_token"], []).append(dict(settlement))
    sent_tokens = set()
    for invocation in report["invocations"]:
        name, result = invocation["function"], invocation["result"]
        assert result["status"] == "Success", f"{name} invocation failed:\n{result['exception']}"
        many = str(triggers[name].get("cardinality", "one")).lower() == "many"
        assert invocation["cardinality"] == ("many" if many else "one")
        cases = {c.label: c for c in expected_cases(name)}
        assert len(invocation["messages"]) == (len(cases) if many else 1)
        for sent in invocation["messages"]:
            case, token = cases[sent["label"]], sent["lock_token"]
            sent_tokens.add(token)
            got = settled.get(token, [])
            assert len(got) == 1, f"{name} / {case.label}: settled {len(got)} times: {got}"
            assert (got[0]["action"], got[0]["reason"]) == (case.action, case.reason), (
                f"{name} / {case.label}: expected {case.action} {case.reason or ''}, got {got[0]}"
            )
    assert set(settled) == sent_tokens, "a settlement named a lock token that was never sent"


def assert_nothing_left_unclosed(run: Run) -> None:
    leaks = [line for line in run.stderr.splitlines() if "unclosed" in line.lower()]
    assert not leaks, "left unclosed at shutdown:\n" + "\n".join(leaks)


CONFIGURATIONS = [
    {"ORDERS_BATCH_ENABLED": batch, "ORDERS_SESSIONS_ENABLED": sessions}
    for batch in ("false", "true")
    for sessions in ("false", "true")
]


def _configuration_id(configuration: dict[str, str]) -> str:
    return "-".join(
        f"{name.split('_')[1].lower()}={value}" for name, value in configuration.items()
    )


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=_configuration_id)
def test_every_function_loads_and_settles_under_the_real_worker(
    python313: Path, tmp_path: Path, configuration: dict[str, str], vendors: dict[str, str]
) -> None:
    run = run_harness(python313, tmp_path, app_settings(vendors, **configuration))
    assert_every_function_loaded(run)
    assert_each_message_settled_on_its_own(run)
    triggers = service_bus_triggers(run.report).values()
    # The settings reached the declared triggers (the configuration under test is the real one).
    batch = configuration["ORDERS_BATCH_ENABLED"] == "true"
    assert any(str(b.get("cardinality")).lower() == "many" for b in triggers) is batch
    sessions = configuration["ORDERS_SESSIONS_ENABLED"] == "true"
    assert any(b.get("isSessionsEnabled") for b in triggers) is sessions
    # Every lane ran under the worker, and the accept stage's publish reached the double.
    assert {f"deliver_{name}" for name in DESTINATIONS} <= set(service_bus_triggers(run.report))
    # The lane_metrics timer was indexed and loaded like every other function.
    (timer,) = [f for f in run.report["functions"] if f["name"] == "lane_metrics"]
    assert [b["type"] for b in timer["bindings"]] == ["timerTrigger"]
    assert run.report["loads"]["lane_metrics"]["status"] == "Success"
    assert_nothing_left_unclosed(run)
    assert run.report["python_version"].startswith("3.13.")


def test_the_app_closes_its_clients_when_the_worker_stops(
    python313: Path, tmp_path: Path, vendors: dict[str, str], azurite: str
) -> None:
    """Every aiohttp-based client the app opens (the ledger's TableClient on Azurite, the
    outbox's Service Bus client on the double) is closed when the worker's loop stops."""
    settings = app_settings(
        vendors, DELIVERY_LEDGER_ENABLED="true", DELIVERY_LEDGER_CONNECTION=azurite
    )
    run = run_harness(python313, tmp_path, settings)
    assert_every_function_loaded(run)
    assert_each_message_settled_on_its_own(run)
    assert_nothing_left_unclosed(run)
