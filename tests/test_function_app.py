"""The real decorated functions, called as the Functions host would: a real
azure.servicebus.ServiceBusReceivedMessage and a settlement-recording ServiceBusMessageActions.

`accept_order` (and `accept_order_retry`) publish into the `pipeline` fixture's MemoryOutbox (the
deliveries topic); what they published is then handed, as a real received message, to the
`deliver_<name>` function of its lane, as the lane's subscription would.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from azurefunctions.extensions.bindings.servicebus import ServiceBusMessageActions

import function_app
from order_processor.contract import parse_order
from order_processor.model import event_key
from order_processor.outbox import MemoryOutbox, MessageTooLarge, Outgoing
from order_processor.pipeline import Pipeline
from order_processor.settings import SettingsError, load_settings
from tests.conftest import BASELINE_ENV, ROOT, SAMPLES, received_message, sample, settings_for
from tests.fakes.base import FakeServer, Reply
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY
from tests.fakes.loyalty import CUSTOMERS
from tests.fakes.profile_store import API_KEY as PROFILE_STORE_KEY
from tests.fakes.profile_store import ProfileStoreRules
from tests.unit.test_contract import EXPECTED_FIELD

PS = tuple[FakeServer, ProfileStoreRules]

#: the field each invalid sample's dead-letter description starts with (as tests/unit/
#: test_contract.py checks on the parser; here at the function, on first delivery)

#: what `build_app` declares for the default settings (every destination enabled): function ->
#: (topic, subscription) as the binding reads them from the app settings
DEFAULT_FUNCTIONS = {
    "accept_order": ("%ORDERS_TOPIC%", "%ORDERS_SUBSCRIPTION%"),
    "accept_order_retry": ("%DELIVERIES_TOPIC%", "%ACCEPT_RETRY_SUBSCRIPTION%"),
    "deliver_profile_store": ("%DELIVERIES_TOPIC%", "%PROFILE_STORE_SUBSCRIPTION%"),
    "deliver_product_recs": ("%DELIVERIES_TOPIC%", "%PRODUCT_RECS_SUBSCRIPTION%"),
    "deliver_richrelevance": ("%DELIVERIES_TOPIC%", "%RICHRELEVANCE_SUBSCRIPTION%"),
    "deliver_esputnik": ("%DELIVERIES_TOPIC%", "%ESPUTNIK_SUBSCRIPTION%"),
}
#: lanes whose vendor has a bulk form with the default settings (eSputnik: orders mode)
BULK_LANES = {"deliver_profile_store", "deliver_richrelevance", "deliver_esputnik"}
ALL_LANES = ("profile_store", "product_recs", "richrelevance", "esputnik")


@functools.cache
def _functions() -> dict[str, Any]:
    # Like the host, index once: get_functions() builds the function list on every call (a second
    # call on the same app raises "does not have a unique function name"). test_fuzz shares it.
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def _binding(function: Any) -> dict[str, Any]:
    (binding,) = json.loads(function.get_function_json())["bindings"]
    assert isinstance(binding, dict)
    return binding


def _cardinality(binding: dict[str, Any]) -> str:
    # The library writes MANY (the host ignores case); a single-message trigger omits it.
    return str(binding.get("cardinality", "one")).lower()


# --- what the app declares -----------------------------------------------------------------------


def test_the_default_settings_declare_accept_and_one_lane_per_destination() -> None:
    assert set(_functions()) == set(DEFAULT_FUNCTIONS)


@pytest.mark.parametrize("name", sorted(DEFAULT_FUNCTIONS))
def test_every_trigger_is_bound_to_its_subscription_for_explicit_settlement(name: str) -> None:
    function = _functions()[name]
    (declared,) = function.get_bindings()
    assert declared.type == "serviceBusTrigger"
    binding = _binding(function)
    topic, subscription = DEFAULT_FUNCTIONS[name]
    assert (binding["topicName"], binding["subscriptionName"]) == (topic, subscription)
    assert binding["connection"] == "ServiceBusConnection"
    assert binding["autoCompleteMessages"] is False
    assert binding["isSessionsEnabled"] is False
    assert _cardinality(binding) == "one"
    assert binding["name"] == "message"


def test_every_setting_a_binding_reads_is_one_binding_settings_names() -> None:
    """`require_binding_settings` checks `binding_settings`: it must cover every `%NAME%`."""
    read = {
        match
        for function in _functions().values()
        for value in _binding(function).values()
        for match in re.findall(r"%(\w+)%", str(value))
    }
    names = function_app.binding_settings(function_app.SETTINGS)
    assert set(names) == read
    assert names == {
        "ORDERS_TOPIC": "orders",
        "ORDERS_SUBSCRIPTION": "order-sync",
        "DELIVERIES_TOPIC": "order-deliveries",
        "ACCEPT_RETRY_SUBSCRIPTION": "accept-retry",
        "PROFILE_STORE_SUBSCRIPTION": "profile-store",
        "PRODUCT_RECS_SUBSCRIPTION": "product-recs",
        "RICHRELEVANCE_SUBSCRIPTION": "richrelevance",
        "ESPUTNIK_SUBSCRIPTION": "esputnik",
    }


DECLARED = (
    "import json, function_app\n"
    "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())['bindings']"
    " for f in function_app.app.get_functions()}))"
)


def _declared(**env: str) -> dict[str, dict[str, Any]]:
    """Each function's trigger binding, as a fresh host process imports the app under `env`
    (function_app reads its settings at import)."""
    done = subprocess.run(  # noqa: S603 - our interpreter, our script
        [sys.executable, "-c", DECLARED],
        env={**os.environ, **BASELINE_ENV, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    declared = json.loads(done.stdout.splitlines()[-1])
    return {name: binding for name, (binding,) in declared.items()}


@pytest.mark.parametrize("batch", ["false", "true"])
@pytest.mark.parametrize("sessions", ["false", "true"])
def test_sessions_and_batches_are_declared_per_settings(sessions: str, batch: str) -> None:
    declared = _declared(ORDERS_SESSIONS_ENABLED=sessions, ORDERS_BATCH_ENABLED=batch)
    assert set(declared) == set(DEFAULT_FUNCTIONS)
    for name, binding in declared.items():
        assert binding["isSessionsEnabled"] is (sessions == "true"), name
        assert binding["autoCompleteMessages"] is False, name
        assert binding["connection"] == "ServiceBusConnection", name
        assert (binding["topicName"], binding["subscriptionName"]) == DEFAULT_FUNCTIONS[name]
        # Batches only where the vendor has a bulk form; the accept stage and Product Recs
        # (one order per request) always take one message.
        many = batch == "true" and name in BULK_LANES
        assert _cardinality(binding) == ("many" if many else "one"), name
        assert binding["name"] == ("messages" if many else "message"), name


def test_esputnik_in_events_mode_has_no_bulk_form_so_its_lane_takes_one_message() -> None:
    declared = _declared(ORDERS_BATCH_ENABLED="true", ESPUTNIK_MODE="events")
    assert _cardinality(declared["deliver_esputnik"]) == "one"
    assert _cardinality(declared["deliver_profile_store"]) == "many"


def test_a_disabled_destination_has_no_function() -> None:
    declared = _declared(PRODUCT_RECS_ENABLED="false")
    assert set(declared) == set(DEFAULT_FUNCTIONS) - {"deliver_product_recs"}


def test_lane_metrics_is_a_timer_every_minute_when_enabled() -> None:
    declared = _declared(LANE_METRICS_ENABLED="true")
    assert set(declared) == {*DEFAULT_FUNCTIONS, "lane_metrics"}
    assert declared["lane_metrics"] == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "0 * * * * *",
        "useMonitor": False,
    }
    assert "lane_metrics" not in _functions()  # off by default (the template turns it on)


async def test_lane_metrics_logs_a_failure_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    class Failing:
        async def run(self) -> None:
            raise ConnectionError("management endpoint unreachable")

    function_app.use_lane_metrics(Failing())  # type: ignore[arg-type]
    try:
        await function_app._lane_metrics_function()(MagicMock())
    finally:
        function_app.use_lane_metrics(None)
    assert "reading the lanes' status failed" in caplog.text


def import_function_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What the host does first: import the app, here in a fresh process with `env`."""
    return subprocess.run(
        [sys.executable, "-c", "import function_app"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_host_refuses_to_start_without_a_service_bus_connection() -> None:
    env = {**os.environ, **BASELINE_ENV}
    env.pop("ServiceBusConnection")
    done = import_function_app(env)
    assert done.returncode != 0
    assert "missing setting ServiceBusConnection" in done.stderr


def test_in_azure_the_host_refuses_to_start_when_a_binding_setting_is_missing() -> None:
    env = {**os.environ, **BASELINE_ENV, "WEBSITE_INSTANCE_ID": "instance-1"}
    env |= function_app.binding_settings(function_app.SETTINGS)
    env.pop("ESPUTNIK_SUBSCRIPTION")
    done = import_function_app(env)
    assert done.returncode != 0
    assert "missing setting ESPUTNIK_SUBSCRIPTION" in done.stderr
    assert "usually 'esputnik'" in done.stderr


@pytest.mark.parametrize("missing", sorted(function_app.binding_settings(function_app.SETTINGS)))
def test_require_binding_settings_names_the_missing_one_in_azure(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    settings = function_app.SETTINGS
    expected = function_app.binding_settings(settings)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "instance-1")
    for name, value in expected.items():
        monkeypatch.setenv(name, value)
    function_app.require_binding_settings(settings)  # all there: starts
    monkeypatch.delenv(missing)
    with pytest.raises(SettingsError) as caught:
        function_app.require_binding_settings(settings)
    assert f"missing setting {missing} " in str(caught.value)
    assert repr(expected[missing]) in str(caught.value)
    assert sum(name in str(caught.value) for name in expected) == 1


def test_require_binding_settings_checks_nothing_outside_azure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    for name in function_app.binding_settings(function_app.SETTINGS):
        monkeypatch.delenv(name, raising=False)
    function_app.require_binding_settings(function_app.SETTINGS)


def test_a_disabled_destinations_subscription_is_not_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in BASELINE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PRODUCT_RECS_ENABLED", "false")
    names = function_app.binding_settings(load_settings())
    assert "PRODUCT_RECS_SUBSCRIPTION" not in names
    assert "PROFILE_STORE_SUBSCRIPTION" in names


# --- calling the functions -----------------------------------------------------------------------


@pytest.fixture
def app(pipeline: Pipeline) -> Iterator[Pipeline]:
    """The functions run on the conftest pipeline (fakes, FakeClock, MemoryLedger, MemoryOutbox)."""
    function_app.use_pipeline(pipeline)
    yield pipeline
    function_app.use_pipeline(None)


def new_actions() -> MagicMock:
    return MagicMock(spec=ServiceBusMessageActions)


@pytest.fixture
def actions() -> MagicMock:
    return new_actions()


def settled(actions: MagicMock) -> list[str]:
    return [name for name, _, _ in actions.method_calls]


def settled_each(made: dict[str, MagicMock]) -> dict[str, str]:
    """Lane -> its settlements, comma-joined (one each is the rule: "complete")."""
    return {name: ",".join(settled(actions)) for name, actions in made.items()}


def dead_letter(actions: MagicMock) -> tuple[str, str]:
    """The (reason, description) of the one dead-letter made."""
    assert settled(actions) == ["deadletter"]
    kwargs = actions.deadletter.call_args.kwargs
    return kwargs["deadletter_reason"], kwargs["deadletter_error_description"]


async def invoke(name: str, message: Any, actions: MagicMock) -> None:
    await _functions()[name].get_user_function()(message=message, message_actions=actions)


def as_received(outgoing: Outgoing) -> Any:
    """What the lane's subscription hands its function for a message on the deliveries topic."""
    return received_message(
        outgoing.body,
        message_id=outgoing.message_id,
        session_id=outgoing.session_id,
        properties={k: str(v) for k, v in outgoing.application_properties.items()},
    )


async def accepted(body: bytes, outbox: MemoryOutbox, **options: Any) -> dict[str, Outgoing]:
    """`accept_order` on `body`, completed: what it published, by destination."""
    actions = new_actions()
    await invoke("accept_order", received_message(body, **options), actions)
    assert settled(actions) == ["complete"], actions.method_calls
    published = outbox.take()
    return {m.destination: m for m in published}


async def through_lanes(published: dict[str, Outgoing]) -> dict[str, MagicMock]:
    """Each delivery message through its lane's function: the settlement each made."""
    made = {}
    for destination, outgoing in published.items():
        made[destination] = new_actions()
        await invoke(f"deliver_{destination}", as_received(outgoing), made[destination])
    return made


async def test_accept_publishes_one_delivery_message_per_routed_lane_and_completes(
    app: Pipeline,
    outbox: MemoryOutbox,
    actions: MagicMock,
    loyalty: FakeServer,
    fakes: dict[str, FakeServer],
) -> None:
    body = sample("order-created.json")
    message = received_message(body, message_id="100245-OrderCreated")
    await invoke("accept_order", message, actions)
    actions.complete.assert_called_once_with(message)
    assert settled(actions) == ["complete"]
    assert loyalty.requests[-1].path == "/cards/6330001234567890"  # looked up once, here
    published = outbox.take()
    key = event_key(parse_order(body))
    assert [m.destination for m in published] == list(ALL_LANES)
    for outgoing in published:
        assert outgoing.message_id == f"{key}:{outgoing.destination}"
        assert outgoing.application_properties["destination"] == outgoing.destination
        assert outgoing.session_id == "100245"
        assert outgoing.scheduled_at is None
        assert json.loads(outgoing.body)["customer"]["email"] == "ann.shopper@example.com"
    assert all(server.requests == [] for server in fakes.values())  # the lanes deliver, not accept


async def test_accept_publishes_nothing_for_a_lane_the_event_is_not_routed_to(
    app: Pipeline, outbox: MemoryOutbox
) -> None:
    published = await accepted(sample("order-updated.json"), outbox)
    assert set(published) == {"profile_store", "richrelevance", "esputnik"}


async def test_each_lane_function_delivers_its_message_and_completes(
    app: Pipeline, outbox: MemoryOutbox, fakes: dict[str, FakeServer], profile_store: PS
) -> None:
    published = await accepted(sample("order-created.json"), outbox)
    made = await through_lanes(published)
    assert settled_each(made) == dict.fromkeys(ALL_LANES, "complete")
    for name, server in fakes.items():
        assert len([r for r in server.requests if not r.path.endswith("/oauth2/token")]) == 1, name
    assert profile_store[1].accepted[-1]["user"]["email"] == "ann.shopper@example.com"
    assert outbox.take() == []  # nothing to retry


async def test_a_redelivered_delivery_message_is_not_sent_twice(
    app: Pipeline, outbox: MemoryOutbox, profile_store: PS
) -> None:
    published = await accepted(sample("order-created.json"), outbox)
    for _ in range(2):
        actions = new_actions()
        await invoke("deliver_profile_store", as_received(published["profile_store"]), actions)
        assert settled(actions) == ["complete"]
    assert len(profile_store[0].requests) == 1


async def test_the_accept_retry_function_runs_the_accept_stage(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock
) -> None:
    copy = received_message(
        sample("order-created.json"),
        properties={
            "destination": "accept",
            "retryAttempt": "1",
            "firstSeenUtc": "2026-11-23T09:00:00+00:00",
            "originalMessageId": "m-1",
        },
    )
    await invoke("accept_order_retry", copy, actions)
    assert settled(actions) == ["complete"]
    assert [m.destination for m in outbox.take()] == list(ALL_LANES)


@pytest.mark.parametrize("path", sorted((SAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
async def test_invalid_samples_are_dead_lettered_on_first_delivery_at_accept(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock, loyalty: FakeServer, path: Path
) -> None:
    message = received_message(path.read_bytes())  # noqa: ASYNC240 (a small local sample)
    await invoke("accept_order", message, actions)
    reason, description = dead_letter(actions)
    assert reason == "InvalidMessage"
    assert description.startswith(EXPECTED_FIELD[path.stem])
    assert outbox.take() == []  # poison never reaches a lane
    assert loyalty.requests == []


async def test_a_loyalty_outage_schedules_an_accept_retry_copy_and_completes(
    app: Pipeline,
    outbox: MemoryOutbox,
    actions: MagicMock,
    loyalty: FakeServer,
    fakes: dict[str, FakeServer],
) -> None:
    loyalty.inject(*[Reply(503)] * 5)
    body = sample("order-created.json")
    await invoke("accept_order", received_message(body, message_id="m-loyalty"), actions)
    assert settled(actions) == ["complete"]
    (copy,) = outbox.take()
    assert copy.scheduled_at is not None
    assert copy.destination == "accept"
    assert copy.application_properties["destination"] == "accept"
    assert copy.application_properties["retryAttempt"] == 1
    assert copy.application_properties["originalMessageId"] == "m-loyalty"
    assert copy.body == body
    assert all(server.requests == [] for server in fakes.values())


async def test_a_loyalty_provider_refusing_us_is_dead_lettered_at_accept(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock, loyalty: FakeServer
) -> None:
    loyalty.inject(Reply(401, {"error": "unauthorised"}))
    await invoke("accept_order", received_message(sample("order-created.json")), actions)
    reason, description = dead_letter(actions)
    assert reason == "LoyaltyLookupFailed"
    assert "LOYALTY_*" in description
    assert outbox.take() == []


async def test_an_unreachable_deliveries_topic_abandons_the_order(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock
) -> None:
    outbox.failure = ConnectionError("namespace unreachable")
    await invoke("accept_order", received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["abandon"]


async def test_a_delivery_message_too_large_for_the_topic_is_dead_lettered(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock
) -> None:
    outbox.failure = MessageTooLarge(
        "a delivery message of 300000 bytes is over the topic's maximum message size"
    )
    await invoke("accept_order", received_message(sample("order-created.json")), actions)
    reason, description = dead_letter(actions)
    assert reason == "MessageTooLarge"
    assert "300000 bytes" in description
    assert "ORDERS_MAX_MESSAGE_BYTES" in description


async def test_400_from_profile_store_dead_letters_only_its_lane_message(
    app: Pipeline, outbox: MemoryOutbox, profile_store: PS
) -> None:
    profile_store[0].inject(Reply(400, {"message": "eventType is required"}))
    made = await through_lanes(await accepted(sample("order-created.json"), outbox))
    reason, description = dead_letter(made.pop("profile_store"))
    assert reason == "DestinationRejected"
    assert description.startswith("rejected by profile_store: ")
    assert "profile_store HTTP 400" in description
    assert "eventType is required" in description
    assert settled_each(made) == dict.fromkeys(
        ("product_recs", "richrelevance", "esputnik"), "complete"
    )


async def test_503_schedules_a_retry_copy_for_that_lane_and_completes(
    app: Pipeline, outbox: MemoryOutbox, profile_store: PS
) -> None:
    profile_store[0].inject(*[Reply(503)] * 5)
    published = await accepted(sample("order-created.json"), outbox)
    made = await through_lanes(published)
    assert settled_each(made) == dict.fromkeys(ALL_LANES, "complete")
    (copy,) = outbox.take()  # for profile_store only: the other lanes delivered
    assert copy.scheduled_at is not None
    assert copy.destination == "profile_store"
    assert copy.application_properties["destination"] == "profile_store"
    assert copy.application_properties["retryAttempt"] == 1
    original = published["profile_store"]
    assert copy.application_properties["originalMessageId"] == original.message_id
    assert copy.body == original.body
    # When the copy comes due and the vendor is back, the same lane delivers it.
    actions = new_actions()
    await invoke("deliver_profile_store", as_received(copy), actions)
    assert settled(actions) == ["complete"]
    assert len(profile_store[1].accepted) == 1
    assert outbox.take() == []


async def test_a_retry_copy_that_cannot_be_scheduled_is_abandoned(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock, profile_store: PS
) -> None:
    profile_store[0].inject(*[Reply(503)] * 5)
    published = await accepted(sample("order-created.json"), outbox)
    outbox.failure = ConnectionError("namespace unreachable")
    await invoke("deliver_profile_store", as_received(published["profile_store"]), actions)
    assert settled(actions) == ["abandon"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"deliveryVersion": "2.0"}', b'{"deliveryVersion": "1.0"}'],
    ids=["not-json", "not-an-object", "unknown-major-version", "missing-fields"],
)
async def test_a_malformed_delivery_message_is_dead_lettered_invalid_on_its_lane(
    app: Pipeline, actions: MagicMock, fakes: dict[str, FakeServer], body: bytes
) -> None:
    await invoke("deliver_esputnik", received_message(body), actions)
    reason, description = dead_letter(actions)
    assert reason == "InvalidMessage"
    assert description.startswith("(delivery)")
    assert fakes["esputnik"].requests == []


async def test_a_delivery_message_for_another_lane_is_dead_lettered_invalid(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock, fakes: dict[str, FakeServer]
) -> None:
    published = await accepted(sample("order-created.json"), outbox)
    await invoke("deliver_esputnik", as_received(published["profile_store"]), actions)
    reason, description = dead_letter(actions)
    assert reason == "InvalidMessage"
    assert "'profile_store' reached the esputnik lane" in description
    assert all(server.requests == [] for server in fakes.values())


@pytest.mark.parametrize("function", ["accept_order", "deliver_profile_store"])
async def test_an_unexpected_exception_still_settles(
    app: Pipeline,
    outbox: MemoryOutbox,
    actions: MagicMock,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
) -> None:
    async def explode(body: bytes, metadata: Any) -> Any:
        raise RuntimeError("bug")

    published = await accepted(sample("order-created.json"), outbox)
    monkeypatch.setattr(app.accept, "accept", explode)
    monkeypatch.setattr(app.lanes["profile_store"], "deliver", explode)
    message = (
        received_message(sample("order-created.json"))
        if function == "accept_order"
        else as_received(published["profile_store"])
    )
    await invoke(function, message, actions)
    assert settled(actions) == ["abandon"]


async def test_a_failing_settlement_does_not_raise(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock
) -> None:
    actions.complete.side_effect = RuntimeError("lock lost")
    await invoke("accept_order", received_message(sample("order-created.json")), actions)
    assert settled(actions) == ["complete"]
    lane = new_actions()
    lane.complete.side_effect = RuntimeError("lock lost")
    published = outbox.take()
    await invoke("deliver_esputnik", as_received(published[-1]), lane)
    assert settled(lane) == ["complete"]


async def test_works_on_session_enabled_subscriptions(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock
) -> None:
    message = received_message(sample("order-created.json"), session_id="100245")
    assert message.session_id == "100245"
    await invoke("accept_order", message, actions)
    assert settled(actions) == ["complete"]
    published = {m.destination: m for m in outbox.take()}
    lane_message = as_received(published["richrelevance"])
    assert lane_message.session_id == "100245"  # the lane keeps the order's events in order
    lane = new_actions()
    await invoke("deliver_richrelevance", lane_message, lane)
    assert settled(lane) == ["complete"]


# --- ORDERS_BATCH_ENABLED: the bulk-capable lanes take batches -----------------------------------


@pytest.fixture
def batch_functions(app: Pipeline, fakes: dict[str, FakeServer], loyalty: FakeServer) -> Any:
    """`build_app` for the conftest fakes with batches on; invocations run on `app`."""
    settings = settings_for(
        fakes["profile_store"].url,
        loyalty.url,
        others={name: fakes[name].url for name in ALL_LANES[1:]},
        core={"orders_batch_enabled": True},
    )
    return {f.get_function_name(): f for f in function_app.build_app(settings).get_functions()}


def test_the_batch_binding_is_one_the_servicebus_extension_decodes(batch_functions: Any) -> None:
    from azurefunctions.extensions.bindings.servicebus import ServiceBusConverter

    for name in BULK_LANES:
        assert _cardinality(_binding(batch_functions[name])) == "many"
        annotation = (
            inspect.signature(batch_functions[name].get_user_function(), eval_str=True)
            .parameters["messages"]
            .annotation
        )
        assert ServiceBusConverter.check_input_type_annotation(annotation), name
    assert _cardinality(_binding(batch_functions["deliver_product_recs"])) == "one"


async def test_batch_messages_are_settled_one_by_one(
    batch_functions: Any, outbox: MemoryOutbox, actions: MagicMock, profile_store: PS
) -> None:
    document = json.loads(sample("order-created.json"))
    lane = []
    for i in range(3):
        body = json.dumps({**document, "orderId": f"F{i}"}).encode()
        lane.append((await accepted(body, outbox))["profile_store"])
    messages = [as_received(m) for m in lane]
    messages.insert(1, received_message(b"not json"))
    user_function = batch_functions["deliver_profile_store"].get_user_function()
    await user_function(messages=messages, message_actions=actions)
    assert settled(actions) == ["complete", "deadletter", "complete", "complete"]
    assert [call.args[0] for call in actions.method_calls] == messages
    assert actions.deadletter.call_args.kwargs["deadletter_reason"] == "InvalidMessage"
    assert [r.path for r in profile_store[0].requests] == ["/api/v1.0/TrackBulk"]
    assert len(profile_store[1].accepted) == 3


async def test_a_batch_that_fails_unexpectedly_is_abandoned_message_by_message(
    app: Pipeline,
    batch_functions: Any,
    outbox: MemoryOutbox,
    actions: MagicMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def explode(messages: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.lanes["profile_store"], "deliver_batch", explode)
    published = await accepted(sample("order-created.json"), outbox)
    actions.abandon.side_effect = [RuntimeError("lock lost"), None]
    messages = [as_received(published["profile_store"]) for _ in range(2)]
    user_function = batch_functions["deliver_profile_store"].get_user_function()
    await user_function(messages=messages, message_actions=actions)
    assert settled(actions) == ["abandon", "abandon"]


# --- personal data and keys ----------------------------------------------------------------------

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
    app: Pipeline,
    outbox: MemoryOutbox,
    all_logs: pytest.LogCaptureFixture,
    profile_store: PS,
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
        await invoke("accept_order", received_message(sample(name)), new_actions())
        await through_lanes({m.destination: m for m in outbox.take() if m.scheduled_at is None})
    await invoke(
        "accept_order",
        received_message(b'{"customer": {"email": "ann.shopper@example.com"}}'),
        new_actions(),
    )
    text = "\n".join(_rendered(r) for r in all_logs.records)
    assert all_logs.records, "the scenarios should have logged"
    assert "deliver" in text  # the lanes ran and logged too
    leaks = [secret for secret in SECRETS if secret in text]
    assert leaks == []
    assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", text)


async def test_a_vendor_echoing_the_key_never_puts_it_in_the_dead_letter(
    app: Pipeline, outbox: MemoryOutbox, actions: MagicMock, profile_store: PS
) -> None:
    echo = f"the key {PROFILE_STORE_KEY} is not valid for this scope"
    profile_store[0].inject(Reply(400, {"message": echo}))
    published = await accepted(sample("order-created.json"), outbox)
    await invoke("deliver_profile_store", as_received(published["profile_store"]), actions)
    _, description = dead_letter(actions)
    assert "profile_store HTTP 400" in description
    assert PROFILE_STORE_KEY not in description
    assert "the key *** is not valid" in description


def test_the_pipeline_is_closed_when_its_loop_stops_and_rebuilt_on_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No worker hook announces shutdown: the loop's own shutdown closes the clients."""
    closed: list[object] = []

    class Built:
        async def aclose(self) -> None:
            closed.append(self)

    monkeypatch.setattr(Pipeline, "from_settings", classmethod(lambda cls, settings: Built()))
    function_app.use_pipeline(None)

    async def invocation() -> object:
        return function_app._current()

    first = asyncio.run(invocation())
    assert closed == [first]
    second = asyncio.run(invocation())
    assert second is not first
    assert closed == [first, second]
