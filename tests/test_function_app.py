"""The real decorated function, called as the Functions host would: a real
azure.servicebus.ServiceBusReceivedMessage and a settlement-recording ServiceBusMessageActions."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from azurefunctions.extensions.bindings.servicebus import ServiceBusMessageActions
from order_processor.handler import OrderHandler
from order_processor.processor import Processor

import function_app
from order_processor.redelivery import RecordingRetryQueue
from tests.conftest import BASELINE_ENV, ROOT, SAMPLES, received_message, sample
from tests.fakes.base import FakeServer, Reply
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY
from tests.fakes.loyalty import CUSTOMERS
from tests.fakes.profile_store import API_KEY as PROFILE_STORE_KEY
from tests.fakes.profile_store import ProfileStoreRules
from tests.unit.test_contract import EXPECTED_FIELD

Invoke = Callable[..., Coroutine[Any, Any, None]]


@functools.cache
def _functions() -> dict[str, Any]:
    # Like the host, index once: get_functions() builds the function list on every call.
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def _function() -> Any:
    return _functions()["sync_order"]


def test_trigger_binding_is_declared_for_explicit_settlement() -> None:
    (binding,) = _function().get_bindings()
    assert binding.type == "serviceBusTrigger"
    described = _function().get_function_json()
    for fragment in (
        '"topicName": "%ORDERS_TOPIC%"',
        '"subscriptionName": "%ORDERS_SUBSCRIPTION%"',
        '"connection": "ServiceBusConnection"',
        '"autoCompleteMessages": false',
    ):
        assert fragment in described


@pytest.fixture
async def invoke(handler: OrderHandler) -> AsyncIterator[Invoke]:
    function_app.use_handler(handler)
    user_function = _function().get_user_function()

    async def call(message: Any, actions: Any) -> None:
        await user_function(message=message, message_actions=actions)

    yield call
    function_app.use_handler(None)


@pytest.fixture
def actions() -> MagicMock:
    return MagicMock(spec=ServiceBusMessageActions)


def settled(actions: MagicMock) -> list[str]:
    return [name for name, _, _ in actions.method_calls]


async def test_sample_order_reaches_profile_store_with_loyalty_email_and_completes(
    invoke: Invoke,
    actions: MagicMock,
    profile_store: tuple[FakeServer, ProfileStoreRules],
    loyalty: FakeServer,
) -> None:
    message = received_message(sample("order-created.json"), message_id="100245-OrderCreated")
    await invoke(message, actions)
    actions.complete.assert_called_once_with(message)
    assert settled(actions) == ["complete"]
    assert profile_store[1].accepted[-1]["user"]["email"] == "ann.shopper@example.com"
    assert loyalty.requests[-1].path == "/cards/6330001234567890"


@pytest.mark.parametrize("path", sorted((SAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
async def test_invalid_samples_are_dead_lettered_on_first_delivery(
    invoke: Invoke, actions: MagicMock, path: Path
) -> None:
    message = received_message(path.read_bytes())  # noqa: ASYNC240 (a small local sample)
    await invoke(message, actions)
    assert settled(actions) == ["deadletter"]
    kwargs = actions.deadletter.call_args.kwargs
    assert kwargs["deadletter_reason"] == "InvalidMessage"
    assert kwargs["deadletter_error_description"].startswith(EXPECTED_FIELD[path.stem])


async def test_400_from_profile_store_dead_letters_destination_rejected(
    invoke: Invoke, actions: MagicMock, profile_store: tuple[FakeServer, ProfileStoreRules]
) -> None:
    profile_store[0].inject(Reply(400, {"message": "eventType is required"}))
    await invoke(received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["deadletter"]
    kwargs = actions.deadletter.call_args.kwargs
    assert kwargs["deadletter_reason"] == "DestinationRejected"
    assert "profile_store HTTP 400" in kwargs["deadletter_error_description"]


async def test_503_from_profile_store_schedules_a_retry_copy_and_completes(
    invoke: Invoke,
    actions: MagicMock,
    profile_store: tuple[FakeServer, ProfileStoreRules],
    retry_queue: RecordingRetryQueue,
) -> None:
    profile_store[0].inject(*[Reply(503)] * 5)
    message = received_message(sample("order-created.json"), message_id="m-503")
    await invoke(message, actions)
    assert settled(actions) == ["complete"]
    (copy,) = retry_queue.copies
    assert copy.application_properties["owedDestinations"] == "profile_store"


async def test_a_retry_copy_that_cannot_be_scheduled_is_abandoned(
    invoke: Invoke,
    actions: MagicMock,
    profile_store: tuple[FakeServer, ProfileStoreRules],
    retry_queue: RecordingRetryQueue,
) -> None:
    profile_store[0].inject(*[Reply(503)] * 5)
    retry_queue.failure = ConnectionError("namespace unreachable")
    await invoke(received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["abandon"]


async def test_the_retry_queue_trigger_runs_the_same_core(
    handler: OrderHandler, actions: MagicMock, profile_store: tuple[FakeServer, ProfileStoreRules]
) -> None:
    function_app.use_handler(handler)
    try:
        retry_function = _functions()["retry_order"].get_user_function()
        message = received_message(
            sample("order-created.json"),
            properties={"retryAttempt": "1", "owedDestinations": "profile_store"},
        )
        await retry_function(message=message, message_actions=actions)
    finally:
        function_app.use_handler(None)
    assert settled(actions) == ["complete"]
    assert len(profile_store[0].requests) == 1


def test_retry_queue_binding_reads_its_queue_from_settings() -> None:
    described = _functions()["retry_order"].get_function_json()
    assert '"queueName": "%ORDERS_RETRY_QUEUE%"' in described
    assert '"autoCompleteMessages": false' in described


@pytest.mark.parametrize("enabled", ["true", "false"])
def test_sessions_are_declared_on_the_trigger_when_the_subscription_requires_them(
    enabled: str,
) -> None:
    script = (
        "import json, function_app\n"
        "f = {x.get_function_name(): x for x in function_app.app.get_functions()}\n"
        "print(json.loads(f['sync_order'].get_function_json())['bindings'][0]"
        ".get('isSessionsEnabled'))"
    )
    env = {**os.environ, **BASELINE_ENV, "ORDERS_SESSIONS_ENABLED": enabled}
    done = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(enabled == "true")


# --- ORDERS_BATCH_ENABLED: the batch trigger ----------------------------------------------------


def _load_function_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> types.ModuleType:
    """A fresh copy of function_app.py imported under `env` (the module reads it at import)."""
    for name, value in {**BASELINE_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("function_app_variant", ROOT / "function_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in BASELINE_ENV:
        monkeypatch.delenv(name, raising=False)
    return module


@pytest.fixture
def batch_app(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return _load_function_app(monkeypatch, ORDERS_BATCH_ENABLED="true")


@pytest.mark.parametrize("sessions", ["false", "true"])
def test_batch_setting_declares_cardinality_many_under_the_same_name(
    monkeypatch: pytest.MonkeyPatch, sessions: str
) -> None:
    module = _load_function_app(
        monkeypatch, ORDERS_BATCH_ENABLED="true", ORDERS_SESSIONS_ENABLED=sessions
    )
    functions = {f.get_function_name(): f for f in module.app.get_functions()}
    assert set(functions) == {"sync_order", "retry_order"}
    (binding,) = json.loads(functions["sync_order"].get_function_json())["bindings"]
    assert (
        binding["cardinality"].lower() == "many"
    )  # the library writes MANY; the host ignores case
    assert binding["name"] == "messages"
    assert binding["autoCompleteMessages"] is False
    assert binding["isSessionsEnabled"] is (sessions == "true")
    # The retry queue stays one message at a time: its traffic is a trickle.
    (retry,) = json.loads(functions["retry_order"].get_function_json())["bindings"]
    assert retry.get("cardinality", "one").lower() == "one"


def test_without_the_setting_the_trigger_takes_one_message() -> None:
    (binding,) = json.loads(_function().get_function_json())["bindings"]
    assert binding.get("cardinality", "one").lower() == "one"
    assert binding["name"] == "message"


def test_the_batch_binding_is_one_the_servicebus_extension_decodes(
    batch_app: types.ModuleType,
) -> None:
    from azurefunctions.extensions.bindings.servicebus import ServiceBusConverter

    functions = {f.get_function_name(): f for f in batch_app.app.get_functions()}
    annotation = (
        inspect.signature(functions["sync_order"].get_user_function(), eval_str=True)
        .parameters["messages"]
        .annotation
    )
    assert ServiceBusConverter.check_input_type_annotation(annotation)


async def test_batch_messages_are_settled_one_by_one(
    batch_app: types.ModuleType,
    handler: OrderHandler,
    actions: MagicMock,
    profile_store: tuple[FakeServer, ProfileStoreRules],
) -> None:
    document = json.loads(sample("order-created.json"))
    bodies = [json.dumps({**document, "orderId": f"F{i}"}).encode() for i in range(3)]
    bodies.insert(1, b"not json")
    messages = [received_message(body, message_id=f"b-{i}") for i, body in enumerate(bodies)]
    batch_app.use_handler(handler)
    functions = {f.get_function_name(): f for f in batch_app.app.get_functions()}
    await functions["sync_order"].get_user_function()(messages=messages, message_actions=actions)
    assert settled(actions) == ["complete", "deadletter", "complete", "complete"]
    assert [call.args[0] for call in actions.method_calls] == messages
    assert actions.deadletter.call_args.kwargs["deadletter_reason"] == "InvalidMessage"
    assert [r.path for r in profile_store[0].requests] == ["/api/v1.0/TrackBulk"]
    assert len(profile_store[1].accepted) == 3


async def test_a_batch_that_fails_unexpectedly_is_abandoned_message_by_message(
    batch_app: types.ModuleType, handler: OrderHandler, actions: MagicMock
) -> None:
    async def explode(messages: Any) -> Any:
        raise RuntimeError("bug")

    handler.handle_batch = explode  # type: ignore[method-assign]
    batch_app.use_handler(handler)
    actions.abandon.side_effect = [RuntimeError("lock lost"), None]
    messages = [received_message(sample("order-created.json")) for _ in range(2)]
    functions = {f.get_function_name(): f for f in batch_app.app.get_functions()}
    await functions["sync_order"].get_user_function()(messages=messages, message_actions=actions)
    assert settled(actions) == ["abandon", "abandon"]


def test_the_handler_is_closed_when_its_loop_stops_and_rebuilt_on_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No worker hook announces shutdown: the loop's own shutdown closes the clients."""
    closed: list[object] = []

    class Built:
        async def aclose(self) -> None:
            closed.append(self)

    monkeypatch.setattr(OrderHandler, "from_settings", classmethod(lambda cls, settings: Built()))
    function_app.use_handler(None)

    async def invocation() -> object:
        return function_app._current_handler()

    first = asyncio.run(invocation())
    assert closed == [first]
    second = asyncio.run(invocation())
    assert second is not first
    assert closed == [first, second]


