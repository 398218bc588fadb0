"""`DESTINATION_MAX_RESPONSE_BYTES` on both transports: a response body larger than the cap is
`ResponseTooLarge` (an `httpx.RemoteProtocolError`), whichever way the body is framed, and is
not read into memory beyond the cap."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import httpx
import pytest

from order_processor.outbound.http import TransportKind
from order_processor.outbound.transport import ResponseTooLarge
from tests.outbound.scripted import Received, Reply, answer, chunked, scripted

CAP = 4096


def framed(framing: str, body: bytes) -> bytes:
    match framing:
        case "content-length":
            return answer("200 OK", body)
        case "chunked":
            half = len(body) // 2
            return answer("200 OK", chunked(body[:half], body[half:]), "Transfer-Encoding: chunked")
        case _:
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body


FRAMINGS = ("content-length", "chunked", "close-delimited")


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_body_of_exactly_the_cap_is_read(kind: TransportKind, framing: str) -> None:
    body = b"x" * CAP
    async with scripted(lambda _: framed(framing, body), kind, max_response_bytes=CAP) as (
        client,
        _,
        url,
    ):
        assert (await client.get(url)).content == body


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_body_over_the_cap_is_refused_as_a_protocol_error(
    kind: TransportKind, framing: str
) -> None:
    async with scripted(
        lambda _: framed(framing, b"x" * (CAP + 1)), kind, max_response_bytes=CAP
    ) as (client, _, url):
        with pytest.raises(ResponseTooLarge, match=f"larger than {CAP} bytes") as caught:
            await client.get(url)
    assert isinstance(caught.value, httpx.RemoteProtocolError)


async def test_a_bodiless_answer_may_declare_any_length(kind: TransportKind) -> None:
    reply = answer("200 OK", b"", f"Content-Length: {CAP * 100}")
    async with scripted(lambda _: reply, kind, max_response_bytes=CAP) as (client, _, url):
        assert (await client.head(url)).headers["content-length"] == str(CAP * 100)


async def test_the_cap_counts_bytes_on_the_wire_before_decoding(kind: TransportKind) -> None:
    import gzip

    packed = gzip.compress(b"a" * (CAP * 10))  # compresses far below the cap
    reply = answer("200 OK", packed, "Content-Encoding: gzip")
    async with scripted(lambda _: reply, kind, max_response_bytes=CAP) as (client, _, url):
        assert len((await client.get(url)).content) == CAP * 10


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_huge_answer_is_refused_without_being_held_in_memory(
    kind: TransportKind, framing: str
) -> None:
    """8 MiB sent against a 1 MiB cap: the client's memory grows by about the cap, not by the
    answer (the app's transport holds at most the cap plus a byte; httpcore reads 64 KiB at a
    time and `CappedTransport` stops it after the cap)."""
    cap = 1024 * 1024
    piece = b"y" * (64 * 1024)
    total = 8 * 1024 * 1024
    head = {
        "content-length": f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode(),
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "close-delimited": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    }[framing]
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece

    async def stream(received: Received) -> Reply:
        received.writer.write(head)
        try:
            for _ in range(total // len(piece)):
                received.writer.write(frame)
                await received.writer.drain()
        except ConnectionError:
            pass
        return None

    async with scripted(stream, kind, max_response_bytes=cap) as (client, server, url):
        gc.collect()
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLarge):
                await client.get(url)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await asyncio.sleep(0)
    assert peak < cap + 1024 * 1024, f"peak {peak} bytes while refusing"
    assert server.connections == 1
