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


LANE_COLUMNS = (
    "run | lane | conc | routed | delivered | per s | vs ref | e2e p50 ms | e2e p99 ms | "
    "retries | dead | drain"
)


def _reference_names(name: str) -> list[str]:
    """The reference rows a lanes row is compared with: its round's (`#n`) and the next round's
    (as the isolation ratios are), or the paced reference."""
    tail = name.rpartition(" ")[2]
    if not name.startswith("lanes ") or name.startswith("lanes reference"):
        return [name] if name.startswith("lanes reference") else []
    if tail.startswith("#") and tail[1:].isdigit():
        return [f"lanes reference #{tail[1:]}", f"lanes reference #{int(tail[1:]) + 1}"]
    if tail.startswith("@"):
        return [f"lanes reference {tail}"]
    return []


def _lanes_rows(runs: dict[str, Any]) -> list[str]:
    rows = []
    for name, run in runs.items():
        lanes = run.get("lanes")
        if not lanes or lanes.get("group", "lanes") == "ledger":
            continue
        references = [runs[n]["lanes"]["per_lane"] for n in _reference_names(name) if n in runs]
        for lane, stats in lanes["per_lane"].items():
            figures = [r[lane]["throughput_per_s"] for r in references if lane in r]
            base = sum(figures) / len(figures) if figures else 0.0
            ratio = stats["throughput_per_s"] / base if base else None
            e2e = lanes["end_to_end_ms"].get(lane, {})
            drain = stats.get("drain")
            drain_text = (
                "-"
                if not drain
                else f"{drain['backlog_at_recovery']} owed, {drain['drain_s']:.1f} s"
                + (f", {drain['drain_rate_per_s']:.0f}/s" if drain["drain_rate_per_s"] else "")
            )
            cells = [
                name,
                lane,
                str(stats["concurrency"]),
                str(stats["routed"]),
                str(stats["delivered"]),
                f"{stats['throughput_per_s']:.0f}",
                _number(ratio),
                _number(e2e.get("p50"), 0),
                _number(e2e.get("p99"), 0),
                str(stats["retries_scheduled"]),
                str(stats["dead_lettered"]),
                drain_text,
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _lanes_summary(lanes: dict[str, Any]) -> list[str]:
    lines = ["", "| lanes figure | value |", "|---|---|"]
    for label in ("slow", "down"):
        found = lanes[f"isolation_{label}"]
        rounds = ", ".join(f"{r['value']:.3f} ({r['lowest_lane']})" for r in found["rounds"])
        lines.append(
            f"| isolation_{label} (median; rounds) | {_number(found['median'], 3)}; {rounds} |"
        )
        per_cpu = ", ".join(_number(r["per_cpu"], 3) for r in found["rounds"])
        lines.append(
            f"| {label}: per CPU second (median; rounds) | "
            f"{_number(found['per_cpu_median'], 3)}; {per_cpu} |"
        )
    drain = lanes.get("drain")
    if drain:
        rounds = "; ".join(
            f"{d['lane']}: {d['backlog_at_recovery']} owed after {d['impaired_s']:.1f} s down "
            f"(= {d['outage_in_schedule_minutes']} min of retry schedule), drained in "
            f"{d['drain_s']:.2f} s"
            for d in drain["rounds"]
        )
        rate = _number(drain["median_rate_per_s"], 0)
        lines.append(f"| drain rate per s (median; rounds) | {rate}; {rounds} |")
    loyalty = lanes["loyalty"]
    figures = " / ".join(
        _number(loyalty[key], 3)
        for key in ("lookups_per_card_order", "requests_per_miss", "requests_per_hit")
    )
    lines.append(
        f"| loyalty: lookups per order with a card / requests per miss / per hit | {figures} |"
    )
    for label, figures in lanes["per_order"].items():
        sb, ledger = figures["service_bus"], figures["ledger"]
        lines.append(
            f"| per order ({label}): Service Bus receives / sends / settlements / ERP send / total "
            f"| {sb['receives']:.3f} / {sb['sends']:.3f} / {sb['settlements']:.3f} / "
            f"{sb['erp_sends']:.3f} / {sb['total']:.3f} |"
        )
        lines.append(
            f"| per order ({label}): ledger claims / records / Table requests "
            f"| {ledger['claims']:.3f} / {ledger['records']:.3f} / {ledger['table_requests']:.3f} |"
        )
    for label, cost in lanes["cost_per_million_orders"].items():
        tiers = ", ".join(f"{tier}: ${usd:.2f}" for tier, usd in cost["service_bus_usd"].items())
        ledger = f"ledger ${cost['table_usd']:.2f}"
        lines.append(f"| USD per million orders ({label}) | Service Bus {tiers}; {ledger} |")
    return lines


def _ledger_lines(report: dict[str, Any]) -> list[str]:
    """The ledger's cost: a line per run on the Table ledger, then the memory/Azurite pairs."""
    lines: list[str] = []
    rows = report.get("ledger_rows") or {}
    if rows:
        lines += [
            "",
            "| run on the Azurite ledger | CPU ms/order | ledger CPU ms/delivery | "
            "round trips/delivery | Azurite CPU ms/delivery |",
            "|---|---|---|---|---|",
        ]
        for name, cost in rows.items():
            run = report["runs"][name]
            lines.append(
                f"| {name} | {_number(run['cpu_ms_per_msg'])} | "
                f"{_number(cost.get('client_cpu_ms_per_delivery'), 3)} | "
                f"{_number(cost.get('round_trips_per_delivery'), 3)} | "
                f"{_number(cost.get('azurite_cpu_ms_per_delivery'), 3)} |"
            )
    for path, figures in (report.get("ledger") or {}).items():
        lines += [
            "",
            f"| ledger pair, {path} | memory CPU ms/order | Azurite CPU ms/order | x memory | "
            "orders/s memory / Azurite | ledger CPU ms/delivery | extra CPU ms/delivery | "
            "round trips | Azurite CPU ms/delivery |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in figures["rounds"]:
            lines.append(
                f"| round {r['round']} | {_number(r['memory_cpu_ms_per_order'])} | "
                f"{_number(r['azurite_cpu_ms_per_order'])} | {_number(r['ratio'])} | "
                f"{r['memory_orders_per_s']:.0f} / {r['azurite_orders_per_s']:.0f} | "
                f"{_number(r['ledger_client_cpu_ms_per_delivery'], 3)} | "
                f"{_number(r['extra_cpu_ms_per_delivery'], 3)} | "
                f"{_number(r['round_trips_per_delivery'], 3)} | "
                f"{_number(r['azurite_cpu_ms_per_delivery'], 3)} |"
            )
        lines.append(
            f"| **median** | {_number(figures['memory_cpu_ms_per_order'])} | "
            f"{_number(figures['azurite_cpu_ms_per_order'])} | "
            f"**{_number(figures['ratio_median'])}** ({_number(figures['ratio_min'])}-"
            f"{_number(figures['ratio_max'])}) | | "
            f"{_number(figures['ledger_client_cpu_ms_per_delivery'], 3)} | "
            f"{_number(figures['extra_cpu_ms_per_delivery'], 3)} | "
            f"{_number(figures['round_trips_per_delivery'], 3)} | "
            f"{_number(figures['azurite_cpu_ms_per_delivery'], 3)} |"
        )
    return lines


def _processes_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    runs = {n: r for n, r in report["runs"].items() if "processes" in r}
    if not runs:
        return lines
    lines += [
        "",
        "| run | orders/s | CPU ms/order | orders taken per process | process CPU util | "
        "contended | sent twice |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        procs = run["processes"]["per_process"]
        lines.append(
            f"| {name} | {run['msgs_per_s']:.0f} | {_number(run['cpu_ms_per_msg'])} | "
            + ", ".join(str(p["orders_taken"]) for p in procs)
            + " | "
            + ", ".join(_number(p["cpu_utilisation"]) for p in procs)
            + f" | {run['processes']['contended_deliveries']} | "
            + _sent_twice(report, name)
            + " |"
        )
    return lines


def _sent_twice(report: dict[str, Any], name: str) -> str:
    for check in report["runs"][name]["checks"]:
        if check["name"] == "no (order event, vendor) was sent twice":
            return check.get("detail", "").split(" ", 1)[0]
    return "-"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Run of {report['started']} on {report['machine']['cpus']} CPUs, Python "
        f"{report['machine']['python']} ({report['config']['label']} mode).",
        "",
        "| " + RUN_COLUMNS + " |",
        "|" + "---|" * len(RUN_COLUMNS.split("|")),
    ]
    lines += [_run_row(name, run) for name, run in report["runs"].items()]
    lanes_rows = _lanes_rows(report["runs"])
    if lanes_rows:
        lines += ["", "| " + LANE_COLUMNS + " |", "|" + "---|" * len(LANE_COLUMNS.split("|"))]
        lines += lanes_rows
    if report.get("lanes"):
        lines += _lanes_summary(report["lanes"])
    lines += _ledger_lines(report)
    lines += _processes_lines(report)
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {_number(v, 3)} |" for k, v in report["ratios"].items()]
    lines += ["", "| target | value | goal | met |", "|---|---|---|---|"]
    lines += [
        f"| {t['name']} | {_number(t['value'], 3)} | {t['goal']} | {_number(t['met'])} |"
        for t in report["targets"]
    ]
    for name, failures in (report.get("failed_checks") or {}).items():
        lines += ["", f"**WORK CHECK FAILED** {name}: " + "; ".join(failures)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m bench.markdown RESULT.json")
    print(render(json.loads(Path(argv[0]).read_text())), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
