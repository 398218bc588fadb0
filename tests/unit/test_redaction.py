"""Secrets are removed by value, in the forms a vendor may echo them, on every output surface."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime

import httpx
import pytest
from rich.console import Console

from loyalty_client.settings import LoyaltySettings
from order_processor.dlq import DeadLetter, show
from order_processor.logs import JsonFormatter, redact_handlers
from order_processor.model import Outcome, Settlement
from order_processor.outbound.errors import DeliveryError, FailureKind, error_from_response
from order_processor.outbound.redaction import (
    excerpt,
    redact,
    register_rotating,
    register_secrets,
    scrub,
)

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


def peeked(description: str) -> str:
    """What `dlq show` prints for one dead letter with this description."""
    console = Console(record=True, width=300)
    letter = DeadLetter(
        sequence_number=1,
        message_id="m",
        order_id="o",
        event_type="OrderCreated",
        reason="DestinationRejected",
        description=description,
        enqueued_time=datetime(2026, 11, 1, tzinfo=UTC),
        delivery_count=1,
    )
    show([letter], title="t", console=console, now=datetime(2026, 11, 2, tzinfo=UTC))
    return console.export_text()


def test_dlq_peek_scrubs_descriptions_written_by_anyone() -> None:
    register_secrets(["old-version-key-999"])
    assert "old-version-key-999" not in peeked("key old-version-key-999 refused")


def test_dlq_peek_shows_no_personal_data_from_a_description() -> None:
    shown = peeked("unknown user ann.shopper@example.com, card 6330001234567890")
    assert "ann.shopper" not in shown
    assert "6330001234567890" not in shown
    assert "unknown user <email>, card <number>" in shown


def test_an_excerpt_is_cleaned_before_it_is_cut() -> None:
    """Cut first, and what is left of a secret or an email no longer matches anything."""
    register_secrets(["rr-live-api-key-0123456789"])
    text = "x" * 280 + " /api/v1/rr-live-api-key-0123456789 from jane.doe@example.com"
    shown = excerpt(text)
    assert len(shown) == 300
    assert "rr-live" not in shown
    assert "jane" not in excerpt("y" * 290 + " jane.doe@example.com")


def test_a_vendor_reason_phrase_is_redacted_like_a_body() -> None:
    response = httpx.Response(403, extensions={"reason_phrase": b"Card 6330001234567890 blocked"})
    error = error_from_response("loyalty", response)
    assert "6330001234567890" not in str(error)
    assert "Card <number> blocked" in str(error)


def test_the_current_oauth_tokens_are_masked_and_old_ones_forgotten() -> None:
    for token in ("token-one-abcdef", "token-two-abcdef", "token-three-abcdef"):
        register_rotating("vendor token", token)
    echoed = "access token-three-abcdef, before it token-two-abcdef, first token-one-abcdef"
    assert scrub(echoed) == "access ***, before it ***, first token-one-abcdef"


def test_basic_auth_pairs_are_masked_whole_and_encoded() -> None:
    settings = LoyaltySettings(
        api_base_url="https://loyalty.example.com",
        auth="basic",
        username="svc-user",
        password="pa55-word-long",
    )
    register_secrets(settings.secret_values())
    pair = base64.b64encode(b"svc-user:pa55-word-long").decode()
    assert scrub(f"echoed {pair} and svc-user:pa55-word-long") == "echoed *** and ***"


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_logged_extras_and_tracebacks_carry_no_personal_data() -> None:
    """Exporters (Application Insights) send every `extra=`; formatters print the traceback."""
    log = logging.getLogger("order_processor.test_extras")
    kept = Keep()
    log.addHandler(kept)
    redact_handlers(log)  # as configure_logging and the Application Insights set-up do
    try:
        raise ValueError("lookup failed for ann.shopper@example.com card 6330001234567890")
    except ValueError:
        log.exception(
            "failed",
            extra={"description": "card 6330001234567890", "order_id": "1002345678"},
        )
    finally:
        log.removeHandler(kept)
    (record,) = kept.records
    assert record.description == "card <number>"  # type: ignore[attr-defined]
    assert record.order_id == "1002345678"  # type: ignore[attr-defined]  # ids stay readable
    assert record.exc_info is None
    formatted = logging.Formatter().format(record)
    assert "ValueError: lookup failed for <email> card <number>" in formatted
    assert "6330001234567890" not in formatted
    assert "6330001234567890" not in JsonFormatter().format(record)


def test_a_traceback_without_personal_data_keeps_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise ValueError("nothing personal here")
    except ValueError:
        logging.getLogger("order_processor.test").exception("failed")
    (record,) = caplog.records
    assert record.exc_info is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # digests all digits, or starting with 7+ digits: a hash of the order, kept whole
        (
            "m8 R-1:OrderCreated:7202780575461275:esputnik",
            "m8 R-1:OrderCreated:7202780575461275:esputnik",
        ),
        ("R-1:OrderCancelled:12345678abcdef01", "R-1:OrderCancelled:12345678abcdef01"),
        # the same digits anywhere else are a number about someone
        ("card 7202780575461275 at till 3", "card <number> at till 3"),
        ("R-1:7202780575461275:esputnik", "R-1:<number>:esputnik"),
        # an event key does not shelter a card number beside it
        (
            "R-1:OrderCreated:0123456789abcdef for 6330001234567890",
            "R-1:OrderCreated:0123456789abcdef for <number>",
        ),
    ],
)
def test_event_key_digests_are_not_taken_for_card_numbers(text: str, expected: str) -> None:
    assert redact(text) == expected
