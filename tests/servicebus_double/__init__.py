"""A loopback AMQP 1.0 test double of Azure Service Bus for the real azure-servicebus client.

Built on python-qpid-proton: SASL ANONYMOUS without TLS, `$cbs` put-token, senders
to queues and topics (single and batched), peek-lock and receive-and-delete receivers on
queues, subscriptions and their dead-letter sub-queues, and the `$management` operations the
SDK uses. Connect with `ServiceBusClient.from_connection_string(double.connection_string)`.
"""

from .broker import StoredMessage
from .double import ServiceBusDouble

__all__ = ["ServiceBusDouble", "StoredMessage"]
