"""The transports under the app's HTTP clients (`HTTP_TRANSPORT`, `DESTINATION_MAX_RESPONSE_BYTES`).

`KeepAliveTransport` (the default) is the app's own HTTP/1.1 keep-alive pool. httpcore's pool
checks every pooled connection (a `poll()` through anyio) on every pool operation, so its CPU per
request grows with the pool: at 32 concurrent calls that was most of the app's CPU, and this
transport cut the core's CPU per message about 3x (docs/performance.md, bench experiment
`transport-httpx`). `CappedTransport` puts the same response size cap on httpx's stock transport,
the fallback `HTTP_TRANSPORT=httpx` selects.

Only public interfaces are used: httpx's `AsyncBaseTransport`, `Request`, `Response`,
`ByteStream`, exception classes and `create_ssl_context`, and asyncio's `BufferedProtocol` and
`loop.create_connection`. Nothing of httpcore, and no private attribute of httpx or asyncio.

The protocol rules (tests/outbound/ checks each, most against httpx's stock transport too):

- Requests: the method and header names must be tokens and header values free of CR, LF and NUL
  (`httpx.LocalProtocolError`, raised before anything is sent). Bodies are sent whole, with the
  Content-Length or chunked framing httpx chose.
- Response heads: at most `MAX_HEAD_BYTES`, `HTTP/1.0` or `HTTP/1.1`, CRLF line ends, header
  names that are tokens, values without CR, LF or NUL, obsolete line folding joined with a space;
  Content-Length a number, repeated only with the same value; Transfer-Encoding exactly
  `chunked` (it then overrides a Content-Length). Anything else is `httpx.RemoteProtocolError`.
  1xx interim answers are skipped.
- Response bodies: Content-Length, chunked (extensions and trailers ignored) or, with neither,
  up to the server closing the connection. At most `max_response_bytes` on the wire (before
  gzip/deflate decoding, which httpx does): a larger body is `ResponseTooLarge`, a
  `RemoteProtocolError`, raised on the Content-Length before reading any of the body, or as soon
  as a chunked or close-delimited body passes the cap; never more than the cap plus one byte is
  held in memory.
- Connections: one request at a time each; kept for reuse unless the request or response said
  `Connection: close`, the answer was HTTP/1.0 or close-delimited, or anything failed. A request
  takes its origin's most recently used idle connection and checks only that one (the server
  closed it, sent something unasked, or it is past `keepalive_expiry`: it is closed, the next is
  tried); idle connections are swept once a second. `max_connections` requests at a time, others
  wait up to the pool timeout (`httpx.PoolTimeout`); `max_keepalive_connections` idle per origin.
- Failures are httpx's exceptions, as httpx's own transport raises them: ConnectError,
  ConnectTimeout, WriteError, WriteTimeout, ReadError, ReadTimeout, PoolTimeout,
  RemoteProtocolError, LocalProtocolError, UnsupportedProtocol.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterator

import httpx

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
#: longest response head (status line and headers) accepted, as httpcore allows h11
MAX_HEAD_BYTES = 100 * 1024
#: interim (1xx) answers skipped before the final one, at most
MAX_INTERIM_RESPONSES = 16


class ResponseTooLarge(httpx.RemoteProtocolError):
    """The response body is larger than the client's `max_response_bytes`: refused, and the
    connection closed. A protocol error, so the failure taxonomy treats it as transient."""


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio's protocol API, with a LIFO keep-alive pool per origin."""

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_connections = limits.max_connections or sys.maxsize
        self._max_idle = (
            sys.maxsize
            if limits.max_keepalive_connections is None
            else limits.max_keepalive_connections
        )
        self._expiry = limits.keepalive_expiry
        self._max_body = max_response_bytes
        self._ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_sweep = time.monotonic()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        head, close = _request_head(request)
        body = await request.aread()
        if _is_chunked(request.headers.get("transfer-encoding")):
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
        await self._acquire(timeouts.get("pool"))
        connection: _Connection | None = None
        reusable = False
        try:
            connection = self._checkout(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            await connection.send(head + body, timeouts.get("write"))
            response, reusable = await connection.receive(
                request.method, timeouts.get("read"), self._max_body
            )
            return response
        finally:
            if connection is not None:
                if reusable and not close:
                    self._checkin(connection)
                else:
                    connection.close()
            self._release()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _acquire(self, wait: float | None) -> None:
        if self._active < self._max_connections:
            self._active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release()  # a slot was handed over just as we gave up: pass it on
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no connection free in time") from None
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self._active -= 1

    def _checkout(self, origin: _Origin) -> _Connection | None:
        now = time.monotonic()
        if now - self._last_sweep > _SWEEP_SECONDS:
            self._sweep(now)
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable(now, self._expiry):
                return connection
            connection.close()
        return None

    def _checkin(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(connection.origin, [])
        idle.append(connection)
        if len(idle) > self._max_idle:
            idle.pop(0).close()

    def _sweep(self, now: float) -> None:
        """Close idle connections the server dropped or that outlived keepalive_expiry."""
        self._last_sweep = now
        for idle in self._idle.values():
            keep = [c for c in idle if c.usable(now, self._expiry)]
            for connection in idle:
                if connection not in keep:
                    connection.close()
            idle[:] = keep

    async def _connect(self, origin: _Origin, wait: float | None) -> _Connection:
        scheme, host, port = origin
        context = self._tls() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(wait):
                _, wire = await loop.create_connection(
                    _Wire, host, port, ssl=context, server_hostname=host if context else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return _Connection(origin, wire)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context


class CappedTransport(httpx.AsyncBaseTransport):
    """Another transport (httpx's stock one) under the same response size cap: a declared
    Content-Length over the cap is refused before the body is read, and the body is counted as
    it streams in (httpcore reads 64 KiB at a time, so at most that much past the cap)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_response_bytes: int) -> None:
        self._inner = inner
        self._max_body = max_response_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        bodiless = request.method == "HEAD" or response.status_code in _NO_BODY_STATUSES
        length = response.headers.get("content-length", "")
        if not bodiless and length.isdigit() and int(length) > self._max_body:
            await response.aclose()
            raise _too_large(self._max_body)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response, self._max_body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, cap: int) -> None:
        self._response = response
        self._cap = cap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._response.aiter_raw():
            received += len(chunk)
            if received > self._cap:
                await self._response.aclose()
                raise _too_large(self._cap)
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


def _too_large(cap: int) -> ResponseTooLarge:
    return ResponseTooLarge(f"response body larger than {cap} bytes")


_Origin = tuple[str, str, int]
_SWEEP_SECONDS = 1.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})
_READ_SIZE = 16 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\r\n]*))?")
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00\r\n]*?)[ \t]*")
_FOLDED_LINE = re.compile(rb"[ \t]+([^\x00\r\n]*?)[ \t]*")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?[ \t]*\r\n")


def _origin(url: httpx.URL) -> _Origin:
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
    return scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme]


def _request_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers; whether the request asks to close the connection. Names
    are named in errors, values never (they may be credentials)."""
    method = request.method.encode("latin-1")
    target = request.url.raw_path
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError(f"illegal request method {method[:20]!r}")
    if _BAD_TARGET.search(target):
        raise httpx.LocalProtocolError("illegal request target")
    lines = [b"%s %s HTTP/1.1" % (method, target)]
    close = False
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError(f"illegal header name {name[:40]!r}")
        if _BAD_VALUE.search(value):
            raise httpx.LocalProtocolError(f"illegal value in header {name.decode()!r}")
        if name.lower() == b"connection":
            close = close or b"close" in _tokens(value)
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines), close


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


def _is_chunked(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "chunked"


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """Status line and header lines, CRLF-terminated, the final empty line removed."""
    lines = head.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:40]!r}")
    headers = _parse_fields(lines[1:])
    return b"HTTP/1." + status[1], int(status[2]), status[3] or b"", headers


def _parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # obsolete line folding: joined with one space
            folded = _FOLDED_LINE.fullmatch(line)
            if folded is None or not fields:
                raise httpx.RemoteProtocolError("malformed folded header line")
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + folded[1] if value else folded[1])
            continue
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            raise httpx.RemoteProtocolError(f"malformed header line {line[:40]!r}")
        fields.append((field[1], field[2]))
    return fields


