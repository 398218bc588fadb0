"""The bench keeps working: its quick mode on a tiny order set, every run and figure present, the
counts consistent, every row's work checked. No timing is asserted (timings belong to
`python -m bench`, not the suite).

Also the pieces of the lanes mode on their own (the in-process Service Bus and the checks). The
transport the bench led to has its own conformance tests in tests/outbound.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from bench.bus import BILLING_UNIT, DeliveriesTopic, Operations, Subscription, billed_units
from bench.fakes import VendorStats
from bench.lanes import LanesResult
from bench.ledgers import memory_ledger
from bench.orders import OrderSet
from bench.processes import ProcessesResult, plan_chunks
from bench.report import WIDTH, Report
from bench.result import RunResult
from bench.run import BenchConfig, run_bench
from bench.vendors import DESTINATION_NAMES, accepted_order_ids, digest
from bench.verify import (
    expected_rows,
    nothing_done_before,
    planned_ids,
    table_rows_as_planned,
    vendors_accepted_the_plan,
)
from order_processor.outbox import Outgoing
from tests.azurite import BINARY, required

ORDERS = 40

if not BINARY.exists() and not required():  # CI installs it (npm ci); a missing one fails there
    pytest.skip(f"{BINARY} not found: run `npm ci`", allow_module_level=True)


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
        lanes_orders=ORDERS,
        lanes_rounds=1,
        ledger_rounds=1,
        processes_rounds=1,
        processes_latency_ms=5.0,
        sweep=(2,),
    )
    return run_bench(config)


def lanes_runs(report: Report) -> dict[str, LanesResult]:
    return {n: r for n, r in report.runs.items() if isinstance(r, LanesResult)}


def test_every_run_is_reported(report: Report) -> None:
    names = set(report.runs)
    assert {"floor", "floor (stock httpx)", "core", "batch", "seed-style"} <= names
    assert {"slow reference", "core (stock httpx transport)", "core + quiet-logs"} <= names
    assert any(name.startswith("slow (profile_store") for name in names)
    assert {
        "lanes reference #1",
        "lanes slow (profile_store 50 ms) #1",
        "lanes down (esputnik 503) #1",
        "lanes reference @70%",
        "lanes slow (profile_store 50 ms) @70%",
        "lanes down (esputnik 503) @70%",
    } <= names
    assert not [name for name, run in report.runs.items() if run.skipped]


def test_every_row_did_the_work_it_claims(report: Report) -> None:
    assert report.failed_checks() == {}
    for name, run in report.runs.items():
        assert run.checks, name
        assert run.work_done, name
    # the core-based rows check the vendors' accepted order ids against the plans
    for name in ("core", "batch", "seed-style", "lanes down (esputnik 503) #1"):
        assert any("accepted exactly the planned" in c.name for c in report.runs[name].checks)


def test_the_core_sends_exactly_what_the_orders_call_for(report: Report) -> None:
    core = report.runs["core"]
    assert core.vendor is not None
    assert core.outcomes == {"complete": ORDERS}
    assert core.vendor.destination_requests == core.planned_sends == core.delivered
    assert core.order_mismatches == 0
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


def test_the_lanes_mode_drives_each_lane_on_its_own(report: Report) -> None:
    runs = lanes_runs(report)
    assert runs
    for name, run in runs.items():
        assert run.outcomes == {"complete": ORDERS}, name
        assert set(run.lanes) == set(DESTINATION_NAMES), name
        for lane_name, lane in run.lanes.items():
            assert lane.final == lane.routed, (name, lane_name)
            assert lane.delivered == lane.planned, (name, lane_name)
            assert lane.dead_lettered == 0, (name, lane_name)
            assert lane.busy_s > 0, (name, lane_name)
        ops = run.ops
        # each message published (orders by the ERP, deliveries and copies by the stages) was
        # received once and completed once: nothing abandoned or dead-lettered
        assert ops.receives == ops.erp_sends + ops.sends - ops.duplicates, name
        assert ops.completes == ops.receives, name
        assert ops.abandons == ops.dead_letters == 0, name
        assert ops.erp_sends == ORDERS
        summary = run.summary()["lanes"]
        assert set(summary["end_to_end_ms"]) == set(DESTINATION_NAMES)
        assert summary["loyalty"]["lookups_per_card_order"] == 1.0
        assert summary["loyalty"]["requests_per_miss"] == 1.0
        assert summary["loyalty"]["requests_per_hit"] in (0.0, None)
        assert summary["ledger"]["records"] == summary["ledger"]["claims"] > 0


def test_the_down_vendor_owes_everything_then_drains_once(report: Report) -> None:
    down = lanes_runs(report)["lanes down (esputnik 503) #1"]
    lane = down.lanes["esputnik"]
    drain = lane.drain()
    assert drain is not None
    assert drain["delivered_before_recovery"] == 0
    assert drain["backlog_at_recovery"] > 0
    assert drain["delivered_after_recovery"] == lane.planned
    assert down.vendor is not None
    accepted = down.vendor.accepted("esputnik")
    assert accepted["duplicates"] == 0
    assert accepted["distinct"] == lane.planned
    assert any("was down" in c.name and c.ok for c in down.checks)
    statuses = down.vendor.systems["esputnik"]["statuses"]
    assert statuses.get("503", 0) > 0  # it was called while down, and refused
    slow = lanes_runs(report)["lanes slow (profile_store 50 ms) #1"]
    assert slow.lanes["profile_store"].drain() is not None
    assert down.lanes["profile_store"].drain() is None


def test_every_ratio_and_target_is_computed(report: Report, tmp_path: Path) -> None:
    ratios = report.ratios()
    missing = [name for name, value in ratios.items() if value is None]
    assert missing == []
    assert {"isolation_slow", "isolation_down"} <= set(ratios)
    assert all(t.met is not None for t in report.targets())
    written = json.loads(report.write(tmp_path / "report.json").read_text())
    assert set(written) == {
        "started",
        "machine",
        "config",
        "runs",
        "ratios",
        "targets",
        "lanes",
        "ledger",
        "ledger_rows",
        "processes",
        "failed_checks",
    }
    assert written["failed_checks"] == {}
    core = written["runs"]["core"]
    for key in ("msgs_per_s", "latency_ms", "cpu_ms_per_msg", "rss_mib", "outbound_per_msg"):
        assert key in core
    assert core["work_done"] is True
    assert set(core["outbound_per_msg"]) == {"destination", "loyalty", "token", "connections"}
    assert set(core["latency_ms"]) == {"p50", "p95", "p99"}
    lanes = written["lanes"]
    for key in ("isolation_slow", "isolation_down", "drain", "loyalty", "per_order"):
        assert key in lanes
    assert set(lanes["per_order"]) == {"reference", "slow", "down"}
    reference = lanes["per_order"]["reference"]
    assert set(reference["service_bus"]) >= {"receives", "sends", "settlements", "total"}
    assert set(reference["ledger"]) == {"claims", "records", "table_requests"}
    cost = lanes["cost_per_million_orders"]["reference"]
    assert cost["service_bus_usd"]
    assert cost["table_usd"] > 0


def test_the_markdown_report_has_the_lanes_section(report: Report, tmp_path: Path) -> None:
    from bench.markdown import render

    text = render(json.loads(report.write(tmp_path / "report.json").read_text()))
    assert "isolation_slow" in text
    assert "isolation_down" in text
    assert "| lanes reference #1 | esputnik |" in text
    assert "| ledger pair, one by one |" in text
    assert "| processes x2 #1 |" in text


# --- the ledger's cost, the processes, the output ---------------------------------------------


def test_the_ledger_pairs_run_memory_and_azurite_back_to_back(report: Report) -> None:
    for path in ("one by one", "batch"):
        memory = report.runs[f"ledger memory {path} #1"]
        table = report.runs[f"ledger azurite {path} #1"]
        assert memory.work_done, path
        assert table.work_done, path
        assert memory.messages == table.messages == ORDERS
        names = {c.name for c in table.checks if c.ok}
        assert "no delivery was found already done by an earlier run" in names
        assert "the ledger's table holds one row per routed delivery, as planned" in names
        cost = table.ledger_cost
        assert cost is not None
        assert memory.ledger_cost is not None
        assert cost["ledger"] == "azurite"
        assert cost["table"]
        assert memory.ledger_cost["round_trips_per_delivery"] is None
        assert cost["client_cpu_ms_per_delivery"] > memory.ledger_cost["client_cpu_ms_per_delivery"]
        assert cost["azurite_cpu_ms_per_delivery"] > 0
        # one claim + one record per delivery one by one (+ the table's creation); fewer batched
        trips = cost["round_trips_per_delivery"]
        assert (2.0 <= trips < 2.2) if path == "one by one" else trips < 2.0, (path, trips)
    summary = report.ledger_summary()
    assert summary is not None
    for figures in summary.values():
        assert figures["ratio_median"] is not None
        assert figures["rounds"][0]["both_did_their_work"]
    tables = {r.ledger_cost["table"] for r in report.ledger_rows() if r.ledger_cost}
    assert len(tables) == len(report.ledger_rows())  # every run on a table of its own
    assert any(t.name.startswith("ledger: CPU per order") for t in report.targets())


def test_the_processes_share_one_ledger_and_send_nothing_twice(report: Report) -> None:
    for n in (1, 2):
        run = report.runs[f"processes x{n} #1"]
        assert isinstance(run, ProcessesResult)
        assert run.work_done, [c for c in run.checks if not c.ok]
        assert len(run.per_process) == n
        assert all(p["orders_taken"] > 0 for p in run.per_process)
        assert sum(p["orders_taken"] for p in run.per_process) == ORDERS + run.resent
        assert run.delivered == run.planned_sends
        assert run.vendor is not None
        for system in DESTINATION_NAMES:
            assert run.vendor.accepted(system)["duplicates"] == 0
        assert any(c.name == "no (order event, vendor) was sent twice" for c in run.checks)
    summary = report.processes_summary()
    assert summary is not None
    assert summary["sent_twice"] == 0
    assert summary["scaling_median"] is not None


def test_the_re_sent_orders_go_to_the_next_taker() -> None:
    chunks = plan_chunks(40, 10)
    flat = [entry for chunk in chunks for entry in chunk]
    assert sorted(i for i, copy in flat if not copy) == list(range(40))
    copies = [i for i, copy in flat if copy]
    assert copies == [5, 15, 25, 35]
    for index in copies:
        first = next(n for n, c in enumerate(chunks) if (index, 0) in c)
        assert (index, 1) in chunks[min(first + 1, len(chunks) - 1)]


def test_a_run_that_finds_earlier_rows_fails_its_check() -> None:
    result = RunResult("t", messages=1)
    ledger = memory_ledger()
    assert nothing_done_before(result, ledger).ok
    result.previously = 3  # answered "delivered earlier": another run's rows
    assert not nothing_done_before(result, ledger).ok
    orders = OrderSet(10, cards=5, tag="R")
    expected = expected_rows(orders, DESTINATION_NAMES)
    assert table_rows_as_planned(expected.copy(), expected, "t1").ok
    extra = expected.copy()
    extra[("esputnik", "delivered")] += 1
    missing = table_rows_as_planned(extra, expected, "t1")
    assert not missing.ok
    assert "esputnik delivered" in missing.detail


def test_azurite_mode_gives_every_run_a_table_of_its_own() -> None:
    config = BenchConfig.quick(
        orders=20, concurrency=4, latency_ms=1.0, ledger="azurite", modes=("core", "sweep"),
        sweep=(2,), validate_every=0,
    )  # fmt: skip
    report = run_bench(config)
    assert report.failed_checks() == {}
    tables = set()
    for name in ("core", "core c=2"):
        run = report.runs[name]
        assert run.ledger_cost is not None, name
        tables.add(run.ledger_cost["table"])
        assert run.ledger_cost["round_trips_per_delivery"] >= 2.0
        checks = {c.name: c for c in run.checks}
        assert checks["no delivery was found already done by an earlier run"].ok
        assert checks["the ledger's table holds one row per routed delivery, as planned"].ok
    assert len(tables) == 2
    assert [r.name for r in report.ledger_rows()] == ["core", "core c=2"]


def test_the_printed_tables_fit_120_columns(report: Report) -> None:
    console = Console(width=400, record=True)  # wide: the tables' own width decides
    report.render(console)
    widths = [len(line.rstrip()) for line in console.export_text().splitlines()]
    assert max(widths) <= WIDTH


def test_the_charts_are_drawn(report: Report, tmp_path: Path) -> None:
    from bench import charts

    saved = report.write(tmp_path / "report.json")
    charts.main([str(saved), "--out", str(tmp_path / "png")])
    drawn = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert drawn == sorted(charts.CHARTS)
    for name in drawn:
        assert (tmp_path / "png" / name).read_bytes().startswith(b"\x89PNG")


# --- the lanes mode's pieces ----------------------------------------------------------------------


def outgoing(message_id: str, destination: str, **extra: object) -> Outgoing:
    return Outgoing(body=b"{}", message_id=message_id, destination=destination, **extra)  # type: ignore[arg-type]


async def test_the_topic_routes_drops_duplicates_and_holds_scheduled_copies() -> None:
    ops = Operations()
    lanes = {name: Subscription(name, ops) for name in ("a", "b")}
    topic = DeliveriesTopic(lanes, ops)
    later = datetime.now(UTC) + timedelta(seconds=0.05)
    await topic.publish(
        [outgoing("1", "a"), outgoing("2", "b"), outgoing("1", "a"), outgoing("3", "x")]
    )
    await topic.publish([outgoing("4", "b", scheduled_at=later)])
    assert [e.message_id for e in lanes["a"].ready] == ["1"]
    assert [e.message_id for e in lanes["b"].ready] == ["2"]
    assert (ops.sends, ops.duplicates, ops.send_calls, topic.unrouted) == (5, 1, 2, 1)
    assert lanes["b"].scheduled == 1
    assert not lanes["b"].idle
    (first,) = await lanes["b"].receive(10)
    lanes["b"].complete(first)
    (copy,) = await asyncio.wait_for(lanes["b"].receive(), timeout=2)
    assert copy.message_id == "4"
    assert copy.delivery_count == 1
    lanes["b"].abandon(copy)  # back at once, delivered again
    (again,) = await lanes["b"].receive()
    assert again is copy
    assert again.delivery_count == 2
    lanes["b"].dead_letter(again, "Reason", "why")
    assert lanes["b"].idle
    assert lanes["b"].busy_seconds() > 0
    assert (ops.receives, ops.completes, ops.abandons, ops.dead_letters) == (3, 1, 1, 1)
    assert ops.app == ops.sends + 3 + 3


def test_operations_are_billed_per_64_kib_started() -> None:
    assert billed_units(0) == billed_units(BILLING_UNIT) == 1
    assert billed_units(BILLING_UNIT + 1) == 2
    assert billed_units(256 * 1024) == 4


def test_the_fakes_read_order_ids_where_each_vendor_puts_them() -> None:
    one = {"payload": {"orderId": "A1"}}
    assert accepted_order_ids("profile_store", json.dumps(one).encode()) == ["A1"]
    bulk = [one, {"payload": {"orderId": "A2"}}]
    assert accepted_order_ids("profile_store", json.dumps(bulk).encode()) == ["A1", "A2"]
    recs = {"order": {"refCode": "B1"}}
    assert accepted_order_ids("product_recs", json.dumps(recs).encode()) == ["B1"]
    rr = [{"id": 1, "externalOrderId": "C1"}, {"id": 2, "externalOrderId": "C2"}]
    assert accepted_order_ids("richrelevance", json.dumps(rr).encode()) == ["C1", "C2"]
    orders = {"orders": [{"externalOrderId": "D1"}]}
    assert accepted_order_ids("esputnik", json.dumps(orders).encode()) == ["D1"]
    event = {"params": [{"name": "externalOrderId", "value": "D2"}]}
    assert accepted_order_ids("esputnik", json.dumps(event).encode()) == ["D2"]
    assert digest(["x", "y"]) == digest(["y", "x"]) != digest(["x"])


def test_the_vendor_check_catches_a_duplicate_and_a_missing_delivery() -> None:
    orders = OrderSet(20, cards=10, tag="T")
    planned = planned_ids(orders)

    def stats(accepted: dict[str, list[str]]) -> VendorStats:
        systems = {}
        for system in DESTINATION_NAMES:
            ids = accepted.get(system, planned[system])
            distinct = sorted(set(ids))
            twice = [i for i in distinct if ids.count(i) > 1]
            systems[system] = {
                "accepted": {
                    "ids": len(ids),
                    "distinct": len(distinct),
                    "digest": digest(distinct),
                    "duplicates": len(twice),
                    "duplicated_ids": twice,
                    "unreadable": 0,
                }
            }
        return VendorStats(systems=systems, cpu_seconds=0.0, wall_seconds=0.0)

    result = RunResult("t", messages=len(orders))
    result.vendor = stats({})
    assert vendors_accepted_the_plan(result, orders).ok
    ids = planned["esputnik"]
    result.vendor = stats({"esputnik": [*ids, ids[0]]})
    twice = vendors_accepted_the_plan(result, orders)
    assert not twice.ok
    assert "twice" in twice.detail
    result.vendor = stats({"esputnik": ids[1:]})
    missing = vendors_accepted_the_plan(result, orders)
    assert not missing.ok
    assert "planned" in missing.detail
    result.vendor = stats({"esputnik": [*ids[1:], "someone else"]})
    other = vendors_accepted_the_plan(result, orders)
    assert not other.ok
    assert "not the planned set" in other.detail
