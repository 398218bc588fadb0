"""HTTP/1.1 conformance of the app's transports, each case run on both (`kind`): the app's own
keep-alive transport and httpx's stock one (`HTTP_TRANSPORT=httpx`). Same answers, same
exceptions, same connection reuse: the fallback is a drop-in, and the app's transport behaves as
httpcore does wherever the two should agree (where they differ on purpose:
test_keepalive_transport.py)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import httpx
import pytest

from order_processor.outbound.http import TransportKind
from order_processor.outbound.transport import MAX_HEAD_BYTES
from tests.outbound.pki import Pki
from tests.outbound.scripted import (
    RESET,
    Received,
    Reply,
    answer,
    chunked,
    client_for,
    scripted,
    serving,
)

# --- answers read like httpx reads them ---------------------------------------------------------


async def test_keep_alive_reuses_one_connection(kind: TransportKind) -> None:
    async with scripted(lambda _: answer("200 OK", b'{"a":1}'), kind) as (client, server, url):
        for _ in range(5):
            response = await client.post(url + "/x?y=1", content=b"{}")
            assert response.json() == {"a": 1}
            assert response.reason_phrase == "OK"
            assert response.http_version == "HTTP/1.1"
    assert server.connections == 1
    first = server.requests[0]
    assert first.head.startswith(b"POST /x?y=1 HTTP/1.1\r\n")
    assert first.header("content-length") == b"2"
    assert first.body == b"{}"


async def test_response_headers_arrive_as_sent(kind: TransportKind) -> None:
    reply = (
        b"HTTP/1.1 201\r\n"  # no reason phrase
        b"X-Twice: 1\r\nx-twice: 2\r\n"
        b"X-Padded: \t spaced out \t\r\n"
        b"X-Empty:\r\n"
        b"X-Folded: first\r\n   second\r\n"
        b"Content-Length: 2\r\nContent-Length: 2\r\n"  # repeated with the same value: fine
        b"\r\nok"
    )
    async with scripted(lambda _: reply, kind) as (client, _, url):
        response = await client.get(url)
    assert response.status_code == 201
    assert response.reason_phrase == ""
    assert response.headers.get_list("x-twice") == ["1", "2"]
    assert response.headers["x-padded"] == "spaced out"
    assert response.headers["x-empty"] == ""
    assert response.headers["x-folded"] == "first second"
    assert response.content == b"ok"


async def test_chunked_gzip_and_interim_answers(kind: TransportKind) -> None:
    packed = gzip.compress(b'{"status":"OK"}')
    body = chunked(packed[:10], packed[10:], trailer=b"X-Trailer: 1\r\n")
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        + answer("200 OK", body, "Transfer-Encoding: chunked", "Content-Encoding: gzip")
    )
    async with scripted(lambda _: reply, kind) as (client, server, url):
        first = await client.get(url)
        second = await client.get(url)
    assert first.json() == second.json() == {"status": "OK"}
    assert "link" not in first.headers  # the interim answer's headers are not the response's
    assert server.connections == 1


async def test_chunk_extensions_are_ignored_and_chunked_overrides_content_length(
    kind: TransportKind,
) -> None:
    body = b"3;name=value\r\nabc\r\n2 \r\nde\r\n0\r\n\r\n"
    reply = answer("200 OK", body, "Transfer-Encoding: Chunked", "Content-Length: 999")
    async with scripted(lambda _: reply, kind) as (client, server, url):
        assert (await client.get(url)).content == b"abcde"
        assert (await client.get(url)).content == b"abcde"
    assert server.connections == 1


async def test_a_streamed_request_body_goes_out_chunked(kind: TransportKind) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with scripted(lambda _: answer("200 OK"), kind) as (client, server, url):
        await client.post(url, content=parts())
    assert server.requests[0].header("transfer-encoding") == b"chunked"
    assert server.requests[0].body == b"hello world"


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("HEAD", answer("200 OK", b"", "Content-Length: 1000")),
        ("GET", answer("204 No Content", b"", "Content-Length: 0")),
        ("GET", answer("304 Not Modified", b"", "Content-Length: 1000")),
    ],
)
async def test_answers_without_a_body_keep_the_connection(
    kind: TransportKind, method: str, reply: bytes
) -> None:
    async with scripted(lambda _: reply, kind) as (client, server, url):
        for _ in range(2):
            assert (await client.request(method, url)).content == b""
    assert server.connections == 1


async def test_close_delimited_and_connection_close_answers_are_not_reused(
    kind: TransportKind,
) -> None:
    replies = iter(
        [
            b"HTTP/1.0 200 OK\r\n\r\nuntil-close",
            answer("202 Accepted", b"", "Connection: close"),
            answer("200 OK", b"fine", version="HTTP/1.0"),
            answer("204 No Content", b"", "Content-Length: 0"),
        ]
    )
    async with scripted(lambda _: next(replies), kind) as (client, server, url):
        response = await client.get(url)
        assert response.content == b"until-close"
        assert response.http_version == "HTTP/1.0"
        assert (await client.get(url)).status_code == 202
        assert (await client.get(url)).content == b"fine"
        assert (await client.get(url)).status_code == 204
    assert server.connections == 4


async def test_a_request_asking_to_close_is_not_reused(kind: TransportKind) -> None:
    async with scripted(lambda _: answer("200 OK"), kind) as (client, server, url):
        await client.get(url, headers={"Connection": "close"})
        await client.get(url)
    assert server.connections == 2


# --- connections the server ends ----------------------------------------------------------------


async def test_a_connection_the_server_closed_while_idle_is_not_used(kind: TransportKind) -> None:
    async with scripted(lambda _: answer("200 OK", b"ok"), kind) as (client, server, url):
        await client.get(url)
        server.drop_connections()
        await asyncio.sleep(0.05)  # the FIN arrives
        assert (await client.get(url)).content == b"ok"
    assert server.connections == 2


async def test_a_connection_with_an_unasked_answer_waiting_is_not_used(
    kind: TransportKind,
) -> None:
    """A server may send 408 on an idle connection just before it closes it."""

    def script(received: Received) -> Reply:
        if received.index == 0:
            later = answer("408 Request Timeout", b"", "Connection: close")
            asyncio.get_running_loop().call_later(0.02, received.writer.write, later)
        return answer("200 OK", b"ok")

    async with scripted(script, kind) as (client, server, url):
        await client.get(url)
        await asyncio.sleep(0.1)
        response = await client.get(url)
    assert (response.status_code, response.content) == (200, b"ok")
    assert server.connections == 2


async def test_idle_connections_expire_after_keepalive_expiry(kind: TransportKind) -> None:
    async with scripted(lambda _: answer("200 OK"), kind, keepalive_expiry=0.05) as (
        client,
        server,
        url,
    ):
        await client.get(url)
        await client.get(url)
        await asyncio.sleep(0.15)
        await client.get(url)
    assert server.connections == 2


async def test_no_answer_is_a_remote_protocol_error(kind: TransportKind) -> None:
    async with scripted(lambda _: None, kind) as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get(url)


async def test_a_reset_connection_is_a_read_error(kind: TransportKind) -> None:
    async with scripted(lambda _: RESET, kind) as (client, _, url):
        with pytest.raises(httpx.ReadError):
            await client.get(url)


@pytest.mark.parametrize(
    "truncated",
    [
        b"HTTP/1.1 200 OK\r\nContent-Len",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ],
    ids=["head", "content-length body", "chunk", "chunked body"],
)
async def test_a_truncated_answer_is_a_remote_protocol_error(
    kind: TransportKind, truncated: bytes
) -> None:
    async def script(received: Received) -> Reply:
        received.writer.write(truncated)
        await asyncio.sleep(0.05)
        return None  # then close

    async with scripted(script, kind) as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)


# --- timeouts, refusals, the pool ---------------------------------------------------------------


async def test_an_answer_that_never_comes_is_a_read_timeout(kind: TransportKind) -> None:
    async with scripted(lambda _: b"", kind, read=0.05) as (client, _, url):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url)


async def test_a_server_that_stops_reading_is_a_write_timeout(kind: TransportKind) -> None:
    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    listening = await asyncio.start_server(stalled, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/"
    try:
        async with client_for(kind, write=0.2) as client:
            with pytest.raises(httpx.WriteTimeout):
                await client.post(url, content=b"x" * (64 * 1024 * 1024))
    finally:
        listening.close()


async def test_a_refused_connection_and_an_unknown_scheme(kind: TransportKind) -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    async with client_for(kind) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")


async def test_the_pool_limit_holds(kind: TransportKind) -> None:
    async def slow(_: Received) -> Reply:
        await asyncio.sleep(0.05)
        return answer("200 OK", b"ok")

    async with scripted(slow, kind, max_connections=2) as (client, server, url):
        statuses = await asyncio.gather(*(client.get(url) for _ in range(6)))
    assert [r.status_code for r in statuses] == [200] * 6
    assert server.connections <= 2
    assert server.peak_open <= 2


async def test_idle_connections_over_max_keepalive_are_closed(kind: TransportKind) -> None:
    async def slow(_: Received) -> Reply:
        await asyncio.sleep(0.05)
        return answer("200 OK")

    async with scripted(slow, kind, max_connections=3, max_keepalive=1) as (client, server, url):
        await asyncio.gather(*(client.get(url) for _ in range(3)))
        await asyncio.sleep(0.05)
        assert (server.connections, server.open) == (3, 1)
        for _ in range(3):
            await client.get(url)
        assert server.connections == 3  # the one kept carried them


async def test_a_full_pool_times_out_and_frees_up(kind: TransportKind) -> None:
    release = asyncio.Event()

    async def held(received: Received) -> Reply:
        if received.index == 0:
            await release.wait()
        return answer("200 OK", b"ok")

    async with scripted(held, kind, max_connections=1, pool=0.05) as (client, _, url):
        holder = asyncio.ensure_future(client.get(url))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(url)
        release.set()
        assert (await holder).status_code == 200
        assert (await client.get(url)).status_code == 200


async def test_a_cancelled_request_gives_its_connection_back(kind: TransportKind) -> None:
    async def script(received: Received) -> Reply:
        if received.index == 0:
            await asyncio.sleep(1)
        return answer("200 OK", b"ok")

    async with scripted(script, kind, max_connections=1, pool=0.5) as (client, server, url):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.get(url)
        assert (await client.get(url)).content == b"ok"
    assert server.connections == 2  # the interrupted one was not reused


# --- requests that must not be sent -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {"X-Evil": "a\r\nInjected: 1"}),
        ("GET", {"X-Evil": "a\nInjected: 1"}),
        ("GET", {"X-Evil": "a\rb"}),
        ("GET", {"X-Evil": "a\x00b"}),
        ("GET", {"X Evil": "1"}),
        ("GET", {"X-Evil:": "1"}),
        ("GET", {"X-Evil\r\nInjected": "1"}),
        ("GET", {"": "1"}),
        ("GET X", {}),
        ("G\r\nET", {}),
    ],
    ids=[
        "CRLF in value",
        "LF in value",
        "CR in value",
        "NUL in value",
        "space in name",
        "colon in name",
        "CRLF in name",
        "empty name",
        "space in method",
        "CRLF in method",
    ],
)
async def test_a_request_with_an_illegal_method_or_header_is_refused(
    kind: TransportKind, method: str, headers: dict[str, str]
) -> None:
    async with scripted(lambda _: answer("200 OK"), kind) as (client, server, url):
        with pytest.raises(httpx.LocalProtocolError):
            await client.request(method, url, headers=headers)
        assert server.requests == []
        assert (await client.get(url)).status_code == 200  # the client is still fine


# --- answers that must be refused ---------------------------------------------------------------

MALFORMED = {
    "bad status line": b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "two-digit status": b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "space in a header name": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",
    "space before the colon": b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
    "no colon": b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
    "empty header name": b"HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n",
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "bare CR in a value": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "folded first header": b"HTTP/1.1 200 OK\r\n  folded\r\nContent-Length: 0\r\n\r\n",
    "conflicting Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    "conflicting Content-Length list": b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
    "non-numeric Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    "negative Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "signed Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
    "Transfer-Encoding gzip with Content-Length": b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nab",
    "Transfer-Encoding gzip, chunked": b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "two Transfer-Encoding fields": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk size not hex": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk size 0x-prefixed": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x2\r\nab\r\n0\r\n\r\n",
    "chunk size negative": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\n",
    "chunk data not CRLF-terminated": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nabcd0\r\n\r\n",
    "head over the limit": b"HTTP/1.1 200 OK\r\nX-Big: "
    + b"a" * (3 * MAX_HEAD_BYTES)
    + b"\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("reply", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_answer_is_a_remote_protocol_error(
    kind: TransportKind, reply: bytes
) -> None:
    async def script(_: Received) -> Reply:
        return reply

    async with scripted(script, kind, read=1.0) as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)


async def test_https_with_a_trusted_and_an_untrusted_certificate(
    kind: TransportKind, tls: Pki
) -> None:
    """The only scheme the app uses in Azure: the server's certificate is verified against the
    client's CAs (httpx's default: certifi's), for the host name in the URL (SNI)."""
    async with serving(lambda _: answer("200 OK", b"secure"), tls=tls.server) as (server, url):
        async with client_for(kind, ssl_context=tls.client) as client:
            assert (await client.get(url + "/a")).content == b"secure"
            assert (await client.get(url + "/b")).content == b"secure"
        async with client_for(kind) as client:  # certifi does not know the test CA
            with pytest.raises(httpx.ConnectError):
                await client.get(url + "/c")
    assert server.connections == 1  # kept alive over TLS (the refused handshake never got in)
