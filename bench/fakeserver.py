"""The fake vendors' process: one small asyncio HTTP/1.1 keep-alive server per system.

Run as `python -m bench.fakeserver` by `bench.fakes.FakeVendors`, which talks to it over stdin and
stdout, one JSON object a line: it prints `{"ports": {...}}` once listening, then answers the
commands `configure`, `reset`, `stats` and `stop`. Every request is answered after the configured
latency (per system if overridden), with an injected 503 at the configured error rate; requests,
statuses, new TCP connections and the peak number of requests in flight are counted per system,
and so is every order id a destination accepted (2xx, not injected), so the driver can check each
planned delivery reached its vendor exactly once. A system listed in `down` answers 503 to every
request (tokens included) without looking at it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from bench.vendors import (
    DESTINATION_NAMES,
    SYSTEMS,
    Answer,
    Request,
    VendorState,
    accepted_order_ids,
    answer,
    digest,
)
from tests.fakes import richrelevance as richrelevance_fake

INJECTED = json.dumps({"message": "injected failure (bench error rate)"}).encode()
DOWN = json.dumps({"message": "service unavailable (bench: vendor down)"}).encode()
#: duplicated ids listed in the stats (the count is always complete)
DUPLICATES_SHOWN = 20


@dataclass
class Config:
    latency: float = 0.02
    #: system name -> latency in seconds, overriding `latency` for that system
    overrides: dict[str, float] = field(default_factory=dict)
    error_rate: float = 0.0
    #: run 1 in N requests through the contract-test fakes' full validation; 0 = never
    validate_every: int = 0
    seed: int = 1
    #: systems answering 503 to every request (a vendor down)
    down: list[str] = field(default_factory=list)


@dataclass
class SystemStats:
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    validated: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    #: order id -> times a request carrying it was accepted (destinations only)
    accepted: Counter[str] = field(default_factory=Counter)
    #: accepted requests whose body carried no order id where the vendor's format puts it (the
    #: floor posts raw orders)
    unreadable: int = 0

    def as_dict(self) -> dict[str, Any]:
        duplicates = [order_id for order_id, n in self.accepted.items() if n > 1]
        return {
            "accepted": {
                "ids": sum(self.accepted.values()),
                "distinct": len(self.accepted),
                "digest": digest(self.accepted),
                "duplicates": len(duplicates),
                "duplicated_ids": duplicates[:DUPLICATES_SHOWN],
                "unreadable": self.unreadable,
            },
            "connections": self.connections,
            "max_in_flight": self.max_in_flight,
            "kinds": dict(self.kinds),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "validated": self.validated,
            "invalid": self.invalid,
            "problems": self.problems,
        }


class Vendors:
    """Shared by every connection: configuration, vendor state and counters."""

    def __init__(self) -> None:
        self.config = Config()
        self.state = VendorState()
        self.rng = random.Random(self.config.seed)  # noqa: S311 (latency noise, not security)
        self.stats = {name: SystemStats() for name in SYSTEMS}
        self.seen = Counter[str]()
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()

    def configure(self, values: dict[str, Any]) -> None:
        self.config = Config(**values)
        self.rng = random.Random(self.config.seed)  # noqa: S311 (latency noise, not security)

    def reset(self) -> None:
        self.stats = {name: SystemStats() for name in SYSTEMS}
        self.seen.clear()
        self.state.forget_validation_state()
        self.cpu_start = time.process_time()
        self.wall_start = time.monotonic()

    def report(self) -> dict[str, Any]:
        return {
            "systems": {name: s.as_dict() for name, s in self.stats.items()},
            "cpu_seconds": time.process_time() - self.cpu_start,
            "wall_seconds": time.monotonic() - self.wall_start,
        }

    def respond(self, system: str, request: Request) -> tuple[float, Answer]:
        config = self.config
        self.seen[system] += 1
        stats = self.stats[system]
        if system in config.down:
            result = Answer(503, DOWN, _kind(system, request), ok=False)
            stats.kinds[result.kind] += 1
            stats.statuses[result.status] += 1
            return config.overrides.get(system, config.latency), result
        every = config.validate_every
        validate = (
            every > 0 and system in DESTINATION_NAMES and self.seen[system] % every == 1 % every
        )
        result = answer(system, request, self.state, validate=validate)
        stats.kinds[result.kind] += 1
        if validate and result.kind == system:
            stats.validated += 1
            if not result.ok:
                stats.invalid += 1
                if len(stats.problems) < 5:
                    stats.problems.append(f"{result.status} {result.body[:300].decode()}")
        if config.error_rate and result.ok and self.rng.random() < config.error_rate:
            result = Answer(503, INJECTED, result.kind, ok=False)
        stats.statuses[result.status] += 1
        if result.ok and result.kind == system and system in DESTINATION_NAMES:
            try:
                stats.accepted.update(accepted_order_ids(system, request.body))
            except (ValueError, LookupError, TypeError, AttributeError):
                stats.unreadable += 1
        return config.overrides.get(system, config.latency), result


def _kind(system: str, request: Request) -> str:
    if system == "richrelevance" and request.path == richrelevance_fake.TOKEN_PATH:
        return "richrelevance_token"
    return system


def _encode(result: Answer) -> bytes:
    reason = HTTPStatus(result.status).phrase
    head = f"HTTP/1.1 {result.status} {reason}\r\nContent-Length: {len(result.body)}\r\n"
    if result.body:
        head += "Content-Type: application/json\r\n"
    return (head + "\r\n").encode("latin-1") + result.body


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with Content-Length bodies and keep-alive: what httpx sends."""

    def __init__(self, vendors: Vendors, system: str) -> None:
        self.vendors = vendors
        self.system = system
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.vendors.stats[self.system].connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (request := self._next_request()) is not None:
            self._handle(*request)

    def _next_request(self) -> tuple[Request, bool] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return None
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, target, _ = lines[0].split(" ", 2)
        close = headers.get("connection", "").lower() == "close"
        return Request(method, target, headers, body), close

    def _handle(self, request: Request, close: bool) -> None:
        stats = self.vendors.stats[self.system]
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        delay, result = self.vendors.respond(self.system, request)
        self.loop.call_later(delay, self._reply, _encode(result), close)

    def _reply(self, payload: bytes, close: bool) -> None:
        self.vendors.stats[self.system].in_flight -= 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(payload)
        if close:
            transport.close()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    vendors = Vendors()
    ports = {}
    for system in SYSTEMS:
        factory = functools.partial(HttpProtocol, vendors, system)
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024)
        ports[system] = server.sockets[0].getsockname()[1]
    _say({"ports": ports})
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        match command["command"]:
            case "configure":
                vendors.configure(command["config"])
                _say({"ok": True})
            case "reset":
                vendors.reset()
                _say({"ok": True})
            case "stats":
                _say(vendors.report())
            case "stop":
                _say({"ok": True})
                break


def _say(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(serve())
