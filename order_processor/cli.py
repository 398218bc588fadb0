"""Command line: run the core on message files, publish them, keep the published schema current,
work the dead-letter queues, and serve the fake vendors for local runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from azure.servicebus.exceptions import MessagingEntityNotFoundError, ServiceBusError
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from order_processor import devfakes, dlq, docgen, dryrun
from order_processor import publish as publishing
from order_processor.contract import InStoreOrder
from order_processor.delivery import DeliveryMessage
from order_processor.destinations import DESTINATIONS
from order_processor.ledger import (
    LedgerRejected,
    LedgerUnavailable,
    MemoryLedger,
    build_ledger,
)
from order_processor.local import LocalRun, Run
from order_processor.logs import install_redaction
from order_processor.model import MessageMetadata, Settlement
from order_processor.outbound.redaction import scrub
from order_processor.outbox import MemoryOutbox
from order_processor.overview import trace as overview
from order_processor.overview.counts import Via, counts_source
from order_processor.overview.lanes import Thresholds, read_lanes
from order_processor.overview.render import render_lanes, render_trace
from order_processor.pipeline import Pipeline
from order_processor.servicebus import service_bus_client
from order_processor.settings import AppSettings, SettingsError, load_settings
from order_processor.terminal import INTERACTIVE, TYPER_OPTIONS

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, **TYPER_OPTIONS)
console = Console(highlight=False, soft_wrap=not INTERACTIVE, width=None if INTERACTIVE else 10_000)


def _heading(text: str) -> None:
    """A rule across the terminal, or a short one when piped (no width to span)."""
    if INTERACTIVE:
        console.rule(text, style="dim")
    else:
        console.print(f"── {text} ──", markup=False)


SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _schema_text(model: type[BaseModel], name: str) -> str:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://schemas.instore-order-sync/{name}",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_texts() -> dict[str, str]:
    """File name -> text: the inbound contract (for the ERP team) and the internal delivery
    contract (between the accept stage and the lanes)."""
    return {
        "order-message.v1.schema.json": _schema_text(InStoreOrder, "order-message.v1.schema.json"),
        "delivery-message.v1.schema.json": _schema_text(
            DeliveryMessage, "delivery-message.v1.schema.json"
        ),
    }


@app.command()
def schema(
    check: Annotated[bool, typer.Option(help="Fail if a committed schema is stale")] = False,
    directory: Annotated[Path, typer.Option("--dir", help="Where the schemas live")] = SCHEMAS,
) -> None:
    """Write the JSON Schemas generated from the models (order message v1, delivery message v1)."""
    stale = 0
    for name, text in schema_texts().items():
        path = directory / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                console.print(f"[red]{path} is stale: run python -m order_processor schema[/red]")
                stale += 1
            else:
                console.print(f"{path} is up to date")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        console.print(f"wrote {path}")
    if stale:
        raise typer.Exit(1)


_COLOUR = {"complete": "green", "retry": "yellow", "dead-letter": "red"}


def _print_run(path: Path, run: Run, *, dry_run: bool) -> None:
    headline = f"[bold]{escape(str(path))}[/bold] -> "
    colour = _COLOUR[run.settlement.value]
    headline += f"[{colour}]{run.settlement.value}[/{colour}]"
    console.print(headline)
    accept = run.accept
    if accept.settlement is not Settlement.COMPLETE or accept.retry_at is not None:
        console.print(
            f"  accept: {accept.settlement.value} {accept.reason}: {accept.description}",
            markup=False,
        )
    for outcome in run.lanes.values():
        for result in outcome.results:
            console.print(f"  {dryrun.describe(result, dry_run=dry_run)}", markup=False)
        if outcome.settlement is Settlement.DEAD_LETTER:
            console.print(f"    dead-letter {outcome.reason}", markup=False)
        elif outcome.retry_at is not None:
            console.print(f"    retry scheduled for {outcome.retry_at.isoformat()}", markup=False)
    for result in run.unrouted:
        console.print(f"  {result.describe()}", markup=False)


async def _process(files: list[Path], *, dry_run: bool, show_personal_data: bool) -> int:
    recorders = dryrun.recording_transports() if dry_run else {}
    settings = load_settings(overrides=dryrun.example_overrides() if dry_run else None)
    pipeline = Pipeline.from_settings(
        settings,
        transports=recorders.get,
        ledger=MemoryLedger() if dry_run else None,
        outbox=MemoryOutbox(),
    )
    summary = dryrun.Summary(dry_run=dry_run)
    try:
        if not dry_run:
            await dryrun.check_ledger(pipeline.ledger)
        run_locally = LocalRun(pipeline)
        for path in files:
            before = {name: len(r.requests) for name, r in recorders.items()}
            run = await run_locally.run(path.read_bytes(), MessageMetadata(message_id=path.name))
            _print_run(path, run, dry_run=dry_run)
            for name, recorder in recorders.items():
                for request in recorder.requests[before[name] :]:
                    _heading(f"{name} would receive")
                    text = dryrun.render_request(
                        request,
                        secrets=settings.destinations[name].secret_values(),
                        show_personal_data=show_personal_data,
                    )
                    console.print(text, markup=False, soft_wrap=True)
            summary.add(run)
    finally:
        await pipeline.aclose()
    console.print(summary.line(), markup=False)
    return summary.failures


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
        typer.Option(help="Print personal data in dry-run bodies instead of masking it"),
    ] = False,
) -> None:
    """Run both stages here, no Service Bus: accept each order, then deliver it on every lane
    (or show what each destination would receive)."""
    if dry_run is None:
        dry_run = not any(dryrun.configured(name) for name in DESTINATIONS)
        if dry_run:
            console.print("[dim]no destination is configured: dry run (see README, Settings)[/dim]")
    try:
        failures = asyncio.run(
            _process(files, dry_run=dry_run, show_personal_data=show_personal_data)
        )
    except SettingsError as exc:
        console.print(escape(str(exc)), style="red")
        raise typer.Exit(2) from None
    raise typer.Exit(1 if failures else 0)


@app.command()
def docs(
    check: Annotated[bool, typer.Option(help="Fail if a generated section is stale")] = False,
) -> None:
    """Regenerate what the destination registry decides in the docs: the README's settings
    tables, local.settings.example.json's Values, docs/destinations/README.md's table."""
    if check:
        stale = docgen.stale()
        for path in stale:
            console.print(f"[red]{path} is stale: run python -m order_processor docs[/red]")
        raise typer.Exit(1 if stale else 0)
    for path in docgen.write():
        console.print(f"wrote {path}")


# -- Service Bus commands ---------------------------------------------------------------------


def _service_bus_settings() -> AppSettings:
    """For commands that only talk to Service Bus (publish, dlq peek/purge, replay --to topic)."""
    return load_settings(service_bus_only=True)


def _run(work: Coroutine[Any, Any, int], *, count_failures: bool = True) -> NoReturn:
    """Exit 0 when nothing failed, 1 when something did, 2 for bad settings or entities.
    `count_failures`: say how many failed (not for commands whose result is 1 or 0)."""
    try:
        failures = asyncio.run(work)
    except SettingsError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except MessagingEntityNotFoundError as exc:
        console.print(
            f"[red]no such entity: {escape(scrub(str(exc)))}[/red] (check ORDERS_* settings)"
        )
        raise typer.Exit(2) from None
    except ServiceBusError as exc:
        console.print(f"[red]Service Bus: {escape(scrub(str(exc)))}[/red]")
        raise typer.Exit(1) from None
    if failures and count_failures:
        console.print(f"[red]{failures} failed[/red]")
    raise typer.Exit(1 if failures else 0)


async def _publish(messages: list[publishing.Prepared], settings: AppSettings) -> int:
    sent = 0
    async with service_bus_client(settings.service_bus) as client:
        try:
            async for prepared in publishing.send(
                client=client, topic=settings.core.orders_topic, messages=messages
            ):
                sent += 1
                console.print(f"sent {escape(str(prepared.path))} as {prepared.message_id}")
        except ServiceBusError as exc:
            failed = messages[sent]
            console.print(
                f"[red]sending {escape(str(failed.path))} failed: {escape(scrub(str(exc)))}[/red]; "
                f"{sent} sent before it (publishing them again is safe: same MessageIds)"
            )
            return len(messages) - sent
    return 0


@app.command()
def publish(
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="Message bodies (JSON)")
    ],
    dry_run: Annotated[bool, typer.Option(help="Show what would be sent; send nothing")] = False,
) -> None:
    """Publish order files to ORDERS_TOPIC as the ERP does: validated against contract v1 first
    (one invalid file: nothing is sent), MessageId = the order event key (a re-publish is a
    duplicate), SessionId = orderId, application properties eventType and orderId."""
    settings = _settings_or_exit(full=False)
    if not dry_run:
        try:
            settings.service_bus.require()  # before anything is printed as if it would be sent
        except SettingsError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
    messages, problems = publishing.prepare(files, max_bytes=settings.core.orders_max_message_bytes)
    for problem in problems:
        console.print(f"[red]invalid[/red] {escape(problem)}")
    if problems:
        console.print("[red]nothing sent[/red]")
        raise typer.Exit(1)
    title = f"{len(messages)} message(s) for the topic" + (": dry run" if dry_run else "")
    table = Table(title=title, title_justify="left")
    for column in ("file", "message id", "session id", "properties"):
        table.add_column(column, overflow="fold")
    for m in messages:
        properties = ", ".join(f"{k}={v}" for k, v in m.application_properties.items())
        cells = (str(m.path), m.message_id, m.session_id, properties)
        table.add_row(*(Text(cell) for cell in cells))  # Text: no markup from the files
    console.print(table)
    if dry_run:
        console.print("dry run: nothing sent")
        raise typer.Exit(0)
    _run(_publish(messages, settings))


dlq_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    **TYPER_OPTIONS,
    help="Read, replay and purge a dead-letter queue: the orders subscription's, or a lane's "
    "(--destination). Bodies are never printed.",
)
app.add_typer(dlq_app, name="dlq")

DestinationOption = Annotated[
    str | None,
    typer.Option(
        "--destination",
        metavar="LANE",
        help="a destination's lane (profile_store, product_recs, ...) or accept (the accept "
        "stage's retry lane); left out: the orders subscription's DLQ (invalid messages)",
    ),
]
ReasonOption = Annotated[
    list[str] | None,
    typer.Option("--reason", metavar="REASON", help="Only this DeadLetterReason (repeatable)"),
]
MessageIdOption = Annotated[
    list[str] | None,
    typer.Option("--message-id", metavar="ID", help="Only this MessageId (repeatable)"),
]
OlderOption = Annotated[
    str | None,
    typer.Option(metavar="AGE", help="Only enqueued at least this long ago: 30m, 2h, 1d"),
]
NewerOption = Annotated[
    str | None, typer.Option(metavar="AGE", help="Only enqueued at most this long ago: 30m, 2h, 1d")
]
LimitOption = Annotated[int | None, typer.Option(min=1, help="At most this many (oldest first)")]
DryRunOption = Annotated[bool, typer.Option(help="Only show the selection; change nothing")]


def _duration(text: str | None, option: str) -> timedelta | None:
    try:
        return dlq.parse_duration(text) if text is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _filters(
    reason: list[str] | None,
    message_id: list[str] | None,
    older_than: str | None,
    newer_than: str | None,
    limit: int | None,
) -> dlq.Filters:
    return dlq.Filters(
        reasons=frozenset(reason or ()),
        message_ids=frozenset(message_id or ()),
        older_than=_duration(older_than, "--older-than"),
        newer_than=_duration(newer_than, "--newer-than"),
        limit=limit,
    )


def _source_or_exit(settings: AppSettings, destination: str | None) -> dlq.DeadLetterSource:
    try:
        return dlq.DeadLetterSource.of(settings, destination)
    except SettingsError as exc:
        console.print(escape(str(exc)), style="red")
        raise typer.Exit(2) from None


def _settings_or_exit(*, full: bool) -> AppSettings:
    try:
        return load_settings() if full else _service_bus_settings()
    except SettingsError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


@dlq_app.command()
def peek(
    destination: DestinationOption = None,
    reason: ReasonOption = None,
    message_id: MessageIdOption = None,
    older_than: OlderOption = None,
    newer_than: NewerOption = None,
    limit: LimitOption = None,
    dry_run: Annotated[
        bool, typer.Option(help="Accepted for symmetry: peek changes nothing")
    ] = False,
) -> None:
    """List dead letters: message id, orderId/eventType, reason, description, age, deliveries."""
    filters = _filters(reason, message_id, older_than, newer_than, limit)
    settings = _settings_or_exit(full=False)
    source = _source_or_exit(settings, destination)
    _run(dlq.peek(settings=settings, source=source, filters=filters, console=console))


@dlq_app.command()
def replay(
    destination: DestinationOption = None,
    to: Annotated[
        dlq.Target,
        typer.Option(
            help="topic: a new message on the topic it came from (a lane's go back to that lane "
            "only); process: run its stage here (needs the app's full settings)"
        ),
    ] = dlq.Target.TOPIC,
    reason: ReasonOption = None,
    message_id: MessageIdOption = None,
    older_than: OlderOption = None,
    newer_than: NewerOption = None,
    limit: LimitOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Replay dead letters; each is removed from the DLQ only once its replay succeeded. The
    retry bookkeeping (retryAttempt, firstSeenUtc, originalMessageId) is dropped: the retry
    window restarts, and the ledger keeps what was delivered from being sent again."""
    filters = _filters(reason, message_id, older_than, newer_than, limit)
    settings = _settings_or_exit(full=to is dlq.Target.PROCESS and not dry_run)
    source = _source_or_exit(settings, destination)
    _run(
        dlq.replay(
            settings=settings,
            source=source,
            filters=filters,
            to=to,
            dry_run=dry_run,
            console=console,
        )
    )


