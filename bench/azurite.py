"""The bench's own Azurite Table service: started from node_modules on a free loopback port (as
tests/azurite.py does for the suite), its CPU read beside the driver's, a fresh table for every
run (so no run ever finds the rows of an earlier one), and the rows a run left counted.

Used by the main bench (`--ledger azurite`, the `ledger` and `processes` modes) and by
`python -m bench.ledger_cost`.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "node_modules" / ".bin" / "azurite-table"
#: Azurite's documented, public development account (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteUnavailable(RuntimeError):
    """No Azurite here (node_modules missing, or it did not start): say why."""


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running azurite-table process."""

    connection: str
    process: psutil.Process
    port: int = 0
    #: a prefix unique to this bench run: every table this run creates starts with it
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _tables: int = 0

    def cpu_seconds(self) -> float:
        """Azurite's CPU so far (user + system, its children too)."""
        total = 0.0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def new_table(self) -> str:
        """A table name no earlier run used (table names: alphanumeric, 3-63 characters)."""
        self._tables += 1
        return f"b{self.run_id}n{self._tables}x{uuid.uuid4().hex[:6]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def azurite() -> Iterator[Azurite]:
    """Start azurite-table (in-memory) on a free loopback port; stop it afterwards."""
    if not BINARY.exists():
        raise AzuriteUnavailable(f"{BINARY} not found: run `npm ci` (package.json) first")
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
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AzuriteUnavailable("azurite-table did not start") from None
                time.sleep(0.1)
        yield Azurite(connection_string(port), psutil.Process(process.pid), port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def table_rows(connection: str, table: str) -> Counter[tuple[str, str]]:
    """(destination, status) -> rows in the table (a run's own table: a scan is fine)."""
    from order_processor.ledger import TableStore
    from order_processor.ledger.wire import StorageError

    store = TableStore.from_connection_string(connection, table)
    try:
        rows = await store.query("PartitionKey ne ''")
    except StorageError as exc:
        if exc.status != 404:
            raise
        rows = []  # never created: nothing was written
    finally:
        await store.close()
    found: Counter[tuple[str, str]] = Counter()
    for row in rows:
        destination = str(row["PartitionKey"]).rsplit("-", 1)[0]
        found[(destination, str(row.get("Status")))] += 1
    return found
