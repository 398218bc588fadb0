"""The session-wide guard (tests/pii_guard.py) itself: it must see records and recognise leaks."""

from __future__ import annotations

import logging

from tests.conftest import PII_GUARD
from tests.pii_guard import PiiGuard, leaks


def test_the_guard_recognises_emails_cards_and_keys() -> None:
    assert leaks("sent to ann.shopper@example.com") != []
    assert leaks("card 6330001234567890 unknown") != []
    assert leaks("key baseline-key") == []
    assert leaks("order 100245 delivered; fingerprint c-1a2b3c4d") == []
    # an event key whose digest happens to be all digits is no card; the same digits alone are
    assert leaks("event_key R-8:OrderCreated:7202780575461275") == []
    assert leaks("R-8:7202780575461275") == ["7202780575461275"]


def test_the_guard_sees_every_logger_and_the_redaction_runs_first() -> None:
    before = PII_GUARD.records
    logging.getLogger("order_processor.test").warning("customer ann.shopper@example.com")
    assert PII_GUARD.records == before + 1
    local = PiiGuard()
    local.emit(logging.makeLogRecord({"msg": "raw bo.buyer@example.com"}))  # bypasses redaction
    assert local.findings
