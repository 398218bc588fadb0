"""`process`: the real stages on message files, and --dry-run, where every outbound call is
answered locally instead of sent.

Each destination gets a recording transport that answers with the vendor's documented success
response, so what is shown is exactly the request httpx would have put on the wire, with
secrets and personal data masked: emails, phone numbers, names, customer ids, email hashes and
card numbers (`--show-personal-data` shows them).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import simplejson

from order_processor.destinations import DESTINATIONS
from order_processor.ledger import Ledger, LedgerRejected, LedgerUnavailable
from order_processor.local import Run
from order_processor.model import DeliveryStatus, DestinationResult, Settlement
from order_processor.outbound.redaction import MASK, redact, scrub
from order_processor.settings import SettingsError

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


#: JSON keys (anywhere in a body) whose values are personal data: contact details, names, the
#: identifiers that single out a customer, and hashes of an email (unsalted: reversible by
#: anyone holding the address)
PERSONAL_KEYS = frozenset(
    {
        "email",
        "emailhash",
        "phone",
        "name",
        "firstname",
        "lastname",
        "customerid",
        "externalcustomerid",
        "userid",
        "id",
        "keyvalue",
        "loyaltycardnumber",
    }
)
#: keys that are personal only inside a person's object (elsewhere `id` is an order's or a
#: product's, `name` a store's or a product's)
_PERSON_ONLY = frozenset({"id", "name"})
_PERSON_OBJECTS = frozenset({"user", "customer"})


def _masked(node: Any, parent: str = "") -> Any:
    """The body with personal values replaced by "***" (eSputnik's params keep their names)."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node and len(node) == 2:
            key = node["name"].lower()  # eSputnik v1/event params: [{"name", "value"}]
            return {"name": node["name"], "value": "***" if key in PERSONAL_KEYS else node["value"]}
        masked = {}
        for key, value in node.items():
            lowered = key.lower()
            personal = lowered in PERSONAL_KEYS and (
                lowered not in _PERSON_ONLY or parent in _PERSON_OBJECTS
            )
            masked[key] = "***" if personal and value is not None else _masked(value, lowered)
        return masked
    if isinstance(node, list):
        return [_masked(item, parent) for item in node]
    return node


def describe(result: DestinationResult, *, dry_run: bool) -> str:
    """A destination's result as the command shows it: `would send` in a dry run, where nothing
    was delivered."""
    if dry_run and result.status is DeliveryStatus.DELIVERED and not result.previously:
        return f"{result.destination}: would send" + (
            f" ({result.detail})" if result.detail else ""
        )
    return result.describe()


class Summary:
    """The closing line: messages by outcome, results per destination, the exit status."""

    def __init__(self, *, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.messages: Counter[str] = Counter()
        self.per_destination: dict[str, Counter[str]] = {}
        self.failures = 0

    def add(self, run: Run) -> None:
        self.messages[run.settlement.value] += 1
        self.failures += run.settlement is not Settlement.COMPLETE
        for result in run.results:
            status = describe(result, dry_run=self.dry_run).split(":", 1)[1].split("(")[0].strip()
            self.per_destination.setdefault(result.destination, Counter())[status] += 1

    def line(self) -> str:
        total = sum(self.messages.values())
        outcomes = ", ".join(f"{n} {name}" for name, n in sorted(self.messages.items()))
        lanes = "; ".join(
            f"{name}: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            for name, counts in self.per_destination.items()
        )
        mode = "dry run" if self.dry_run else "sent"
        status = 1 if self.failures else 0
        return f"{total} message(s), {mode}: {outcomes or 'none'}. {lanes}. exit {status}"


async def check_ledger(ledger: Ledger) -> None:
    """Before sending for real: a ledger that cannot be reached is a settings problem here, not
    an outage to retry (nothing would be delivered)."""
    try:
        await ledger.read("process-check", "process-check")
    except (LedgerUnavailable, LedgerRejected) as exc:
        raise SettingsError(
            [
                f"DELIVERY_LEDGER_CONNECTION: the delivery ledger cannot be reached ({exc}). "
                "Start Azurite (npx azurite-table --inMemoryPersistence) for "
                "UseDevelopmentStorage=true, or set DELIVERY_LEDGER_ENABLED=false for a "
                "throwaway local run (duplicates possible)"
            ]
        ) from None


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
            if not show_personal_data:
                document = _masked(document)
            body = simplejson.dumps(document, indent=2, ensure_ascii=False, use_decimal=True)
        except ValueError:
            pass
        lines += ["", body if show_personal_data else redact(body)]
    text = "\n".join(lines)
    for secret in secrets or ():
        text = text.replace(secret, MASK)
    return scrub(text)
