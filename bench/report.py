"""The bench's verdict: the runs side by side, the ratios the issue asks for, each target met or
not, as a Rich table and as JSON (`bench/results/<date>.json`)."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bench.costs import per_million_orders
from bench.lanes import LanesResult, isolation
from bench.result import RunResult
from bench.vendors import DESTINATION_NAMES, SYSTEMS

if TYPE_CHECKING:
    from bench.config import BenchConfig

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: not measured in this run
    note: str = ""


@dataclass
class Report:
    config: BenchConfig
    runs: dict[str, RunResult] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(self, result: RunResult) -> None:
        self.runs[result.name] = result

    def run(self, name: str) -> RunResult | None:
        found = self.runs.get(name)
        return found if found is not None and not found.skipped else None

    def _slow_runs(self) -> tuple[RunResult | None, RunResult | None]:
        slow = next((r for n, r in self.runs.items() if n.startswith("slow (")), None)
        return self.run("slow reference"), slow if slow and not slow.skipped else None

    # --- ratios ---------------------------------------------------------------------------------

    def ratios(self) -> dict[str, float | None]:
        core, floor, seed = self.run("core"), self.run("floor"), self.run("seed-style")
        batch = self.run("batch")
        out: dict[str, float | None] = dict.fromkeys(
            (
                "littles_law_bound_msgs_per_s",
                "cpu_bound_msgs_per_s",
                "throughput_vs_littles_law",
                "throughput_vs_bound",
                "throughput_vs_seed",
                "cpu_vs_floor",
                "cpu_vs_stock_httpx_floor",
                "cpu_per_request_vs_floor",
                "outbound_per_msg",
                "outbound_allowance_per_msg",
                "token_per_msg",
                "connections_per_msg",
                "slow_others_p99_change",
                "rss_growth_mib",
                "batch_cpu_vs_core",
                "batch_throughput_vs_core",
                "isolation_slow",
                "isolation_down",
            )
        )
        if self.config.ledger_orders or "ledger" in self.config.modes:
            out["ledger_cpu_vs_memory"] = None
        if "processes" in self.config.modes:
            out["processes_scaling"] = None
        lanes = self.lanes_summary()
        if lanes is not None:
            out["isolation_slow"] = lanes["isolation_slow"]["median"]
            out["isolation_down"] = lanes["isolation_down"]["median"]
        ledger = self.ledger_summary()
        if ledger is not None:
            keys = (("one by one", "ledger_cpu_vs_memory"), ("batch", "ledger_cpu_vs_memory_batch"))
            for path, key in keys:
                if path in ledger:
                    out[key] = ledger[path]["ratio_median"]
        processes = self.processes_summary()
        if processes is not None:
            out["processes_scaling"] = processes["scaling_median"]
        if core is None:
            return out
        if core.critical_path:
            out["littles_law_bound_msgs_per_s"] = core.concurrency / core.critical_path
            out["throughput_vs_littles_law"] = core.throughput / (
                core.concurrency / core.critical_path
            )
        if core.cpu_per_message:
            out["cpu_bound_msgs_per_s"] = 1 / core.cpu_per_message
        bounds = [
            b for b in (out["littles_law_bound_msgs_per_s"], out["cpu_bound_msgs_per_s"]) if b
        ]
        if bounds:
            out["throughput_vs_bound"] = core.throughput / min(bounds)
        if seed is not None and seed.throughput:
            out["throughput_vs_seed"] = core.throughput / seed.throughput
        if floor is not None and floor.cpu_per_message:
            out["cpu_vs_floor"] = core.cpu_per_message / floor.cpu_per_message
            if core.vendor and floor.vendor:
                core_requests = core.vendor.destination_requests + core.vendor.loyalty_requests
                per_request = core.meter.cpu / max(1, core_requests)
                floor_per = floor.meter.cpu / max(1, floor.vendor.destination_requests)
                out["cpu_per_request_vs_floor"] = per_request / floor_per
        stock_floor = self.run("floor (stock httpx)")
        if stock_floor is not None and stock_floor.cpu_per_message:
            out["cpu_vs_stock_httpx_floor"] = core.cpu_per_message / stock_floor.cpu_per_message
        if core.vendor is not None:
            v = core.vendor
            total = v.destination_requests + v.loyalty_requests + v.token_requests
            out["outbound_per_msg"] = core.per_message(total)
            misses = core.cache_misses if core.cache_misses is not None else v.loyalty_requests
            out["outbound_allowance_per_msg"] = len(DESTINATION_NAMES) + core.per_message(misses)
            out["token_per_msg"] = core.per_message(v.token_requests)
            out["connections_per_msg"] = core.per_message(v.connections)
        reference, slow = self._slow_runs()
        others = tuple(n for n in DESTINATION_NAMES if n != self.config.slow_destination)
        if reference is not None and slow is not None and reference.delivery_p99(others):
            out["slow_others_p99_change"] = (
                slow.delivery_p99(others) / reference.delivery_p99(others) - 1
            )
        soak = self.run("soak") or core
        warm = soak.meter.marks.get("after_warmup")
        if warm is not None:
            out["rss_growth_mib"] = soak.meter.rss_end - warm
        if batch is not None and batch.cpu_per_message and core.throughput:
            out["batch_cpu_vs_core"] = batch.cpu_per_message / core.cpu_per_message
            out["batch_throughput_vs_core"] = batch.throughput / core.throughput
        return out

    # --- the lanes mode -------------------------------------------------------------------------

    def lanes_rounds(self) -> dict[str, list[LanesResult]]:
        """The saturating lanes runs by scenario (reference, slow, down), in round order."""
        rounds: dict[str, list[LanesResult]] = {}
        for run in self.runs.values():
            if isinstance(run, LanesResult) and not run.skipped and run.rate is None:
                if run.scenario.batch or run.group != "lanes":
                    continue
                rounds.setdefault(run.scenario.label, []).append(run)
        return rounds

    def lanes_paced(self) -> list[LanesResult]:
        return [
            run
            for run in self.runs.values()
            if isinstance(run, LanesResult)
            and not run.skipped
            and run.rate is not None
            and run.group == "lanes"
        ]

    # --- the ledger's cost ----------------------------------------------------------------------

    def ledger_rows(self) -> list[RunResult]:
        """Every run on the Table ledger (Azurite) with what the ledger cost it."""
        return [
            run
            for run in self.runs.values()
            if not run.skipped and run.ledger_cost and run.ledger_cost.get("ledger") == "azurite"
        ]

    def ledger_summary(self) -> dict[str, Any] | None:
        """The `ledger` mode's pairs: per path (one by one, batch) and round, CPU per order on the
        memory ledger and on the Table ledger, their ratio (median and range over rounds), and
        what the Table ledger cost per delivery."""
        pairs: dict[str, dict[str, dict[str, LanesResult]]] = {}
        for run in self.runs.values():
            if not isinstance(run, LanesResult) or run.skipped or run.group != "ledger":
                continue
            _, kind, rest = run.name.split(" ", 2)
            path, _, number = rest.rpartition(" #")
            pairs.setdefault(path, {}).setdefault(number, {})[kind] = run
        if not pairs:
            return None
        out: dict[str, Any] = {}
        for path, rounds in pairs.items():
            found = []
            for number, runs in rounds.items():
                memory, table = runs.get("memory"), runs.get("azurite")
                if memory is None or table is None or not memory.cpu_per_message:
                    continue
                cost = table.ledger_cost or {}
                deliveries = cost.get("deliveries") or 0
                extra = (table.meter.cpu - memory.meter.cpu) / deliveries if deliveries else None
                found.append(
                    {
                        "round": int(number),
                        "memory_cpu_ms_per_order": round(memory.cpu_per_message * 1000, 4),
                        "azurite_cpu_ms_per_order": round(table.cpu_per_message * 1000, 4),
                        "ratio": round(table.cpu_per_message / memory.cpu_per_message, 4),
                        "memory_orders_per_s": round(memory.throughput, 1),
                        "azurite_orders_per_s": round(table.throughput, 1),
                        "deliveries_per_order": round(deliveries / table.messages, 3)
                        if table.messages
                        else None,
                        "ledger_client_cpu_ms_per_delivery": cost.get("client_cpu_ms_per_delivery"),
                        "memory_ledger_cpu_ms_per_delivery": (memory.ledger_cost or {}).get(
                            "client_cpu_ms_per_delivery"
                        ),
                        "extra_cpu_ms_per_delivery": (
                            None if extra is None else round(extra * 1000, 4)
                        ),
                        "round_trips_per_delivery": cost.get("round_trips_per_delivery"),
                        "azurite_cpu_ms_per_delivery": cost.get("azurite_cpu_ms_per_delivery"),
                        "both_did_their_work": memory.work_done and table.work_done,
                    }
                )
            ratios = sorted(f["ratio"] for f in found)

            def median_of(key: str, found: list[dict[str, Any]] = found) -> float | None:
                return _median([f[key] for f in found if f[key] is not None])

            out[path] = {
                "ratio_median": _median(ratios),
                "ratio_min": ratios[0] if ratios else None,
                "ratio_max": ratios[-1] if ratios else None,
                **{
                    key: median_of(key)
                    for key in (
                        "memory_cpu_ms_per_order",
                        "azurite_cpu_ms_per_order",
                        "ledger_client_cpu_ms_per_delivery",
                        "memory_ledger_cpu_ms_per_delivery",
                        "extra_cpu_ms_per_delivery",
                        "round_trips_per_delivery",
                        "azurite_cpu_ms_per_delivery",
                        "deliveries_per_order",
                    )
                },
                "rounds": sorted(found, key=lambda f: f["round"]),
            }
        return out

    def lanes_summary(self) -> dict[str, Any] | None:
        """Issue 12's figures: isolation ratios (median of rounds), drain, loyalty lookups,
        Service Bus and ledger operations per order, their cost, end-to-end latency per lane."""
        rounds = self.lanes_rounds()
        references = rounds.get("reference", [])
        if not references:
            return None
        out: dict[str, Any] = {}
        for label in ("slow", "down"):
            found: list[dict[str, Any]] = []
            for index, impaired in enumerate(rounds.get(label, [])):
                around = references[index : index + 2]
                value, lane = isolation(around, impaired)
                per_cpu, cpu_lane = isolation(around, impaired, per_cpu=True)
                if value is not None:
                    found.append(
                        {
                            "value": round(value, 4),
                            "lowest_lane": lane,
                            "per_cpu": None if per_cpu is None else round(per_cpu, 4),
                            "per_cpu_lowest_lane": cpu_lane,
                            "references": [r.name for r in around],
                        }
                    )
            out[f"isolation_{label}"] = {
                "median": _median([f["value"] for f in found]),
                "per_cpu_median": _median([f["per_cpu"] for f in found if f["per_cpu"]]),
                "rounds": found,
            }
        out["drain"] = self._drain(rounds.get("down", []))
        reference = references[0]
        out["loyalty"] = reference.loyalty()
        per_order: dict[str, Any] = {}
        for label, runs in rounds.items():
            run = runs[0]
            ledger = run.ledger_counts
            per_order[label] = {
                "service_bus": run.summary()["lanes"]["service_bus"]["per_order"],
                "ledger": {
                    "claims": round(run.per_order(ledger.get("claims", 0)), 3),
                    "records": round(run.per_order(ledger.get("records", 0)), 3),
                    "table_requests": round(run.per_order(ledger.get("table_requests", 0)), 3),
                },
            }
        out["per_order"] = per_order
        out["cost_per_million_orders"] = {
            label: per_million_orders(
                figures["service_bus"]["total"], figures["ledger"]["table_requests"]
            )
            for label, figures in per_order.items()
        }
        runs = [*(r for rs in rounds.values() for r in rs), *self.lanes_paced()]
        out["lanes"] = {
            run.name: {
                name: {
                    "throughput_per_s": round(lane.throughput, 1),
                    "end_to_end_p50_ms": round(_pct(run.end_to_end_ms.get(name), 50), 1),
                    "end_to_end_p99_ms": round(_pct(run.end_to_end_ms.get(name), 99), 1),
                }
                for name, lane in run.lanes.items()
            }
            for run in runs
        }
        return out

    def _drain(self, downs: list[LanesResult]) -> dict[str, Any] | None:
        found = []
        for run in downs:
            for name in run.scenario.down:
                drain = run.lanes[name].drain() if name in run.lanes else None
                if drain is not None:
                    outage = drain["impaired_s"]
                    found.append(
                        {
                            "run": run.name,
                            "lane": name,
                            **drain,
                            "outage_in_schedule_minutes": round(outage * run.compression / 60, 1),
                        }
                    )
        if not found:
            return None
        rates = sorted(d["drain_rate_per_s"] or 0.0 for d in found)
        return {"median_rate_per_s": rates[len(rates) // 2], "rounds": found}

    def failed_checks(self) -> dict[str, list[str]]:
        """Run name -> the checks that did not hold (the bench fails loudly on any)."""
        failed: dict[str, list[str]] = {}
        for name, run in self.runs.items():
            if run.skipped:
                continue
            bad = [f"{c.name}: {c.detail}" for c in run.checks if not c.ok]
            if not run.checks:
                bad = ["no checks were made"]
            if bad:
                failed[name] = bad
        return failed

    def targets(self) -> list[Target]:
        r = self.ratios()
        core = self.run("core")
        soak_run = "soak" if self.run("soak") else "core"

        def check(name: str, key: str, goal: str, ok: Any, note: str = "") -> Target:
            value = r[key]
            return Target(name, value, goal, None if value is None else bool(ok(value)), note)

        requests = (
            core.vendor.destination_requests + core.vendor.loyalty_requests
            if core and core.vendor
            else 0
        )
        connections = core.vendor.connections if core and core.vendor else None
        # filling each system's pool once, plus at most 1 new connection per 100 requests
        allowed = len(SYSTEMS) * (core.concurrency if core else 0) + requests // 100
        allowance = r["outbound_allowance_per_msg"] or 0.0
        tokens = core.vendor.token_requests if core and core.vendor else None
        return [
            check(
                "throughput vs min(Little's law, CPU) bound",
                "throughput_vs_bound",
                ">= 0.90",
                lambda v: v >= 0.9,
            ),
            check(
                "throughput vs seed-style baseline", "throughput_vs_seed", ">= 8", lambda v: v >= 8
            ),
            check(
                "CPU/msg vs bare floor (floor on the core's transport)",
                "cpu_vs_floor",
                "<= 1.25",
                lambda v: v <= 1.25,
            ),
            check(
                "CPU/msg vs bare floor (floor on stock httpx, as the issue defines it)",
                "cpu_vs_stock_httpx_floor",
                "<= 1.25",
                lambda v: v <= 1.25,
            ),
            check(
                "outbound requests per message",
                "outbound_per_msg",
                f"<= destinations + cache misses ({allowance:.3f})",
                lambda v: v <= allowance + 1e-9,
            ),
            Target(
                "token requests (whole core run)",
                None if tokens is None else float(tokens),
                "<= 1 (one per token lifetime, 1 h)",
                None if tokens is None else tokens <= 1,
            ),
            Target(
                "new TCP connections (whole core run)",
                None if connections is None else float(connections),
                f"<= pools filled once + 1% of requests ({allowed}); seed-style: 1 per request",
                None if connections is None else connections <= allowed,
            ),
            check(
                "2 s destination: others' p99 change",
                "slow_others_p99_change",
                "< +10%",
                lambda v: v < 0.10,
            ),
            check(
                f"RSS growth after warm-up ({soak_run} run, MiB)",
                "rss_growth_mib",
                "< 20",
                lambda v: v < 20,
            ),
            *self._lanes_targets(),
            *self._ledger_targets(),
            Target(
                "rows that did not do the work they claim",
                float(len(self.failed_checks())),
                "0 (every row checks its work)",
                not self.failed_checks(),
            ),
        ]

    def _lanes_targets(self) -> list[Target]:
        lanes = self.lanes_summary()
        if lanes is None:
            return []
        rounds = self.lanes_rounds()
        slow, down = lanes["isolation_slow"]["median"], lanes["isolation_down"]["median"]
        downs = rounds.get("down", [])
        dead = sum(lane.dead_lettered for run in downs for lane in run.lanes.values())
        drained = [run for run in downs if run.work_done]
        loyalty = lanes["loyalty"]
        per_miss, per_hit = loyalty["requests_per_miss"], loyalty["requests_per_hit"]
        return [
            Target(
                "lanes: one vendor at 2 s, lowest other lane's throughput vs reference",
                slow,
                ">= 0.90 (median of rounds)",
                None if slow is None else slow >= 0.9,
            ),
            Target(
                "lanes: one vendor down, lowest other lane's throughput vs reference",
                down,
                ">= 0.90 (median of rounds)",
                None if down is None else down >= 0.9,
            ),
            Target(
                "lanes: messages dead-lettered in the down runs (any lane)",
                float(dead) if downs else None,
                "0",
                None if not downs else dead == 0,
            ),
            Target(
                "lanes: down runs whose vendor's lane drained, every order delivered once",
                float(len(drained)) if downs else None,
                f"all {len(downs)} (ledger and vendors' accepted ids checked)",
                None if not downs else len(drained) == len(downs),
            ),
            Target(
                "lanes: loyalty requests per cache miss",
                per_miss,
                "<= 1 (the accept stage looks up once)",
                None if per_miss is None else per_miss <= 1,
            ),
            Target(
                "lanes: loyalty requests per cache hit",
                per_hit,
                "0",
                None if per_hit is None else per_hit == 0,
            ),
        ]

    def _ledger_targets(self) -> list[Target]:
        out: list[Target] = []
        ledger = self.ledger_summary()
        if ledger is not None and "one by one" in ledger:
            single = ledger["one by one"]
            value = single["ratio_median"]
            out.append(
                Target(
                    "ledger: CPU per order on the Azurite ledger vs the memory ledger "
                    "(lanes, one by one, paired rounds)",
                    value,
                    f"<= 2.0 (median; rounds {_fmt(single['ratio_min'], 2)}-"
                    f"{_fmt(single['ratio_max'], 2)})",
                    None if value is None else value <= 2.0,
                )
            )
        processes = self.processes_summary()
        if processes is not None:
            twice = processes["sent_twice"]
            out.append(
                Target(
                    "processes: (order event, vendor) pairs sent twice, all process runs",
                    float(twice),
                    "0 (the fakes' accepted ids)",
                    twice == 0 and processes["runs"] > 0,
                )
            )
        return out

    # --- the processes mode ---------------------------------------------------------------------

    def processes_summary(self) -> dict[str, Any] | None:
        from bench.processes import ProcessesResult

        runs = [r for r in self.runs.values() if isinstance(r, ProcessesResult) and not r.skipped]
        if not runs:
            return None
        by_round: dict[str, dict[int, ProcessesResult]] = {}
        for run in runs:
            number = run.name.rpartition("#")[2]
            by_round.setdefault(number, {})[run.processes] = run
        scaling = []
        rounds = []
        for number, found in sorted(by_round.items()):
            one, two = found.get(1), found.get(2)
            entry: dict[str, Any] = {
                "round": number,
                **{f"x{n}_orders_per_s": round(r.throughput, 1) for n, r in sorted(found.items())},
                **{
                    f"x{n}_cpu_ms_per_order": round(r.cpu_per_message * 1000, 3)
                    for n, r in sorted(found.items())
                },
            }
            if one is not None and two is not None and one.throughput:
                entry["scaling"] = round(two.throughput / one.throughput, 3)
                scaling.append(entry["scaling"])
            rounds.append(entry)
        twice = 0
        for run in runs:
            if run.vendor is None:
                continue
            for system in DESTINATION_NAMES:
                twice += int(run.vendor.accepted(system)["duplicates"])
        return {
            "scaling_median": _median(scaling),
            "rounds": rounds,
            "runs": len(runs),
            "sent_twice": twice,
            "contended": sum(r.contended for r in runs),
        }

    # --- output ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}
        return {
            "started": self.started.isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "config": config,
            "runs": {name: run.summary() for name, run in self.runs.items()},
            "ratios": {k: (None if v is None else round(v, 4)) for k, v in self.ratios().items()},
            "targets": [asdict(t) for t in self.targets()],
            "lanes": self.lanes_summary(),
            "ledger": self.ledger_summary(),
            "ledger_rows": {run.name: run.ledger_cost for run in self.ledger_rows()},
            "processes": self.processes_summary(),
            "failed_checks": self.failed_checks(),
        }

    def write(self, path: Path | None = None) -> Path:
        if path is None:
            suffix = "" if self.config.label == "full" else f"-{self.config.label}"
            path = RESULTS / f"{self.started.date().isoformat()}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def render(self, console: Console) -> None:
        """Every table, each no wider than `WIDTH` columns (the wide ones are split)."""
        for table in self.tables():
            console.print(table)
        for name, failures in self.failed_checks().items():
            for failure in failures:
                console.print(f"[bold red]WORK CHECK FAILED[/] {name}: {failure}")

    def tables(self) -> list[Table]:
        tables = [self.runs_table(), self.resources_table()]
        if self.lanes_summary() is not None or self._lanes_ordered():
            tables.append(self.lanes_table())
            drains = self.drain_table()
            if drains.row_count:
                tables.append(drains)
        if self.ledger_rows():
            tables.append(self.ledger_table())
        if self.processes_summary() is not None:
            tables.append(self.processes_table())
        tables += [self.ratios_table(), self.targets_table()]
        return tables

    def lanes_table(self) -> Table:
        table = _table(
            "lanes: per lane, delivered/s while work was available (32 calls in flight; "
            "batch lanes: one batch of <= maxMessageBatchSize)",
            LANE_COLUMNS,
        )
        references = self.lanes_rounds().get("reference", [])
        paced = next((r for r in self.lanes_paced() if r.scenario.label == "reference"), None)
        for run in self._lanes_ordered():
            around = [paced] if run.rate is not None and paced else _around(run, references)
            for name, lane in run.lanes.items():
                figures = [r.lanes[name].throughput for r in around if name in r.lanes]
                base = sum(figures) / len(figures) if figures else 0.0
                ratio = lane.throughput / base if base else None
                table.add_row(
                    short_name(run.name),
                    name,
                    str(lane.routed),
                    str(lane.delivered),
                    f"{lane.throughput:.0f}",
                    "-" if ratio is None else f"{ratio:.2f}",
                    f"{_pct(run.end_to_end_ms.get(name), 50):.0f}",
                    f"{_pct(run.end_to_end_ms.get(name), 99):.0f}",
                    str(lane.retries_scheduled),
                    str(lane.dead_lettered),
                )
        return table

    def drain_table(self) -> Table:
        table = _table(
            "lanes: the impaired lane after its vendor recovered",
            ("run", "lane", "owed", "impaired s", "drained in s", "per s"),
        )
        for run in self._lanes_ordered():
            for name, lane in run.lanes.items():
                drain = lane.drain()
                if drain is None:
                    continue
                rate = drain["drain_rate_per_s"]
                table.add_row(
                    short_name(run.name),
                    name,
                    str(drain["backlog_at_recovery"]),
                    f"{drain['impaired_s']:.1f}",
                    f"{drain['drain_s']:.1f}",
                    "-" if rate is None else f"{rate:.0f}",
                )
        return table

    def _lanes_ordered(self) -> list[LanesResult]:
        return [
            r
            for r in self.runs.values()
            if isinstance(r, LanesResult) and not r.skipped and r.group in ("lanes", "batch")
        ]

    def runs_table(self) -> Table:
        table = _table(
            "runs: msgs/s over the run; latency ms; CPU ms per message (the driver); CPU util "
            "(1.0 = one core)",
            ("run", "msgs", "conc", "msgs/s", "p50", "p95", "p99", "CPU/msg", "util"),
        )
        for name, run in self.runs.items():
            if run.skipped:
                table.add_row(name, f"skipped: {run.skipped}")
                continue
            summary = run.summary()
            latency = summary["latency_ms"]
            timed = bool(run.latencies)  # the processes rows time the whole run only
            table.add_row(
                name,
                str(run.messages),
                str(run.concurrency),
                f"{run.throughput:.0f}",
                *(f"{latency[q]:.1f}" if timed else "-" for q in ("p50", "p95", "p99")),
                f"{summary['cpu_ms_per_msg']:.2f}",
                f"{summary['cpu_utilisation'] or 0:.2f}",
            )
        return table

    def resources_table(self) -> Table:
        table = _table(
            "runs: memory (MiB) and outbound requests per message",
            ("run", "RSS peak/end", "dest/msg", "loyalty/msg", "token/msg", "conn/msg"),
        )
        for name, run in self.runs.items():
            if run.skipped:
                continue
            summary = run.summary()
            outbound = summary.get("outbound_per_msg", {})
            rss = summary["rss_mib"]
            table.add_row(
                name,
                f"{rss['peak']:.0f}/{rss['end']:.0f}" if rss["peak"] else "-",
                f"{outbound.get('destination', 0):.2f}",
                f"{outbound.get('loyalty', 0):.3f}",
                f"{outbound.get('token', 0):.4f}",
                f"{outbound.get('connections', 0):.4f}",
            )
        return table

    def ledger_table(self) -> Table:
        """The ledger's cost, a line per run on the Table ledger: CPU per order (and over the
        memory ledger's in the same round, for the `ledger` pairs), CPU in the ledger's calls, round
        trips and Azurite's CPU per delivery."""
        table = _table(
            "ledger: runs on the Table ledger (Azurite); per delivery = per (event, lane) claimed",
            ("run", "CPU ms/order", "x memory", "ledger CPU ms", "round trips", "Azurite CPU ms"),
        )
        memory = {
            run.name.replace("ledger memory ", "ledger azurite ", 1): run
            for run in self.runs.values()
            if run.name.startswith("ledger memory ") and not run.skipped
        }
        for run in self.ledger_rows():
            cost = run.ledger_cost or {}
            pair = memory.get(run.name)
            ratio = (
                f"{run.cpu_per_message / pair.cpu_per_message:.2f}"
                if pair is not None and pair.cpu_per_message
                else "-"
            )
            table.add_row(
                run.name,
                f"{run.cpu_per_message * 1000:.2f}",
                ratio,
                _fmt(cost.get("client_cpu_ms_per_delivery"), 3),
                _fmt(cost.get("round_trips_per_delivery"), 3),
                _fmt(cost.get("azurite_cpu_ms_per_delivery"), 3),
            )
        return table

    def processes_table(self) -> Table:
        from bench.processes import ProcessesResult

        table = _table(
            "processes: worker processes competing for one orders queue, one Azurite table",
            ("run", "orders/s", "CPU ms/order", "taken per process", "contended", "sent twice"),
        )
        for run in self.runs.values():
            if not isinstance(run, ProcessesResult) or run.skipped:
                continue
            twice = (
                sum(int(run.vendor.accepted(s)["duplicates"]) for s in DESTINATION_NAMES)
                if run.vendor
                else None
            )
            table.add_row(
                run.name,
                f"{run.throughput:.0f}",
                f"{run.cpu_per_message * 1000:.2f}",
                ", ".join(str(p["orders_taken"]) for p in run.per_process),
                str(run.contended),
                "-" if twice is None else str(twice),
            )
        return table

    def ratios_table(self) -> Table:
        table = _table("ratios", ("ratio", "value"))
        for key, value in self.ratios().items():
            table.add_row(key, "-" if value is None else f"{value:.3f}")
        return table

    def targets_table(self) -> Table:
        table = _table("targets", ("target", "value", "goal", "met"))
        table.columns[0].max_width = 58
        table.columns[2].max_width = 36
        for t in self.targets():
            met = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[t.met]
            value = "-" if t.value is None else f"{t.value:.3f}"
            table.add_row(t.name, value, t.goal, met)
        return table


