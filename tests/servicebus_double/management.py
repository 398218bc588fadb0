"""The request-response nodes: `$cbs` (put-token) and `<entity>/$management` operations.

Requests and replies follow the Service Bus AMQP management mapping as azure-servicebus's
`_pyamqp` reads it: the reply's correlation-id is the request's message-id, the status goes in
application properties (`status-code` on `$cbs`, `statusCode` on `$management`), an error
carries `errorCondition`, and results travel as an amqp-value map.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proton import UNDESCRIBED, Array, Data, Message, symbol

from . import codec
from .broker import Broker, BrokerError, EntityNotFound, Outcome

VENDOR = "com.microsoft:"
_SETTLEMENTS: dict[str, Outcome] = {
    "completed": "complete",
    "abandoned": "abandon",
    "defered": "defer",  # sic: the service's spelling
    "suspended": "dead-letter",
}


@dataclass
class Reply:
    status: int
    description: str
    body: Any = None
    condition: str | None = None


def encode_reply(request: Message, reply: Reply, *, cbs: bool) -> bytes:
    code, description = (
        ("status-code", "status-description") if cbs else ("statusCode", "statusDescription")
    )
    properties: dict[str, Any] = {code: reply.status, description: reply.description}
    if reply.condition:
        properties["errorCondition"] = symbol(reply.condition)
    message = Message(correlation_id=request.id, properties=properties, body=reply.body)
    return bytes(message.encode())


def put_token(request: Message) -> Reply:
    """Any token is accepted: the double checks that the client authenticates, not what with."""
    if _operation(request) != "put-token":
        return Reply(400, "only put-token is supported on $cbs", condition="amqp:not-implemented")
    return Reply(202, "Accepted")


def execute(broker: Broker, entity: str, request: Message) -> Reply:
    operation = _operation(request)
    handler = _OPERATIONS.get(operation.removeprefix(VENDOR))
    if handler is None:
        description = f"ServiceBusDouble does not implement the management operation {operation!r}"
        return Reply(501, description, condition="amqp:not-implemented")
    body = request.body
    if not isinstance(body, dict):
        return Reply(400, f"{operation} expects a map body", VENDOR + "argument-error")
    try:
        return handler(broker, entity, body)
    except BrokerError as error:
        return Reply(error.status, str(error), condition=error.condition)
    except (KeyError, TypeError, ValueError) as error:
        return Reply(400, f"malformed {operation} request: {error!r}", VENDOR + "argument-error")


def _schedule(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    if not broker.is_target(entity):
        raise EntityNotFound(f"messages can only be scheduled on a queue or topic, not {entity!r}")
    messages = [codec.decode(bytes(item["message"])) for item in body["messages"]]
    numbers = broker.send(entity, messages)
    return Reply(200, "OK", {"sequence-numbers": Array(UNDESCRIBED, Data.LONG, *numbers)})


def _cancel_scheduled(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    broker.cancel_scheduled(entity, [int(n) for n in _elements(body["sequence-numbers"])])
    return Reply(200, "OK")


def _peek(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    found = broker.peek(entity, int(body["from-sequence-number"]), int(body["message-count"]))
    if not found:
        return Reply(204, "No messages to peek")
    # Not yet enqueued means still scheduled: the service marks those with their state.
    encoded = [codec.encode_delivery(m, scheduled=m.enqueued_time is None) for m in found]
    return Reply(200, "OK", {"messages": [{"message": e} for e in encoded]})


def _renew_lock(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    expiries = broker.renew(_tokens(body))
    stamps = [codec.to_timestamp(broker.to_wall_clock(at)) for at in expiries]
    return Reply(200, "OK", {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *stamps)})


def _update_disposition(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    outcome = _SETTLEMENTS[str(body["disposition-status"])]
    for token in _tokens(body):
        broker.settle(
            token,
            outcome,
            reason=body.get("deadletter-reason"),
            description=body.get("deadletter-description"),
        )
    return Reply(200, "OK", {})


def _receive_by_sequence_number(broker: Broker, entity: str, body: dict[str, Any]) -> Reply:
    # receiver-settle-mode 1 ("second") is peek-lock; 0 is receive-and-delete.
    lock = int(body.get("receiver-settle-mode", 1)) == 1
    numbers = [int(n) for n in _elements(body["sequence-numbers"])]
    found = broker.receive_deferred(entity, numbers, lock=lock)
    items = []
    for message in found:
        locked_until = broker.to_wall_clock(message.locked_until) if message.locked_until else None
        item: dict[str, Any] = {
            "message": codec.encode_delivery(message, locked_until=locked_until)
        }
        if message.lock_token is not None:
            item["lock-token"] = message.lock_token
        items.append(item)
    return Reply(200, "OK", {"messages": items})


def _operation(request: Message) -> str:
    properties: dict[Any, Any] = dict(request.properties or {})
    return str(properties.get("operation"))


def _tokens(body: dict[str, Any]) -> list[uuid.UUID]:
    return [
        t if isinstance(t, uuid.UUID) else uuid.UUID(str(t)) for t in _elements(body["lock-tokens"])
    ]


def _elements(value: Any) -> list[Any]:
    if isinstance(value, Array):
        return list(value.elements)
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


_OPERATIONS: dict[str, Callable[[Broker, str, dict[str, Any]], Reply]] = {
    "schedule-message": _schedule,
    "cancel-scheduled-message": _cancel_scheduled,
    "peek-message": _peek,
    "renew-lock": _renew_lock,
    "update-disposition": _update_disposition,
    "receive-by-sequence-number": _receive_by_sequence_number,
}
