"""Azure Functions entry point: thin adapters from Service Bus messages to the two stages and back.

- `accept_order` (the orders subscription) and `accept_order_retry` (the accept stage's own retry
  copies) run stage 1: one delivery message per routed destination.
- `deliver_<name>`, one per enabled destination (from the registry), runs that destination's
  lane on its subscription of the deliveries topic. With ORDERS_BATCH_ENABLED, the lanes whose
  vendor has a bulk form take batches (`cardinality=many`), each message settled on its own.
- `lane_metrics` (LANE_METRICS_ENABLED), a timer every minute: every lane's status as gauges.

Each adapter turns a message into bytes + metadata, asks the core for an Outcome and settles the
message explicitly (complete / dead-letter with reason / abandon). Nothing else lives here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, List  # noqa: UP035 (typing.List: see _batch_lane)

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from order_processor.destinations import DESTINATIONS
from order_processor.lifetime import PerLoop
from order_processor.logs import configure_logging
from order_processor.model import MessageMetadata, Outcome, Settlement
from order_processor.overview.metrics import LaneMetrics
from order_processor.pipeline import Pipeline
from order_processor.servicebus import message_body, message_metadata
from order_processor.settings import AppSettings, SettingsError, load_settings
from order_processor.telemetry import configure_azure_monitor_from_environment

log = logging.getLogger("function_app")

Messages = List[servicebus.ServiceBusReceivedMessage]  # noqa: UP006
#: every minute, at second 0 (NCRONTAB with seconds, as the timer trigger reads it)
LANE_METRICS_SCHEDULE = "0 * * * * *"
Stage = Callable[[bytes, MessageMetadata], Awaitable[Outcome]]
BatchStage = Callable[[Sequence[tuple[bytes, MessageMetadata]]], Awaitable[list[Outcome]]]


def binding_settings(settings: AppSettings) -> dict[str, str]:
    """The app settings the trigger bindings read (`%NAME%`), with the value each should have.
    The host resolves them itself: a missing one would stop the function from starting."""
    names = {
        "ORDERS_TOPIC": settings.core.orders_topic,
        "ORDERS_SUBSCRIPTION": settings.core.orders_subscription,
        "DELIVERIES_TOPIC": settings.core.deliveries_topic,
        "ACCEPT_RETRY_SUBSCRIPTION": settings.core.accept_retry_subscription,
    }
    for name in settings.enabled:
        names[DESTINATIONS[name].subscription_setting()] = settings.destinations[
            name
        ].subscription_name
    return names


def require_binding_settings(settings: AppSettings) -> None:
    """In Azure (WEBSITE_INSTANCE_ID set), every setting a binding reads must exist."""
    if not os.environ.get("WEBSITE_INSTANCE_ID"):
        return
    missing = [
        f"missing setting {name} (a trigger binding reads it; usually {value!r})"
        for name, value in binding_settings(settings).items()
        if not os.environ.get(name)
    ]
    if missing:
        raise SettingsError(missing)


# Validate every setting at start-up: a bad configuration stops the host from loading the
# functions (messages wait safely in their subscriptions) instead of failing each message.
SETTINGS: AppSettings = load_settings()
SETTINGS.service_bus.require()
require_binding_settings(SETTINGS)
configure_logging(SETTINGS.core.log_level, fmt=SETTINGS.core.log_format)
configure_azure_monitor_from_environment()

# The worker has no shutdown hook: the clients (aiohttp sessions among them) are closed when the
# loop they belong to stops, and built anew if a later loop invokes us (order_processor.lifetime).
_pipeline = PerLoop(lambda: Pipeline.from_settings(SETTINGS))
_lane_metrics = PerLoop(lambda: LaneMetrics(SETTINGS, _current().observer))


def use_pipeline(pipeline: Pipeline | None) -> None:
    """Testing hook: run invocations on `pipeline` (None: build from SETTINGS on next use)."""
    _pipeline.use(pipeline)


def use_lane_metrics(metrics: LaneMetrics | None) -> None:
    """Testing hook: the timer reads lanes through `metrics` (None: build on next use)."""
    _lane_metrics.use(metrics)


def _current() -> Pipeline:
    return _pipeline.get()


def _lane_metrics_function() -> Callable[..., Awaitable[None]]:
    async def lane_metrics(timer: func.TimerRequest) -> None:
        """Read every lane's status and report it as gauges; a failure is logged, never raised
        (the next minute tries again)."""
        try:
            await _lane_metrics.get().run()
        except Exception:
            log.exception("reading the lanes' status failed")

    return lane_metrics


def settle(
    outcome: Outcome,
    message: servicebus.ServiceBusReceivedMessage,
    actions: servicebus.ServiceBusMessageActions,
) -> None:
    match outcome.settlement:
        case Settlement.COMPLETE:
            actions.complete(message)
        case Settlement.DEAD_LETTER:
            actions.deadletter(
                message,
                deadletter_reason=outcome.reason,
                deadletter_error_description=outcome.description,
            )
        case Settlement.RETRY:
            # Only when not even a retry copy could be scheduled: redelivery after the lock is
            # released (MaxDeliveryCount bounds it; the ledger makes it safe).
            actions.abandon(message)


async def run_one(
    stage: Stage,
    message: servicebus.ServiceBusReceivedMessage,
    actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        outcome = await stage(message_body(message), message_metadata(message))
    except Exception:
        _abandon([message], actions)
        return
    _settle_logged(outcome, message, actions)


async def run_batch(
    stage: BatchStage,
    messages: Sequence[servicebus.ServiceBusReceivedMessage],
    actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        outcomes = await stage([(message_body(m), message_metadata(m)) for m in messages])
    except Exception:
        _abandon(messages, actions)
        return
    for message, outcome in zip(messages, outcomes, strict=True):
        _settle_logged(outcome, message, actions)


def _abandon(
    messages: Sequence[servicebus.ServiceBusReceivedMessage],
    actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Never leave a message locked: release it for redelivery and say why in the log."""
    log.exception("unexpected failure; abandoning %d message(s)", len(messages))
    for message in messages:
        try:
            actions.abandon(message)
        except Exception:
            log.exception("abandoning message %s failed", message.message_id)