@dlq_app.command()
def purge(
    destination: DestinationOption = None,
    reason: ReasonOption = None,
    message_id: MessageIdOption = None,
    older_than: OlderOption = None,
    newer_than: NewerOption = None,
    limit: LimitOption = None,
    dry_run: DryRunOption = False,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them")] = False,
) -> None:
    """Delete the selected dead letters for good (requires --yes, or --dry-run to look first)."""
    filters = _filters(reason, message_id, older_than, newer_than, limit)
    if not (yes or dry_run):
        console.print("[red]purge deletes dead letters for good: add --yes (or --dry-run)[/red]")
        raise typer.Exit(2)
    settings = _settings_or_exit(full=False)
    source = _source_or_exit(settings, destination)
    _run(
        dlq.purge(
            settings=settings, source=source, filters=filters, dry_run=dry_run, console=console
        )
    )


# -- the delivery overview --------------------------------------------------------------------


async def _trace(
    ref: str, *, by: overview.By, peek: int, settings: AppSettings, as_json: bool
) -> int:
    if not settings.ledger.enabled:
        raise SettingsError(["trace reads the delivery ledger: DELIVERY_LEDGER_ENABLED is false"])
    ledger = build_ledger(settings.ledger, create_table=False)  # read only
    try:
        client = service_bus_client(settings.service_bus) if peek else None
        async with client or contextlib.nullcontext():
            found = await overview.trace(
                ledger=ledger,
                ref=ref,
                by=by,
                client=client,
                queues=overview.sources(settings) if client else (),
                limit=peek,
                now=datetime.now(UTC),
            )
    finally:
        await ledger.aclose()
    if as_json:
        typer.echo(json.dumps(found.as_json(), indent=2))
    else:
        render_trace(found, console)
    return 0 if found.found else 1


