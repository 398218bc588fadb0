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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.markup import escape

ROOT = Path(__file__).resolve().parent.parent
#: (module in tests.fakes, its rules class), served on the base port + position
FAKES = (
    ("loyalty", "LoyaltyRules"),
    ("profile_store", "ProfileStoreRules"),
    ("product_recs", "ProductRecsRules"),
    ("richrelevance", "RichRelevanceRules"),
    ("esputnik", "EsputnikRules"),
)


class FakesUnavailable(Exception):
    """`tests.fakes` cannot be imported: not a checkout of this repository."""


def _modules() -> dict[str, ModuleType]:
    # Imported at run time (not a package dependency): found from any directory of a checkout.
    if (ROOT / "tests" / "fakes").is_dir() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        base = importlib.import_module("tests.fakes.base")
        found = {name: importlib.import_module(f"tests.fakes.{name}") for name, _ in FAKES}
    except ImportError as exc:
        raise FakesUnavailable(
            f"the fakes live in tests/fakes of the repository checkout ({exc}); "
            "run this command from a clone of the repository"
        ) from None
    return {"base": base, **found}


def local_settings(urls: dict[str, str], modules: dict[str, ModuleType]) -> dict[str, str]:
    """The `Values` that point the app at the fakes, with the fakes' own keys and ids."""
    loyalty, profile_store = modules["loyalty"], modules["profile_store"]
    product_recs, rr, esputnik = (
        modules["product_recs"],
        modules["richrelevance"],
        modules["esputnik"],
    )
    return {
        "ALLOW_INSECURE_HTTP": "true",
        "LOYALTY_API_BASE_URL": urls["loyalty"],
        "LOYALTY_AUTH": "header",
        "LOYALTY_API_KEY": loyalty.API_KEY,
        "LOYALTY_API_KEY_HEADER": "Ocp-Apim-Subscription-Key",
        "PROFILE_STORE_BASE_URL": urls["profile_store"],
        "PROFILE_STORE_API_KEY": profile_store.API_KEY,
        "PROFILE_STORE_AUTH_STYLE": "subscription-key",
        "PROFILE_STORE_SCOPE": profile_store.SCOPE,
        "PRODUCT_RECS_URL": urls["product_recs"] + product_recs.PATH,
        "PRODUCT_RECS_SITE": product_recs.SITE,
        "PRODUCT_RECS_SITE_TOKEN": product_recs.SITE_TOKEN,
        "PRODUCT_RECS_CHANNEL": product_recs.CHANNEL,
        "RICHRELEVANCE_BASE_URL": urls["richrelevance"],
        "RICHRELEVANCE_API_KEY": rr.API_KEY,
        "RICHRELEVANCE_CLIENT_ID": rr.CLIENT_ID,
        "RICHRELEVANCE_CLIENT_SECRET": rr.CLIENT_SECRET,
        "ESPUTNIK_BASE_URL": urls["esputnik"],
        "ESPUTNIK_API_KEY": esputnik.API_KEY,
    }


def _masked(path: str) -> str:
    return re.sub(r"/cards/[^/]+", "/cards/***", path)  # card numbers are personal data


def _logged(name: str, rules: Callable[[Any], Any], say: Callable[[str], None]) -> Any:
    def handle(request: Any) -> Any:
        reply = rules(request)
        say(f"{name}: {request.method} {_masked(request.path)} -> {reply.status}")
        return reply

    return handle


def start(
    *, host: str, base_port: int, say: Callable[[str], None]
) -> tuple[list[Any], dict[str, str]]:
    """Start every fake (base port 0: any free ports); their servers and the settings to use."""
    modules = _modules()
    servers: list[Any] = []
    urls: dict[str, str] = {}
    shown_host = "127.0.0.1" if host in {"", "0.0.0.0"} else host  # noqa: S104 (not binding)
    try:
        for offset, (name, rules_class) in enumerate(FAKES):
            rules = getattr(modules[name], rules_class)()
            port = base_port + offset if base_port else 0
            fake = modules["base"].FakeServer(_logged(name, rules, say), host=host, port=port)
            servers.append(fake.start())
            urls[name] = f"http://{shown_host}:{fake.port}"
    except BaseException:
        stop(servers)
        raise
    return servers, local_settings(urls, modules)


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
        for name, value in values.items():
            console.print(f'    "{name}": "{value}",', markup=False, soft_wrap=True)
        console.print("fakes are running; Ctrl+C stops them", soft_wrap=True)
        with contextlib.suppress(KeyboardInterrupt):
            (until or threading.Event()).wait()
    finally:
        stop(servers)
        console.print("fakes stopped")
