"""The bench's settings (`BenchConfig`, quick and full presets) and the process-wide conditions
a run sets up: production-like logging, and optionally httpx's stock transport in the core."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.experiments import EXPERIMENTS, transport_httpx
from bench.fakeserver import Config
from bench.lanes import LanesSetup
from order_processor.logs import configure_logging

#: every mode of a bench run, in the order they run (bench.run)
MODES = (
    "floor",
    "core",
    "batch",
    "seed",
    "slow",
    "lanes",
    "ledger",
    "processes",
    "sweep",
    "stock",
    "experiments",
    "soak",
)


@dataclass(frozen=True)
class BenchConfig:
    orders: int = 20_000
    cards: int | None = None  # distinct loyalty cards; default orders // 2
    concurrency: int = 32
    latency_ms: float = 20.0
    error_rate: float = 0.0
    ledger: str = "memory"
    seed_orders: int = 320  # 10 rounds of 32: the baseline is slow, its rate settles quickly
    #: the batch row: host.json maxMessageBatchSize (each batch lane takes one batch at a time)
    batch_size: int = 100
    slow_ms: float = 2_000.0
    slow_destination: str = "profile_store"
    slow_rounds: int = 5
    #: the lanes mode (bench/lanes.py): orders per run (reference, slow, down, batch); 0: none
    lanes_orders: int = 4_000
    #: the vendor answering 503 to every call in the lanes mode's `down` run
    down_destination: str = "esputnik"
    #: the retry schedule (RETRY_BACKOFF_MINUTES, RETRY_WINDOW_MINUTES) divided by this
    retry_compression: float = 300.0
    #: the lanes mode again with the ERP paced at this share of the reference's throughput
    #: (end-to-end latency at a load the app carries); 0: not run
    lanes_paced_share: float = 0.7
    #: rounds of (reference, slow, down), interleaved; the isolation ratios are their medians
    lanes_rounds: int = 3
    #: the `ledger` mode: the lanes reference run on the memory ledger and on the Table ledger
    #: (the bench's own Azurite, a fresh table each run), back to back, in interleaved rounds
    ledger_orders: int = 0  # 0: lanes_orders
    ledger_rounds: int = 3
    #: also pair them on the batch lanes (ORDERS_BATCH_ENABLED)
    ledger_batch: bool = True
    #: the `processes` mode: the pipeline in 1 and in 2 OS processes competing for one orders
    #: queue, one Azurite ledger and one set of fakes; every `processes_resend_every`-th order
    #: is published twice (0: never)
    processes_orders: int = 0  # 0: lanes_orders
    processes_counts: tuple[int, ...] = (1, 2)
    processes_rounds: int = 2
    processes_resend_every: int = 20
    #: the processes mode runs latency-bound: vendors at this answer time and this many calls in
    #: flight per function, so that each process's work is its own concurrency, not this
    #: machine's last free core (2 vCPUs that also run Azurite and the fakes; see
    #: docs/performance.md, "Worker processes")
    processes_latency_ms: float = 200.0
    processes_concurrency: int = 8
    soak: int = 0
    sweep: tuple[int, ...] = ()
    stock_orders: int = 0  # >0: also run the core on httpx's stock transport
    #: bench.experiments names: one extra core run each
    experiments: tuple[str, ...] = ()
    experiment_orders: int = 6_000
    experiment_rounds: int = 3
    validate_every: int = 25
    log_level: str = "INFO"
    profile: Path | None = None
    label: str = "full"
    #: which modes to run, all by default
    modes: tuple[str, ...] = MODES

    @classmethod
    def quick(cls, **changes: Any) -> BenchConfig:
        values: dict[str, Any] = {
            "orders": 2_000,
            "seed_orders": 64,
            "slow_rounds": 3,
            "lanes_orders": 600,
            "processes_rounds": 1,
            "validate_every": 10,
            "label": "quick",
        }
        return cls(**{**values, **changes})

    @classmethod
    def full(cls, **changes: Any) -> BenchConfig:
        values: dict[str, Any] = {
            "soak": 100_000,
            "sweep": (2, 4, 8, 16, 64),
            "stock_orders": 5_000,
            "experiments": tuple(EXPERIMENTS),
        }
        return cls(**{**values, **changes})

    @property
    def distinct_cards(self) -> int:
        return self.cards or max(1, self.orders // 2)

    @property
    def lanes_setup(self) -> LanesSetup:
        return LanesSetup(
            concurrency=self.concurrency,
            batch_size=self.batch_size,
            feed_depth=self.concurrency,
            compression=self.retry_compression,
        )

    def fake_config(self, **overrides: float) -> Config:
        return Config(
            latency=self.latency_ms / 1000,
            overrides=dict(overrides),
            error_rate=self.error_rate,
            validate_every=self.validate_every,
        )

    def latency_of(self, system: str, overrides: dict[str, float] | None = None) -> float:
        return (overrides or {}).get(system, self.latency_ms / 1000)


class _Discard(logging.Handler):
    """Stands in for the Functions worker's log handler: every record is formatted, then
    dropped (the worker would ship it to the host)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


@contextlib.contextmanager
def production_logging(level: str) -> Iterator[None]:
    handler = _Discard()
    root = logging.getLogger()
    root.addHandler(handler)
    configure_logging(level)
    try:
        yield
    finally:
        root.removeHandler(handler)


@contextlib.contextmanager
def stock_transport() -> Iterator[None]:
    """The core's clients on httpx's own transport (httpcore), for before/after figures: what
    `HTTP_TRANSPORT=httpx` selects."""
    with transport_httpx():
        yield
