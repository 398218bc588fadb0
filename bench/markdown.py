"""A saved report as markdown tables, for docs/performance.md:
`python -m bench.markdown bench/results/<date>.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RUN_COLUMNS = (
    "run | msgs | conc | msgs/s | p50 ms | p95 ms | p99 ms | CPU ms/msg | CPU util | "
    "RSS peak/end MiB | dest/msg | loyalty/msg | token/msg | conn/msg | vs Little"
)


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return str(value)


def _run_row(name: str, run: dict[str, Any]) -> str:
    if "skipped" in run:
        return f"| {name} | skipped: {run['skipped']} |"
    latency, rss = run["latency_ms"], run["rss_mib"]
    outbound = run.get("outbound_per_msg", {})
    cells = [
        name,
        str(run["messages"]),
        str(run["concurrency"]),
        f"{run['msgs_per_s']:.0f}",
        _number(latency["p50"], 1),
        _number(latency["p95"], 1),
        _number(latency["p99"], 1),
        _number(run["cpu_ms_per_msg"]),
        _number(run.get("cpu_utilisation")),
        f"{rss['peak']:.0f}/{rss['end']:.0f}",
        _number(outbound.get("destination")),
        _number(outbound.get("loyalty"), 3),
        _number(outbound.get("token"), 4),
        _number(outbound.get("connections"), 4),
        _number(run.get("throughput_vs_littles_law")),
    ]
    return "| " + " | ".join(cells) + " |"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Run of {report['started']} on {report['machine']['cpus']} CPUs, Python "
        f"{report['machine']['python']} ({report['config']['label']} mode).",
        "",
        "| " + RUN_COLUMNS + " |",
        "|" + "---|" * len(RUN_COLUMNS.split("|")),
    ]
    lines += [_run_row(name, run) for name, run in report["runs"].items()]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {_number(v, 3)} |" for k, v in report["ratios"].items()]
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    lines += [
        f"| {t['name']} | {_number(t['value'], 3)} | {t['goal']} | {_number(t['met'])} |"
        for t in report["targets"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.markdown RESULT.json")
    print(render(json.loads(Path(argv[0]).read_text())), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
