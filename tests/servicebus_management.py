"""Service Bus's management APIs, replayed: an azure-core transport that answers the real clients
(azure-servicebus's `ServiceBusAdministrationClient` over ATOM, azure-core's pipeline for Azure
Resource Manager) from the recorded responses in tests/recordings/servicebus_management (their
provenance is in the README there), with this test's entity names and counts filled in.

    namespace = Management(namespace_id=..., host=...)
    namespace.subscription("order-deliveries-0", "esputnik", active=12, dead_letters=3)
    namespace.topic("order-deliveries-0", scheduled=7)
    monkeypatch.setattr(counts, "transport", namespace.transport)

Requests to an entity nobody declared get the recorded "not found" answer of each API; every
request is kept (`requests`) so a test can check what was asked, and with which credentials.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl_async import RestAsyncHttpClientTransportResponse

RECORDINGS = Path(__file__).resolve().parent / "recordings" / "servicebus_management"
ATOM = "application/atom+xml;type=entry;charset=utf-8"
JSON = "application/json; charset=utf-8"


def recorded(name: str, **values: Any) -> bytes:
    """A recording with its `{placeholders}` filled in."""
    text = (RECORDINGS / name).read_text(encoding="utf-8").strip()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text.encode("utf-8")


class _Answer:
    """What RestAsyncHttpClientTransportResponse reads of an http.client response."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.reason = http.client.responses.get(status, "")
        self._headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        self._body = body

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self._headers)

    def read(self) -> bytes:
        return self._body


@dataclass(frozen=True)
class Seen:
    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class Management:
    """One namespace's entities as both management APIs report them."""

    namespace_id: str
    host: str
    #: (topic, subscription) -> (active, dead letters)
    subscriptions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    topics: dict[str, int] = field(default_factory=dict)
    #: answer every ATOM request 401, as for a credential without Manage rights
    unauthorized: bool = False
    requests: list[Seen] = field(default_factory=list)

    def subscription(
        self, topic: str, subscription: str, *, active: int = 0, dead_letters: int = 0
    ) -> None:
        self.subscriptions[(topic.lower(), subscription.lower())] = (active, dead_letters)

    def topic(self, topic: str, *, scheduled: int = 0) -> None:
        self.topics[topic.lower()] = scheduled

    def transport(self) -> AsyncHttpTransport[Any, Any]:
        return _Replay(self)

    def answer(self, request: HttpRequest) -> _Answer:
        parts = urlsplit(request.url)
        query = parse_qs(parts.query)
        auth = request.headers.get("Authorization")
        self.requests.append(Seen(request.method, request.url, parts.path, query, auth))
        if request.method != "GET" or "api-version" not in query:
            return _Answer(400, JSON, b'{"error": {"code": "BadRequest", "message": "?"}}')
        if parts.hostname == "management.azure.com":
            return self._arm(parts.path)
        return self._atom(parts.path)

    def _atom(self, path: str) -> _Answer:
        segments = [s for s in path.split("/") if s]
        names = {"namespace": self.host, "topic": segments[0] if segments else ""}
        if len(segments) == 3:
            names["subscription"] = segments[2]
        if self.unauthorized:
            return _Answer(
                401, "application/xml; charset=utf-8", recorded("atom-unauthorized.xml", **names)
            )
        if len(segments) == 3 and segments[1].lower() == "subscriptions":
            found = self.subscriptions.get((segments[0].lower(), segments[2].lower()))
            if found is not None:
                active, dead = found
                body = recorded(
                    "atom-subscription.xml",
                    **names,
                    active=active,
                    dead_letters=dead,
                    total=active + dead,
                )
                return _Answer(200, ATOM, body)
        if len(segments) == 1 and segments[0].lower() in self.topics:
            body = recorded("atom-topic.xml", **names, scheduled=self.topics[segments[0].lower()])
            return _Answer(200, ATOM, body)
        return _Answer(200, ATOM.replace("entry", "feed"), recorded("atom-not-found.xml"))

    def _arm(self, path: str) -> _Answer:
        prefix = self.namespace_id.lower()
        if not path.lower().startswith(prefix + "/"):
            return _Answer(404, JSON, b'{"error": {"code": "ResourceNotFound", "message": "?"}}')
        segments = path[len(prefix) + 1 :].split("/")
        names = {"namespace_id": self.namespace_id}
        if len(segments) == 4 and segments[0] == "topics" and segments[2] == "subscriptions":
            found = self.subscriptions.get((segments[1].lower(), segments[3].lower()))
            if found is not None:
                active, dead = found
                body = recorded(
                    "arm-subscription.json",
                    **names,
                    topic=segments[1],
                    subscription=segments[3],
                    active=active,
                    dead_letters=dead,
                    total=active + dead,
                )
                return _Answer(200, JSON, body)
        if len(segments) == 2 and segments[0] == "topics" and segments[1].lower() in self.topics:
            body = recorded(
                "arm-topic.json",
                **names,
                topic=segments[1],
                scheduled=self.topics[segments[1].lower()],
            )
            return _Answer(200, JSON, body)
        message = b'{"error": {"code": "EntityNotFound", "message": "Not found."}}'
        return _Answer(404, JSON, message)


class _Replay(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self, management: Management) -> None:
        self.management = management

    async def send(self, request: Any, **kwargs: Any) -> Any:
        response = RestAsyncHttpClientTransportResponse(
            request=request, internal_response=self.management.answer(request)
        )
        await response.read()
        return response

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _Replay:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None


class FakeCredential:
    """An AsyncTokenCredential handing out one fixed token (ARM's bearer policy asks for it)."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken("fake-arm-token", 2_000_000_000)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: Any) -> None:
        return None
