"""The lanes as infrastructure, derived from the destination registry.

Every registered destination has a lane: a subscription of the deliveries topic whose SQL filter
takes only the delivery messages carrying `destination = '<name>'`, read by the function
`deliver_<name>` through the app setting `<NAME>_SUBSCRIPTION`. The accept stage's own retry copies
have one more (`accept_order_retry`, ACCEPT_RETRY_SUBSCRIPTION, `destination = 'accept'`).

A destination's lane also carries the app settings its settings class declares, so the template
builds them instead of keeping a hand-written parameter per setting:

- `settings`: every non-secret setting (env name -> its default as an app setting: `true`/`false`,
  an enum's value, `''` for none, which the app reads as unset), `<NAME>_SUBSCRIPTION` excepted
  (that is `subscriptionSetting`, named by the template);
- `secrets`: every secret (SecretStr) setting -> its Key Vault secret name (the env name in lower
  case with dashes, e.g. PROFILE_STORE_API_KEY -> `profile-store-api-key`): the template sets a Key
  Vault reference, never a value;
- `required`: the non-secret settings a deployment must give (`destinationSettings`) while the
  destination is enabled; its required secrets are in Key Vault;
- `enabledSetting`: `<NAME>_ENABLED`, whose value decides whether `required` applies.

The accept retry lane has none of these (empty, so every lane has the same shape): its settings
are the core's, kept in infra/main.bicep.

`lanes_document()` lists them, and `python -m order_processor.infra_lanes` writes that list
everywhere the infrastructure reads it, so a new destination reaches Azure with this one command:

- infra/lanes.json: infra/main.bicep loads it (`loadJsonContent`) and loops over its `lanes`;
- the `lanes` variable of infra/main.json (the hand-maintained ARM twin: the same array);
- infra/workbook.json and main.json's `workbookContent`: the delivery overview workbook, whose
  lane picker lists the lanes (`order_processor.infra_workbook`).

The emulator's copy of the lanes (devkit/servicebus-emulator/Config.json) is written by
`python -m order_processor docs` with the other generated documents; both use the same filters
(`docgen.lane_filters`). `--check` writes nothing and exits 1 naming every file that differs
(tests/test_infra.py checks the same thing); `--secrets` prints the destinations' Key Vault secret
names, the ones a deployment must set (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from order_processor.accept import ACCEPT_LANE
from order_processor.destinations import DESTINATIONS, Destination, DestinationSettings
from order_processor.docgen import lane_filters
from order_processor.infra_workbook import arm_literal, workbook
from order_processor.settings import CoreSettings

ROOT = Path(__file__).resolve().parent.parent
LANES_JSON = Path("infra/lanes.json")
WORKBOOK_JSON = Path("infra/workbook.json")
MAIN_JSON = Path("infra/main.json")

#: the function that takes the accept stage's retry copies (function_app.build_app)
ACCEPT_RETRY_FUNCTION = "accept_order_retry"
ACCEPT_RETRY_SETTING = "ACCEPT_RETRY_SUBSCRIPTION"
GENERATED_BY = (
    "python -m order_processor.infra_lanes, from the destination registry "
    "(order_processor/destinations): do not edit by hand"
)


def _default(field: str) -> str:
    return str(CoreSettings.model_fields[field].default)


def env_name(settings_class: type[DestinationSettings], field: str, info: FieldInfo) -> str:
    """The app setting a field is read from (as `settings.setting_names` names it)."""
    alias = info.validation_alias
    if isinstance(alias, str):
        return alias
    return f"{settings_class.model_config.get('env_prefix', '')}{field}".upper()


def is_secret(info: FieldInfo) -> bool:
    """A SecretStr field (also optional, `SecretStr | None`): never a value in the template."""
    annotation = info.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(is_secret_type(arg) for arg in typing.get_args(annotation))
    return is_secret_type(annotation)


def is_secret_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, SecretStr)


def secret_name(setting: str) -> str:
    """The Key Vault secret holding an app setting: PROFILE_STORE_API_KEY -> profile-store-api-key
    (Key Vault names take letters, digits and dashes)."""
    return setting.lower().replace("_", "-")


def app_setting_value(value: Any) -> str:
    """A default as an app setting: what the app parses back to the same value (`''`: unset, the
    settings ignore empty values)."""
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def destination_settings(cls: type[Destination]) -> dict[str, Any]:
    """A destination's app settings from its settings class: `settings` (non-secret, with their
    defaults), `secrets` (-> Key Vault secret name), `required` (non-secret, given by the
    deployment while enabled) and `enabledSetting`."""
    settings_class = cls.settings_class
    settings: dict[str, str] = {}
    secrets: dict[str, str] = {}
    required: list[str] = []
    enabled = ""
    for field, info in settings_class.model_fields.items():
        name = env_name(settings_class, field, info)
        if field == "subscription":  # the lane's subscriptionSetting, named by the template
            continue
        if field == "enabled":
            enabled = name
        if is_secret(info):
            secrets[name] = secret_name(name)
            continue
        if field in settings_class.required:
            settings[name] = ""  # no default: the deployment gives it (destinationSettings)
            required.append(name)
        else:
            settings[name] = app_setting_value(info.get_default(call_default_factory=True))
    return {
        "settings": settings,
        "secrets": secrets,
        "required": required,
        "enabledSetting": enabled,
    }


def destination_lane(cls: type[Destination]) -> dict[str, Any]:
    return {
        "name": cls.name,
        "kind": "destination",
        "function": cls.function_name(),
        "subscription": cls.settings_class.default_subscription(),
        "subscriptionSetting": cls.subscription_setting(),
        "filter": lane_filters()[cls.settings_class.default_subscription()],
        **destination_settings(cls),
    }


def accept_retry_lane() -> dict[str, Any]:
    return {
        "name": ACCEPT_LANE,
        "kind": "accept",
        "function": ACCEPT_RETRY_FUNCTION,
        "subscription": _default("accept_retry_subscription"),
        "subscriptionSetting": ACCEPT_RETRY_SETTING,
        "filter": lane_filters()[_default("accept_retry_subscription")],
        # the same shape as a destination's lane; the accept stage's settings are the core's
        "settings": {},
        "secrets": {},
        "required": [],
        "enabledSetting": "",
    }


def lanes_document() -> dict[str, Any]:
    """Every subscription of the deliveries topic: one lane per registered destination, in
    registration order, then the accept stage's retry lane."""
    return {
        "generatedBy": GENERATED_BY,
        "lanes": [*(destination_lane(cls) for cls in DESTINATIONS.values()), accept_retry_lane()],
    }


