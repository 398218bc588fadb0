"""A loopback stand-in for the Functions host's Settlement gRPC service.

The Service Bus extension's ServiceBusMessageActions settles messages by calling this service on
the host's own gRPC endpoint. This fake records each call (action, lock token, dead-letter reason
and description) instead of touching Service Bus. It runs inside the harness process, on Python
3.13, with the service definition the installed extension ships (`settlement_pb2_grpc`).
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from azurefunctions.extensions.bindings.protos import settlement_pb2, settlement_pb2_grpc
from google.protobuf.empty_pb2 import Empty

from tests.worker.plan import Settlement


@dataclass(frozen=True)
class Settled:
    action: str
    lock_token: str
    reason: str | None = None
    description: str | None = None

    def as_json(self) -> Settlement:
        return {
            "action": self.action,
            "lock_token": self.lock_token,
            "reason": self.reason,
            "description": self.description,
        }


def _text(request: Any, field: str) -> str | None:
    """A google.protobuf.StringValue field, or None when the caller left it out."""
    return str(getattr(request, field).value) if request.HasField(field) else None


class RecordingSettlement(settlement_pb2_grpc.SettlementServicer):  # type: ignore[misc]
    """Answers every settlement as the host would on success, and remembers it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled: list[Settled] = []

    @property
    def settled(self) -> list[Settled]:
        with self._lock:
            return list(self._settled)

    def _record(self, settled: Settled) -> Empty:
        with self._lock:
            self._settled.append(settled)
        return Empty()

    def Complete(
        self, request: settlement_pb2.CompleteRequest, context: grpc.ServicerContext
    ) -> Empty:
        return self._record(Settled("complete", request.locktoken))

    def Abandon(
        self, request: settlement_pb2.AbandonRequest, context: grpc.ServicerContext
    ) -> Empty:
        return self._record(Settled("abandon", request.locktoken))

    def Deadletter(
        self, request: settlement_pb2.DeadletterRequest, context: grpc.ServicerContext
    ) -> Empty:
        return self._record(
            Settled(
                "deadletter",
                request.locktoken,
                reason=_text(request, "deadletterReason"),
                description=_text(request, "deadletterErrorDescription"),
            )
        )

    def Defer(self, request: settlement_pb2.DeferRequest, context: grpc.ServicerContext) -> Empty:
        return self._record(Settled("defer", request.locktoken))


def serve_settlement(host: str) -> tuple[grpc.Server, RecordingSettlement, int]:
    """Start the fake on a free loopback port: (server, recorder, port)."""
    recorder = RecordingSettlement()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    settlement_pb2_grpc.add_SettlementServicer_to_server(recorder, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, recorder, port
