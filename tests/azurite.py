"""A real Azurite Table service for the ledger tests, started once per test session.

CI installs it with `npm ci` (package.json); on a developer machine without it the tests that need
it are skipped, but under CI=true a missing Azurite is an error, never a silent skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "node_modules" / ".bin" / "azurite-table"
#: Azurite's documented, public development account (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteMissing(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@contextmanager
def running_azurite() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start azurite-table (in-memory) on a free loopback port; yield the process and the port,
    stop it afterwards. The suite's fixture and the bench both start theirs this way."""
    if not BINARY.exists():
        raise AzuriteMissing(f"{BINARY} not found: run `npm ci` (package.json) first")
    port = _free_port()
    process = subprocess.Popen(  # noqa: S603 - our own node_modules binary
        [
            str(BINARY),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process)
        yield process, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def azurite_tables() -> Iterator[str]:
    """Start azurite-table on a free loopback port; yield its connection string."""
    with running_azurite() as (_, port):
        yield connection_string(port)


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise AzuriteMissing(f"azurite-table exited: {error.strip()[:500]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AzuriteMissing(f"azurite-table did not listen on {port} within {timeout:.0f} s")


def required() -> bool:
    return os.environ.get("CI", "").lower() == "true"


class RequestCounter:
    """Counts the requests an aiohttp session sends (its `on_request_start` hook): what the
    ledger's round trips cost, in the tests and the bench alike."""

    def __init__(self) -> None:
        self.sent = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._started)

    async def _started(self, *_: Any) -> None:
        self.sent += 1
