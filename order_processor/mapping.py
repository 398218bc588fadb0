"""One declarative mapping format for every destination, in the spirit of rudder-transformer's
`data/*.json` mappings and Segment's action `fields`.

A mapping is a tuple of `Field`s, one per vendor field: the target, the documented source path it
reads, an optional transform, and a note saying why (with the public source when a vendor rule is
involved). `apply` builds the vendor object; `table` renders the same tuple as the markdown table
in docs/destinations/<name>.md (generated: `python -m order_processor docs`), so the code and the
documentation cannot drift.

Source paths, read from a `Context`:
- `order.<field>`: the inbound order (contract v1, camelCase names), e.g. `order.store.id`;
- `line.<field>`: one order line (in a mapping applied per line), e.g. `line.unitPrice`;
- `customer.<field>`: the enriched customer (`customerId`, `email`, `phone`, `firstName`, ...);
- `settings.<field>`: the destination's settings, e.g. `settings.channel`;
- `route`: the destination's name for the event (its routing column);
- `"literal"`: a constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_snake

from order_processor.contract import OrderLine
from order_processor.model import TrackingEvent

Transform = Callable[[Any, "Context"], Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What a mapping reads: one event for one destination (and, per line, the line)."""

    event: TrackingEvent
    settings: Any
    route: str = ""
    line: OrderLine | None = None
    #: values a destination derives once per event (e.g. the items list), read as `derived.<name>`
    derived: Mapping[str, Any] = field(default_factory=dict)

    def for_line(self, line: OrderLine) -> Context:
        return Context(self.event, self.settings, self.route, line, self.derived)


@dataclass(frozen=True, slots=True)
class Field:
    """One vendor field: where its value comes from, how it is shaped, and why."""

    target: str
    source: str
    transform: Transform | None = None
    note: str = ""
    #: when set, a missing (None) value is an error of the mapping, not an omitted field
    required: bool = False

    def value(self, context: Context) -> Any:
        value = read(self.source, context)
        if value is not None and self.transform is not None:
            value = self.transform(value, context)
        return value


Fields = Sequence[Field]


class MappingError(ValueError):
    """A required field came out empty: the destination decides what that means."""


def apply(fields: Fields, context: Context) -> dict[str, Any]:
    """The vendor object: one entry per field whose value is not None. A dotted target
    (`user.email`) builds the nested object; one left empty is left out too."""
    built: dict[str, Any] = {}
    for f in fields:
        value = f.value(context)
        if value is None:
            if f.required:
                raise MappingError(f"{f.target} ({f.source}) is empty")
            continue
        node = built
        *parents, leaf = f.target.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return built


@functools.cache
def _attribute(name: str) -> str:
    return to_snake(name)


def _step(node: Any, part: str) -> Any:
    if isinstance(node, BaseModel):
        return getattr(node, _attribute(part), None)
    if isinstance(node, Mapping):
        return node.get(part)
    return getattr(node, _attribute(part), None)


def read(source: str, context: Context) -> Any:
    """The value at a source path (None when any step is missing)."""
    if source.startswith('"') and source.endswith('"'):
        return source[1:-1]
    if source == "route":
        return context.route
    root, _, rest = source.partition(".")
    roots: dict[str, Any] = {
        "order": context.event.order,
        "customer": context.event.customer,
        "settings": context.settings,
        "line": context.line,
        "derived": context.derived,
    }
    if root not in roots:
        raise ValueError(f"unknown source root {root!r} in {source!r}")
    node = roots[root]
    for part in rest.split(".") if rest else ():
        if node is None:
            return None
        node = _step(node, part)
    return node


def table(fields: Fields) -> str:
    """The mapping as a markdown table: what docs/destinations/<name>.md shows."""
    rows = ["| field | source | transform | note |", "| --- | --- | --- | --- |"]
    for f in fields:
        transform = f"`{f.transform.__name__}`" if f.transform is not None else ""
        source = f.source if f.source.startswith('"') else f"`{f.source}`"
        required = " (required)" if f.required else ""
        rows.append(f"| `{f.target}`{required} | {source} | {transform} | {f.note} |")
    return "\n".join(rows)
