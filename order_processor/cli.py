"""Command line: run the same core on message files, and keep the published schema current."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from order_processor import dryrun
from order_processor.contract import InStoreOrder
from order_processor.destinations import DESTINATIONS
from order_processor.ledger import MemoryLedger
from order_processor.model import MessageMetadata, Outcome, Settlement
from order_processor.processor import Processor
from order_processor.settings import SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console(highlight=False)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "order-message.v1.schema.json"


def order_schema_text() -> str:
    schema = InStoreOrder.model_json_schema(by_alias=True, mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://schemas.instore-order-sync/order-message.v1.schema.json",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


@app.command()
def schema(
    check: Annotated[bool, typer.Option(help="Fail if the committed schema is stale")] = False,
    output: Annotated[Path, typer.Option(help="Where to write it")] = SCHEMA_PATH,
) -> None:
    """Write the contract v1 JSON Schema generated from the model."""
    text = order_schema_text()
    if check:
        if not output.exists() or output.read_text(encoding="utf-8") != text:
            console.print(f"[red]{output} is stale: run python -m order_processor schema[/red]")
            raise typer.Exit(1)
        console.print(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")


def _print_outcome(path: Path, outcome: Outcome) -> None:
    colour = {"complete": "green", "retry": "yellow", "dead-letter": "red"}[
        outcome.settlement.value
    ]
    headline = f"[bold]{path}[/bold] -> [{colour}]{outcome.settlement.value}[/{colour}]"
    if outcome.reason:
        headline += f" {outcome.reason}: {outcome.description}"
    console.print(headline)
    for result in outcome.results:
        console.print(f"  {result.describe()}")


async def _process(files: list[Path], *, dry_run: bool, show_personal_data: bool) -> int:
    recorders = dryrun.recording_transports() if dry_run else {}
    settings = load_settings(overrides=dryrun.example_overrides() if dry_run else None)
    processor = Processor.from_settings(
        settings, transports=recorders.get, ledger=MemoryLedger() if dry_run else None
    )
    failures = 0
    try:
        for path in files:
            before = {name: len(r.requests) for name, r in recorders.items()}
            outcome = await processor.process(
                path.read_bytes(), MessageMetadata(message_id=path.name)
            )
            _print_outcome(path, outcome)
            for name, recorder in recorders.items():
                for request in recorder.requests[before[name] :]:
                    console.rule(f"{name} would receive", style="dim")
                    text = dryrun.render_request(
                        request,
                        secrets=settings.destinations[name].secret_values(),
                        show_personal_data=show_personal_data,
                    )
                    console.print(text, markup=False, soft_wrap=True)
            failures += outcome.settlement is not Settlement.COMPLETE
    finally:
        await processor.aclose()
    return failures


@app.command()
def process(
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="Message bodies (JSON)")
    ],
    dry_run: Annotated[
        bool | None,
        typer.Option(
            "--dry-run/--send",
            help="Show the requests instead of sending them "
            "[default: dry run when no destination is configured]",
        ),
    ] = None,
    show_personal_data: Annotated[
        bool,
        typer.Option(help="Print emails and numbers in dry-run bodies instead of masking them"),
    ] = False,
) -> None:
    """Run the core on message files: parse, enrich, deliver (or show what would be sent)."""
    if dry_run is None:
        dry_run = not any(dryrun.configured(name) for name in DESTINATIONS)
        if dry_run:
            console.print("[dim]no destination is configured: dry run (see README, Settings)[/dim]")
    try:
        failures = asyncio.run(
            _process(files, dry_run=dry_run, show_personal_data=show_personal_data)
        )
    except SettingsError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    raise typer.Exit(1 if failures else 0)


def main() -> None:
    app()
