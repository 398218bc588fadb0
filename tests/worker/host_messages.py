"""Requests as the Functions host sends them to a Python worker, for the harness.

Service Bus messages reach an SDK-type binding as `ModelBindingData` (source `AzureServiceBus`,
content type `application/octet-stream`): the content is the message's lock token (16 bytes, .NET
GUID byte order) + b"x-opt-lock-token" + the AMQP-encoded message, which is what the extension's
`get_decoded_message` takes apart. A `cardinality=many` trigger gets a
`CollectionModelBindingData` of them in one invocation.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import uamqp

from tests.worker import protos
from tests.worker.protos.FunctionRpc_pb2 import CollectionModelBindingData, ModelBindingData

LOCK_TOKEN_MARKER = b"x-opt-lock-token"
_ENQUEUED_MS = 1_763_650_000_000  # any fixed time: the app only reads it for retry bookkeeping


@dataclass(frozen=True)
class ServiceBusMessage:
    body: bytes
    message_id: str
    session_id: str | None = None
    lock_token: uuid.UUID = field(default_factory=uuid.uuid4)
    sequence_number: int = 1


def model_binding_data(message: ServiceBusMessage) -> ModelBindingData:
    amqp = uamqp.Message(
        body=message.body,
        properties=uamqp.message.MessageProperties(
            message_id=message.message_id, group_id=message.session_id
        ),
        application_properties={},
        annotations={
            b"x-opt-enqueued-time": _ENQUEUED_MS,
            b"x-opt-sequence-number": message.sequence_number,
        },
    )
    return ModelBindingData(
        version="1.0",
        source="AzureServiceBus",
        content_type="application/octet-stream",
        content=message.lock_token.bytes_le + LOCK_TOKEN_MARKER + amqp.encode_message(),
    )


def trigger_data(messages: Sequence[ServiceBusMessage], *, many: bool) -> protos.TypedData:
    if many:
        return protos.TypedData(
            collection_model_binding_data=CollectionModelBindingData(
                model_binding_data=[model_binding_data(m) for m in messages]
            )
        )
    (message,) = messages
    return protos.TypedData(model_binding_data=model_binding_data(message))


def trigger_metadata(
    messages: Sequence[ServiceBusMessage], *, many: bool, function_name: str
) -> dict[str, protos.TypedData]:
    """Part of what the host's Service Bus trigger sends beside the data (the app reads none of
    it, but the worker converts every entry, so a realistic shape is worth sending). Numbers go
    as JSON: the Python workers decode no `int` TypedData."""

    def as_json(value: object) -> protos.TypedData:
        return protos.TypedData(json=json.dumps(value))

    system = as_json({"MethodName": function_name, "UtcNow": "2026-11-20T14:33:20Z"})
    if many:
        return {
            "MessageIdArray": as_json([m.message_id for m in messages]),
            "LockTokenArray": as_json([str(m.lock_token) for m in messages]),
            "DeliveryCountArray": as_json([1 for _ in messages]),
            "SequenceNumberArray": as_json([m.sequence_number for m in messages]),
            "sys": system,
        }
    (message,) = messages
    return {
        "MessageId": protos.TypedData(string=message.message_id),
        "LockToken": protos.TypedData(string=str(message.lock_token)),
        "DeliveryCount": as_json(1),
        "SequenceNumber": as_json(message.sequence_number),
        "ApplicationProperties": as_json({}),
        "sys": system,
    }


def invocation(
    *,
    function: protos.RpcFunctionMetadata,
    binding_name: str,
    messages: Sequence[ServiceBusMessage],
    many: bool,
) -> protos.StreamingMessage:
    request = protos.InvocationRequest(
        invocation_id=str(uuid.uuid4()),
        function_id=function.function_id,
        input_data=[
            protos.ParameterBinding(name=binding_name, data=trigger_data(messages, many=many))
        ],
        trigger_metadata=trigger_metadata(messages, many=many, function_name=function.name),
    )
    return protos.StreamingMessage(request_id=str(uuid.uuid4()), invocation_request=request)


def worker_init(*, app_directory: str, worker_directory: str) -> protos.StreamingMessage:
    request = protos.WorkerInitRequest(
        host_version="4.1040.0",
        function_app_directory=app_directory,
        worker_directory=worker_directory,
    )
    return protos.StreamingMessage(request_id=str(uuid.uuid4()), worker_init_request=request)


def functions_metadata(app_directory: str) -> protos.StreamingMessage:
    return protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        functions_metadata_request=protos.FunctionsMetadataRequest(
            function_app_directory=app_directory
        ),
    )


def function_load(function: protos.RpcFunctionMetadata) -> protos.StreamingMessage:
    return protos.StreamingMessage(
        request_id=str(uuid.uuid4()),
        function_load_request=protos.FunctionLoadRequest(
            function_id=function.function_id, metadata=function
        ),
    )
