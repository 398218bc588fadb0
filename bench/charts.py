"""Pictures of a saved bench report, for docs/performance.md and docs/scaling.md:
`python -m bench.charts bench/results/<date>.json [more.json ...] [--out docs]`.

Writes, where the report has the runs for them:

- `bench-concurrency.png`: the core's throughput against messages in flight (the sweep and the
  core row), with the bound it is held to (min of Little's law and one core's CPU) and the
  driver's CPU utilisation;
- `bench-isolation.png`: each lane's throughput in the lanes mode's saturating runs (reference,
  one vendor slow, one vendor down, by round) and the isolation ratios against the 0.9 target;
- `bench-ledger.png`: CPU per order on the memory and on the Azurite ledger (one by one, batch),
  the Table ledger's extra split into the ledger's own calls and the rest, Azurite's CPU beside;
- `bench-processes.png`: orders per second with 1 and 2 worker processes sharing one Azurite
  ledger, by round, and each run's CPU per order.

With several reports, the concurrency chart draws every report's sweep (runs on a shared VM differ,
and the spread belongs in the picture); the others are drawn from the last report that has their
runs (e.g. a full run, then a later `--modes processes` run).

matplotlib is a development dependency (requirements-dev.txt); the app never imports it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _sweep_points(report: dict[str, Any]) -> list[tuple[int, float, float | None, float]]:
    points = []
    for name, run in report["runs"].items():
        if "skipped" in run:
            continue
        if name == "core" or re.fullmatch(r"core c=\d+", name):
            bound = run.get("littles_law_bound_msgs_per_s")
            cpu_bound = 1000 / run["cpu_ms_per_msg"] if run["cpu_ms_per_msg"] else None
            limit = min(b for b in (bound, cpu_bound) if b) if (bound or cpu_bound) else None
            points.append(
                (run["concurrency"], run["msgs_per_s"], limit, run.get("cpu_utilisation") or 0.0)
            )
    return sorted(points)


def concurrency(reports: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Every report's sweep as a line (runs on a shared VM differ: the spread is the machine's),
    the driver's CPU utilisation for each point, and the last run's bound."""
    runs = [(r, pts) for r in reports if len(pts := _sweep_points(r)) >= 2]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4))
    util = ax.twinx()
    xs: list[int] = []
    for report, points in runs:
        xs = sorted({*xs, *(p[0] for p in points)})
        loads = [
            v
            for name, run in report["runs"].items()
            if name == "core" or name.startswith("core c=")
            for v in run.get("load_average", [])
        ]
        label = f"{report['started'][:16]}" + (
            f" (load {min(loads):.1f}-{max(loads):.1f})" if loads else ""
        )
        line = ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)[0]
        util.plot(
            [p[0] for p in points],
            [p[3] for p in points],
            ":",
            marker="s",
            ms=4,
            color=line.get_color(),
            alpha=0.6,
        )
    last = runs[-1][1]
    ax.plot(
        [p[0] for p in last],
        [p[2] for p in last],
        "--",
        color="grey",
        label="min(Little's law, 1 core's CPU), last run",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("messages in flight (maxConcurrentCalls)")
    ax.set_ylabel("messages per second (solid)")
    ax.set_ylim(bottom=0)
    util.set_ylabel("driver CPU utilisation (dotted; 1.0 = one core)")
    util.set_ylim(0, 1.2)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title("One worker process: throughput against concurrency (core, 20 ms vendors)")
    return _save(fig, path)


def isolation(reports: Sequence[dict[str, Any]], path: Path) -> Path | None:
    return _last(_isolation, reports, path)


def _isolation(report: dict[str, Any], path: Path) -> Path | None:
    lanes = report.get("lanes")
    if not lanes:
        return None
    runs = [
        (name, per_lane)
        for name, per_lane in lanes["lanes"].items()
        if "@" not in name and name.startswith("lanes ")
    ]
    if not runs:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.3]}
    )
    names = list(runs[0][1])
    width = 0.8 / len(names)
    for i, lane in enumerate(names):
        xs = [j + i * width for j in range(len(runs))]
        left.bar(xs, [r[1][lane]["throughput_per_s"] for r in runs], width, label=lane)
    left.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(runs))],
        [_short(r[0]) for r in runs],
        rotation=35,
        ha="right",
        fontsize=8,
    )
    left.set_ylabel("deliveries/s while work was available")
    left.set_title("Each lane's throughput, saturating runs (one worker)")
    left.legend(fontsize=7, ncol=2)
    for label, marker in (("slow", "o"), ("down", "s")):
        found = lanes.get(f"isolation_{label}", {}).get("rounds", [])
        right.plot(
            range(1, len(found) + 1),
            [f["value"] for f in found],
            marker,
            ms=8,
            label=f"isolation_{label}",
        )
    right.axhline(0.9, color="grey", ls="--", label="target 0.9")
    count = max(len(lanes.get(f"isolation_{k}", {}).get("rounds", [])) for k in ("slow", "down"))
    right.set_xticks(range(1, count + 1))
    right.set_xlim(0.5, count + 0.5)
    right.set_xlabel("round")
    right.set_ylabel("lowest other lane / its reference")
    right.set_ylim(0, max(1.6, right.get_ylim()[1]))
    right.set_title("Isolation by round")
    right.legend(fontsize=7)
    return _save(fig, path)


