"""The ledger's key layout (docs/ledger.md): PartitionKey `<destination>-<bucket>`, RowKey the
event key."""

from __future__ import annotations

import hashlib

# -- Keys ------------------------------------------------------------------------------------

#: Partitions per destination (docs/ledger.md has the numbers): a lane's batch needs at most this
#: many entity group transactions per step, and one destination can take 8 x 2,000 entity
#: writes/s (the per-partition target) before its partitions, not the account, are the limit.
#: Changing it moves every row: it needs a migration like DELIVERY_LEDGER_LEGACY_LOOKUP.
LEDGER_BUCKETS = 8


def order_key_of(event_key: str) -> str:
    """The order key an event key starts with (`<order key>:<eventType>:<hash>`; order keys are
    percent-encoded, so they hold no colon)."""
    return event_key.partition(":")[0]


def bucket(order: str) -> str:
    """The order key's bucket: one digit, the same for all of an order's events."""
    return str(hashlib.sha256(order.encode()).digest()[0] % LEDGER_BUCKETS)


def partition_key(destination: str, event_key: str) -> str:
    return f"{destination}-{bucket(order_key_of(event_key))}"


def order_rows(order: str) -> tuple[str, str]:
    """The RowKey (or legacy PartitionKey) range holding every event key of one order:
    `<order key>:` <= key < `<order key>;` (';' follows ':')."""
    return f"{order}:", f"{order};"