@app.command(name="trace")
def trace_command(
    order_id: Annotated[
        str, typer.Argument(help="An order id, an event key or a MessageId (see --by)")
    ],
    by: Annotated[
        overview.By,
        typer.Option(
            help="What ORDER_ID is. auto: an event key (or a MessageId the app made, which starts "
            "with one) is read directly, anything else is an order id. message: the ERP's own "
            "MessageId, which no key holds: the whole ledger table is read"
        ),
    ] = overview.By.AUTO,
    peek: Annotated[
        int,
        typer.Option(
            min=0,
            help="Dead letters peeked per dead-letter queue, oldest first, to confirm them "
            "(0: the ledger only, no Service Bus)",
        ),
    ] = overview.DEFAULT_PEEK_LIMIT,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document, for scripts")] = False,
) -> None:
    """Where one order went: every event in the delivery ledger and, per destination, status,
    attempts, first and last attempt, last error, the vendor's response id, a retry copy's due
    time or the dead letter, confirmed in the dead-letter queues. No personal data is printed.
    Exit code 1 when nothing is found."""
    try:
        settings = load_settings(service_bus_only=True, with_ledger=True)
        if peek:
            settings.service_bus.require()
    except SettingsError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    try:
        _run(
            _trace(order_id, by=by, peek=peek, settings=settings, as_json=as_json),
            count_failures=False,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="ORDER_ID") from None
    except (LedgerUnavailable, LedgerRejected) as exc:
        console.print(f"[red]delivery ledger: {escape(scrub(str(exc)))}[/red]")
        raise typer.Exit(1) from None


