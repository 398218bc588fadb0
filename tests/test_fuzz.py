"""Fuzz: over 10,000 distinct generated bodies through the real `sync_order` function.

Each body goes into a real azure.servicebus ServiceBusReceivedMessage and through the decorated
function, as the Functions host calls it, with a settlement-recording ServiceBusMessageActions.
The core behind it is the real one, with healthy vendors answering through httpx.MockTransport
and loyalty read from samples/loyalty/customers.json. For every body:

* nothing raises out of the function, and it returns (within TIMEOUT seconds);
* exactly one settlement: complete, or dead-letter with a known reason and a description that
  fits Service Bus (<= 4096 characters) and, for InvalidMessage, names a field or says what is
  wrong with the whole body, in an operator's words;
* never abandon, never a retry copy, no error logged: every vendor is healthy, so any of those
  is a bug; and whatever a destination is sent is strict JSON.

Strategies live in tests/fuzz_strategies.py: random bytes, damaged JSON, arbitrary JSON, deep
nesting, huge numbers, wrong types, unicode edge cases, odd dates, near-valid samples (drops,
junk, duplicate keys, BOM, oversize), orders generated from the contract, and the retry trigger
with arbitrary retry properties. Reproducible: a fixed seed per strategy, no example database.
Distinct bodies are counted per strategy and the last test checks the total, so the figure
cannot silently shrink. The minimal bodies of the bugs found are pinned as plain tests at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from unittest.mock import MagicMock

import httpx
import pytest
from azurefunctions.extensions.bindings.servicebus import ServiceBusMessageActions
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from order_processor.handler import OrderHandler
from order_processor.processor import Processor

import function_app
from order_processor.contract import MAX_BODY_BYTES, InStoreOrder
from order_processor.ledger import MemoryLedger
from order_processor.model import SERVICE_BUS_TEXT_LIMIT, DeadLetterReason
from order_processor.outbound.retry import RetryPolicy
from order_processor.redelivery import RecordingRetryQueue, RetrySchedule
from tests import fuzz_strategies as fs
from tests.conftest import BASELINE_ENV, ROOT, FakeClock, received_message, settings_for
from tests.test_function_app import _functions as indexed_functions

T = TypeVar("T")

# --- how many bodies, and from where ----------------------------------------------------------

#: bodies drawn per strategy (Hypothesis examples x BATCH); the distinct ones that went through
#: the function, summed over all tests, must be >= MIN_TOTAL
EXAMPLES: dict[str, int] = {
    "random_bytes": 2800,
    "malformed_json": 1400,
    "arbitrary_json": 800,
    "deep_nesting": 600,
    "huge_numbers": 1120,
    "wrong_types": 1280,
    "unicode_strings": 1280,
    "odd_datetimes": 800,
    "near_valid_orders": 1200,
    "generated_orders": 600,
    "retry_trigger_properties": 320,
}
MIN_TOTAL = 10_000
#: bodies per Hypothesis example: its own cost per example is then shared (at 1, a third of the
#: run time); a failure still names the failing body, whichever of the batch it is
BATCH = 8

#: distinct messages (body, trigger, properties) that passed, and how many per strategy
PASSED: set[bytes] = set()
COUNTS: Counter[str] = Counter()
OUTCOMES: dict[str, Counter[str]] = {}
#: strategies whose every example passed
COMPLETED: set[str] = set()

FUZZ = settings(
    deadline=None,
    database=None,  # with fuzz()'s fixed seed per strategy: the same bodies on every run
    print_blob=False,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ),
)


# --- what a settled message must look like ----------------------------------------------------

KNOWN_REASONS = frozenset(reason.value for reason in DeadLetterReason)
TOP_LEVEL_FIELDS = sorted(
    (f.alias or name for name, f in InStoreOrder.model_fields.items()), key=len, reverse=True
)
#: what parse_order says about a body that is not a JSON object at all
WHOLE_BODY = re.compile(
    r"\(body\): (not UTF-8 text|not valid JSON \(.+\)|JSON nested too deeply"
    r"|expected a JSON object, got \w+|\d+ bytes is over the \d+ byte limit)",
    re.S,
)
#: "field.path: what is wrong", the path rooted at a contract field and short enough that the
#: problem itself is still in the (possibly truncated) description
FIELD_PROBLEM = re.compile(
    rf"(\(body\)|{'|'.join(map(re.escape, TOP_LEVEL_FIELDS))})([.\[].{{0,200}}?)?: \S", re.S
)
#: a description is read by an operator, not a Python developer
INTERNALS = re.compile(r"sys\.set_int_max_str_digits|Traceback|object at 0x|<class '|\[<class")


def assert_clear_invalid_message(description: str) -> None:
    assert WHOLE_BODY.fullmatch(description) or FIELD_PROBLEM.match(description), (
        f"InvalidMessage description names no field and no whole-body problem: "
        f"{description[:300]!r}"
    )
    assert not INTERNALS.search(description), f"Python internals in: {description[:300]!r}"


def settlement_of(actions: MagicMock, message: Any) -> str:
    """The one settlement made, checked; 'complete' or 'deadletter:<reason>'."""
    calls = [(name, args, kwargs) for name, args, kwargs in actions.method_calls]
    assert len(calls) == 1, f"expected exactly one settlement, got {[c[0] for c in calls]}"
    name, args, kwargs = calls[0]
    assert args == (message,), "settled a different message"
    if name == "complete":
        assert kwargs == {}
        return "complete"
    assert name == "deadletter", f"{name}: every vendor is healthy, so only complete/deadletter"
    reason = kwargs.get("deadletter_reason")
    description = kwargs.get("deadletter_error_description")
    assert isinstance(reason, str), reason
    assert reason in KNOWN_REASONS, reason
    assert isinstance(description, str), description
    assert description.strip(), "empty dead-letter description"
    assert len(description) <= SERVICE_BUS_TEXT_LIMIT
    if reason == DeadLetterReason.INVALID_MESSAGE:
        assert_clear_invalid_message(description)
    elif reason == DeadLetterReason.DESTINATION_REJECTED:
        assert description.startswith("rejected by "), description[:300]
    return f"deadletter:{reason}"


# --- the harness: the real function, a real core, healthy vendors ----------------------------

TOKEN_PATH = "/omnichannel/v1/oauth2/token"
#: seconds one body may take (vendors answer at once and the clock is fake: a hang is a bug)
TIMEOUT = 30
DESTINATION_URLS = {
    "product_recs": "https://pr.example",
    "richrelevance": "https://rr.example",
    "esputnik": "https://es.example",
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} in an outbound body")


def healthy_vendors(problems: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """Every vendor's documented success; a request body that is not strict JSON is noted."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(TOKEN_PATH):
            return httpx.Response(
                200, json={"access_token": "t", "token_type": "bearer", "expires_in": 3600}
            )
        if request.content:
            try:
                json.loads(request.content, parse_constant=_reject_constant)
            except ValueError as exc:
                problems.append(f"{request.url.host}: {exc}")
        if request.url.host == "pr.example":
            return httpx.Response(200, json={"status": "OK"})
        if request.url.host == "ps.example":
            return httpx.Response(202)
        return httpx.Response(200, json={})

    return answer