LANE_COLUMNS = (
    "run", "lane", "routed", "delivered", "per s", "vs ref", "e2e p50", "e2e p99", "retries", "dead"
)  # fmt: skip
#: the widest a printed table may be (issue 14: readable output)
WIDTH = 120


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 or column == "lane" else "right")
    return table


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def short_name(name: str) -> str:
    """A lanes run's name without the impairment's details: 'slow #1' for 'lanes slow
    (profile_store 2000 ms) #1' (the scenarios are described once, in the docs and the JSON)."""
    if not name.startswith("lanes "):
        return name
    words = name.split(" ")
    return f"{words[1]} {words[-1]}"


def _median(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def _pct(values: Any, q: float) -> float:
    from bench.measure import percentile

    return percentile(values or (), q)


def _around(run: LanesResult, references: list[LanesResult]) -> list[LanesResult]:
    """The references of the run's round (`#n`) and of the next one (a reference run: itself)."""
    if run.scenario.batch or run.rate is not None:
        return []
    if run.scenario.label == "reference":
        return [run]
    number = run.name.rpartition("#")[2]
    if not number.isdigit():
        return []
    return references[int(number) - 1 : int(number) + 1]


def _drain_text(drain: dict[str, Any]) -> str:
    rate = drain["drain_rate_per_s"]
    return f"{drain['backlog_at_recovery']} owed, {drain['drain_s']:.1f} s" + (
        f", {rate:.0f}/s" if rate else ""
    )
