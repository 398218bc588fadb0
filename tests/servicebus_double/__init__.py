"""A loopback AMQP 1.0 test double of Azure Service Bus for the real azure-servicebus client.

Built on python-qpid-proton: SASL ANONYMOUS without TLS, `$cbs` put-token, senders
to queues and topics (single and batched, up to an advertised max message size), peek-lock and
receive-and-delete receivers on queues, subscriptions and their dead-letter sub-queues, and the
`$management` operations the SDK uses. Entities model subscription rules (a subset of the SQL
filter syntax), duplicate detection, time to live and max delivery count. Connect with
`ServiceBusClient.from_connection_string(double.connection_string)`.
"""

from .broker import Discarded, StoredMessage
from .double import STANDARD_MAX_MESSAGE_SIZE, ServiceBusDouble
from .sqlfilter import FilterNotSupported, FilterSyntaxError, SqlFilter

__all__ = [
    "STANDARD_MAX_MESSAGE_SIZE",
    "Discarded",
    "FilterNotSupported",
    "FilterSyntaxError",
    "ServiceBusDouble",
    "SqlFilter",
    "StoredMessage",
]
