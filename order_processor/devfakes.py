"""`fakes`: the project's loopback fake vendors, served for a local `func start`.

For developers working in this repository: the fakes are the contract-test servers in
`tests/fakes`, imported from the checkout (they are not part of the deployed app).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.markup import escape

from order_processor.destinations import DESTINATIONS
from order_processor.outbound.redaction import MASK, MIN_SECRET_LENGTH, redact

ROOT = Path(__file__).resolve().parent.parent
LOYALTY_FAKE = "tests.fakes.loyalty"


class FakesUnavailable(Exception):
    """`tests.fakes` cannot be imported: not a checkout of this repository."""


def fakes() -> dict[str, tuple[ModuleType, str]]:
    """System name -> (fake module, env prefix of its settings): the loyalty provider, then every
    registered destination (each destination's class names its fake)."""
    # Imported at run time (not a package dependency): found from any directory of a checkout.
    if (ROOT / "tests" / "fakes").is_dir() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        found = {"loyalty": (importlib.import_module(LOYALTY_FAKE), "LOYALTY_")}
        for name, cls in DESTINATIONS.items():
            prefix = str(cls.settings_class.model_config.get("env_prefix", ""))
            found[name] = (importlib.import_module(cls.fake), prefix)
    except ImportError as exc:
        raise FakesUnavailable(
            f"the fakes live in tests/fakes of the repository checkout ({exc}); "
            "run this command from a clone of the repository"
        ) from None
    return found


def local_settings(
    urls: dict[str, str], modules: dict[str, tuple[ModuleType, str]]
) -> dict[str, str]:
    """The `Values` that point the app at the fakes (with the fakes' own keys and ids), plus
    what `process --send` and `func start` need besides: Azurite for the ledger."""
    values = {
        "ALLOW_INSECURE_HTTP": "true",
        # The delivery ledger (and the Functions host) on Azurite: see docs/local-dev.md.
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    for name, (module, prefix) in modules.items():
        for field, value in module.settings_for(urls[name]).items():
            values[f"{prefix}{field.upper()}"] = str(value)
    return values


def _masked(path: str, settings: Iterable[str]) -> str:
    """A request path without card numbers (personal data, under any lookup template) or the
    settings' values (RichRelevance's key travels in its path)."""
    path = redact(re.sub(r"/cards/[^/]+", "/cards/***", path))
    for value in sorted(settings, key=len, reverse=True):
        if len(value) >= MIN_SECRET_LENGTH:
            path = path.replace(value, MASK)
    return path


def _logged(
    name: str, rules: Callable[[Any], Any], say: Callable[[str], None], settings: list[str]
) -> Any:
    def handle(request: Any) -> Any:
        reply = rules(request)
        say(f"{name}: {request.method} {_masked(request.path, settings)} -> {reply.status}")
        return reply

    return handle


def start(
    *, host: str, base_port: int, say: Callable[[str], None]
) -> tuple[list[Any], dict[str, str]]:
    """Start every fake (base port 0: any free ports); their servers and the settings to use."""
    modules = fakes()
    base = importlib.import_module("tests.fakes.base")
    servers: list[Any] = []
    urls: dict[str, str] = {}
    #: the printed settings' values, masked in the request lines (filled once the ports are known)
    settings: list[str] = []
    shown_host = "127.0.0.1" if host in {"", "0.0.0.0"} else host  # noqa: S104 (not binding)
    try:
        for offset, (name, (module, _)) in enumerate(modules.items()):
            port = base_port + offset if base_port else 0
            fake = base.FakeServer(
                _logged(name, module.RULES(), say, settings), host=host, port=port
            )
            servers.append(fake.start())
            urls[name] = f"http://{shown_host}:{fake.port}"
    except BaseException:
        stop(servers)
        raise
    values = local_settings(urls, modules)
    settings.extend(value for value in values.values() if "://" not in value)
    return servers, values


def stop(servers: list[Any]) -> None:
    for server in servers:
        server.stop()


def serve(
    *, host: str, base_port: int, console: Console, until: threading.Event | None = None
) -> None:
    """Serve until Ctrl+C (or `until` is set), printing the settings and every request."""
    servers, values = start(
        host=host, base_port=base_port, say=lambda line: console.print(escape(line))
    )
    try:
        console.print('Paste into "Values" of local.settings.json (plain HTTP: never in Azure):')
        console.print(
            "(the ledger needs Azurite: npx azurite-table --inMemoryPersistence; or add "
            '"DELIVERY_LEDGER_ENABLED": "false" for a throwaway run, duplicates possible)',
            markup=False,
            soft_wrap=True,
        )
        for name, value in values.items():
            console.print(f'    "{name}": "{value}",', markup=False, soft_wrap=True)
        console.print("fakes are running; Ctrl+C stops them", soft_wrap=True)
        with contextlib.suppress(KeyboardInterrupt):
            (until or threading.Event()).wait()
    finally:
        stop(servers)
        console.print("fakes stopped")
