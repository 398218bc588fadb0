"""Golden requests: for every valid sample order and every destination, the exact request the
destination receives (method, URL and headers with secrets masked, body), committed here so a
mapping change shows up as a reviewable diff. `python -m tests.golden` rewrites them;
tests/test_golden.py compares on every run.

They are captured the way `process --dry-run` shows them: both stages in process, every outbound
call answered by a recorder with the vendor's documented success answer, the dry run's example
settings, customers from samples/loyalty/customers.json. The sample data is fictional, so bodies
are shown unmasked.

A setting that changes what a destination sends (an event switched on, a skip switched off) has
its requests captured too, as `<sample>.<variant>.http` for the samples it changes (`VARIANTS`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from order_processor import dryrun
from order_processor.destinations import DESTINATIONS
from order_processor.ledger import MemoryLedger
from order_processor.local import LocalRun
from order_processor.model import MessageMetadata
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from order_processor.settings import load_settings, setting_names

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
SAMPLES = sorted((ROOT / "samples" / "orders" / "valid").glob("*.json"))


@dataclass(frozen=True)
class Variant:
    """A destination's requests under settings other than the defaults, for some samples."""

    destination: str
    name: str
    #: the destination's settings block changes (field -> value)
    settings: dict[str, Any]
    samples: tuple[str, ...]


VARIANTS: tuple[Variant, ...] = (
    Variant(
        "product_recs",
        "cancellations-enabled",
        {"cancellations_enabled": True},
        ("order-cancelled.json",),
    ),
    Variant(
        "product_recs",
        "send-anonymous",
        {"send_anonymous": True},
        ("order-created-unknown-card.json",),
    ),
)


async def _capture_one(sample: str, body: bytes, variant: Variant | None = None) -> dict[Path, str]:
    recorders = dryrun.recording_transports()
    overrides = dryrun.example_overrides()
    if variant is not None:
        overrides[variant.destination] = {**overrides[variant.destination], **variant.settings}
    settings = load_settings(overrides=overrides)
    pipeline = Pipeline.from_settings(
        settings, transports=recorders.get, ledger=MemoryLedger(), outbox=MemoryOutbox()
    )
    try:
        run = await LocalRun(pipeline).run(body, MessageMetadata(message_id=sample))
    finally:
        await pipeline.aclose()
    files: dict[Path, str] = {}
    for name in DESTINATIONS if variant is None else (variant.destination,):
        secrets = settings.destinations[name].secret_values()
        rendered = [
            dryrun.render_request(request, secrets=secrets, show_personal_data=True)
            for request in recorders[name].requests
        ]
        result = run.result_for(name)
        stem = Path(sample).stem if variant is None else f"{Path(sample).stem}.{variant.name}"
        settings_note = "" if variant is None else f" (with {_setting_text(variant)})"
        outcome = result.describe() if result else "no result"
        header = f"# {sample} -> {name}{settings_note}: {outcome}\n"
        text = "\n\n".join(rendered) if rendered else "(no request)"
        files[HERE / name / f"{stem}.http"] = header + "\n" + text + "\n"
    return files


def _setting_text(variant: Variant) -> str:
    prefix = DESTINATIONS[variant.destination].settings_class.model_config.get("env_prefix", "")
    return ", ".join(
        f"{prefix}{field.upper()}={str(value).lower() if isinstance(value, bool) else value}"
        for field, value in variant.settings.items()
    )


@contextmanager
def _without_app_settings() -> Iterator[None]:
    """Golden files do not depend on who runs them: the app's settings are taken out of the
    environment while capturing (the dry run's example values apply)."""
    saved = {name: os.environ.pop(name) for name in setting_names() if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def capture() -> dict[Path, str]:
    """Every golden file as the current mappings produce it."""
    files: dict[Path, str] = {}
    with _without_app_settings():
        for sample in SAMPLES:
            files |= asyncio.run(_capture_one(sample.name, sample.read_bytes()))
        for variant in VARIANTS:
            for name in variant.samples:
                sample = ROOT / "samples" / "orders" / "valid" / name
                files |= asyncio.run(_capture_one(name, sample.read_bytes(), variant))
    return files


def write() -> list[Path]:
    changed = []
    for path, text in capture().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