def _settle_logged(
    outcome: Outcome,
    message: servicebus.ServiceBusReceivedMessage,
    actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        settle(outcome, message, actions)
    except Exception:
        # The lock will lapse and Service Bus redelivers; nothing is lost.
        log.exception(
            "settling message %s as %s failed", message.message_id, outcome.settlement.value
        )


def _accept(body: bytes, metadata: MessageMetadata) -> Awaitable[Outcome]:
    return _current().accept.accept(body, metadata)


def _accept_function() -> Callable[..., Awaitable[None]]:
    async def accept(
        message: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await run_one(_accept, message, message_actions)

    return accept


def _single_lane(name: str) -> Callable[..., Awaitable[None]]:
    async def deliver(
        message: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await run_one(lambda b, m: _current().lanes[name].deliver(b, m), message, message_actions)

    return deliver


def _batch_lane(name: str) -> Callable[..., Awaitable[None]]:
    async def deliver(
        # typing.List, not list[...]: the Python worker's load check (azure-functions-runtime,
        # what Azure runs on 3.13) refuses the built-in generic as an "invalid non-type
        # annotation", and that load failure takes every function of the app down.
        messages: Messages,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await run_batch(
            lambda batch: _current().lanes[name].deliver_batch(batch), messages, message_actions
        )

    return deliver


def build_app(settings: AppSettings) -> func.FunctionApp:
    """The functions for these settings: the accept stage's two, one per enabled lane, and the
    lane_metrics timer when LANE_METRICS_ENABLED."""
    built = func.FunctionApp()
    # Read at start-up: the bindings must match how the subscriptions were created.
    sessions = settings.core.orders_sessions_enabled
    common: dict[str, Any] = {
        "connection": "ServiceBusConnection",
        "auto_complete_messages": False,
        "is_sessions_enabled": sessions,
    }

    # The orders subscription, and the accept stage's own retry copies: the same stage.
    for name, topic, subscription in (
        ("accept_order", "%ORDERS_TOPIC%", "%ORDERS_SUBSCRIPTION%"),
        ("accept_order_retry", "%DELIVERIES_TOPIC%", "%ACCEPT_RETRY_SUBSCRIPTION%"),
    ):
        built.function_name(name)(
            built.service_bus_topic_trigger(
                arg_name="message", topic_name=topic, subscription_name=subscription, **common
            )(_accept_function())
        )
    for name in settings.enabled:
        cls = DESTINATIONS[name]
        batched = (
            settings.core.orders_batch_enabled and cls.max_batch(settings.destinations[name]) > 1
        )
        lane = _batch_lane(name) if batched else _single_lane(name)
        options: dict[str, Any] = (
            {"arg_name": "messages", "cardinality": func.Cardinality.MANY}
            if batched
            else {"arg_name": "message"}
        )
        built.function_name(cls.function_name())(
            built.service_bus_topic_trigger(
                topic_name="%DELIVERIES_TOPIC%",
                subscription_name=f"%{cls.subscription_setting()}%",
                **options,
                **common,
            )(lane)
        )
    if settings.lane_status.lane_metrics_enabled:
        built.function_name("lane_metrics")(
            built.timer_trigger(
                arg_name="timer", schedule=LANE_METRICS_SCHEDULE, use_monitor=False
            )(_lane_metrics_function())
        )
    return built


app = build_app(SETTINGS)
