"""The AMQP side: a proton reactor, on its own thread, that azure-servicebus talks to.

The loop polls every few milliseconds instead of being woken: between polls it applies the
broker's clock and hands available messages to receivers with credit, so messages put or made
due from the test thread reach clients without any cross-thread call into proton.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from proton import (
    Condition,
    Connection,
    Delivery,
    Endpoint,
    Handler,
    Link,
    Message,
    Terminus,
    symbol,
    ulong,
)
from proton._reactor import Acceptor, Container

from . import codec, management
from .broker import Broker, BrokerError, MessageTooLarge, Outcome

CBS = "$cbs"
MANAGEMENT = "/$management"
POLL_SECONDS = 0.01
CLOSE_GRACE_SECONDS = 0.2
CREDIT = 100  # offered to every client sender; topped up as transfers arrive
#: the link property the SDK prefers over max-message-size when it sizes a batch
MAX_BATCH_SIZE = symbol("com.microsoft:max-message-batch-size")


def address_path(address: str | None) -> str:
    """`amqps://host:port/orders/Subscriptions/x` and `orders/$management` alike, minus the host."""
    address = address or ""
    if "://" in address:
        address = address.split("://", 1)[1].partition("/")[2]
    return address.strip("/")


class AmqpServer(Handler):
    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self._broker = broker
        # impl=None skips Container's client-side setup, whose SSL domain costs ~0.1 s per start
        # and which a plain-AMQP listener never uses.
        self._reactor = Container(self, impl=None)
        self._acceptor: Acceptor | None = None
        self._connections: set[Connection] = set()
        self._consumers: set[Link] = set()
        self._thread = threading.Thread(target=self._run, name="servicebus-double", daemon=True)
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self.port = 0

    # -- lifecycle (test thread) --------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._listening.wait(5)
        if not self.port:
            raise RuntimeError("the Service Bus double did not start listening") from self._failure

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        if self._failure is not None:
            # A bug in the double must fail the test, not surface as a client timeout.
            raise RuntimeError("the Service Bus double failed") from self._failure

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as error:
            self._failure = error
        finally:
            self._listening.set()

    def _loop(self) -> None:
        reactor = self._reactor
        reactor.timeout = POLL_SECONDS
        reactor.start()
        deadline: float | None = None
        while reactor.process():
            if not self._stopping.is_set():
                self._broker.tick()
                for link in list(self._consumers):
                    self._pump(link)
            elif deadline is None:
                deadline = time.monotonic() + CLOSE_GRACE_SECONDS
                self._close_all()
            else:
                self._drop_closed()
                if not self._connections or time.monotonic() > deadline:
                    reactor.stop()
        reactor.process()

    def _close_all(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        for connection in list(self._connections):
            # What the service sends when it drops a connection. The info map is not optional:
            # pyamqp indexes all three error fields of a close frame.
            info = {symbol("reason"): "the Service Bus double is stopping"}
            connection.condition = Condition("amqp:connection:forced", "stopping", info)
            connection.close()

    def _drop_closed(self) -> None:
        """Once a close frame is out, stop reading: proton then closes the socket.

        Closing the input any earlier would make proton send a framing-error close instead.
        """
        for connection in list(self._connections):
            transport = connection.transport
            if transport is None:
                self._forget(connection)
            elif transport.pending() <= 0:
                transport.close_tail()

    # -- connections, sessions, links ---------------------------------------------------------

    def on_reactor_init(self, event: Any) -> None:
        self._acceptor = self._reactor.acceptor("127.0.0.1", 0)
        # Proton has no accessor for the bound port, which port 0 makes the thing to know.
        self.port = self._acceptor._selectable._delegate.getsockname()[1]
        self._listening.set()

    def on_connection_bound(self, event: Any) -> None:
        # The SDK authenticates with SASL ANONYMOUS, then sends a token over $cbs. (PLAIN would
        # need proton built with Cyrus SASL, which the PyPI wheel is not.)
        event.transport.sasl().allowed_mechs("ANONYMOUS")

    def on_connection_remote_open(self, event: Any) -> None:
        self._connections.add(event.connection)
        event.connection.container = "servicebus-double"
        event.connection.open()

    def on_connection_remote_close(self, event: Any) -> None:
        self._forget(event.connection)
        event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self._forget(event.connection)

    def _forget(self, connection: Connection) -> None:
        self._connections.discard(connection)
        self._consumers = {link for link in self._consumers if link.connection != connection}

    def on_session_remote_open(self, event: Any) -> None:
        event.session.open()

    def on_session_remote_close(self, event: Any) -> None:
        event.session.close()

    def on_link_remote_open(self, event: Any) -> None:
        link: Link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        remote = link.remote_target if link.is_receiver else link.remote_source
        link.sb_path = path = address_path(remote.address)
        refusal = self._refusal(link, path)
        if refusal is not None:
            # Refuse as the service does: attach with a null terminus, then detach with the error.
            (link.target if link.is_receiver else link.source).type = Terminus.UNSPECIFIED
            link.condition = Condition(*refusal)
            link.open()
            link.close()
            return
        link.sb_replies = []
        if link.is_receiver and path != CBS and not path.endswith(MANAGEMENT):
            # The SDK sizes its batches from these, as it does from the service's.
            link.max_message_size = self._broker.max_message_size
            link.properties = {MAX_BATCH_SIZE: ulong(self._broker.max_batch_size)}
        link.open()
        if link.is_receiver:
            link.flow(CREDIT)
        elif path != CBS and not path.endswith(MANAGEMENT):
            self._consumers.add(link)

    def _refusal(self, link: Link, path: str) -> tuple[str, str] | None:
        if path == CBS:
            return None
        if path.endswith(MANAGEMENT):
            entity = path.removesuffix(MANAGEMENT)
            known = self._broker.is_target(entity) or self._broker.is_entity(entity)
            return None if known else ("amqp:not-found", f"no entity {entity!r}")
        if link.is_receiver:
            if self._broker.is_target(path):
                return None
            return ("amqp:not-found", f"no queue or topic {path!r} to send to")
        if not self._broker.is_entity(path):
            return ("amqp:not-found", f"no queue or subscription {path!r} to receive from")
        filters = link.remote_source.filter
        filters.rewind()
        if filters.next() is not None:  # the SDK only sends a filter for a session receiver
            return ("amqp:not-implemented", "ServiceBusDouble does not support sessions")
        return None

    def on_link_remote_close(self, event: Any) -> None:
        self._consumers.discard(event.link)
        event.link.close()

    def on_link_flow(self, event: Any) -> None:
        link: Link = event.link
        if link.is_sender:
            self._flush_replies(link)
            if link in self._consumers:
                self._pump(link)

    # -- deliveries ---------------------------------------------------------------------------

    def on_delivery(self, event: Any) -> None:
        delivery: Delivery = event.delivery
        if delivery.link.is_receiver:
            if delivery.readable and not delivery.partial:
                self._on_transfer(delivery)
        elif delivery.remote_state in _OUTCOMES and not getattr(delivery, "handled", False):
            self._on_outcome(delivery)

    def _on_transfer(self, delivery: Delivery) -> None:
        link: Link = delivery.link
        payload = link.recv(delivery.pending)
        link.advance()
        path: str = link.sb_path
        try:
            if path == CBS or path.endswith(MANAGEMENT):
                self._answer(link, path, payload)
            else:
                parts = codec.batch_parts(payload)
                self._check_size(payload, batch=parts is not None)
                messages = [codec.decode(part) for part in parts or [payload]]
                self._broker.send(path, messages)
        except BrokerError as error:
            delivery.local.condition = error_condition(error)
            delivery.update(Delivery.REJECTED)
        else:
            delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)

    def _check_size(self, payload: bytes, *, batch: bool) -> None:
        """Refuse a transfer over the advertised limit, as the service does (the SDK then
        raises MessageSizeExceededError). A batch is limited as a whole."""
        limit = self._broker.max_batch_size if batch else self._broker.max_message_size
        if len(payload) > limit:
            what = "batch" if batch else "message"
            raise MessageTooLarge(
                f"the {what} is {len(payload)} bytes; the maximum on this entity is {limit}"
            )

    def _answer(self, link: Link, path: str, payload: bytes) -> None:
        request = Message()
        request.decode(payload)
        if path == CBS:
            reply = management.put_token(request)
        else:
            reply = management.execute(self._broker, path.removesuffix(MANAGEMENT), request)
        replies = self._reply_link(link, path)
        replies.sb_replies.append(management.encode_reply(request, reply, cbs=path == CBS))
        self._flush_replies(replies)

    def _reply_link(self, request_link: Link, path: str) -> Link:
        """The client's receiver for this node: on the request's session if it has one there."""
        candidates = []
        link = request_link.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            if link.is_sender and getattr(link, "sb_path", None) == path:
                candidates.append(link)
            link = link.next(Endpoint.LOCAL_ACTIVE)
        if not candidates:
            raise BrokerError(f"no reply link is attached for {path!r}")
        same_session = [c for c in candidates if c.session == request_link.session]
        return (same_session or candidates)[0]

    def _flush_replies(self, link: Link) -> None:
        replies: list[bytes] = getattr(link, "sb_replies", [])
        while replies and link.credit > 0:
            delivery = link.delivery(uuid.uuid4().bytes)
            link.send(replies.pop(0))
            link.advance()
            delivery.settle()

    def _pump(self, link: Link) -> None:
        """Deliver while the receiver has credit: 16-byte tags are the lock tokens (bytes_le)."""
        if not link.state & Endpoint.LOCAL_ACTIVE or not link.state & Endpoint.REMOTE_ACTIVE:
            self._consumers.discard(link)
            return
        receive_and_delete = link.remote_snd_settle_mode == Link.SND_SETTLED
        while link.credit > 0:
            message = self._broker.acquire(link.sb_path, lock=not receive_and_delete)
            if message is None:
                break
            token = message.lock_token
            locked_until = message.locked_until and self._broker.to_wall_clock(message.locked_until)
            delivery = link.delivery((token or uuid.uuid4()).bytes_le)
            delivery.lock_token = token
            link.send(codec.encode_delivery(message, locked_until=locked_until))
            link.advance()
            if receive_and_delete:
                delivery.settle()
        if link.drain_mode:
            link.drained()

    def _on_outcome(self, delivery: Delivery) -> None:
        """Apply the client's settlement, then settle with the same outcome as the service does.

        In peek-lock the SDK waits for that echo (rcv-settle-mode second) and only then
        considers the message settled; a rejected echo with an error means it was not.
        """
        delivery.handled = True
        token: uuid.UUID | None = delivery.lock_token
        state = delivery.remote_state
        if token is not None:
            outcome, reason, description = _outcome(delivery)
            try:
                self._broker.settle(token, outcome, reason=reason, description=description)
            except BrokerError as error:
                delivery.local.condition = error_condition(error)
                state = Delivery.REJECTED
            delivery.local.failed = delivery.remote.failed
            delivery.local.undeliverable = delivery.remote.undeliverable
            delivery.update(state)
        delivery.settle()


def error_condition(error: BrokerError) -> Condition:
    """A rejection as the service words it. The info map is not optional: pyamqp indexes all
    three fields of a rejected send's error (and the service always sends a tracking id)."""
    info = {symbol("com.microsoft:tracking-id"): str(uuid.uuid4())}
    return Condition(error.condition, str(error), info)


_OUTCOMES = (Delivery.ACCEPTED, Delivery.REJECTED, Delivery.RELEASED, Delivery.MODIFIED)


def _outcome(delivery: Delivery) -> tuple[Outcome, str | None, str | None]:
    state = delivery.remote_state
    if state == Delivery.ACCEPTED:
        return "complete", None, None
    if state == Delivery.REJECTED:
        condition = delivery.remote.condition
        info: dict[Any, Any] = {}
        if condition is not None and isinstance(condition.info, dict):
            info = condition.info
        reason, description = info.get("DeadLetterReason"), info.get("DeadLetterErrorDescription")
        return "dead-letter", _text(reason), _text(description)
    if state == Delivery.MODIFIED and delivery.remote.undeliverable:
        return "defer", None, None  # the SDK's defer: modified with undeliverable-here
    if state == Delivery.MODIFIED and delivery.remote.failed:
        return "abandon", None, None
    return "release", None, None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