class ErrorLog(logging.Handler):
    """The function's ERROR records (an abandon says why there, with the traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    processor: Processor
    retry_queue: RecordingRetryQueue
    functions: dict[str, Callable[..., Awaitable[None]]]
    #: anything a destination was sent that is not strict JSON
    outbound_problems: list[str]
    errors: ErrorLog
    actions: MagicMock = field(default_factory=lambda: MagicMock(spec=ServiceBusMessageActions))

    def deliver(
        self,
        body: bytes,
        strategy: str,
        *,
        trigger: str = "sync_order",
        properties: dict[str, str] | None = None,
    ) -> str:
        """One body through the function; returns the checked settlement. A body that passes
        is counted once under `strategy` (the same body again is not counted again)."""
        # A fresh ledger per body: a replayed (shrunk) example meets the same state as the first.
        self.processor.ledger = MemoryLedger()
        self.actions.reset_mock()
        self.retry_queue.copies.clear()
        self.outbound_problems.clear()
        self.errors.lines.clear()
        message = received_message(body, properties=properties)
        call = self.functions[trigger](message=message, message_actions=self.actions)
        self.loop.run_until_complete(asyncio.wait_for(call, TIMEOUT))
        try:
            outcome = settlement_of(self.actions, message)
            copies = self.retry_queue.copies
            assert copies == [], f"a retry copy was scheduled with healthy vendors: {copies[0]}"
            problems = self.outbound_problems
            assert problems == [], f"a destination was sent a body that is not JSON: {problems}"
            assert self.errors.lines == [], "the function logged an error"
        except AssertionError as exc:
            logged = "\n".join(self.errors.lines)
            raise AssertionError(
                f"{exc}\nbody ({len(body)} bytes): {body[:300]!r}\nlogged: {logged or '-'}"
            ) from None
        key = _key(body, trigger, properties)
        if key not in PASSED:
            PASSED.add(key)
            COUNTS[strategy] += 1
            OUTCOMES.setdefault(strategy, Counter())[outcome] += 1
        return outcome

    def deliver_new(
        self,
        body: bytes,
        strategy: str,
        *,
        trigger: str = "sync_order",
        properties: dict[str, str] | None = None,
    ) -> None:
        """`deliver`, unless this very message already passed (Hypothesis repeats some): the
        figure counted is distinct bodies. A failed one is never skipped, so shrinking replays
        it for real."""
        if _key(body, trigger, properties) not in PASSED:
            self.deliver(body, strategy, trigger=trigger, properties=properties)


def _key(body: bytes, trigger: str, properties: dict[str, str] | None) -> bytes:
    digest = hashlib.blake2b(body, digest_size=16)
    digest.update(repr((trigger, sorted((properties or {}).items()))).encode())
    return digest.digest()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    quiet = ("order_processor", "loyalty_client", "httpx", "httpcore")
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:  # 10,000 INFO lines would cost more than the bodies; errors still show
        logging.getLogger(name).setLevel(logging.WARNING)
    # The function's errors also go into the failing body's own report.
    errors = ErrorLog()
    function_log = logging.getLogger("function_app")
    function_log.addHandler(errors)
    with pytest.MonkeyPatch.context() as env:
        for name in BASELINE_ENV:  # the autouse per-test clean-up has not run yet at module scope
            env.delenv(name, raising=False)
        app_settings = settings_for(
            "https://ps.example",
            None,
            others=DESTINATION_URLS,
            loyalty={"file": str(ROOT / "samples" / "loyalty" / "customers.json")},
        )
    clock = FakeClock()
    loop = asyncio.new_event_loop()
    problems: list[str] = []
    vendors = healthy_vendors(problems)
    processor = Processor.from_settings(
        app_settings,
        transports=lambda name: httpx.MockTransport(vendors),
        ledger=MemoryLedger(),
        retry=RetryPolicy(max_attempts=3, sleep=clock.sleep, clock=clock),
        clock=clock,
        now=clock.utc,
    )
    retry_queue = RecordingRetryQueue()
    handler = OrderHandler(
        processor=processor,
        retry_queue=retry_queue,
        schedule=RetrySchedule.from_settings(app_settings.core),
        now=clock.utc,
    )
    # function_app.app.get_functions() may run once per process (a second call raises "does not
    # have a unique function name"): share test_function_app's indexing, as the host indexes once.
    functions: dict[str, Callable[..., Awaitable[None]]] = {
        name: f.get_user_function() for name, f in indexed_functions().items()
    }
    function_app.use_handler(handler)
    try:
        yield Harness(
            loop=loop,
            processor=processor,
            retry_queue=retry_queue,
            functions=functions,
            outbound_problems=problems,
            errors=errors,
        )
    finally:
        function_app.use_handler(None)
        loop.run_until_complete(handler.aclose())
        loop.close()
        function_log.removeHandler(errors)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_the_harness_completes_every_valid_sample(harness: Harness) -> None:
    for body in fs.SAMPLE_BYTES:
        assert harness.deliver(body, "samples") == "complete"


# --- the fuzz ---------------------------------------------------------------------------------


Properties = tuple[tuple[str, str], ...]
NO_PROPERTIES: st.SearchStrategy[Properties] = st.just(())


def fuzz(
    harness: Harness,
    name: str,
    bodies: st.SearchStrategy[bytes],
    *,
    trigger: str = "sync_order",
    properties: st.SearchStrategy[Properties] = NO_PROPERTIES,
) -> None:
    """EXAMPLES[name] bodies from `bodies` through the function, BATCH per Hypothesis example
    (its own cost per example is then shared), with a seed of the strategy's own. The strategy
    counts as completed, for the final count, only if every body passed."""

    @settings(FUZZ, max_examples=EXAMPLES[name] // BATCH)
    @seed(zlib.crc32(name.encode()))
    @given(st.lists(st.tuples(bodies, properties), min_size=BATCH, max_size=BATCH, unique=True))
    def examples_of(batch: list[tuple[bytes, Properties]]) -> None:
        for body, props in batch:
            harness.deliver_new(body, name, trigger=trigger, properties=dict(props))

    examples_of()
    COMPLETED.add(name)


def test_random_bytes(harness: Harness) -> None:
    fuzz(harness, "random_bytes", st.one_of(st.binary(min_size=9, max_size=2048), st.binary()))


def test_malformed_json(harness: Harness) -> None:
    fuzz(harness, "malformed_json", fs.malformed_json())


def test_arbitrary_json_documents(harness: Harness) -> None:
    fuzz(harness, "arbitrary_json", st.builds(fs.encode, fs.json_values, ascii_only=st.booleans()))


def test_deep_nesting(harness: Harness) -> None:
    fuzz(harness, "deep_nesting", fs.deep_nesting())


def test_huge_and_odd_numbers(harness: Harness) -> None:
    fuzz(harness, "huge_numbers", fs.huge_numbers())


def test_wrong_types_and_missing_fields(harness: Harness) -> None:
    fuzz(harness, "wrong_types", fs.wrong_types())


def test_unicode_edge_cases(harness: Harness) -> None:
    fuzz(harness, "unicode_strings", fs.unicode_strings())


def test_odd_order_dates(harness: Harness) -> None:
    fuzz(harness, "odd_datetimes", fs.odd_datetimes())


def test_near_valid_orders(harness: Harness) -> None:
    fuzz(harness, "near_valid_orders", fs.near_valid_orders())


def test_generated_orders(harness: Harness) -> None:
    fuzz(harness, "generated_orders", fs.generated_orders())


def test_retry_trigger_with_any_retry_properties(harness: Harness) -> None:
    fuzz(
        harness,
        "retry_trigger_properties",
        st.one_of(st.sampled_from(fs.SAMPLE_BYTES), fs.near_valid_orders()),
        trigger="retry_order",
        properties=fs.retry_properties,
    )


# --- fixed bodies: the extremes, each once ----------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid sample, padded with an ignored field to exactly `size` bytes."""
    sample = fs.SAMPLE_BYTES[0]
    padding = size - len(sample) - len(b'"pad":"",')
    return sample[:1] + b'"pad":"' + b" " * padding + b'",' + sample[1:]


