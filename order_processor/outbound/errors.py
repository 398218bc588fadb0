"""The failure taxonomy, in one place.

Every outbound call (loyalty provider, token endpoints, destinations) turns what went wrong into a
`DeliveryError` that says whether trying again can help. Descriptions carry the system, the HTTP
status and the vendor's code/message, never personal data: callers pass vendor text through
`logs.redact` before it reaches an error.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from enum import StrEnum

import httpx

from order_processor.outbound.redaction import excerpt, scrub

#: 408 Request Timeout, 425 Too Early and 429 Too Many Requests are worth retrying; every other 4xx
#: means the request itself is wrong and would fail again.
TRANSIENT_4XX = frozenset({408, 425, 429})


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class DeliveryError(Exception):
    """A call to an outside system failed; `kind` decides retry versus dead-letter."""

    def __init__(
        self,
        *,
        kind: FailureKind,
        system: str,
        message: str,
        status: int | None = None,
        vendor_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.system = system
        # Vendors echo what they were sent: a configured secret never travels on in an error.
        self.message = scrub(message)
        self.status = status
        self.vendor_code = vendor_code
        self.retry_after = retry_after
        super().__init__(self.describe())

    @property
    def transient(self) -> bool:
        return self.kind is FailureKind.TRANSIENT

    def describe(self) -> str:
        parts = [self.system]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.vendor_code:
            parts.append(self.vendor_code)
        return f"{' '.join(parts)}: {self.message}"


def kind_for_status(status: int) -> FailureKind | None:
    """None for success, otherwise whether the failure is worth retrying."""
    if status < 400:
        return None
    if status >= 500 or status in TRANSIENT_4XX:
        return FailureKind.TRANSIENT
    return FailureKind.PERMANENT


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_from_response(
    system: str,
    response: httpx.Response,
    *,
    message: str | None = None,
    vendor_code: str | None = None,
) -> DeliveryError:
    """Classify a non-2xx response (the caller decides what counts as success)."""
    kind = kind_for_status(response.status_code) or FailureKind.PERMANENT
    return DeliveryError(
        kind=kind,
        system=system,
        status=response.status_code,
        vendor_code=vendor_code,
        # The reason phrase is the vendor's text too: redacted like a body.
        message=message or excerpt(response.reason_phrase) or "request failed",
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def error_from_exception(system: str, exc: httpx.HTTPError) -> DeliveryError:
    """Network-level failures: timeouts, resets, DNS, protocol errors are all worth retrying."""
    return DeliveryError(
        kind=FailureKind.TRANSIENT,
        system=system,
        message=f"{type(exc).__name__}",
    )
