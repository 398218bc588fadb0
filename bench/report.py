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
            )
        )
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
        ]

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
        }

    def write(self, path: Path | None = None) -> Path:
        if path is None:
            suffix = "" if self.config.label == "full" else f"-{self.config.label}"
            path = RESULTS / f"{self.started.date().isoformat()}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    def render(self, console: Console) -> None:
        console.print(self.runs_table())
        console.print(self.ratios_table())
        console.print(self.targets_table())

    def runs_table(self) -> Table:
        table = Table(title="runs", title_justify="left")
        for column in (
            "run", "msgs", "conc", "msgs/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/msg",
            "CPU util", "RSS peak/end MiB", "dest/msg", "loyalty/msg", "token/msg", "conn/msg",
        ):  # fmt: skip
            table.add_column(column, justify="left" if column == "run" else "right")
        for name, run in self.runs.items():
            summary = run.summary()
            if run.skipped:
                table.add_row(name, f"skipped: {run.skipped}")
                continue
            latency = summary["latency_ms"]
            outbound = summary.get("outbound_per_msg", {})
            rss = summary["rss_mib"]
            table.add_row(
                name,
                str(run.messages),
                str(run.concurrency),
                f"{run.throughput:.0f}",
                f"{latency['p50']:.1f}",
                f"{latency['p95']:.1f}",
                f"{latency['p99']:.1f}",
                f"{summary['cpu_ms_per_msg']:.2f}",
                f"{summary['cpu_utilisation'] or 0:.2f}",
                f"{rss['peak']:.0f}/{rss['end']:.0f}",
                f"{outbound.get('destination', 0):.2f}",
                f"{outbound.get('loyalty', 0):.3f}",
                f"{outbound.get('token', 0):.4f}",
                f"{outbound.get('connections', 0):.4f}",
            )
        return table

    def ratios_table(self) -> Table:
        table = Table(title="ratios", title_justify="left")
        table.add_column("ratio")
        table.add_column("value", justify="right")
        for key, value in self.ratios().items():
            table.add_row(key, "-" if value is None else f"{value:.3f}")
        return table

    def targets_table(self) -> Table:
        table = Table(title="targets", title_justify="left")
        for column in ("target", "value", "goal", "met"):
            table.add_column(column)
        for t in self.targets():
            met = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[t.met]
            value = "-" if t.value is None else f"{t.value:.3f}"
            table.add_row(t.name, value, t.goal, met)
        return table
