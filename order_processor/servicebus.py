"""Service Bus SDK message -> what the core needs (bytes + MessageMetadata).

Uses `azure.servicebus` types only (no Azure Functions types), so the function adapter, the DLQ
tools and the tests share it.
"""

from __future__ import annotations

from azure.servicebus import ServiceBusReceivedMessage, aio

from order_processor.model import MessageMetadata
from order_processor.settings import ServiceBusSettings


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def message_body(message: ServiceBusReceivedMessage) -> bytes:
    """The body as bytes, whichever AMQP body section the publisher used."""
    body = message.body
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return b"".join(
        part if isinstance(part, bytes) else _text(part).encode("utf-8") for part in body
    )


def message_metadata(message: ServiceBusReceivedMessage) -> MessageMetadata:
    properties = message.application_properties or {}
    return MessageMetadata(
        message_id=_text(message.message_id) if message.message_id is not None else None,
        enqueued_time=message.enqueued_time_utc,
        # The Functions SDK-type binding does not fill delivery_count; keep whatever is there.
        delivery_count=message.delivery_count,
        session_id=message.session_id,
        application_properties={_text(k): _text(v) for k, v in properties.items()},
    )


def service_bus_client(settings: ServiceBusSettings) -> aio.ServiceBusClient:
    """One async client for the app's namespace: the connection string, or the namespace with
    the managed identity (`ServiceBusConnection__fullyQualifiedNamespace`)."""
    settings.require()
    if settings.connection is not None:
        return aio.ServiceBusClient.from_connection_string(settings.connection.get_secret_value())
    from azure.identity.aio import DefaultAzureCredential

    assert settings.fully_qualified_namespace
    return aio.ServiceBusClient(settings.fully_qualified_namespace, DefaultAzureCredential())
