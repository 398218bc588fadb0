"""`python -m bench`: run the bench, print the tables, write the JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.report import WIDTH
from bench.run import MODES, BenchConfig, run_bench, top_functions

app = typer.Typer(add_completion=False, help=__doc__)


def _sweep(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.command()
def main(
    quick: Annotated[bool, typer.Option(help="small run (2,000 orders, no soak/sweep)")] = False,
    orders: Annotated[int | None, typer.Option("--orders", "-n", help="orders per run")] = None,
    cards: Annotated[int | None, typer.Option(help="distinct loyalty cards (orders/2)")] = None,
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
    seed_orders: Annotated[int | None, typer.Option(help="orders for the seed-style run")] = None,
    batch_size: Annotated[int, typer.Option(help="messages per batch (maxMessageBatchSize)")] = 100,
    slow_ms: Annotated[float, typer.Option(help="the slow destination's answer time")] = 2000.0,
    slow_destination: Annotated[str, typer.Option()] = "profile_store",
    slow_rounds: Annotated[int | None, typer.Option(help="slow run: concurrency x rounds")] = None,
    lanes_orders: Annotated[
        int | None, typer.Option(help="orders per lanes-mode run (0: no lanes mode)")
    ] = None,
    lanes_rounds: Annotated[
        int | None, typer.Option(help="interleaved rounds of reference, slow, down")
    ] = None,
    lanes_paced_share: Annotated[
        float | None, typer.Option(help="paced lanes runs at this share of capacity (0: none)")
    ] = None,
    down_destination: Annotated[
        str | None, typer.Option(help="the vendor answering 503 in the down run")
    ] = None,
    retry_compression: Annotated[
        float | None, typer.Option(help="retry schedule divided by this in the lanes mode")
    ] = None,
    ledger_rounds: Annotated[
        int | None, typer.Option(help="ledger mode: rounds of memory/Azurite pairs")
    ] = None,
    processes_orders: Annotated[
        int | None, typer.Option(help="processes mode: orders per run (0: lanes orders)")
    ] = None,
    processes_rounds: Annotated[
        int | None, typer.Option(help="processes mode: rounds of 1 and 2 processes")
    ] = None,
    processes_latency_ms: Annotated[
        float | None, typer.Option(help="processes mode: the vendors' answer time")
    ] = None,
    processes_concurrency: Annotated[
        int | None, typer.Option(help="processes mode: calls in flight per function")
    ] = None,
    modes: Annotated[
        str | None, typer.Option(help=f"comma-separated modes to run (of {', '.join(MODES)})")
    ] = None,
    soak: Annotated[int | None, typer.Option(help="orders in the memory soak (0: none)")] = None,
    sweep: Annotated[str | None, typer.Option(help="extra concurrencies, e.g. 8,16,64")] = None,
    stock_orders: Annotated[
        int | None, typer.Option(help="orders for a core run on httpx's stock transport")
    ] = None,
    validate_every: Annotated[
        int | None, typer.Option(help="fully validate 1 request in N at the vendors (0: none)")
    ] = None,
    experiments: Annotated[
        str | None, typer.Option(help="comma-separated bench.experiments names ('' for none)")
    ] = None,
    experiment_orders: Annotated[
        int | None, typer.Option(help="orders per experiment, split over the rounds")
    ] = None,
    experiment_rounds: Annotated[
        int | None, typer.Option(help="interleaved rounds per experiment (median kept)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="the app's log level")] = "INFO",
    profile: Annotated[Path | None, typer.Option(help="cProfile the core run into FILE")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
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