FIXED_BODIES: dict[str, bytes] = {
    "empty": b"",
    "bom-only": b"\xef\xbb\xbf",
    "whitespace": b" \n\t ",
    "null": b"null",
    "nan": b"NaN",
    "string": b'"order"',
    "list-of-order": b"[" + fs.SAMPLE_BYTES[0] + b"]",
    "10000-levels-of-lists": b"[" * 10_000 + b"]" * 10_000,
    "10000-levels-of-objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "deep-in-an-ignored-field": fs.SAMPLE_BYTES[0].rstrip()[:-1]
    + b',"x":'
    + fs.nested(100_000, "list").encode()
    + b"}",
    "at-the-size-limit": _padded(MAX_BODY_BYTES),
    "one-byte-over": _padded(MAX_BODY_BYTES + 1),
    "one-mebibyte": b"{" + b" " * (1 << 20) + b"}",
    "utf16-bom": "\ufeff{}".encode("utf-16-le"),
    "bom-then-order": b"\xef\xbb\xbf" + fs.SAMPLE_BYTES[0],
}


@pytest.mark.parametrize("name", sorted(FIXED_BODIES))
def test_fixed_extreme_bodies(harness: Harness, name: str) -> None:
    assert len(_padded(1000)) == 1000
    outcome = harness.deliver(FIXED_BODIES[name], "fixed")
    if name in {"at-the-size-limit", "bom-then-order"}:
        assert outcome == "complete"
    else:
        assert outcome == "deadletter:InvalidMessage"


