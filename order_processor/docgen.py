"""Everything per destination that lives in a document is generated from the registry.

- README.md: each destination's settings table (between the `generated: destination-settings`
  markers), from its settings class's fields and their descriptions;
- local.settings.example.json: each destination's `Values` (placeholders for the required
  settings, defaults for the rest);
- docs/destinations/README.md: the table of destinations (between `generated: destinations`);
- devkit/servicebus-emulator/Config.json: the emulator's entities, one filtered subscription of
  the deliveries topic per lane.

`python -m order_processor docs` rewrites them; `--check` (run by the tests) fails when one is
stale, so a new destination's rows appear without hand edits and cannot drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from order_processor import mapping
from order_processor.contract import EventType
from order_processor.destinations import DESTINATIONS, Destination, DestinationSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "local.settings.example.json"
DESTINATIONS_README = ROOT / "docs" / "destinations" / "README.md"
EMULATOR_CONFIG = ROOT / "devkit" / "servicebus-emulator" / "Config.json"
#: the emulator caps time-to-live at one hour (Azure: 14 days, infra/); one lock minute as Azure's
_EMULATOR_SUBSCRIPTION = {
    "DeadLetteringOnMessageExpiration": True,
    "DefaultMessageTimeToLive": "PT1H",
    "LockDuration": "PT1M",
    "MaxDeliveryCount": 10,
    "ForwardDeadLetteredMessagesTo": "",
    "ForwardTo": "",
    "RequiresSession": False,
}
_EMULATOR_TOPIC = {
    "DefaultMessageTimeToLive": "PT1H",
    "DuplicateDetectionHistoryTimeWindow": "PT5M",
    "RequiresDuplicateDetection": True,
}


def env_name(settings_class: type[DestinationSettings], field: str) -> str:
    return f"{settings_class.model_config.get('env_prefix', '')}{field}".upper()


def _default(cls: type[Destination], field: str, info: FieldInfo) -> str:
    settings_class = cls.settings_class
    if field in settings_class.required:
        return "(required)"
    if field == "subscription":
        return f"`{settings_class.default_subscription()}`"
    default = info.default
    if default is None:
        return "(none)"
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, bool):
        default = str(default).lower()
    return f"`{default}`"


def settings_table(cls: type[Destination]) -> str:
    settings_class = cls.settings_class
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for field, info in settings_class.model_fields.items():
        meaning = (info.description or "").replace("\n", " ")
        rows.append(
            f"| `{env_name(settings_class, field)}` | {_default(cls, field, info)} | {meaning} |"
        )
    prefix = settings_class.model_config.get("env_prefix", "")
    heading = f"#### {cls.title} (`{prefix}*`): [docs](docs/destinations/{cls.name}.md)"
    return "\n".join([heading, "", *rows])


def destination_settings_section() -> str:
    return "\n\n".join(settings_table(cls) for cls in DESTINATIONS.values())


def example_values(cls: type[Destination]) -> dict[str, str]:
    """What local.settings.example.json shows for one destination."""
    settings_class = cls.settings_class
    values: dict[str, str] = {}
    for field, info in settings_class.model_fields.items():
        name = env_name(settings_class, field)
        if field in settings_class.required:
            # The example loads as it is: a dry run's example value, a placeholder for secrets.
            example = settings_class.example.get(field)
            secret = "SecretStr" in str(info.annotation)
            placeholder = f"<{name.lower().replace('_', '-')}>"
            values[name] = example if example is not None and not secret else placeholder
        elif field == "subscription":
            values[name] = settings_class.default_subscription()
        else:
            values[name] = _text(info.default)
    return values


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _destination_names(prefixes: Iterable[str], values: dict[str, str]) -> set[str]:
    return {k for k in values if any(k.startswith(p) for p in prefixes)}


def example_document(current: dict[str, Any]) -> dict[str, Any]:
    """The example file with every destination's Values regenerated (others kept as written)."""
    prefixes = [
        str(c.settings_class.model_config.get("env_prefix", "")) for c in DESTINATIONS.values()
    ]
    values: dict[str, str] = dict(current.get("Values", {}))
    for name in _destination_names(prefixes, values):
        del values[name]
    for cls in DESTINATIONS.values():
        values |= example_values(cls)
    return {**current, "Values": values}


def _events(cls: type[Destination]) -> str:
    taken = [e.value for e in EventType if e in cls.routes]
    return "all four" if len(taken) == len(EventType) else ", ".join(taken)