def ledger(reports: Sequence[dict[str, Any]], path: Path) -> Path | None:
    return _last(_ledger, reports, path)


def _ledger(report: dict[str, Any], path: Path) -> Path | None:
    summary = report.get("ledger")
    if not summary:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4))
    labels, base, calls, rest, server = [], [], [], [], []
    for pathname, figures in summary.items():
        memory = figures["memory_cpu_ms_per_order"] or 0.0
        table = figures["azurite_cpu_ms_per_order"] or 0.0
        per_order = figures["deliveries_per_order"] or 0.0
        own = (figures["ledger_client_cpu_ms_per_delivery"] or 0.0) * per_order
        labels += [f"{pathname}\nmemory", f"{pathname}\nAzurite"]
        base += [memory, memory]
        calls += [0.0, min(own, max(0.0, table - memory))]
        rest += [0.0, max(0.0, table - memory - own)]
        server += [0.0, (figures["azurite_cpu_ms_per_delivery"] or 0.0) * per_order]
    xs = list(range(len(labels)))
    ax.bar(xs, base, 0.6, label="the stages (memory ledger's run)")
    ax.bar(xs, calls, 0.6, bottom=base, label="in the ledger's calls")
    ax.bar(
        xs,
        rest,
        0.6,
        bottom=[b + c for b, c in zip(base, calls, strict=True)],
        label="rest of the extra (event loop, sockets)",
    )
    ax.bar(
        [x + 0.35 for x in xs],
        server,
        0.25,
        color="lightgrey",
        hatch="//",
        label="Azurite's CPU (not the worker's)",
    )
    for pathname, figures in summary.items():
        i = labels.index(f"{pathname}\nAzurite")
        top = base[i] + calls[i] + rest[i]
        ratio = figures["ratio_median"]
        span = f"{figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}"
        ax.annotate(f"{ratio:.2f}x ({span})", (i, top), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("driver CPU ms per order (median of rounds)")
    ax.set_title("The ledger's share of CPU per order, lanes mode (target: <= 2x memory)")
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def processes(reports: Sequence[dict[str, Any]], path: Path) -> Path | None:
    return _last(_processes, reports, path)


def _processes(report: dict[str, Any], path: Path) -> Path | None:
    summary = report.get("processes")
    if not summary or not summary.get("rounds"):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    rounds = summary["rounds"]
    counts = sorted(
        {
            int(k[1:].split("_")[0])
            for r in rounds
            for k in r
            if re.fullmatch(r"x\d+_orders_per_s", k)
        }
    )
    width = 0.8 / max(1, len(counts))
    for i, n in enumerate(counts):
        xs = [j + i * width for j in range(len(rounds))]
        values = [r.get(f"x{n}_orders_per_s", 0.0) for r in rounds]
        bars = ax.bar(xs, values, width, label=f"{n} process{'es' if n > 1 else ''}")
        for bar, r in zip(bars, rounds, strict=True):
            cpu = r.get(f"x{n}_cpu_ms_per_order")
            if cpu is not None:
                ax.annotate(
                    f"{cpu:.1f} ms CPU/order",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(rounds))], [f"round {r['round']}" for r in rounds]
    )
    ax.set_ylabel("orders per second (whole run)")
    scaling = summary.get("scaling_median")
    ax.set_title(
        "Worker processes sharing one Azurite ledger"
        + (f": 2 vs 1 = {scaling:.2f}x" if scaling else "")
        + f", sent twice: {summary['sent_twice']}"
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def _last(chart: Any, reports: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """The chart from the last report that has its runs."""
    for report in reversed(reports):
        drawn: Path | None = chart(report, path)
        if drawn is not None:
            return drawn
    return None


def _short(name: str) -> str:
    words = name.split(" ")
    return f"{words[1]} {words[-1]}" if name.startswith("lanes ") else name


CHARTS = {
    "bench-concurrency.png": concurrency,
    "bench-isolation.png": isolation,
    "bench-ledger.png": ledger,
    "bench-processes.png": processes,
}


def draw(reports: Sequence[dict[str, Any]], out: Path = DOCS) -> list[Path]:
    """Every chart some report has the runs for (the last such report), written to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, chart in CHARTS.items():
        path = chart(reports, out / name)
        if path is not None:
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("reports", type=Path, nargs="+", help="bench/results/<date>.json")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go (docs/)")
    args = parser.parse_args(argv)
    for path in draw([json.loads(p.read_text()) for p in args.reports], args.out):
        print(path)


if __name__ == "__main__":
    main()