# --- bugs the fuzz found: minimal bodies, pinned -----------------------------------------------
# Each of these FAILS until the app is fixed (do not xfail them: they are the bug reports).

VALID_ORDER: dict[str, Any] = json.loads(
    (ROOT / "samples" / "orders" / "valid" / "order-created.json").read_bytes()
)


def _order(**fields: Any) -> bytes:
    return json.dumps({**VALID_ORDER, **fields}).encode()


# Found by fuzzing, fixed (regression 1): an orderDate near the ends of the datetime range is valid
# to the contract, but the Profile Store and Product Recs mappings convert it to UTC
# (`astimezone`), which overflows: OverflowError escapes the core, the function abandons, and the
# poison message is redelivered until MaxDeliveryCount dead-letters it without a reason.
@pytest.mark.parametrize("order_date", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"])
def test_regression_order_date_at_the_ends_of_the_calendar_is_settled(
    harness: Harness, order_date: str
) -> None:
    outcome = harness.deliver(_order(orderDate=order_date), "regressions")
    assert outcome in {"complete", "deadletter:InvalidMessage"}


# Found by fuzzing, fixed (regression 2): a JSON number whose exponent is beyond Decimal's range
# raises decimal.InvalidOperation (an ArithmeticError, not a ValueError) from
# json.loads(parse_float=Decimal): parse_order does not catch it, the function abandons.
@pytest.mark.parametrize(
    "body",
    [b"1e9999999999999999999", b'{"total": 1e-9999999999999999999}'],
    ids=["whole-body", "in-a-field"],
)
def test_regression_exponent_beyond_decimal_range_is_dead_lettered(
    harness: Harness, body: bytes
) -> None:
    assert harness.deliver(body, "regressions") == "deadletter:InvalidMessage"


# Found by fuzzing, fixed (regression 3): the dead-letter description echoes an attribute's key
# (data, possibly personal) as the field path; a key over the 128-character limit pushes "what is
# wrong" past the 4096-character cut, leaving a description that is just the key.
def test_regression_long_attribute_key_description_still_says_what_is_wrong(
    harness: Harness,
) -> None:
    harness.deliver(_order(attributes={"k" * 5000: "v"}), "regressions")
    description = harness.actions.deadletter.call_args.kwargs["deadletter_error_description"]
    assert "at most 128 characters" in description


# Found by fuzzing, fixed (regression 4): the path re-cases attribute keys with to_camel, naming a
# field the ERP never sent ("size_code" is reported as "attributes.sizeCode").
def test_regression_attribute_keys_are_not_renamed_in_the_description(harness: Harness) -> None:
    harness.deliver(_order(attributes={"size_code": 5}), "regressions")
    description = harness.actions.deadletter.call_args.kwargs["deadletter_error_description"]
    assert description.startswith("attributes")
    assert "sizeCode" not in description


# Found by fuzzing, fixed (regression 5): an integer over Python's 4,300-digit conversion limit is
# valid JSON, but is reported as "not valid JSON (Exceeds the limit (4300 digits) for integer
# string conversion ...; use sys.set_int_max_str_digits() to increase the limit)"; in schemaVersion
# the same Python advice reaches the description.
@pytest.mark.parametrize(
    "body",
    [b'{"total": ' + b"9" * 4301 + b"}", _order(schemaVersion="1" * 4301)],
    ids=["json-number", "schema-version"],
)
def test_regression_huge_integers_are_described_without_python_internals(
    harness: Harness, body: bytes
) -> None:
    assert harness.deliver(body, "regressions") == "deadletter:InvalidMessage"


# --- the figure cannot silently shrink --------------------------------------------------------


def test_at_least_ten_thousand_distinct_bodies_went_through_the_function() -> None:
    missing = sorted(set(EXAMPLES) - COMPLETED)
    if missing:
        pytest.skip(f"checked when every fuzz test ran and passed (not: {', '.join(missing)})")
    assert all(drawn % BATCH == 0 for drawn in EXAMPLES.values()), "whole batches only"
    total = sum(COUNTS.values())
    for name, outcomes in sorted(OUTCOMES.items()):  # shown with -s, and on failure
        print(f"{name:>26}: {COUNTS[name]:>5} distinct bodies, {dict(outcomes)}")
    print(f"{'total':>26}: {total:>5} distinct bodies")
    assert total >= MIN_TOTAL, dict(COUNTS)
    for name, drawn in EXAMPLES.items():
        # Hypothesis repeats itself a little; a strategy that mostly does has collapsed.
        assert COUNTS[name] >= 0.6 * drawn, (name, COUNTS[name], drawn)
    # The generated orders must mostly reach the destinations, or they test only the parser.
    generated = OUTCOMES["generated_orders"]
    assert generated["complete"] >= 0.5 * COUNTS["generated_orders"], dict(generated)
    assert OUTCOMES["near_valid_orders"]["complete"] > 0, dict(OUTCOMES["near_valid_orders"])
    assert OUTCOMES["random_bytes"]["complete"] == 0