def mapping_section(cls: type[Destination]) -> str:
    """The destination's mapping tables, as its docs page shows them."""
    return "\n\n".join(
        f"### {title}\n\n{mapping.table(fields)}" for title, fields in cls.mappings.items()
    )


def routing_table() -> str:
    """Which event goes where: each destination's routing column, side by side."""
    names = list(DESTINATIONS)
    rows = [
        "| eventType | " + " | ".join(f"`{n}`" for n in names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for event in EventType:
        cells = [
            f"`{cls.routes[event]}`" if event in cls.routes else "skipped"
            for cls in DESTINATIONS.values()
        ]
        rows.append(f"| {event.value} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def destinations_table() -> str:
    rows = [
        "| name | lane (function / subscription setting) | module | docs | events |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, cls in DESTINATIONS.items():
        path = cls.__module__.replace(".", "/")
        module = f"{path}/" if (ROOT / path).is_dir() else f"{path}.py"
        rows.append(
            f"| `{name}` | `{cls.function_name()}` / `{cls.subscription_setting()}` "
            f"| `{module}` | [{name}.md]({name}.md) | {_events(cls)} |"
        )
    return "\n".join(rows)


def lane_filters() -> dict[str, str]:
    """Subscription (default name) -> the SQL filter that gives it its lane's messages: one per
    destination, and the accept stage's own retry lane."""
    from order_processor.accept import ACCEPT_LANE
    from order_processor.settings import CoreSettings

    accept_retry = str(CoreSettings.model_fields["accept_retry_subscription"].default)
    lanes = {accept_retry: ACCEPT_LANE}
    lanes |= {cls.settings_class.default_subscription(): name for name, cls in DESTINATIONS.items()}
    return {subscription: f"destination = '{lane}'" for subscription, lane in lanes.items()}


def emulator_config() -> dict[str, Any]:
    """The Service Bus emulator's entities for a local `func start` (default names)."""
    from order_processor.settings import CoreSettings

    fields = CoreSettings.model_fields

    def subscription(name: str, rule: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = {"Name": name, "Properties": dict(_EMULATOR_SUBSCRIPTION)}
        if rule is not None:
            found["Rules"] = [
                {
                    "Name": "lane",
                    "Properties": {"FilterType": "Sql", "SqlFilter": {"SqlExpression": rule}},
                }
            ]
        return found

    orders = {
        "Name": fields["orders_topic"].default,
        "Properties": dict(_EMULATOR_TOPIC),
        "Subscriptions": [subscription(str(fields["orders_subscription"].default))],
    }
    deliveries = {
        "Name": fields["deliveries_topic"].default,
        "Properties": dict(_EMULATOR_TOPIC),
        "Subscriptions": [subscription(name, rule) for name, rule in lane_filters().items()],
    }
    namespace = {"Name": "sbemulatorns", "Queues": [], "Topics": [orders, deliveries]}
    return {"UserConfig": {"Namespaces": [namespace], "Logging": {"Type": "File"}}}


def _splice(text: str, marker: str, content: str) -> str:
    pattern = re.compile(
        rf"(<!-- generated: {marker} -->\n)(.*?)(\n<!-- /generated: {marker} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"no '<!-- generated: {marker} -->' section")
    return pattern.sub(lambda m: m.group(1) + content + m.group(3), text, count=1)


def rendered() -> dict[Path, str]:
    """Every generated file as it should be."""
    example = example_document(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    files = {
        README: _splice(
            README.read_text(encoding="utf-8"),
            "destination-settings",
            destination_settings_section(),
        ),
        EXAMPLE: json.dumps(example, indent=2) + "\n",
        DESTINATIONS_README: _splice(
            _splice(
                DESTINATIONS_README.read_text(encoding="utf-8"),
                "destinations",
                destinations_table(),
            ),
            "routing",
            routing_table(),
        ),
        EMULATOR_CONFIG: json.dumps(emulator_config(), indent=2) + "\n",
    }
    for cls in DESTINATIONS.values():
        page = ROOT / "docs" / "destinations" / f"{cls.name}.md"
        if cls.mappings and page.exists():
            files[page] = _splice(page.read_text(encoding="utf-8"), "mapping", mapping_section(cls))
    return files


def stale() -> list[Path]:
    return [path for path, text in rendered().items() if path.read_text(encoding="utf-8") != text]


def write() -> list[Path]:
    changed = []
    for path, text in rendered().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
