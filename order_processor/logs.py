"""Personal data never reaches a log in clear.

`fingerprint` gives a stable, non-reversible handle for correlating one customer across log lines;
`redact` scrubs free text (vendor error bodies, exception messages) of emails, phone and card
numbers and bearer/basic credentials; `RedactingFilter` applies `redact` to every record as a last
line of defence for whatever a library logs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from order_processor.outbound.redaction import redact, scrub

#: what every LogRecord has; anything else on a record came from `extra=`
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Rewrites each record through `redact`: its rendered message, its traceback and, as a
    handler's filter (`redact_handlers`), the free text it carries in `extra=`, which exporters
    such as Application Insights send whole. The correlation fields are ids the core sets itself:
    secrets only, so an order id still reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, scrub(value) if name in CORRELATION else redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            _redact_traceback(record)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Filter every handler of `logger` through `RedactingFilter`. Extras are set on a record
    after the record factory made it, so only a handler's filter sees them."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def _redact_traceback(record: logging.LogRecord) -> None:
    """A traceback that would show personal data or a secret is kept as redacted text only:
    formatters print `exc_text`, and exporters that read `exc_info` get nothing to leak."""
    assert record.exc_info is not None
    text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    cleaned = redact(text)
    if cleaned != text:
        record.exc_info = None
        record.exc_text = cleaned


_installed = False


def install_redaction() -> None:
    """Redact every log record at creation, whichever logger or handler it goes to.

    A record factory (rather than a handler filter) also covers handlers the Functions worker or
    OpenTelemetry add later. It only runs for records that pass their logger's level.
    """
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()
    scrub = RedactingFilter()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        scrub.filter(record)
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True


#: correlation fields the core puts in `extra=`; the JSON lines carry them as top-level keys
CORRELATION = (
    "message_id",
    "event_key",
    "order_id",
    "destination",
    "attempts",
    "result",
    "outcome",
    "reason",
    "http_status",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the correlation fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CORRELATION:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = record.exc_text  # already redacted (RedactingFilter)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", *, fmt: str = "auto") -> None:
    """Process-wide logging policy: redaction everywhere, our level, quiet HTTP internals
    (httpx logs every request URL at INFO, and lookup URLs carry card numbers), and JSON lines
    in Azure (`auto`: when WEBSITE_INSTANCE_ID is set) or readable text locally."""
    install_redaction()
    for noisy in ("httpx", "httpcore", "azure", "uamqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for ours in ("order_processor", "loyalty_client", "function_app"):
        logging.getLogger(ours).setLevel(level)
    as_json = fmt == "json" or (fmt == "auto" and bool(os.environ.get("WEBSITE_INSTANCE_ID")))
    if as_json:
        # Every root handler present (the Functions worker's included) writes the same JSON line;
        # a process without one (the CLI) gets stdout.
        root = logging.getLogger()
        if not root.handlers:
            root.addHandler(logging.StreamHandler(sys.stdout))
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    redact_handlers(logging.getLogger())
