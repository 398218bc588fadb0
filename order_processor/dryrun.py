"""--dry-run: the real core, with every outbound call answered locally instead of sent.

Each destination gets a recording transport that answers with the vendor's documented success
response, so what is shown is exactly the request httpx would have put on the wire.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import simplejson

from order_processor.destinations import DESTINATIONS
from order_processor.outbound.redaction import MASK, redact, scrub

SAMPLE_CUSTOMERS = Path(__file__).resolve().parent.parent / "samples" / "loyalty" / "customers.json"

_SECRET_HEADERS = frozenset(
    {"authorization", "ocp-apim-subscription-key", "sitetoken", "x-api-key", "cookie"}
)


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)


def recording_transports() -> dict[str, RecordingTransport]:
    return {
        name: RecordingTransport(status=cls.dry_run_status, body=cls.dry_run_body)
        for name, cls in DESTINATIONS.items()
    }


def configured(name: str) -> bool:
    """Whether the environment holds every setting the destination requires."""
    settings_class = DESTINATIONS[name].settings_class
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    return all(f"{prefix}{field.upper()}" in os.environ for field in settings_class.required)


def example_overrides() -> dict[str, Mapping[str, Any]]:
    """Placeholder values for the settings a dry run needs but the environment lacks."""
    overrides: dict[str, Mapping[str, Any]] = {}
    for name, cls in DESTINATIONS.items():
        settings_class = cls.settings_class
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        overrides[name] = {
            field: value
            for field, value in settings_class.example.items()
            if f"{prefix}{field.upper()}" not in os.environ
        }
    # A dry run never calls the loyalty provider either: it reads the sample customers.
    overrides["loyalty"] = {
        "api_base_url": None,
        "file": os.environ.get("LOYALTY_FILE") or SAMPLE_CUSTOMERS,
    }
    # Nothing is sent, so nothing is recorded: an in-memory ledger replaces the table.
    overrides["ledger"] = {"enabled": False}
    return overrides


def _mask_header(name: str, value: str) -> str:
    if name.lower() not in _SECRET_HEADERS:
        return value
    scheme, _, rest = value.partition(" ")
    return f"{scheme} ***" if rest else "***"


def render_request(
    request: httpx.Request, *, secrets: list[str] | None = None, show_personal_data: bool = False
) -> str:
    """Method, URL, headers (secrets masked) and the JSON body, pretty-printed.

    `secrets` are masked wherever they appear (some vendors put a key in the URL path)."""
    lines = [f"{request.method} {request.url}"]
    lines += [f"{name}: {_mask_header(name, value)}" for name, value in request.headers.items()]
    body = request.content.decode("utf-8", errors="replace")
    if body:
        try:
            document = json.loads(body, parse_float=Decimal)
            body = simplejson.dumps(document, indent=2, ensure_ascii=False, use_decimal=True)
        except ValueError:
            pass
        lines += ["", body if show_personal_data else redact(body)]
    text = "\n".join(lines)
    for secret in secrets or ():
        text = text.replace(secret, MASK)
    return scrub(text)
