"""Outbound HTTP plumbing shared by the loyalty client and every destination.

One pooled `httpx.AsyncClient` per outside system per process (keep-alive, bounded pool), auth
objects that never expose their secrets, and an OAuth2 client-credentials token that is fetched
once, shared by all concurrent calls, and refreshed on expiry or on a 401.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from order_processor.outbound.errors import (
    DeliveryError,
    FailureKind,
    error_from_exception,
    error_from_response,
)
from order_processor.outbound.redaction import redact, register_rotating
from order_processor.outbound.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CappedTransport,
    KeepAliveTransport,
)

#: `HTTP_TRANSPORT`: the app's keep-alive transport, or httpx's stock one (httpcore's pool)
TransportKind = Literal["keepalive", "httpx"]


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    connect: float = 5.0
    read: float = 10.0
    #: wall-clock cap for one attempt including connection, upload and download
    total: float = 15.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(self.read, connect=self.connect, pool=self.connect)


@dataclass(frozen=True, kw_only=True)
class HttpOptions:
    """What every outbound client shares: `HTTP_TRANSPORT` and `DESTINATION_MAX_RESPONSE_BYTES`."""

    transport: TransportKind = "keepalive"
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def make_transport(
    options: HttpOptions, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncBaseTransport:
    """The transport `options` names, under its response size cap; `ssl_context` replaces the
    default (httpx's: certifi's CAs) for tests."""
    if options.transport == "httpx":
        stock = httpx.AsyncHTTPTransport(limits=limits, verify=ssl_context or True)
        return CappedTransport(stock, max_response_bytes=options.max_response_bytes)
    own = KeepAliveTransport(
        limits=limits, max_response_bytes=options.max_response_bytes, ssl_context=ssl_context
    )
    return _traced(own)


def _traced(transport: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """OpenTelemetry's httpx instrumentation (on when Application Insights is configured, before
    any client is built) patches `httpx.AsyncHTTPTransport` on the class, which the app's own
    transport is not: wrap it in the instrumentation's public `AsyncOpenTelemetryTransport`, so
    dependency telemetry sees every call on either transport."""
    if "opentelemetry.instrumentation.httpx" not in sys.modules:
        return transport  # never imported: cannot be on (and the wrapper costs CPU per call)
    from opentelemetry.instrumentation.httpx import (
        AsyncOpenTelemetryTransport,
        HTTPXClientInstrumentor,
    )

    if not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry:
        return transport
    return AsyncOpenTelemetryTransport(transport, request_hook=_redact_span_url_async)


def instrument_httpx() -> None:
    """Trace every httpx call as dependency telemetry, its URL redacted: a span keeps the whole
    URL (OpenTelemetry strips only user:password and a few signature parameters), and ours carry
    card numbers (loyalty lookups) and keys (RichRelevance's is in its path)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument(
        request_hook=_redact_span_url, async_request_hook=_redact_span_url_async
    )


#: the span attributes that hold a request's URL, in the old and the stable HTTP conventions
_URL_ATTRIBUTES = ("url.full", "http.url", "http.target", "url.path", "url.query")


def _redact_span_url(span: Any, _request: object) -> None:
    attributes = getattr(span, "attributes", None)
    if not attributes or not span.is_recording():
        return
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, redact(value))


async def _redact_span_url_async(span: Any, request: object) -> None:
    _redact_span_url(span, request)


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: Set-Cookie answers are ignored."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ApiClient(httpx.AsyncClient):
    """httpx's client without a cookie jar. The vendors' APIs authenticate with keys and tokens,
    never cookies, while httpx wraps every response in urllib request/response shims to look for
    Set-Cookie: with the jar back the core used 6.15 instead of 4.75 ms CPU per message (bench
    experiment httpx-cookie-jar, docs/performance.md)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, value: object) -> None:
        self._no_cookies = _NoCookies()


def new_client(
    *,
    timeouts: Timeouts,
    transport: httpx.AsyncBaseTransport | None = None,
    options: HttpOptions | None = None,
    max_connections: int = 64,
) -> httpx.AsyncClient:
    """A pooled client on the transport `options` names (default: the keep-alive transport, 1 MiB
    response cap); `transport` is the testing hook (MockTransport, dry-run recorder)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return ApiClient(
        timeout=timeouts.httpx(),
        limits=limits,
        transport=transport or make_transport(options or HttpOptions(), limits=limits),
        follow_redirects=False,
        headers={"User-Agent": "instore-order-sync/1"},
    )


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    system: str,
    timeouts: Timeouts,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """Send one attempt; network failures and the total timeout become transient DeliveryErrors."""
    try:
        async with asyncio.timeout(timeouts.total):
            response = await client.send(request, auth=auth)
            await response.aread()
            return response
    except TimeoutError:
        raise DeliveryError(
            kind=FailureKind.TRANSIENT,
            system=system,
            message=f"no answer within {timeouts.total:g}s",
        ) from None
    except httpx.HTTPError as exc:
        raise error_from_exception(system, exc) from None


class HeaderAuth(httpx.Auth):
    """A static key in a header, such as `Ocp-Apim-Subscription-Key` or `epi-single`."""

    def __init__(self, *, header: str, key: SecretStr, prefix: str = "") -> None:
        self._header = header
        self._key = key
        self._prefix = prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = f"{self._prefix}{self._key.get_secret_value()}"
        yield request


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client credentials with one cached token per process.

    Concurrent callers share one token request (single-flight). The token is reused until
    `expires_in` (less a margin) passes, or forever when the server gives no TTL, and replaced
    once when a call answers 401, after which that call is retried once.
    """

    def __init__(
        self,
        *,
        system: str,
        client: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None = None,
        timeouts: Timeouts,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._system = system
        self._client = client
        self._token_url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id}
        self._secret = client_secret
        self._scope = scope
        self._timeouts = timeouts
        self._margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._expires_at = float("inf")
        self._lock = asyncio.Lock()
        #: how many token requests this process made (the bench reports it)
        self.token_requests = 0

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Drop `token` unless another caller already replaced it (avoids a refresh stampede)."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> None:
        form = dict(self._form, client_secret=self._secret.get_secret_value())
        if self._scope:
            form["scope"] = self._scope
        self.token_requests += 1
        request = self._client.build_request("POST", self._token_url, data=form)
        response = await send(
            self._client, request, system=f"{self._system} token", timeouts=self._timeouts
        )
        if response.status_code != 200:
            raise error_from_response(
                f"{self._system} token", response, message="token request refused"
            )
        try:
            document = response.json()
            token = str(document["access_token"])
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                kind=FailureKind.TRANSIENT,
                system=f"{self._system} token",
                status=response.status_code,
                message="token response has no access_token",
            ) from None
        expires_in = document.get("expires_in")
        ttl = (
            float(expires_in)
            if isinstance(expires_in, int | float | str) and str(expires_in).isdigit()
            else None
        )
        register_rotating(f"{self._system} token", token)  # masked wherever it is echoed
        self._token = token
        self._expires_at = self._clock() + ttl - self._margin if ttl else float("inf")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.invalidate(token)
            request.headers["Authorization"] = f"Bearer {await self.token()}"
            yield request
