"""The bench's own Azurite Table service: started from node_modules on a free loopback port (as
tests/azurite.py does for the suite), its CPU read beside the driver's, a fresh table for every
run (so no run ever finds the rows of an earlier one), and the rows a run left counted.

Used by the main bench (`--ledger azurite`, the `ledger` and `processes` modes) and by
`python -m bench.ledger_cost`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

from tests.azurite import AzuriteMissing, connection_string, running_azurite


class AzuriteUnavailable(RuntimeError):
    """No Azurite here (node_modules missing, or it did not start): say why."""


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


@contextmanager
def azurite() -> Iterator[Azurite]:
    """Start azurite-table (in-memory) on a free loopback port, as the suite does; stop it
    afterwards."""
    try:
        with running_azurite() as (process, port):
            yield Azurite(connection_string(port), psutil.Process(process.pid), port)
    except AzuriteMissing as exc:
        raise AzuriteUnavailable(str(exc)) from None


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
