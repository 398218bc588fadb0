"""Azure Functions entry point: a thin adapter from a Service Bus message to the core and back.

It turns the message into bytes + metadata, asks `order_processor` for an Outcome, and settles the
message explicitly (complete / dead-letter with reason / abandon). Nothing else lives here.
"""

from __future__ import annotations

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.servicebus as servicebus

from order_processor.logs import configure_logging
from order_processor.model import Outcome, Settlement
from order_processor.processor import Processor
from order_processor.servicebus import message_body, message_metadata
from order_processor.settings import AppSettings, load_settings

log = logging.getLogger("function_app")

app = func.FunctionApp()

# Validate every setting at start-up: a bad configuration stops the host from loading the
# function (messages wait safely in the subscription) instead of failing each message.
SETTINGS: AppSettings = load_settings()
configure_logging(SETTINGS.core.log_level)

_processor: Processor | None = None


def use_processor(processor: Processor | None) -> None:
    """Testing hook: run invocations on `processor` (None: build from SETTINGS on next use)."""
    global _processor
    _processor = processor


def _current_processor() -> Processor:
    global _processor
    if _processor is None:
        _processor = Processor.from_settings(SETTINGS)
    return _processor


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
            # Redelivery after the lock is released; the subscription's MaxDeliveryCount bounds it.
            actions.abandon(message)


@app.service_bus_topic_trigger(
    arg_name="message",
    topic_name="%ORDERS_TOPIC%",
    subscription_name="%ORDERS_SUBSCRIPTION%",
    connection="ServiceBusConnection",
    auto_complete_messages=False,
)
async def sync_order(
    message: servicebus.ServiceBusReceivedMessage,
    message_actions: servicebus.ServiceBusMessageActions,
) -> None:
    try:
        outcome = await _current_processor().process(
            message_body(message), message_metadata(message)
        )
    except Exception:
        # Never leave a message locked: release it for redelivery and say why in the log.
        log.exception("unexpected failure; abandoning message %s", message.message_id)
        message_actions.abandon(message)
        return
    try:
        settle(outcome, message, message_actions)
    except Exception:
        # The lock will lapse and Service Bus redelivers; nothing is lost.
        log.exception(
            "settling message %s as %s failed", message.message_id, outcome.settlement.value
        )
