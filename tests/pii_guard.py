"""A capturing handler on the root logger for the whole test session: every record any test's
scenario produces is rendered (message, extras, exception) and, at the end, searched for clear-text
emails, phone numbers, card numbers and the fakes' keys. Any hit fails the session."""

from __future__ import annotations

import logging
import re

from order_processor.outbound.redaction import EVENT_KEY_DIGEST
from tests.fakes import esputnik, product_recs, richrelevance
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY
from tests.fakes.loyalty import CUSTOMERS
from tests.fakes.profile_store import API_KEY as PROFILE_STORE_KEY

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
CARD = re.compile(r"(?<!\d)\d{16}(?!\d)")
SECRETS = {
    LOYALTY_KEY,
    PROFILE_STORE_KEY,
    esputnik.API_KEY,
    product_recs.SITE_TOKEN,
    richrelevance.CLIENT_SECRET,
    *CUSTOMERS,
    *(str(c[field]) for c in CUSTOMERS.values() for field in ("email", "phone") if c.get(field)),
}
_STANDARD = set(vars(logging.makeLogRecord({})))


def render(record: logging.LogRecord) -> str:
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    return f"{record.name}: {record.getMessage()} {extras} {record.exc_text or ''}"


def leaks(line: str) -> list[str]:
    found = [secret for secret in SECRETS if secret in line]
    # An event key's digest is a hash of the order; one in ~1,800 is all digits, like a card.
    found += EMAIL.findall(line) + CARD.findall(re.sub(EVENT_KEY_DIGEST, ":<digest>", line))
    return found


class PiiGuard(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.findings: list[tuple[str, str]] = []  # (leak, line)

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        line = render(record)
        self.findings += [(leak, line[:300]) for leak in leaks(line)]