def secret_names() -> list[str]:
    """Every destination's Key Vault secrets, in registration order."""
    return [name for lane in lanes_document()["lanes"] for name in lane["secrets"].values()]


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _main_json(current: dict[str, Any], lanes: list[dict[str, Any]]) -> dict[str, Any]:
    template = copy.deepcopy(current)
    template["variables"]["lanes"] = lanes
    template["variables"]["workbookContent"] = arm_literal(workbook(lanes))
    return template


def rendered(root: Path = ROOT) -> dict[Path, str]:
    """Each generated file with the content the registry gives (relative path -> text)."""
    document = lanes_document()
    lanes = document["lanes"]
    main = json.loads((root / MAIN_JSON).read_text())
    return {
        LANES_JSON: _dump(document),
        WORKBOOK_JSON: _dump(workbook(lanes)),
        MAIN_JSON: _dump(_main_json(main, lanes)),
    }


def stale(root: Path = ROOT) -> list[Path]:
    """The generated files whose content differs from what the registry gives."""
    return [
        path
        for path, text in rendered(root).items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m order_processor.infra_lanes",
        description="Write the lanes (one per registered destination with its subscription, "
        "filter and app settings, plus the accept retry lane) into infra/lanes.json and "
        "infra/main.json, and the workbook that lists them into infra/workbook.json and "
        "infra/main.json.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file is out of date"
    )
    mode.add_argument(
        "--secrets",
        action="store_true",
        help="write nothing; print the Key Vault secret names the destinations' app settings "
        "reference, one a line (docs/deploy.md sets them)",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.secrets:
        for name in secret_names():
            print(name)
        return 0
    if args.check:
        out_of_date = stale(root)
        for path in out_of_date:
            print(f"{path} is out of date: run python -m order_processor.infra_lanes")
        return 1 if out_of_date else 0
    for path, text in rendered(root).items():
        target = root / path
        if target.exists() and target.read_text() == text:
            print(f"{path}: up to date")
            continue
        target.write_text(text)
        print(f"{path}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
