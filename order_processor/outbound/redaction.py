"""Personal data and credentials out of free text: vendor error bodies, exception messages, logs.

`fingerprint` gives a stable, non-reversible handle for correlating one customer across log lines;
`redact` scrubs free text of emails, phone and card numbers and bearer/basic credentials.
"""

from __future__ import annotations

import hashlib
import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Runs of 7+ digits, optionally separated by single spaces/dashes, with an optional leading +:
# card, loyalty and phone numbers all look like this. ISO dates (2026-11-20) are left alone.
_DIGITS = re.compile(r"(?<![\w.])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ \-]?\d){6,}")
_CREDENTIAL = re.compile(
    r"(?i)\b(bearer|basic|epi-single)\s+[A-Za-z0-9._~+/=-]+"
    r"|((?:api[_-]?key|subscription-key|sitetoken|client_secret|password|access_token|token|sig)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
)


def fingerprint(value: str | None) -> str:
    """Short keyed-free hash for correlating a customer identifier without revealing it."""
    if not value:
        return "-"
    digest = hashlib.sha256(value.strip().lower().encode()).hexdigest()
    return f"h:{digest[:12]}"


def _mask_credential(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)} ***"
    return f"{match.group(2)}***"


def redact(text: str) -> str:
    text = _CREDENTIAL.sub(_mask_credential, text)
    text = _EMAIL.sub("<email>", text)
    return _DIGITS.sub("<number>", text)
