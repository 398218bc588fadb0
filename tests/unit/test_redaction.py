"""Secrets are removed by value, in the forms a vendor may echo them, on every output surface."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from rich.console import Console

from order_processor.dlq import DeadLetter, show
from order_processor.model import Outcome, Settlement
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.redaction import redact, register_secrets, scrub

SECRET = "s3cr3t/Key+with=chars"


def test_a_registered_secret_is_masked_raw_url_encoded_and_base64() -> None:
    register_secrets([SECRET])
    encoded = base64.b64encode(SECRET.encode()).decode()
    text = f"raw {SECRET}; path s3cr3t%2FKey%2Bwith%3Dchars; b64 {encoded}"
    cleaned = scrub(text)
    assert "s3cr3t" not in cleaned
    assert encoded not in cleaned
    assert cleaned.count("***") == 3


def test_short_values_are_not_matched_by_value() -> None:
    register_secrets(["abc"])
    assert scrub("abcdef") == "abcdef"


def test_connection_string_keys_are_masked_by_pattern() -> None:
    text = "AccountName=a;AccountKey=Zm9vYmFy==;SharedAccessKey=xyz123"
    assert "Zm9vYmFy" not in redact(text)
    assert "xyz123" not in redact(text)


def test_exception_texts_and_dead_letter_descriptions_never_carry_a_secret() -> None:
    register_secrets(["echoed-api-key-1234"])
    error = DeliveryError(
        kind=FailureKind.PERMANENT, system="x", message="bad key echoed-api-key-1234"
    )
    assert "echoed-api-key-1234" not in str(error)
    outcome = Outcome(
        settlement=Settlement.DEAD_LETTER,
        reason="DestinationRejected",
        description="vendor said: echoed-api-key-1234 is wrong",
    )
    assert "echoed-api-key-1234" not in (outcome.description or "")


def test_dlq_peek_scrubs_descriptions_written_by_anyone() -> None:
    register_secrets(["old-version-key-999"])
    console = Console(record=True, width=300)
    letter = DeadLetter(
        sequence_number=1,
        message_id="m",
        order_id="o",
        event_type="OrderCreated",
        reason="DestinationRejected",
        description="key old-version-key-999 refused",
        enqueued_time=datetime(2026, 11, 1, tzinfo=UTC),
        delivery_count=1,
    )
    show([letter], title="t", console=console, now=datetime(2026, 11, 2, tzinfo=UTC))
    assert "old-version-key-999" not in console.export_text()
