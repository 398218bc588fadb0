"""A lean HTTP/1.1 keep-alive transport for httpx (see KeepAlivePool for why it exists)."""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable

import httpcore
import httpx


class KeepAliveTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with a leaner connection pool (`KeepAlivePool`) in httpcore's place.

    Everything above the pool is httpx's: request/response conversion, exception mapping, and the
    `handle_async_request` OpenTelemetry's httpx instrumentation wraps (so dependency telemetry
    still sees every call).
    """

    def __init__(self, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        stock = self._pool
        self._pool = KeepAlivePool(  # type: ignore[assignment]
            limits=limits, ssl_context=getattr(stock, "_ssl_context", None)
        )

    @property
    def pool(self) -> KeepAlivePool:
        assert isinstance(self._pool, KeepAlivePool)
        return self._pool


class KeepAlivePool:
    """HTTP/1.1 on asyncio streams, a LIFO keep-alive pool per origin, with httpcore's interface.

    httpcore's own pool checks every pooled connection (a `poll()` on its socket through anyio)
    on every pool operation, so its CPU per request grows with the pool: at 32 concurrent calls
    that was most of the app's CPU (docs/performance.md). Here a request takes the most recently
    used idle connection of its origin and checks only that one; idle connections past
    `keepalive_expiry` or closed by the server are swept once a second. Limits and timeouts are
    httpx's: `max_connections` (waiting up to the pool timeout, then PoolTimeout),
    `max_keepalive_connections`, `keepalive_expiry`, and connect/read/write timeouts per
    operation; failures raise the httpcore exceptions httpx maps (ConnectError, ReadTimeout,
    RemoteProtocolError, ...). Response bodies are read whole (the app always reads them) and
    keep their raw headers, so httpx still decodes gzip and friends.
    """

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None) -> None:
        self._max_connections = limits.max_connections or sys.maxsize
        self._max_idle = (
            sys.maxsize
            if limits.max_keepalive_connections is None
            else limits.max_keepalive_connections
        )
        self._expiry = limits.keepalive_expiry
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl_context = ssl_context
        self._last_sweep = time.monotonic()
        #: connections opened so far
        self.connections_opened = 0

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        origin = _origin(request.url)
        await self._acquire(timeouts.get("pool"))
        connection: _Connection | None = None
        reusable = False
        try:
            body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
            connection = self._checkout(origin)
            if connection is None:
                connection = await self._connect(origin, timeouts.get("connect"))
            response, reusable = await connection.exchange(request, body, timeouts)
            return response
        finally:
            if connection is not None:
                if reusable:
                    self._checkin(connection)
                else:
                    connection.close()
            self._release()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def __aenter__(self) -> KeepAlivePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

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
                raise httpcore.PoolTimeout("no connection free in time") from None
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
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=_LIMIT
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout("connect timed out") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        self.connections_opened += 1
        return _Connection(origin, reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context


_Origin = tuple[str, str, int]
_SWEEP_SECONDS = 1.0
_LIMIT = 256 * 1024  # longest response head accepted
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NO_BODY_STATUSES = frozenset({204, 304})


def _origin(url: httpcore.URL) -> _Origin:
    scheme = url.scheme.decode("ascii")
    if scheme not in _DEFAULT_PORTS:
        raise httpcore.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
    return scheme, url.host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme]


class _Connection:
    __slots__ = ("idle_since", "origin", "reader", "writer")

    def __init__(
        self, origin: _Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self, now: float, expiry: float | None) -> bool:
        """Still open, nothing unasked-for waiting to be read, and not past keepalive_expiry."""
        if self.reader.at_eof() or self.writer.is_closing():
            return False
        if getattr(self.reader, "_buffer", b""):  # e.g. a 408 sent before the server closes
            return False
        return expiry is None or now - self.idle_since < expiry

    def close(self) -> None:
        self.writer.close()

    async def exchange(
        self, request: httpcore.Request, body: bytes, timeouts: dict[str, float | None]
    ) -> tuple[httpcore.Response, bool]:
        """One request and its whole response; also whether the connection can be reused."""
        fields = _Fields(request.headers)
        chunked = "chunked" in fields.tokens(b"transfer-encoding")
        payload = _head(request) + (_chunk(body) + b"0\r\n\r\n" if chunked else body)
        try:
            self.writer.write(payload)
            async with asyncio.timeout(timeouts.get("write")):
                await self.writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("write timed out") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from None
        try:
            return await self._response(request, fields, timeouts.get("read"))
        except TimeoutError:
            raise httpcore.ReadTimeout("read timed out") from None
        except asyncio.IncompleteReadError:
            raise httpcore.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            ) from None
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise httpcore.RemoteProtocolError(f"malformed response: {exc}") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from None

    @staticmethod
    async def _read(operation: Awaitable[bytes], wait: float | None) -> bytes:
        async with asyncio.timeout(wait):
            return await operation

    async def _response(
        self, request: httpcore.Request, sent: _Fields, wait: float | None
    ) -> tuple[httpcore.Response, bool]:
        while True:
            try:
                head = await self._read(self.reader.readuntil(b"\r\n\r\n"), wait)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                raise httpcore.RemoteProtocolError(
                    "Server disconnected without sending a response."
                ) from None
            version, status, reason, headers = _parse_head(head)
            if not 100 <= status < 200 or status == 101:
                break  # 1xx interim answers (100 Continue, 103 Early Hints) are skipped
        fields = _Fields(headers)
        keep_alive = _keep_alive(version, fields, sent)
        if request.method == b"HEAD" or status in _NO_BODY_STATUSES or status < 200:
            content = b""
        elif "chunked" in fields.tokens(b"transfer-encoding"):
            content = await self._chunked(wait)
        elif fields.has(b"transfer-encoding"):
            content, keep_alive = await self._read(self.reader.read(), wait), False
        elif (length := fields.content_length()) is not None:
            content = await self._read(self.reader.readexactly(length), wait)
        else:  # delimited by the server closing the connection
            content, keep_alive = await self._read(self.reader.read(), wait), False
        response = httpcore.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": version, "reason_phrase": reason},
        )
        return response, keep_alive and status != 101

    async def _chunked(self, wait: float | None) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self._read(self.reader.readuntil(b"\r\n"), wait)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await self._read(self.reader.readuntil(b"\r\n"), wait) != b"\r\n":
                    pass  # trailers: ignored
                return b"".join(parts)
            chunk = await self._read(self.reader.readexactly(size + 2), wait)
            parts.append(chunk[:-2])


class _Fields:
    """Header lookups by lower-case name."""

    __slots__ = ("_values",)

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            self._values.setdefault(name.lower(), []).append(value)

    def has(self, name: bytes) -> bool:
        return name in self._values

    def tokens(self, name: bytes) -> set[str]:
        return {
            token.strip().lower().decode("latin-1")
            for value in self._values.get(name, ())
            for token in value.split(b",")
        }

    def content_length(self) -> int | None:
        values = {v.strip() for v in self._values.get(b"content-length", ())}
        if not values:
            return None
        if len(values) > 1 or not all(v.isdigit() for v in values):
            raise ValueError("bad Content-Length")
        return int(values.pop())


def _keep_alive(version: bytes, fields: _Fields, sent: _Fields) -> bool:
    if "close" in sent.tokens(b"connection"):
        return False
    tokens = fields.tokens(b"connection")
    if version == b"HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _head(request: httpcore.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method, request.url.target)]
    for name, value in request.headers:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpcore.LocalProtocolError("illegal header value")
        lines.append(name + b": " + value)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body) if body else b""


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"bad status line {lines[0][:40]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, value + b" " + line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise ValueError("bad header line")
        headers.append((name, value.strip(b" \t")))
    return version, int(code), reason, headers