async def _lanes(
    settings: AppSettings, *, via: Via, thresholds: Thresholds, peek: bool, as_json: bool
) -> int:
    counts = counts_source(settings, via)
    try:
        client = service_bus_client(settings.service_bus) if peek else None
        async with client or contextlib.nullcontext():
            report = await read_lanes(
                settings,
                counts=counts,
                client=client,
                environ=os.environ,
                now=datetime.now(UTC),
                thresholds=thresholds,
            )
    finally:
        await counts.close()
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        render_lanes(report, console)
    return 1 if report.over() else 0


@app.command()
def lanes(
    max_dead_letters: Annotated[
        int, typer.Option(min=0, help="A lane with more dead letters fails the check")
    ] = 0,
    max_age: Annotated[
        str,
        typer.Option(metavar="AGE", help="A lane whose oldest message is older fails: 30m, 2h"),
    ] = "30m",
    via: Annotated[
        Via,
        typer.Option(
            help="Where the counts come from. atom: the namespace's management API (Manage "
            "rights); arm: Azure Resource Manager (Reader on the topics; needs "
            "SERVICE_BUS_RESOURCE_ID); auto: arm when SERVICE_BUS_RESOURCE_ID is set"
        ),
    ] = Via.AUTO,
    peek: Annotated[
        bool,
        typer.Option(help="Peek each lane with messages for its oldest one's age (Listen)"),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document, for scripts")] = False,
) -> None:
    """One row per lane: enabled, paused or off; active messages, dead letters and the age of
    the oldest message, from Service Bus's runtime properties. Exit code 1 when a lane has more
    dead letters than --max-dead-letters, an older message than --max-age, or cannot be read
    (for pipelines); 2 for bad settings."""
    thresholds = Thresholds(
        max_dead_letters=max_dead_letters, max_age=_duration(max_age, "--max-age") or timedelta()
    )
    settings = _settings_or_exit(full=False)
    _run(
        _lanes(settings, via=via, thresholds=thresholds, peek=peek, as_json=as_json),
        count_failures=False,
    )


# -- local development --------------------------------------------------------------------------


@app.command()
def fakes(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    base_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65530,
            help="loyalty, Profile Store, Product Recs, RichRelevance, eSputnik "
            "on this port and the next four (0: any free ports)",
        ),
    ] = 8101,
) -> None:
    """Serve the fake vendors for a local `func start` until Ctrl+C, and print the settings that
    point the app at them. For developers in a checkout of this repository: the fakes are the
    contract-test servers in tests/fakes."""
    try:
        devfakes.serve(host=host, base_port=base_port, console=console)
    except devfakes.FakesUnavailable as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except OSError as exc:  # e.g. a port already in use
        console.print(f"[red]cannot serve the fakes: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def main() -> None:
    # The commands run the app's own code (process --send, dlq replay --to process): whatever it
    # or a library logs is redacted here as in the functions.
    install_redaction()
    app()
