"""What `trace` and `lanes` print: rich tables, identifiers and redacted text only."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from order_processor.ledger import LedgerStatus
from order_processor.outbound.redaction import redact
from order_processor.overview.lanes import LanesReport, format_age
from order_processor.overview.trace import Trace, event_type


def _when(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%SZ") if when is not None else "-"


def render_trace(found: Trace, console: Console) -> None:
    """The trace as tables: one per event, then dead letters no row accounts for."""
    console.print(f"{found.ref} (by {found.by.value}): {found.lookup}", markup=False)
    if not found.found:
        console.print("nothing found in the ledger or the dead-letter queues peeked", markup=False)
    for key, rows in found.events().items():
        table = Table(title=f"event {key} ({event_type(key) or '?'})", title_justify="left")
        for column in ("destination", "status", "attempts", "first attempt", "last attempt"):
            table.add_column(column, no_wrap=column != "destination")
        for column in ("http", "response id", "then"):
            table.add_column(column, overflow="fold")
        errors: list[tuple[str, str]] = []
        for row in rows:
            cells = (
                row.destination,
                row.status.value,
                str(row.attempts),
                _when(row.first_attempt),
                _when(row.last_attempt),
                "-" if row.http_status is None else str(row.http_status),
                row.response_id or "-",
                found.what_next(row),
            )
            table.add_row(*(Text(cell) for cell in cells))
            if row.last_error and row.status is not LedgerStatus.DELIVERED:
                errors.append((row.destination, redact(row.last_error)))
        if not rows:
            table.add_row(Text("(no ledger row)"), *(Text("-") for _ in range(7)))
        console.print(table)
        for destination, error in errors:
            console.print(f"  last error, {destination}: {error}", markup=False)
    letters = found.unrecorded_letters()
    if letters:
        table = Table(title="dead letters no ledger row accounts for", title_justify="left")
        for column in ("lane", "seq", "message id", "reason", "description", "enqueued"):
            table.add_column(column, overflow="fold")
        for letter in letters:
            letter_cells = (
                letter.lane,
                str(letter.sequence_number),
                letter.message_id or "-",
                letter.reason or "-",
                letter.description or "-",
                _when(letter.enqueued_time),
            )
            table.add_row(*(Text(cell) for cell in letter_cells))
        console.print(table)
    if found.peeked:
        parts = []
        for p in found.peeked:
            text = f"{p.lane} {p.messages}{'' if p.complete else '+'}"
            parts.append(f"{text} ({p.error})" if p.error else text)
        console.print("dead letters peeked: " + ", ".join(parts), markup=False)
        if any(not p.complete and p.error is None for p in found.peeked):
            console.print(
                "  +: the queue holds more than were peeked (--peek); a letter beyond is not shown",
                markup=False,
            )


_VIA = {
    "atom": "the namespace's management API",
    "arm": "Azure Resource Manager",
}


def render_lanes(report: LanesReport, console: Console) -> None:
    """One row per lane, the topic's scheduled count, and what passed a threshold."""
    title = f"lanes at {_when(report.now)}, counts from {_VIA.get(report.via, report.via)}"
    table = Table(title=title, title_justify="left")
    for column in ("lane", "subscription", "function", "state"):
        table.add_column(column)
    for column in ("active", "dead letters", "oldest"):
        table.add_column(column, justify="right")
    table.add_column("note", overflow="fold")
    for status in report.lanes:
        counts = status.counts
        age = status.oldest_age(report.now)
        cells = (
            status.lane.name,
            f"{status.lane.topic}/{status.lane.subscription}",
            status.lane.function,
            status.state,
            "?" if counts is None else str(counts.active),
            "?" if counts is None else str(counts.dead_letters),
            "-" if age is None else format_age(age),
            status.error or "",
        )
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    waiting = "?" if report.scheduled is None else str(report.scheduled)
    console.print(
        f"scheduled on {report.scheduled_topic}: {waiting} (retry copies of every lane: Service "
        "Bus counts scheduled messages per topic, not per subscription)"
        + (f"; {report.scheduled_error}" if report.scheduled_error else ""),
        markup=False,
    )
    limits = report.thresholds
    over = report.over()
    summary = (
        f"thresholds: dead letters > {limits.max_dead_letters}, oldest > "
        f"{format_age(limits.max_age)}: "
    )
    if not over:
        console.print(summary + "every lane within", markup=False)
        return
    console.print(summary + "; ".join(f"{lane} ({why})" for lane, why in over), markup=False)
