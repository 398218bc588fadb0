"""`python -m bench`: run the bench, print the tables, write the JSON report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from bench.report import WIDTH
from bench.run import MODES, BenchConfig, run_bench, top_functions
from order_processor.terminal import TYPER_OPTIONS

app = typer.Typer(add_completion=False, help=__doc__, **TYPER_OPTIONS)

#: the presets the options left out fall back to (None: "the preset's value")
_FULL, _QUICK = BenchConfig.full(), BenchConfig.quick()


def _listed(value: Any) -> str:
    return ",".join(str(part) for part in value) or "none"


def _default(field: str, show: Callable[[Any], str] = str) -> str:
    """What --help shows as the default of an option whose value comes from the preset: the full
    run's, and the quick run's too when it differs."""
    full, quick = show(getattr(_FULL, field)), show(getattr(_QUICK, field))
    return full if full == quick else f"{full}; --quick: {quick}"


def _sweep(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="small run (2,000 orders, no soak/sweep)")] = False,
    orders: Annotated[
        int | None,
        typer.Option("--orders", "-n", help="orders per run", show_default=_default("orders")),
    ] = None,
    cards: Annotated[
        int | None, typer.Option(help="distinct loyalty cards", show_default="orders/2")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="messages in flight")] = 32,
    latency_ms: Annotated[float, typer.Option(help="fake vendors' answer time")] = 20.0,
    error_rate: Annotated[
        float,
        typer.Option(
            help="share of 503 answers (the inline rows do not run the retry copies this "
            "causes, so their work checks fail: exploration only)"
        ),
    ] = 0.0,
    ledger: Annotated[
        str,
        typer.Option(
            help="memory, azurite (the bench starts its own Azurite, a fresh table per run) or none"
        ),
    ] = "memory",
    seed_orders: Annotated[
        int | None,
        typer.Option(help="orders for the seed-style run", show_default=_default("seed_orders")),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="messages per batch (maxMessageBatchSize)")] = 100,
    slow_ms: Annotated[float, typer.Option(help="the slow destination's answer time")] = 2000.0,
    slow_destination: Annotated[
        str, typer.Option(help="the destination answering slowly in the slow run")
    ] = "profile_store",
    slow_rounds: Annotated[
        int | None,
        typer.Option(help="slow run: concurrency x rounds", show_default=_default("slow_rounds")),
    ] = None,
    lanes_orders: Annotated[
        int | None,
        typer.Option(
            help="orders per lanes-mode run (0: no lanes mode)",
            show_default=_default("lanes_orders"),
        ),
    ] = None,
    lanes_rounds: Annotated[
        int | None,
        typer.Option(
            help="interleaved rounds of reference, slow, down",
            show_default=_default("lanes_rounds"),
        ),
    ] = None,
    lanes_paced_share: Annotated[
        float | None,
        typer.Option(
            help="paced lanes runs at this share of capacity (0: none)",
            show_default=_default("lanes_paced_share"),
        ),
    ] = None,
    down_destination: Annotated[
        str | None,
        typer.Option(
            help="the vendor answering 503 in the down run",
            show_default=_default("down_destination"),
        ),
    ] = None,
    retry_compression: Annotated[
        float | None,
        typer.Option(
            help="retry schedule divided by this in the lanes mode",
            show_default=_default("retry_compression"),
        ),
    ] = None,
    ledger_rounds: Annotated[
        int | None,
        typer.Option(
            help="ledger mode: rounds of memory/Azurite pairs",
            show_default=_default("ledger_rounds"),
        ),
    ] = None,
    processes_orders: Annotated[
        int | None,
        typer.Option(
            help="processes mode: orders per run (0: lanes orders)",
            show_default=_default("processes_orders"),
        ),
    ] = None,
    processes_rounds: Annotated[
        int | None,
        typer.Option(
            help="processes mode: rounds of 1 and 2 processes",
            show_default=_default("processes_rounds"),
        ),
    ] = None,
    processes_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="processes mode: the vendors' answer time",
            show_default=_default("processes_latency_ms"),
        ),
    ] = None,
    processes_concurrency: Annotated[
        int | None,
        typer.Option(
            help="processes mode: calls in flight per function",
            show_default=_default("processes_concurrency"),
        ),
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option(
            help=f"comma-separated modes to run (of {', '.join(MODES)})",
            show_default=_default("modes", lambda v: "all" if v == MODES else _listed(v)),
        ),
    ] = None,
    soak: Annotated[
        int | None,
        typer.Option(help="orders in the memory soak (0: none)", show_default=_default("soak")),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="extra concurrencies, e.g. 8,16,64", show_default=_default("sweep", _listed)
        ),
    ] = None,
    stock_orders: Annotated[
        int | None,
        typer.Option(
            help="orders for a core run on httpx's stock transport",
            show_default=_default("stock_orders"),
        ),
    ] = None,
    validate_every: Annotated[
        int | None,
        typer.Option(
            help="fully validate 1 request in N at the vendors (0: none)",
            show_default=_default("validate_every"),
        ),
    ] = None,
    experiments: Annotated[
        str | None,
        typer.Option(
            help="comma-separated bench.experiments names ('' for none)",
            show_default=_default("experiments", _listed),
        ),
    ] = None,
    experiment_orders: Annotated[
        int | None,
        typer.Option(
            help="orders per experiment, split over the rounds",
            show_default=_default("experiment_orders"),
        ),
    ] = None,
    experiment_rounds: Annotated[
        int | None,
        typer.Option(
            help="interleaved rounds per experiment (median kept)",
            show_default=_default("experiment_rounds"),
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="the app's log level")] = "INFO",
    profile: Annotated[
        Path | None, typer.Option(help="cProfile the core run into FILE", show_default="off")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSON report path",
            show_default="bench/results/<date>.json; --quick: <date>-quick.json",
        ),
    ] = None,
) -> None:
    changes = {
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "ledger": ledger,
        "batch_size": batch_size,
        "slow_ms": slow_ms,
        "slow_destination": slow_destination,
        "log_level": log_level,
        "profile": profile,
    }
    optional = {
        "orders": orders,
        "cards": cards,
        "seed_orders": seed_orders,
        "slow_rounds": slow_rounds,
        "lanes_orders": lanes_orders,
        "lanes_rounds": lanes_rounds,
        "lanes_paced_share": lanes_paced_share,
        "down_destination": down_destination,
        "retry_compression": retry_compression,
        "ledger_rounds": ledger_rounds,
        "processes_orders": processes_orders,
        "processes_rounds": processes_rounds,
        "processes_latency_ms": processes_latency_ms,
        "processes_concurrency": processes_concurrency,
        "modes": _names(modes) if modes is not None else None,
        "soak": soak,
        "sweep": _sweep(sweep) if sweep is not None else None,
        "stock_orders": stock_orders,
        "validate_every": validate_every,
        "experiments": _names(experiments) if experiments is not None else None,
        "experiment_orders": experiment_orders,
        "experiment_rounds": experiment_rounds,
    }
    changes.update({k: v for k, v in optional.items() if v is not None})
    config = BenchConfig.quick(**changes) if quick else BenchConfig.full(**changes)
    console = Console()
    if not console.is_terminal or console.width > WIDTH:
        console = Console(width=WIDTH)
    console.print(f"[bold]bench[/] {config.label}: {config}")
    report = run_bench(config)
    report.render(console)
    path = report.write(out)
    console.print(f"report written to {path}")
    if profile is not None:
        console.print(top_functions(profile))
    failed = report.failed_checks()
    if failed:
        console.print(
            f"[bold red]{len(failed)} row(s) did not do the work they claim[/]: {', '.join(failed)}"
        )
        raise typer.Exit(1)
