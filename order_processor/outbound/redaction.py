"""Personal data and credentials out of free text: vendor error bodies, exception messages, logs.

`fingerprint` gives a stable, non-reversible handle for correlating one customer across log lines;
`redact` scrubs free text of emails, phone and card numbers and bearer/basic credentials;
`scrub` removes the configured secrets themselves (`register_secrets`, done when the settings load)
and the OAuth tokens in use (`register_rotating`), wherever a vendor or a library echoes them: by
value, not by what they look like. `excerpt` cleans before it cuts.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretStr

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Runs of 7+ digits, optionally separated by single spaces/dashes, with an optional leading +:
# card, loyalty and phone numbers all look like this. ISO dates (2026-11-20) are left alone.
_DIGITS = r"(?<![\w.])(?!\d{4}-\d\d-\d\d)\+?\d(?:[ \-]?\d){6,}"
# An event key's digest (`orderId:OrderCreated:<16 hex>`, model.event_key) is a hash of the order,
# not a number about anyone; matched first and kept whole, so the keys the logs exist to carry are
# never cut by a digest that happens to start with (or be all) digits. Public for checks that scan
# logs for numbers the same way (tests/pii_guard.py).
EVENT_KEY_DIGEST = r":Order[A-Z][a-z]+:[0-9a-f]{16}(?![0-9a-f])"
_NUMBERS = re.compile(f"(?P<kept>{EVENT_KEY_DIGEST})|{_DIGITS}")
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
    return _NUMBERS.sub(_mask_number, text)


def _mask_number(match: re.Match[str]) -> str:
    return match.group("kept") or "<number>"


def excerpt(text: str, *, limit: int = 300, clean: Callable[[str], str] = redact) -> str:
    """The first `limit` characters of `text`, cleaned first: a cut made before cleaning can leave
    part of a secret or an email that no pattern and no value recognises any more."""
    # Cleaning never grows text by more than a mask per match, so 4x the limit is plenty to
    # fill `limit` (and bounds the work on a large vendor body).
    return clean(text[: limit * 4])[:limit]


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
    added = {
        form for value in values if len(value) >= MIN_SECRET_LENGTH for form in secret_forms(value)
    }
    if added <= _secrets:
        return
    _secrets.update(added)
    _compile()


#: The latest values per name of secrets that are replaced as they expire (OAuth tokens): the
#: previous one is kept too (a reply in flight may still echo it), older ones are forgotten, so
#: a process that refreshes tokens for years keeps a pattern of bounded size.
_rotating: dict[str, tuple[str, ...]] = {}


def register_rotating(name: str, value: str) -> None:
    """Mask `value` like a configured secret, in place of the one before the last under `name`."""
    latest = _rotating.get(name, ())
    if latest and latest[-1] == value:
        return
    _rotating[name] = (*latest[-1:], value)
    _compile()


def _compile() -> None:
    global _by_value
    rotating = {
        form
        for values in _rotating.values()
        for value in values
        if len(value) >= MIN_SECRET_LENGTH
        for form in secret_forms(value)
    }
    ordered = sorted(_secrets | rotating, key=len, reverse=True)  # longest first: no partial masks
    _by_value = re.compile("|".join(re.escape(value) for value in ordered)) if ordered else None


def secret_values_of(block: BaseModel) -> list[str]:
    """The values of a settings block's secret fields (SecretStr), set ones only."""
    return [
        value.get_secret_value()
        for value in (getattr(block, field) for field in type(block).model_fields)
        if isinstance(value, SecretStr) and value.get_secret_value()
    ]


def basic_pairs(user: str | None, secrets: Iterable[str]) -> list[str]:
    """`user:secret` for each secret: what Basic auth base64-encodes into its header (a vendor
    echoing the header, decoded or not, is then masked whole)."""
    return [f"{user}:{secret}" for secret in secrets] if user else []


def scrub(text: str) -> str:
    """The configured secrets out of `text`, by value and by credential pattern; personal data is
    left to `redact` (descriptions keep their order ids)."""
    if _by_value is not None:
        text = _by_value.sub(MASK, text)
    return _CREDENTIAL.sub(_mask_credential, text)
