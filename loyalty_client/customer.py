"""The customer as the loyalty provider knows them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from order_processor.outbound.redaction import fingerprint


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer:
    customer_id: str | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None

    @property
    def name(self) -> str | None:
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) or None

    def __repr__(self) -> str:
        # Never let a customer's contact details slip into a log or a traceback; nor the id,
        # which some providers make of the card number.
        customer_id, email = fingerprint(self.customer_id), fingerprint(self.email)
        return f"Customer(customer_id={customer_id}, email={email})"

    __str__ = __repr__


def read_path(document: Any, path: str) -> Any:
    """Follow a dotted path (`data.profile.email`, `items.0.id`) through dicts and lists."""
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


def text_at(document: Any, path: str) -> str | None:
    value = read_path(document, path)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None
