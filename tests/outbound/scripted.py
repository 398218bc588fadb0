"""A scripted loopback HTTP/1.1 server for the transport tests: each request is answered with
the exact bytes a script returns, so malformed, truncated and unusual answers can be sent."""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from order_processor.outbound.http import HttpOptions, TransportKind, make_transport
from order_processor.outbound.transport import DEFAULT_MAX_RESPONSE_BYTES

KINDS: tuple[TransportKind, ...] = ("keepalive", "httpx")


@dataclass
class Received:
    """One request as the server read it (head as sent, body with chunked framing removed)."""

    head: bytes
    body: bytes
    index: int  # 0-based over the server's life
    connection: int  # 0-based connection number
    writer: asyncio.StreamWriter

    def header(self, name: str) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip()
        return None


class Reset:
    """Reply: abort the connection (TCP RST) without answering."""


RESET = Reset()
#: bytes: send them (b"": send nothing and wait for the next request); None: close, no answer
Reply = bytes | None | Reset
Script = Callable[[Received], Reply | Awaitable[Reply]]


def answer(status: str, body: bytes = b"", *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A response; Content-Length added unless a framing header is given."""
    head = [f"{version} {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open = 0
        self.peak_open = 0
        self.requests: list[Received] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        number = self.connections
        self.connections += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = Received(head, b"", len(self.requests), number, writer)
                received.body = await self._body(reader, received)
                self.requests.append(received)
                reply = self.script(received)
                if inspect.isawaitable(reply):
                    reply = await reply
                if reply is None:
                    break
                if isinstance(reply, Reset):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(reply)
                await writer.drain()
                if b"\r\nconnection: close\r\n" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @staticmethod
    async def _body(reader: asyncio.StreamReader, received: Received) -> bytes:
        if (received.header("transfer-encoding") or b"").lower() == b"chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        return await reader.readexactly(int(received.header("content-length") or 0))

    def drop_connections(self) -> None:
        """Close every connection from the server's side (as an idle timeout does)."""
        for writer in self._writers:
            writer.close()

    async def stop(self) -> None:
        self.drop_connections()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@asynccontextmanager
async def serving(
    script: Script, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[ScriptedServer, str]]:
    """The server on a free loopback port, and its URL (https://localhost:<port> with `tls`)."""
    server = ScriptedServer(script)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield server, f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    finally:
        listening.close()
        await server.stop()


def client_for(
    kind: TransportKind,
    *,
    max_connections: int = 4,
    max_keepalive: int = 4,
    keepalive_expiry: float = 5.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    read: float = 2.0,
    write: float = 2.0,
    pool: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """A plain httpx client on the transport `kind`, as `new_client` builds it."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive,
        keepalive_expiry=keepalive_expiry,
    )
    options = HttpOptions(transport=kind, max_response_bytes=max_response_bytes)
    return httpx.AsyncClient(
        transport=make_transport(options, limits=limits, ssl_context=ssl_context),
        timeout=httpx.Timeout(read, connect=2.0, write=write, pool=pool),
    )


@asynccontextmanager
async def scripted(
    script: Script, kind: TransportKind, **client: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedServer, str]]:
    async with serving(script) as (server, url), client_for(kind, **client) as http:
        yield http, server, url
