"""Personal data and credentials out of free text: vendor error bodies, exception messages, logs.

`fingerprint` gives a stable, non-reversible handle for correlating one customer across log lines;
`redact` scrubs free text of emails, phone and card numbers and bearer/basic credentials;
`scrub` removes the configured secrets themselves (`register_secrets`, done when the settings load),
wherever a vendor or a library echoes them: by value, not by what they look like.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Runs of 7+ digits, optionally separated by single spaces/dashes, with an optional leading +:
# card, loyalty and phone numbers all look like this. ISO dates (2026-11-20) are left alone.
_DIGITS = re.compile(r"(?<![\w.])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ \-]?\d){6,}")
_CREDENTIAL = re.compile(
    r"(?i)\b(bearer|basic|epi-single)\s+[A-Za-z0-9._~+/=-]+"
    r"|((?:api[_-]?key|subscription-key|sitetoken|client_secret|password|access_token|token|sig"
    r"|accountkey|sharedaccesskey|sharedaccesssignature)"
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
    text = scrub(text)
    text = _EMAIL.sub("<email>", text)
    return _DIGITS.sub("<number>", text)


#: Shorter values are not matched by value (they would turn up in ordinary text by chance); the
#: patterns above still apply to them.
MIN_SECRET_LENGTH = 6
MASK = "***"
_secrets: set[str] = set()
_by_value: re.Pattern[str] | None = None


def secret_forms(value: str) -> set[str]:
    """A secret as it may be echoed back: itself, URL-encoded (a key in a path or a form body)
    and base64-encoded (inside Basic credentials)."""
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        base64.b64encode(value.encode()).decode(),
    }


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values (and their encoded forms) in everything `scrub` and `redact` see, for
    the rest of the process. Called with every secret setting when the settings load."""
    global _by_value
    added = {
        form for value in values if len(value) >= MIN_SECRET_LENGTH for form in secret_forms(value)
    }
    if added <= _secrets:
        return
    _secrets.update(added)
    ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial masks
    _by_value = re.compile("|".join(re.escape(value) for value in ordered))


def scrub(text: str) -> str:
    """The configured secrets out of `text`, by value and by credential pattern; personal data is
    left to `redact` (descriptions keep their order ids)."""
    if _by_value is not None:
        text = _by_value.sub(MASK, text)
    return _CREDENTIAL.sub(_mask_credential, text)