def test_the_host_refuses_to_start_without_a_service_bus_connection() -> None:
    env = {**os.environ, **BASELINE_ENV}
    env.pop("ServiceBusConnection")
    done = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "missing setting ServiceBusConnection" in done.stderr


async def test_an_unexpected_exception_still_settles(
    invoke: Invoke, actions: MagicMock, processor: Processor
) -> None:  # the processor is the handler's: a bug anywhere below the adapter
    async def explode(body: bytes, metadata: Any) -> Any:
        raise RuntimeError("bug")

    processor.process = explode  # type: ignore[method-assign]
    await invoke(received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["abandon"]


async def test_a_failing_settlement_does_not_raise(invoke: Invoke, actions: MagicMock) -> None:
    actions.complete.side_effect = RuntimeError("lock lost")
    await invoke(received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["complete"]


async def test_works_on_a_session_enabled_subscription(invoke: Invoke, actions: MagicMock) -> None:
    message = received_message(sample("order-created.json"), session_id="100245")
    assert message.session_id == "100245"
    await invoke(message, actions)
    assert settled(actions) == ["complete"]


# --- personal data never reaches a log ---------------------------------------------------------

SECRETS = (
    [LOYALTY_KEY, PROFILE_STORE_KEY]
    + [
        value
        for record in CUSTOMERS.values()
        for key, value in record.items()
        if key in {"email", "phone"}
    ]
    + list(CUSTOMERS)
)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "order_processor", "loyalty_client", "function_app"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _rendered(record: logging.LogRecord) -> str:
    extras = {k: v for k, v in vars(record).items() if k not in logging.makeLogRecord({}).__dict__}
    return f"{record.getMessage()} {extras} {record.exc_text or ''}"


async def test_no_personal_data_or_key_in_any_log_line(
    invoke: Invoke,
    all_logs: pytest.LogCaptureFixture,
    profile_store: tuple[FakeServer, ProfileStoreRules],
    loyalty: FakeServer,
) -> None:
    profile_store[0].inject(
        Reply(400, {"message": "bad user ann.shopper@example.com 6330001234567890"})
    )
    loyalty.inject(Reply(500, {"error": "card 6330001111111111 lookup failed"}))
    for name in (
        "order-created.json",
        "order-created-with-email.json",
        "order-created-unknown-card.json",
        "order-updated.json",
    ):
        await invoke(received_message(sample(name)), MagicMock(spec=ServiceBusMessageActions))
    await invoke(
        received_message(b'{"customer": {"email": "ann.shopper@example.com"}}'),
        MagicMock(spec=ServiceBusMessageActions),
    )
    text = "\n".join(_rendered(r) for r in all_logs.records)
    assert all_logs.records, "the scenarios should have logged"
    leaks = [secret for secret in SECRETS if secret in text]
    assert leaks == []
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text)


async def test_a_vendor_echoing_the_key_never_puts_it_in_the_dead_letter(
    invoke: Invoke, actions: MagicMock, profile_store: tuple[FakeServer, ProfileStoreRules]
) -> None:
    echo = f"the key {PROFILE_STORE_KEY} is not valid for this scope"
    profile_store[0].inject(Reply(400, {"message": echo}))
    await invoke(received_message(sample("order-created.json")), actions)
    description = actions.deadletter.call_args.kwargs["deadletter_error_description"]
    assert "profile_store HTTP 400" in description
    assert PROFILE_STORE_KEY not in description
    assert "the key *** is not valid" in description
