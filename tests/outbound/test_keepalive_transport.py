"""What only the app's keep-alive transport does, or does differently from httpx's stock one on
purpose, and the guard that keeps it on public interfaces."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
import pytest

from order_processor.outbound import http, transport
from order_processor.outbound.transport import MAX_INTERIM_RESPONSES
from tests.outbound.scripted import Received, Reply, answer, scripted


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
    ],
    ids=["LF-only head", "bare LF in a head", "bare LF in a chunk line"],
)
async def test_bare_lf_line_ends_are_refused(reply: bytes) -> None:
    """RFC 9112 lets a recipient accept a bare LF as a line end; h11 (so the stock transport)
    does. The app's transport does not: no vendor sends them, and a head whose line ends
    differ between parsers is how response splitting starts. Refused at once, not timed out."""
    async with scripted(lambda _: reply, "keepalive", read=5.0) as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError):
            async with asyncio.timeout(1):
                await client.get(url)


async def test_endless_interim_answers_are_refused() -> None:
    interim = b"HTTP/1.1 102 Processing\r\n\r\n" * (MAX_INTERIM_RESPONSES + 1)
    async with scripted(lambda _: interim + answer("200 OK"), "keepalive") as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError, match="interim"):
            await client.get(url)


async def test_the_most_recently_used_connection_is_reused_first() -> None:
    """LIFO: one warm connection carries a trickle of requests; the others expire idle."""

    async def slow(_: Received) -> Reply:
        await asyncio.sleep(0.02)
        return answer("200 OK")

    async with scripted(slow, "keepalive") as (client, server, url):
        await asyncio.gather(*(client.get(url) for _ in range(3)))
        before = len(server.requests)
        for _ in range(5):
            await client.get(url)
    later = server.requests[before:]
    assert len({r.connection for r in later}) == 1


PRIVATE_ALLOWED_ON = {"self", "cls"}


@pytest.mark.parametrize("module", [transport, http], ids=lambda m: m.__name__)
def test_no_private_attribute_of_another_library_is_used(module: object) -> None:
    """The transport and the client factory use public interfaces of httpx, asyncio and
    OpenTelemetry only: every `x._name` they touch is their own (`self._...`). A change that
    reaches into a library's internals again fails here."""
    path = Path(getattr(module, "__file__", ""))
    tree = ast.parse(path.read_text())
    foreign = [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in PRIVATE_ALLOWED_ON)
    ]
    assert foreign == []
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "httpcore" not in imported
