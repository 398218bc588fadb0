"""Draw the delivery overview workbook's layout (docs/workbook-layout.png) from infra/workbook.json.

    python docs/workbook_layout.py [--out docs/workbook-layout.png]

The picture is the layout, not data: each tile where the workbook puts it (full or half width,
in order), with its title and a sketch of its visualization (time chart, table); the series
drawn are made up. Regenerate it when infra/workbook.json changes
(`python -m order_processor.infra_lanes` rewrites that file). Needs matplotlib (a development
dependency, requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
WORKBOOK = ROOT / "infra" / "workbook.json"
OUT = ROOT / "docs" / "workbook-layout.png"
WIDTH = 12.0  # inches across the workbook
HEIGHTS = {1: 0.9, 9: 0.55, "timechart": 2.0, "table": 2.0}
GAP = 0.12
COLOURS = ["#0078d4", "#e3008c", "#107c10", "#ff8c00", "#5c2d91", "#008575"]


@dataclass(frozen=True)
class Placed:
    item: dict[str, Any]
    x: float
    y: float
    width: float
    height: float


def place(items: list[dict[str, Any]]) -> tuple[list[Placed], float]:
    """Each item's box, top to bottom, left to right (as the workbook renders `customWidth`),
    and the total height."""
    placed: list[Placed] = []
    y = x = row_height = 0.0
    for item in items:
        width = WIDTH * int(item.get("customWidth", "100")) / 100
        height = HEIGHTS.get(item["type"]) or HEIGHTS[item["content"]["visualization"]]
        if x + width > WIDTH + 1e-6:  # a new row
            y, x, row_height = y + row_height + GAP, 0.0, 0.0
        placed.append(Placed(item, x, y, width, height))
        x, row_height = x + width, max(row_height, height)
    return placed, y + row_height


def _box(axes: Axes, box: Placed, total: float, face: str = "white") -> tuple[float, float]:
    """Draw the tile's frame; returns its bottom-left corner in plot coordinates."""
    left, bottom = box.x + 0.04, total - box.y - box.height
    axes.add_patch(
        FancyBboxPatch(
            (left, bottom),
            box.width - 0.08,
            box.height,
            boxstyle="round,pad=0,rounding_size=0.05",
            linewidth=0.8,
            edgecolor="#c8c6c4",
            facecolor=face,
        )
    )
    return left, bottom


def _title(axes: Axes, left: float, top: float, text: str, width: float) -> None:
    wrapped = textwrap.shorten(text, width=int(width * 11), placeholder="...")
    axes.text(left + 0.12, top - 0.22, wrapped, fontsize=8.5, fontweight="bold", va="center")


def _timechart(axes: Axes, left: float, bottom: float, box: Placed, rng: random.Random) -> None:
    inner_w, inner_h = box.width - 0.5, box.height - 0.65
    for series in range(4):
        level = rng.uniform(0.2, 0.8)
        points = []
        for step in range(30):
            level = min(0.95, max(0.05, level + rng.uniform(-0.08, 0.08)))
            points.append((left + 0.2 + inner_w * step / 29, bottom + 0.15 + inner_h * level))
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, linewidth=1.0, color=COLOURS[series % len(COLOURS)])
    axes.plot(
        [left + 0.2, left + 0.2 + inner_w], [bottom + 0.15] * 2, color="#8a8886", linewidth=0.6
    )


def columns(query: str) -> list[str]:
    """The columns a table tile shows: its last summarize's groups and aggregates."""
    if "evaluate pivot(outcome" in query:
        return ["lane", "delivered", "skipped", "retried", "dead-lettered"]
    last = [part for part in query.split("\n| ") if part.startswith("summarize")][-1]
    aggregates, _, groups = last.partition(" by ")
    return [g.strip() for g in groups.split(",")] + re.findall(r"(\w+) = ", aggregates)


def _table(axes: Axes, left: float, bottom: float, box: Placed) -> None:
    rows, top = 6, bottom + box.height - 0.45
    step = (box.height - 0.6) / rows
    names = columns(box.item["content"]["query"])
    for index, name in enumerate(names):
        axes.text(
            left + 0.2 + index * (box.width - 0.5) / len(names),
            top - step * 0.4,
            name,
            fontsize=7,
            color="#323130",
            va="center",
        )
    for row in range(rows):
        y = top - row * step
        axes.add_patch(
            FancyBboxPatch(
                (left + 0.15, y - step * 0.7),
                box.width - 0.4,
                step * 0.6,
                boxstyle="square,pad=0",
                linewidth=0,
                facecolor="#edebe9" if row == 0 else "#f8f8f8",
            )
        )


def draw(workbook: dict[str, Any], out: Path) -> list[Placed]:
    placed, total = place(workbook["items"])
    figure = plt.figure(figsize=(WIDTH, total))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, WIDTH)
    axes.set_ylim(0, total)
    axes.axis("off")
    rng = random.Random(15)  # noqa: S311 - the same made-up lines every time, not a secret
    for box in placed:
        item = box.item
        if item["type"] == 1:
            left, bottom = _box(axes, box, total, face="#f3f2f1")
            _title(axes, left, bottom + box.height, "Delivery overview", box.width)
            axes.text(
                left + 0.12,
                bottom + 0.25,
                "where orders went, how each lane is doing; trace / lanes commands; "
                "docs/operations.md",
                fontsize=7.5,
                color="#605e5c",
            )
            continue
        if item["type"] == 9:
            left, bottom = _box(axes, box, total, face="#f3f2f1")
            for index, parameter in enumerate(item["content"]["parameters"]):
                axes.text(
                    left + 0.15 + index * 2.4,
                    bottom + box.height / 2,
                    f"{parameter['label']}: {'Last 24 hours' if index == 0 else 'All lanes'} v",
                    fontsize=8,
                    va="center",
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#8a8886"},
                )
            continue
        left, bottom = _box(axes, box, total)
        _title(axes, left, bottom + box.height, item["content"]["title"], box.width)
        if item["content"]["visualization"] == "timechart":
            _timechart(axes, left, bottom, box, rng)
        else:
            _table(axes, left, bottom, box)
    figure.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    placed = draw(json.loads(WORKBOOK.read_text()), args.out)
    print(f"wrote {args.out}: {len(placed)} tiles")


if __name__ == "__main__":
    main()
