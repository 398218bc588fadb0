"""The app's clients (`order_processor.outbound.http.new_client`) on either transport: the
settings reach every client (destinations and loyalty), failures land in the failure taxonomy,
dependency telemetry sees every call, and no cookie jar."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import opentelemetry.trace
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from order_processor.ledger import MemoryLedger
from order_processor.local import LocalRun
from order_processor.model import DeliveryStatus, MessageMetadata
from order_processor.outbound.errors import DeliveryError, FailureKind
from order_processor.outbound.http import (
    HttpOptions,
    Timeouts,
    TransportKind,
    instrument_httpx,
    new_client,
    send,
)
from order_processor.outbound.redaction import register_secrets
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from order_processor.settings import SettingsError, load_settings
from tests.conftest import FakeClock, sample, settings_for
from tests.outbound.scripted import Received, Reply, answer, serving

TIMEOUTS = Timeouts(connect=1, read=2, total=5)


def test_the_settings_default_to_the_keepalive_transport_and_a_1_mib_cap() -> None:
    core = settings_for("http://127.0.0.1:9", None).core
    assert core.http_options == HttpOptions(transport="keepalive", max_response_bytes=1048576)


def test_the_settings_refuse_an_unknown_transport_and_a_tiny_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_TRANSPORT", "aiohttp")
    monkeypatch.setenv("DESTINATION_MAX_RESPONSE_BYTES", "10")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "HTTP_TRANSPORT" in str(caught.value)
    assert "DESTINATION_MAX_RESPONSE_BYTES" in str(caught.value)


async def test_every_client_gets_the_transport_and_the_cap(
    kind: TransportKind, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Destinations and the loyalty lookup alike: a 10 KiB answer against a 4 KiB cap is a
    transient failure naming ResponseTooLarge, on the transport HTTP_TRANSPORT chose."""
    stock_calls: list[str] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def counted(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        stock_calls.append(request.url.path)
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", counted)
    big = json.dumps({"email": "x" * 10_000}).encode()
    async with serving(lambda _: answer("200 OK", big, "Content-Type: application/json")) as (
        server,
        url,
    ):
        settings = settings_for(
            url,
            url,
            core={"http_transport": kind, "destination_max_response_bytes": 4096},
        )
        retry = RetryPolicy(max_attempts=1, sleep=clock.sleep, clock=clock)
        pipeline = Pipeline.from_settings(
            settings, ledger=MemoryLedger(), retry=retry, clock=clock, outbox=MemoryOutbox()
        )
        try:
            with pytest.raises(DeliveryError) as lookup:
                await pipeline.lookup.lookup("6330001234567890", deadline=clock() + 30)
            run = await LocalRun(pipeline).run(
                sample("order-created-with-email.json"), MessageMetadata(message_id="m-1")
            )
        finally:
            await pipeline.aclose()
    assert lookup.value.kind is FailureKind.TRANSIENT
    assert "ResponseTooLarge" in str(lookup.value)
    outcome = run.lanes["profile_store"]
    assert outcome.retry_at is not None
    (result,) = outcome.results
    assert result.status is DeliveryStatus.TRANSIENT_ERROR
    assert "ResponseTooLarge" in result.detail
    assert len(server.requests) == 2
    assert len(stock_calls) == (2 if kind == "httpx" else 0)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (answer("200 OK", b"x" * 5000), "ResponseTooLarge"),
        (b"HTTP/1.1 200 OK\r\nBad Header: 1\r\nContent-Length: 0\r\n\r\n", "RemoteProtocolError"),
        (None, "RemoteProtocolError"),
    ],
    ids=["too large", "malformed", "dropped"],
)
async def test_protocol_failures_are_transient_delivery_errors(
    kind: TransportKind, reply: Reply, message: str
) -> None:
    """The failure taxonomy treats network and protocol errors as transient: the message is
    retried (immediately, then later), never dead-lettered for a vendor's malformed answer."""

    def script(_: Received) -> Reply:
        return reply

    async with serving(script) as (_, url):
        options = HttpOptions(transport=kind, max_response_bytes=4096)
        async with new_client(timeouts=TIMEOUTS, options=options) as client:
            with pytest.raises(DeliveryError) as caught:
                await send(
                    client, client.build_request("GET", url), system="vendor", timeouts=TIMEOUTS
                )
    assert caught.value.kind is FailureKind.TRANSIENT
    assert caught.value.describe() == f"vendor: {message}"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry's httpx instrumentation switched on as `configure_azure_monitor_from_
    environment` does it (`instrument_httpx()` on the global tracer provider, here one exporting
    to memory for this test only); switched off afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", lambda: provider)
    instrument_httpx()
    try:
        yield exporter
    finally:
        HTTPXClientInstrumentor().uninstrument()


def span_urls(spans: InMemorySpanExporter) -> list[str]:
    finished = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    return [
        str((s.attributes or {}).get("http.url", (s.attributes or {}).get("url.full")))
        for s in finished
    ]


async def test_dependency_telemetry_sees_every_call(
    kind: TransportKind, spans: InMemorySpanExporter
) -> None:
    """The stock transport is traced where the instrumentation patches it (on the class); the
    app's transport is not an `httpx.AsyncHTTPTransport`, so `new_client` wraps it in the
    instrumentation's public `AsyncOpenTelemetryTransport`. One client span per call, either way."""
    client = new_client(timeouts=TIMEOUTS, options=HttpOptions(transport=kind))
    async with serving(lambda _: answer("200 OK", b"ok")) as (_, url), client:
        for path in ("/one", "/two"):
            assert (await client.get(url + path)).content == b"ok"
    finished = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in finished] == ["GET", "GET"]
    assert span_urls(spans) == [url + "/one", url + "/two"]


async def test_dependency_telemetry_keeps_no_card_number_or_key_from_a_url(
    kind: TransportKind, spans: InMemorySpanExporter
) -> None:
    """Application Insights gets each span's URL: a loyalty lookup's path holds a card number,
    RichRelevance's its API key. Both are masked before export, on either transport."""
    key = "rr-live-key-in-the-path-0042"
    register_secrets([key])
    client = new_client(timeouts=TIMEOUTS, options=HttpOptions(transport=kind))
    async with serving(lambda _: answer("200 OK", b"ok")) as (_, url), client:
        await client.get(f"{url}/cards/6330001234567890")
        await client.put(f"{url}/omnichannel/api/v1/{key}/orders", content=b"{}")
    assert span_urls(spans) == [
        f"{url}/cards/<number>",
        f"{url}/omnichannel/api/v1/***/orders",
    ]


async def test_without_telemetry_the_app_transport_is_not_wrapped() -> None:
    """The wrapper costs CPU on every call: only when the instrumentation is on."""
    from order_processor.outbound.http import make_transport
    from order_processor.outbound.transport import KeepAliveTransport

    transport = make_transport(HttpOptions(), limits=httpx.Limits())
    assert isinstance(transport, KeepAliveTransport)


async def test_the_app_client_keeps_no_cookies(kind: TransportKind) -> None:
    """Vendors authenticate with keys and tokens: a Set-Cookie answer changes nothing sent next
    (httpx's cookie jar cost the core 23% of its CPU per message; `ApiClient` has none)."""

    def script(_: Received) -> Reply:
        return answer("200 OK", b"{}", "Set-Cookie: ARRAffinity=abc; Path=/")

    client = new_client(timeouts=TIMEOUTS, options=HttpOptions(transport=kind))
    async with serving(script) as (server, url), client:
        for _ in range(2):
            assert (await client.post(url + "/x", content=b"{}")).status_code == 200
        assert not client.cookies
    assert all(r.header("cookie") is None for r in server.requests)
