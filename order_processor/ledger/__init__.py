"""The delivery ledger: one row per (order event, destination), so nothing is sent twice.

Before a destination is called its row is claimed: inserted, or taken over with the row's ETag. A
delivered or skipped row means "do not call again"; a row another copy of the same event holds
(an unexpired lease) means "back off and retry later". Two copies racing for a row cannot both
win: the loser's insert or conditional replace fails. The claim logic lives here once, for one
row and for a lane's batch alike; stores (`MemoryLedger` for tests and the bench, `TableLedger`
for Azure Table Storage) only supply ETag-guarded primitives, which a store may carry out many
rows per request (Table Storage's entity group transactions).

Row keys (docs/ledger.md): PartitionKey = `<destination>-<bucket>`, RowKey = the event key, where
the bucket is one of LEDGER_BUCKETS digits from a hash of the order key. A lane's batch (one
destination) falls into at most LEDGER_BUCKETS partitions, and one order's rows are a RowKey range
in one partition per destination (`rows_for_order`).

The one window for a duplicate: the vendor accepted the request and the process died before the
result was written. The row stays in flight until its lease ends; the next copy then sends again.
"""

from order_processor.ledger.base import BatchLedger, Ledger
from order_processor.ledger.entries import (
    FINAL,
    Claimed,
    ClaimRequest,
    Decided,
    Existing,
    Gate,
    Held,
    LedgerEntry,
    LedgerFailure,
    LedgerRejected,
    LedgerStatus,
    LedgerUnavailable,
    Settled,
)
from order_processor.ledger.keys import LEDGER_BUCKETS, bucket, order_key_of, partition_key
from order_processor.ledger.memory import MemoryLedger, NoLedger
from order_processor.ledger.table import TableLedger, build_ledger
from order_processor.ledger.wire import StorageError, TableStore, from_entity, to_entity

__all__ = [
    "FINAL",
    "LEDGER_BUCKETS",
    "BatchLedger",
    "ClaimRequest",
    "Claimed",
    "Decided",
    "Existing",
    "Gate",
    "Held",
    "Ledger",
    "LedgerEntry",
    "LedgerFailure",
    "LedgerRejected",
    "LedgerStatus",
    "LedgerUnavailable",
    "MemoryLedger",
    "NoLedger",
    "Settled",
    "StorageError",
    "TableLedger",
    "TableStore",
    "bucket",
    "build_ledger",
    "from_entity",
    "order_key_of",
    "partition_key",
    "to_entity",
]
