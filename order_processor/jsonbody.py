"""JSON for outbound bodies: Decimal money written as exact JSON numbers, times as ISO 8601."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import simplejson


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: one encoder for the process: `simplejson.dumps` with options builds a new one per call
_ENCODER = simplejson.JSONEncoder(
    use_decimal=True, default=_default, separators=(",", ":"), ensure_ascii=False
)


def dumps(document: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal('12.50') stays 12.50 (never a float's 12.5000000001)."""
    text: str = _ENCODER.encode(document)
    return text.encode("utf-8")


def array(elements: Sequence[bytes]) -> bytes:
    """A JSON array of already-encoded elements: bulk bodies reuse each event's one encoding."""
    return b"[" + b",".join(elements) + b"]"


def utc_z(moment: datetime) -> str:
    """UTC with a `Z`, second precision (what Profile Store and most trackers expect)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
