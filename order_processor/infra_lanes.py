"""The lanes as infrastructure, derived from the destination registry.

Every registered destination has a lane: a subscription of the deliveries topic whose SQL filter
takes only the delivery messages carrying `destination = '<name>'`, read by the function
`deliver_<name>` through the app setting `<NAME>_SUBSCRIPTION`. The accept stage's own retry copies
have one more (`accept_order_retry`, ACCEPT_RETRY_SUBSCRIPTION, `destination = 'accept'`).

`lanes_document()` lists them, and `python -m order_processor.infra_lanes` writes that list
everywhere the infrastructure reads it, so a new destination reaches Azure with this one command:

- infra/lanes.json: infra/main.bicep loads it (`loadJsonContent`) and loops over its `lanes`;
- the `lanes` variable of infra/main.json (the hand-maintained ARM twin: the same array).

The emulator's copy of the lanes (devkit/servicebus-emulator/Config.json) is written by
`python -m order_processor docs` with the other generated documents; both use the same filters
(`docgen.lane_filters`). `--check` writes nothing and exits 1 naming every file that differs
(tests/test_infra.py checks the same thing).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from order_processor.accept import ACCEPT_LANE
from order_processor.destinations import DESTINATIONS, Destination
from order_processor.docgen import lane_filters
from order_processor.settings import CoreSettings

ROOT = Path(__file__).resolve().parent.parent
LANES_JSON = Path("infra/lanes.json")
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


def destination_lane(cls: type[Destination]) -> dict[str, str]:
    return {
        "name": cls.name,
        "kind": "destination",
        "function": cls.function_name(),
        "subscription": cls.settings_class.default_subscription(),
        "subscriptionSetting": cls.subscription_setting(),
        "filter": lane_filters()[cls.settings_class.default_subscription()],
    }


def accept_retry_lane() -> dict[str, str]:
    return {
        "name": ACCEPT_LANE,
        "kind": "accept",
        "function": ACCEPT_RETRY_FUNCTION,
        "subscription": _default("accept_retry_subscription"),
        "subscriptionSetting": ACCEPT_RETRY_SETTING,
        "filter": lane_filters()[_default("accept_retry_subscription")],
    }


def lanes_document() -> dict[str, Any]:
    """Every subscription of the deliveries topic: one lane per registered destination, in
    registration order, then the accept stage's retry lane."""
    return {
        "generatedBy": GENERATED_BY,
        "lanes": [*(destination_lane(cls) for cls in DESTINATIONS.values()), accept_retry_lane()],
    }


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _main_json(current: dict[str, Any], lanes: list[dict[str, str]]) -> dict[str, Any]:
    template = copy.deepcopy(current)
    template["variables"]["lanes"] = lanes
    return template


def rendered(root: Path = ROOT) -> dict[Path, str]:
    """Each generated file with the content the registry gives (relative path -> text)."""
    document = lanes_document()
    lanes = document["lanes"]
    main = json.loads((root / MAIN_JSON).read_text())
    return {LANES_JSON: _dump(document), MAIN_JSON: _dump(_main_json(main, lanes))}


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
        description="Write the lanes (one per registered destination, plus the accept retry "
        "lane) into infra/lanes.json and infra/main.json.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any file is out of date"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root: Path = args.root
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
