"""Azure Functions entry point: a thin adapter from a Service Bus message to the core and back.

It turns the message into bytes + metadata, asks `order_processor` for an Outcome, and settles the
message explicitly (complete / dead-letter with reason / abandon). Two triggers share one core: the
`orders` subscription and the retry queue the core schedules copies on. With ORDERS_BATCH_ENABLED
the subscription's trigger takes a batch (`cardinality=many`) and settles each message of it on its
own. Nothing else lives here.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, List  # noqa: UP035 - see sync_order_batch

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from order_processor.handler import OrderHandler
from order_processor.lifetime import close_with_loop
from order_processor.logs import configure_logging
from order_processor.model import Outcome, Settlement
from order_processor.servicebus import message_body, message_metadata
from order_processor.settings import AppSettings, load_settings
from order_processor.telemetry import configure_azure_monitor_from_environment

log = logging.getLogger("function_app")

app = func.FunctionApp()

# Validate every setting at start-up: a bad configuration stops the host from loading the
# function (messages wait safely in the subscription) instead of failing each message.
SETTINGS: AppSettings = load_settings()
SETTINGS.service_bus.require()
configure_logging(SETTINGS.core.log_level, fmt=SETTINGS.core.log_format)
configure_azure_monitor_from_environment()

_handler: OrderHandler | None = None


def use_handler(handler: OrderHandler | None) -> None:
    """Testing hook: run invocations on `handler` (None: build from SETTINGS on next use)."""
    global _handler
    _handler = handler


def _current_handler() -> OrderHandler:
    global _handler
    if _handler is None:
        handler = OrderHandler.from_settings(SETTINGS)
        # The worker has no shutdown hook: close the handler's clients (aiohttp sessions among
        # them) when the loop they belong to stops, and build anew if a later loop invokes us.
        close_with_loop(handler.aclose, closed=functools.partial(_forget, handler))
        _handler = handler
    return _handler


def _forget(handler: OrderHandler) -> None:
    global _handler
    if _handler is handler:
        _handler = None


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


_ORDERS_TOPIC: dict[str, Any] = {
    "topic_name": "%ORDERS_TOPIC%",
    "subscription_name": "%ORDERS_SUBSCRIPTION%",
    "connection": "ServiceBusConnection",
    "auto_complete_messages": False,
    # Read at start-up: the binding must match how the subscription was created.
    "is_sessions_enabled": SETTINGS.core.orders_sessions_enabled,
}

if SETTINGS.core.orders_batch_enabled:
    # ORDERS_BATCH_ENABLED: the same function name, so dashboards and alerts do not change.
    @app.function_name("sync_order")
    @app.service_bus_topic_trigger(
        arg_name="messages", cardinality=func.Cardinality.MANY, **_ORDERS_TOPIC
    )
    async def sync_order_batch(
        # typing.List, not list[...]: the Python worker's load check (azure-functions-runtime,
        # what Azure runs on 3.13) refuses the built-in generic as an "invalid non-type
        # annotation", and that load failure takes every function of the app down.
        messages: List[servicebus.ServiceBusReceivedMessage],  # noqa: UP006
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await _handle_batch(messages, message_actions)

else:

    @app.service_bus_topic_trigger(arg_name="message", **_ORDERS_TOPIC)
    async def sync_order(
        message: servicebus.ServiceBusReceivedMessage,
        message_actions: servicebus.ServiceBusMessageActions,
    ) -> None:
        await _handle(message, message_actions)


@app.service_bus_queue_trigger(
    arg_name="message",
    queue_name="%ORDERS_RETRY_QUEUE%",
    connection="ServiceBusConnection",
    auto_complete_messages=False,
)
async def retry_order(
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    await _handle(message, message_actions)


async def _handle(
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        outcome = await _current_handler().handle(message_body(message), message_metadata(message))
    except Exception:
        _abandon([message], message_actions)
        return
    _settle_logged(outcome, message, message_actions)


async def _handle_batch(
    messages: list[servicebus.ServiceBusReceivedMessage],
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        outcomes = await _current_handler().handle_batch(
            [(message_body(m), message_metadata(m)) for m in messages]
        )
    except Exception:
        _abandon(messages, message_actions)
        return
    for message, outcome in zip(messages, outcomes, strict=True):
        _settle_logged(outcome, message, message_actions)


def _abandon(
    messages: list[servicebus.ServiceBusReceivedMessage],
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    """Never leave a message locked: release it for redelivery and say why in the log."""
    log.exception("unexpected failure; abandoning %d message(s)", len(messages))
    for message in messages:
        try:
            message_actions.abandon(message)
        except Exception:
            log.exception("abandoning message %s failed", message.message_id)


def _settle_logged(
    outcome: Outcome,
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        settle(outcome, message, message_actions)
    except Exception:
        # The lock will lapse and Service Bus redelivers; nothing is lost.
        log.exception(
            "settling message %s as %s failed", message.message_id, outcome.settlement.value
        )
