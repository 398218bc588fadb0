"""The bench keeps working: its quick mode on a tiny order set, every run and figure present, the
counts consistent. No timing is asserted (timings belong to `python -m bench`, not the suite).

Also the edge cases of the keep-alive transport the bench led to (`order_processor.http`), against
a scripted server; the contract tests cover the vendors end to end through the same transport.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from bench.report import Report
from bench.run import BenchConfig, run_bench
from order_processor.outbound.http import Timeouts, new_client
from order_processor.outbound.transport import KeepAliveTransport

ORDERS = 40


@pytest.fixture(scope="module")
def report() -> Report:
    config = BenchConfig.quick(
        orders=ORDERS,
        seed_orders=10,
        concurrency=4,
        latency_ms=1.0,
        batch_size=4,
        slow_ms=50.0,
        slow_rounds=1,
        validate_every=1,  # every destination request checked by the contract-test fakes
        stock_orders=10,
        experiments=("one-log-per-message", "quiet-logs"),
        experiment_orders=10,
        experiment_rounds=1,
    )
    return run_bench(config)


def test_every_run_is_reported(report: Report) -> None:
    names = set(report.runs)
    assert {"floor", "floor (stock httpx)", "core", "batch", "seed-style"} <= names
    assert {"slow reference", "core (stock httpx transport)", "core + quiet-logs"} <= names
    assert any(name.startswith("slow (profile_store") for name in names)
    assert not [name for name, run in report.runs.items() if run.skipped]


def test_the_core_sends_exactly_what_the_orders_call_for(report: Report) -> None:
    core = report.runs["core"]
    assert core.vendor is not None
    assert core.outcomes == {"complete": ORDERS}
    assert core.vendor.destination_requests == core.planned_sends == core.delivered
    assert core.vendor.loyalty_requests == core.cache_misses
    assert core.vendor.token_requests == 1
    assert core.vendor.validated > 0
    assert core.vendor.invalid == 0, core.vendor.problems
    assert core.vendor.connections <= 5 * core.concurrency


def test_the_comparison_runs_deliver_the_same_orders(report: Report) -> None:
    core = report.runs["core"]
    for name in ("floor", "batch"):
        run = report.runs[name]
        assert run.messages == ORDERS
        assert run.delivered == core.planned_sends, name
        assert run.vendor is not None
        assert run.vendor.invalid == 0, run.vendor.problems
    batch = report.runs["batch"].vendor
    assert batch is not None
    assert batch.destination_requests < core.planned_sends  # bulk requests carried several
    seed = report.runs["seed-style"]
    assert seed.vendor is not None
    assert seed.vendor.destination_requests == seed.planned_sends
    # no pooling: one connection per request, one token per RichRelevance call
    v = seed.vendor
    assert v.connections == v.destination_requests + v.loyalty_requests + v.token_requests


def test_every_ratio_and_target_is_computed(report: Report, tmp_path: Path) -> None:
    ratios = report.ratios()
    missing = [name for name, value in ratios.items() if value is None]
    assert missing == []
    assert all(t.met is not None for t in report.targets())
    written = json.loads(report.write(tmp_path / "report.json").read_text())
    assert set(written) == {"started", "machine", "config", "runs", "ratios", "targets"}
    core = written["runs"]["core"]
    for key in ("msgs_per_s", "latency_ms", "cpu_ms_per_msg", "rss_mib", "outbound_per_msg"):
        assert key in core
    assert set(core["outbound_per_msg"]) == {"destination", "loyalty", "token", "connections"}
    assert set(core["latency_ms"]) == {"p50", "p95", "p99"}


# --- KeepAliveTransport -------------------------------------------------------------------------

Script = Callable[[bytes], bytes | None]  # request -> raw answer; None: close without answering


def answer(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                reply = self.script(request)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@asynccontextmanager
async def scripted(
    script: Script, *, max_connections: int = 4, read: float = 2.0, pool: float = 2.0
) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedServer, str]]:
    server = ScriptedServer(script)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=4)
    client = httpx.AsyncClient(
        transport=KeepAliveTransport(limits=limits), timeout=httpx.Timeout(read, pool=pool)
    )
    try:
        yield client, server, url
    finally:
        await client.aclose()
        listening.close()


async def test_keep_alive_reuses_one_connection() -> None:
    async with scripted(lambda _: answer("200 OK", b'{"a":1}')) as (client, server, url):
        for _ in range(5):
            response = await client.post(url + "/x?y=1", content=b"{}")
            assert response.json() == {"a": 1}
            assert response.reason_phrase == "OK"
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /x?y=1 HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 2\r\n" in server.requests[0].lower()


async def test_chunked_gzip_and_interim_answers_are_read_like_httpx() -> None:
    packed = gzip.compress(b'{"status":"OK"}')
    chunked = b"%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(packed), packed)
    reply = answer("100 Continue", b"", "X-Info: 1") + answer(
        "200 OK", chunked, "Transfer-Encoding: chunked", "Content-Encoding: gzip"
    )
    # 100 Continue has no body: strip the Content-Length the helper added to it
    reply = reply.replace(b"X-Info: 1\r\nContent-Length: 0\r\n", b"X-Info: 1\r\n", 1)
    async with scripted(lambda _: reply) as (client, server, url):
        first = await client.get(url)
        second = await client.get(url)
    assert first.json() == second.json() == {"status": "OK"}
    assert server.connections == 1


async def test_close_delimited_and_connection_close_answers_are_not_reused() -> None:
    replies = iter(
        [
            b"HTTP/1.0 200 OK\r\n\r\nuntil-close",
            answer("202 Accepted", b"", "Connection: close"),
            answer("204 No Content", b"", "Content-Length: 0"),
        ]
    )
    async with scripted(lambda _: next(replies)) as (client, server, url):
        assert (await client.get(url)).content == b"until-close"
        assert (await client.get(url)).status_code == 202
        assert (await client.get(url)).status_code == 204
    assert server.connections == 3


async def test_a_connection_the_server_dropped_while_idle_is_not_used() -> None:
    async with scripted(lambda _: answer("200 OK", b"ok")) as (client, server, url):
        await client.get(url)
        for writer in server.writers:
            writer.close()
        await asyncio.sleep(0.05)  # the FIN arrives
        assert (await client.get(url)).content == b"ok"
    assert server.connections == 2


async def test_no_answer_is_a_remote_protocol_error() -> None:
    async with scripted(lambda _: None) as (client, _, url):
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get(url)


async def test_a_truncated_body_is_a_remote_protocol_error() -> None:
    async with scripted(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") as (
        client,
        server,
        url,
    ):
        task = asyncio.ensure_future(client.get(url))
        await asyncio.sleep(0.05)
        for writer in server.writers:
            writer.close()
        with pytest.raises(httpx.RemoteProtocolError):
            await task


async def test_timeouts_and_refusals_raise_httpx_exceptions() -> None:
    async with scripted(lambda _: b"", read=0.05) as (client, _, url):
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url)
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    async with httpx.AsyncClient(transport=KeepAliveTransport(limits=httpx.Limits())) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")


async def test_the_pool_limit_holds_and_a_full_pool_times_out() -> None:
    async def slow(client: httpx.AsyncClient, url: str) -> int:
        return (await client.get(url)).status_code

    def reply(_: bytes) -> bytes:
        return answer("200 OK", b"ok")

    async with scripted(reply, max_connections=2, pool=0.05) as (client, server, url):
        transport = client._transport
        assert isinstance(transport, KeepAliveTransport)
        pool = transport.pool
        statuses = await asyncio.gather(*(slow(client, url) for _ in range(6)))
        assert statuses == [200] * 6
        assert server.connections <= 2
        # hold both slots, then a third request waits out the pool timeout
        await pool._acquire(None)
        await pool._acquire(None)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(url)
        pool._release()
        pool._release()
        assert (await client.get(url)).status_code == 200


async def test_header_injection_is_refused() -> None:
    async with scripted(lambda _: answer("200 OK")) as (client, server, url):
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(url, headers={"X-Evil": "a\r\nInjected: 1"})
    assert server.requests == []


async def test_httpx_instrumentation_sees_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry's httpx instrumentation wraps AsyncHTTPTransport.handle_async_request on
    the class; the app's clients must still go through it (dependency telemetry)."""
    seen: list[str] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def wrapped(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", wrapped)
    async with scripted(lambda _: answer("200 OK", b"ok")) as (_, __, url):
        client = new_client(timeouts=Timeouts())
        async with client:
            assert (await client.get(url + "/seen")).content == b"ok"
    assert seen == [url + "/seen"]


async def test_the_app_client_keeps_no_cookies() -> None:
    """Vendors authenticate with keys and tokens: a Set-Cookie answer changes nothing sent next
    (httpx's cookie jar cost the core 23% of its CPU per message; `ApiClient` has none)."""

    def script(_: bytes) -> bytes:
        return answer("200 OK", b"{}", "Set-Cookie: ARRAffinity=abc; Path=/")

    async with scripted(script) as (_, server, url):
        client = new_client(timeouts=Timeouts(connect=1, read=2, total=5))
        try:
            for _ in range(2):
                assert (await client.post(url + "/x", content=b"{}")).status_code == 200
            assert not client.cookies
        finally:
            await client.aclose()
    assert all(b"cookie" not in r.lower() for r in server.requests)
