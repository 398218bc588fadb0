"""The bench keeps working: its quick mode on a tiny order set, every run and figure present, the
counts consistent. No timing is asserted (timings belong to `python -m bench`, not the suite).
(The transport the bench led to is tested in tests/outbound/.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import Report
from bench.run import BenchConfig, run_bench

ORDERS = 40


@pytest.fixture(scope="module")
def report() -> Report:
    config = BenchConfig.quick(
        orders=ORDERS,
        seed_orders=10,
        concurrency=4,
        latency_ms=1.0,
        batch_size=4,
        slow_ms=50.0,
        slow_rounds=1,
        validate_every=1,  # every destination request checked by the contract-test fakes
        stock_orders=10,
        experiments=("one-log-per-message", "quiet-logs"),
        experiment_orders=10,
        experiment_rounds=1,
    )
    return run_bench(config)


def test_every_run_is_reported(report: Report) -> None:
    names = set(report.runs)
    assert {"floor", "floor (stock httpx)", "core", "batch", "seed-style"} <= names
    assert {"slow reference", "core (stock httpx transport)", "core + quiet-logs"} <= names
    assert any(name.startswith("slow (profile_store") for name in names)
    assert not [name for name, run in report.runs.items() if run.skipped]


def test_the_core_sends_exactly_what_the_orders_call_for(report: Report) -> None:
    core = report.runs["core"]
    assert core.vendor is not None
    assert core.outcomes == {"complete": ORDERS}
    assert core.vendor.destination_requests == core.planned_sends == core.delivered
    assert core.vendor.loyalty_requests == core.cache_misses
    assert core.vendor.token_requests == 1
    assert core.vendor.validated > 0
    assert core.vendor.invalid == 0, core.vendor.problems
    assert core.vendor.connections <= 5 * core.concurrency


def test_the_comparison_runs_deliver_the_same_orders(report: Report) -> None:
    core = report.runs["core"]
    for name in ("floor", "batch"):
        run = report.runs[name]
        assert run.messages == ORDERS
        assert run.delivered == core.planned_sends, name
        assert run.vendor is not None
        assert run.vendor.invalid == 0, run.vendor.problems
    batch = report.runs["batch"].vendor
    assert batch is not None
    assert batch.destination_requests < core.planned_sends  # bulk requests carried several
    seed = report.runs["seed-style"]
    assert seed.vendor is not None
    assert seed.vendor.destination_requests == seed.planned_sends
    # no pooling: one connection per request, one token per RichRelevance call
    v = seed.vendor
    assert v.connections == v.destination_requests + v.loyalty_requests + v.token_requests


def test_every_ratio_and_target_is_computed(report: Report, tmp_path: Path) -> None:
    ratios = report.ratios()
    missing = [name for name, value in ratios.items() if value is None]
    assert missing == []
    assert all(t.met is not None for t in report.targets())
    written = json.loads(report.write(tmp_path / "report.json").read_text())
    assert set(written) == {"started", "machine", "config", "runs", "ratios", "targets"}
    core = written["runs"]["core"]
    for key in ("msgs_per_s", "latency_ms", "cpu_ms_per_msg", "rss_mib", "outbound_per_msg"):
        assert key in core
    assert set(core["outbound_per_msg"]) == {"destination", "loyalty", "token", "connections"}
    assert set(core["latency_ms"]) == {"p50", "p95", "p99"}