class _Framing:
    """How the body is delimited, from the framing headers (validated even without a body)."""

    __slots__ = ("chunked", "close", "length")

    def __init__(self, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        encodings: list[bytes] = []
        lengths: set[bytes] = set()
        self.close = version == b"HTTP/1.0"
        for name, value in headers:
            match name.lower():
                case b"transfer-encoding":
                    encodings.append(value.lower())
                case b"content-length":
                    lengths.update(part.strip() for part in value.split(b","))
                case b"connection":
                    self.close = self.close or b"close" in _tokens(value)
        if encodings and encodings != [b"chunked"]:
            raise httpx.RemoteProtocolError("unsupported Transfer-Encoding (only chunked)")
        self.chunked = bool(encodings)  # overrides any Content-Length (RFC 9112 6.3)
        self.length: int | None = None
        if len(lengths) > 1:
            raise httpx.RemoteProtocolError("conflicting Content-Length values")
        if lengths:
            value = lengths.pop()
            if not (value.isdigit() and len(value) <= 20):
                raise httpx.RemoteProtocolError("malformed Content-Length")
            self.length = None if self.chunked else int(value)


class _Connection:
    __slots__ = ("idle_since", "origin", "wire")

    def __init__(self, origin: _Origin, wire: _Wire) -> None:
        self.origin = origin
        self.wire = wire
        self.idle_since = time.monotonic()

    def usable(self, now: float, expiry: float | None) -> bool:
        """Still open, nothing unasked-for received, and not past keepalive_expiry."""
        if not self.wire.quiet():
            return False
        return expiry is None or now - self.idle_since < expiry

    def close(self) -> None:
        self.wire.close()

    async def send(self, payload: bytes, wait: float | None) -> None:
        try:
            await self.wire.write(payload, wait)
        except TimeoutError:
            raise httpx.WriteTimeout("write timed out") from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from None

    async def receive(
        self, method: str, wait: float | None, max_body: int
    ) -> tuple[httpx.Response, bool]:
        """The final response, its body read whole; also whether the connection can be reused."""
        try:
            return await self._receive(method, wait, max_body)
        except TimeoutError:
            raise httpx.ReadTimeout("read timed out") from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None

    async def _receive(
        self, method: str, wait: float | None, max_body: int
    ) -> tuple[httpx.Response, bool]:
        wire = self.wire
        for _ in range(MAX_INTERIM_RESPONSES + 1):
            head = await wire.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, wait, first=True)
            version, status, reason, headers = _parse_head(head[:-4])
            framing = _Framing(version, headers)
            if not 100 <= status < 200 or status == 101:
                break  # 1xx interim answers (100 Continue, 103 Early Hints) are skipped
        else:
            raise httpx.RemoteProtocolError("too many interim (1xx) responses")
        keep = not framing.close
        if method == "HEAD" or status in _NO_BODY_STATUSES or status < 200:
            content, keep = b"", keep and status != 101
        elif framing.chunked:
            content = await self._chunked(wait, max_body)
        elif framing.length is not None:
            if framing.length > max_body:
                raise _too_large(max_body)
            content = await wire.read_exactly(framing.length, wait)
        else:  # delimited by the server closing the connection
            content, keep = await wire.read_to_eof(max_body, wait), False
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": version, "reason_phrase": reason},
        )
        return response, keep

    async def _chunked(self, wait: float | None, max_body: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = await self.wire.read_until(b"\r\n", MAX_HEAD_BYTES, wait)
            chunk = _CHUNK_LINE.fullmatch(line)
            if chunk is None:
                raise httpx.RemoteProtocolError("malformed chunk size line")
            length = int(chunk[1], 16)
            if length == 0:
                await self._trailers(wait)
                return b"".join(parts)
            size += length
            if size > max_body:
                raise _too_large(max_body)
            data = await self.wire.read_exactly(length + 2, wait)
            if data[-2:] != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not terminated by CRLF")
            parts.append(data[:-2])

    async def _trailers(self, wait: float | None) -> None:
        """Trailer fields after the last chunk: checked like headers, bounded like a head, then
        ignored."""
        lines: list[bytes] = []
        room = MAX_HEAD_BYTES
        while (line := await self.wire.read_until(b"\r\n", room, wait)) != b"\r\n":
            lines.append(line[:-2])
            room = max(room - len(line), 0)
        _parse_fields(lines)


class _Wire(asyncio.BufferedProtocol):
    """One connection's bytes: what arrived and was not yet consumed, bounded by the limit of
    the read in progress (the socket is read into a buffer no larger than the room left, so a
    peer can never make it hold more than the limit plus one byte). Between exchanges the limit
    is 0: one byte arriving unasked, EOF or an error makes the connection unusable."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._scratch = memoryview(bytearray(_READ_SIZE))
        self._limit = 0
        self._eof = False
        self._lost = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading = True
        self._writable: asyncio.Future[None] | None = None

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        room = max(self._limit - len(self._buffer), 0) + 1
        return self._scratch[: min(room, _READ_SIZE)]

    def buffer_updated(self, nbytes: int) -> None:
        self._buffer += self._scratch[:nbytes]
        if len(self._buffer) > self._limit and self._transport is not None:
            self._transport.pause_reading()  # over the limit: nothing more until consumed
            self._reading = False
        self._wake()

    def eof_received(self) -> None:
        self._eof = True
        self._wake()  # returning None: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._error = exc
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # the connection's side

    def quiet(self) -> bool:
        return not (self._buffer or self._eof or self._lost)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def write(self, payload: bytes, wait: float | None) -> None:
        if self._lost or self._transport is None:
            raise ConnectionResetError("connection closed")
        self._transport.write(payload)
        if self._writable is not None:
            async with asyncio.timeout(wait):
                await self._writable
            if self._lost:
                raise self._lost_error()

    async def read_until(
        self, separator: bytes, limit: int, wait: float | None, *, first: bool = False
    ) -> bytes:
        """Up to and including `separator`, which must come within `limit` bytes."""
        start = 0
        while (end := self._buffer.find(separator, start)) < 0:
            if len(self._buffer) > limit:
                raise httpx.RemoteProtocolError(f"response head or line over {limit} bytes")
            if _BARE_LF.search(self._buffer, start):
                raise httpx.RemoteProtocolError("bare LF in a response head or chunk line")
            start = max(0, len(self._buffer) - len(separator) + 1)
            await self._more(limit, wait, nothing_yet=first and not self._buffer)
        return self._take(end + len(separator))

    async def read_exactly(self, count: int, wait: float | None) -> bytes:
        while len(self._buffer) < count:
            await self._more(count, wait)
        return self._take(count)

    async def read_to_eof(self, limit: int, wait: float | None) -> bytes:
        while not (self._eof or self._lost):
            if len(self._buffer) > limit:
                raise _too_large(limit)
            await self._more(limit, wait, until_eof=True)
        if len(self._buffer) > limit:
            raise _too_large(limit)
        return self._take(len(self._buffer))

    def _take(self, count: int) -> bytes:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._limit = 0  # between reads, nothing more is expected
        return data

    async def _more(
        self, limit: int, wait: float | None, *, nothing_yet: bool = False, until_eof: bool = False
    ) -> None:
        """Wait for more bytes (at most `limit` buffered), EOF or the connection's end."""
        if self._lost or self._eof:
            if self._error is not None:
                raise self._lost_error()
            if until_eof:
                return
            if nothing_yet:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
        self._limit = limit
        if not self._reading and self._transport is not None:
            self._transport.resume_reading()
            self._reading = True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(wait, _expire, waiter) if wait is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _lost_error(self) -> OSError:
        """What ended the connection, as an OSError (mapped to httpx's Read/WriteError)."""
        if isinstance(self._error, OSError):
            return self._error
        return ConnectionResetError(str(self._error or "connection closed"))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
