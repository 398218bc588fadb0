"""A loopback HTTP server for contract tests: a vendor's documented behaviour as a handler.

Each fake records every request it receives and answers through its vendor rules; `inject`
queues replies (faults) that are served first, one per request, before the rules run.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: close the connection without answering (a reset, as the client sees it)
    drop: bool = False
    #: answer only after this many seconds (a timeout, when above the client's)
    delay: float = 0.0

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


Handler = Callable[[Recorded], Reply]
#: decides a fault for a request, or None to let the vendor rules answer
Chaos = Callable[[Recorded], Reply | None]


class _QuietServer(ThreadingHTTPServer):
    # The default backlog (5) drops connection bursts: clients then wait a 1 s SYN retransmit.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out or reset (as the chaos tests make it) is not an error here."""


class FakeServer:
    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host:port` (default: an ephemeral loopback port, right for tests)."""
        self._handler = handler
        self.requests: list[Recorded] = []
        self._injected: deque[Reply] = deque()
        self._lock = threading.Lock()
        #: testing hooks: `chaos` injects faults by rule; `accepted` keeps the requests the vendor
        #: rules accepted (2xx and no failure body)
        self.chaos: Chaos | None = None
        self.accepted: list[Recorded] = []
        fake = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                reply = fake._next(recorded)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload = reply.encoded()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json"} if payload else {}
                headers.update(reply.headers)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = _QuietServer((host, port), _RequestHandler)
        self._server.daemon_threads = True
        # A short poll keeps shutdown (once per test) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )

    def _next(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            fault = self._injected.popleft() if self._injected else None
        if fault is None and self.chaos is not None:
            fault = self.chaos(recorded)
        if fault is not None:
            return fault
        reply = self._handler(recorded)
        failed_body = isinstance(reply.body, dict) and reply.body.get("status") == "fail"
        if 200 <= reply.status < 300 and not failed_body:
            with self._lock:
                self.accepted.append(recorded)
        return reply

    def inject(self, *replies: Reply) -> None:
        with self._lock:
            self._injected.extend(replies)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
