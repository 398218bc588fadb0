"""One bench run: start the fake vendors, run every mode against them, return a Report.

Modes, in order: floor, core (the stages inline), a long soak for memory, batch (the lanes as the
host drives them with ORDERS_BATCH_ENABLED), seed-style baseline, the 2 s-destination pair
(inline), the lanes mode (reference, one vendor slow, one vendor down: bench/lanes.py), the ledger
mode (the lanes on the memory ledger and on the Table ledger on Azurite, back to back), the
processes mode (1 and 2 worker processes sharing one Azurite ledger: bench/processes.py),
optionally a concurrency sweep, the core on the stock httpx transport, and experiments. Every row
checks that it did the work it claims (bench/verify.py). `python -m bench` is the command line.

The bench starts its own Azurite (bench/azurite.py) when a mode needs one (`--ledger azurite`,
`ledger`, `processes`); every run on it gets a table of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import pstats
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from bench.azurite import Azurite, AzuriteUnavailable, azurite
from bench.config import MODES, BenchConfig, production_logging, stock_transport
from bench.core_run import drive_core
from bench.experiments import ExperimentUnavailable, applied
from bench.fakes import FakeVendors
from bench.floor import drive_floor
from bench.lanes import LanesResult, Scenario, drive_lanes
from bench.orders import OrderSet
from bench.report import Report
from bench.result import RunResult
from bench.seed import drive_seed
from bench.vendors import DESTINATION_NAMES
from bench.wiring import SkipRun, make_ledger

T = TypeVar("T")
#: rows a bounded memory ledger keeps per generation (two generations at most)
LEDGER_MAX_ROWS = 10_000


def _critical_path(
    config: BenchConfig, orders: OrderSet, result: RunResult, overrides: dict[str, float]
) -> float:
    """Average seconds a message must wait on the fakes' latency: the loyalty lookup when it
    missed the cache, then the slowest destination it goes to (they are called concurrently)."""
    if not result.messages:
        return 0.0
    slowest = sum(
        max((config.latency_of(d, overrides) for d in order.plan.sends), default=0.0)
        for order in orders
    )
    lookups = result.vendor.loyalty_requests if result.vendor else 0
    return (slowest + lookups * config.latency_of("loyalty", overrides)) / result.messages


class Bench:
    def __init__(
        self, config: BenchConfig, fakes: FakeVendors, env: Azurite | str | None = None
    ) -> None:
        self.config = config
        self.fakes = fakes
        #: the bench's own Azurite, or why there is none
        self.azurite = env
        self.report = Report(config=config)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coroutine)

    def _wants(self, mode: str) -> bool:
        return mode in self.config.modes

    def _core(
        self,
        name: str,
        orders: OrderSet,
        *,
        concurrency: int | None = None,
        latency: dict[str, float] | None = None,
        time_destinations: bool = False,
    ) -> RunResult:
        latency = latency or {}
        config = self.config
        self.fakes.configure(config.fake_config(**latency))
        try:
            ledger = make_ledger(config.ledger, max_rows=LEDGER_MAX_ROWS, azurite=self.azurite)
        except SkipRun as exc:
            return RunResult(name, skipped=str(exc))
        result = self._run(
            drive_core(
                name,
                self.fakes,
                orders,
                concurrency=concurrency or config.concurrency,
                ledger=ledger,
                time_destinations=time_destinations,
            )
        )
        result.critical_path = _critical_path(config, orders, result, latency)
        return result

    def _profiled_core(self, orders: OrderSet) -> RunResult:
        if self.config.profile is None:
            return self._core("core", orders, time_destinations=True)
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            result = self._core("core", orders, time_destinations=True)
        finally:
            profiler.disable()
        profiler.dump_stats(self.config.profile)
        result.notes.append(f"profiled (cProfile inflates CPU): {self.config.profile}")
        return result

    def _lanes(
        self,
        name: str,
        orders: OrderSet,
        scenario: Scenario,
        rate: float | None = None,
        *,
        ledger_kind: str | None = None,
        group: str = "lanes",
    ) -> RunResult:
        c = self.config
        try:
            ledger = make_ledger(ledger_kind or c.ledger, max_rows=None, azurite=self.azurite)
        except SkipRun as exc:
            return RunResult(name, skipped=str(exc))
        return self._run(
            drive_lanes(
                name,
                self.fakes,
                orders,
                base=c.fake_config(),
                scenario=scenario,
                setup=c.lanes_setup,
                ledger=ledger,
                rate=rate,
                group=group,
            )
        )

    def run(self) -> Report:
        c = self.config
        orders = OrderSet(c.orders, cards=c.distinct_cards, tag="C")
        add = self.report.add
        if self._wants("floor"):
            self.fakes.configure(replace(c.fake_config(), validate_every=0))
            add(self._run(drive_floor("floor", self.fakes, orders, concurrency=c.concurrency)))
            stock_floor = self._orders(min(c.orders, c.stock_orders or 500), "F")
            with stock_transport():
                add(
                    self._run(
                        drive_floor(
                            "floor (stock httpx)",
                            self.fakes,
                            stock_floor,
                            concurrency=c.concurrency,
                        )
                    )
                )
        if self._wants("core"):
            add(self._profiled_core(orders))
        if self._wants("soak") and c.soak:
            # Right after the core, while the process is lean: a process that ran the lanes and
            # the seed-style threads first has hundreds of MiB of freed arenas to reuse, and
            # would show no growth whatever the soak leaked.
            soak = OrderSet(c.soak, cards=min(c.distinct_cards, 10_000), tag="K")
            add(self._core("soak", soak))
        if self._wants("batch"):
            add(self._lanes("batch", orders, Scenario("batch", batch=True), group="batch"))
        if self._wants("seed"):
            self.fakes.configure(c.fake_config())
            seed_orders = OrderSet(min(c.seed_orders, c.orders), cards=c.distinct_cards, tag="S")
            add(drive_seed("seed-style", self.fakes, seed_orders, concurrency=c.concurrency))
        if self._wants("slow"):
            self._slow_pair()
        if self._wants("lanes") and c.lanes_orders:
            self._lanes_modes()
        if self._wants("ledger"):
            self._ledger_pairs()
        if self._wants("processes"):
            self._processes()
        if self._wants("sweep"):
            for concurrency in c.sweep:
                count = min(c.orders, 5_000, 250 * concurrency)
                sweep = OrderSet(count, cards=c.distinct_cards, tag=f"W{concurrency}")
                add(self._core(f"core c={concurrency}", sweep, concurrency=concurrency))
        if self._wants("stock") and c.stock_orders:
            stock = OrderSet(c.stock_orders, cards=c.distinct_cards, tag="H")
            with stock_transport():
                add(self._core("core (stock httpx transport)", stock))
        if self._wants("experiments"):
            self._experiments()
        return self.report

    def _lanes_modes(self) -> None:
        """Reference, one vendor slow, one vendor down: the same orders, the same concurrency,
        saturating, in interleaved rounds (the machine's noise drifts: each impaired run is
        compared with its own round's reference); then once more paced below capacity (latency)."""
        c = self.config
        orders = OrderSet(c.lanes_orders, cards=max(1, c.lanes_orders // 2), tag="N")
        scenarios = {
            "reference": Scenario("reference"),
            f"slow ({c.slow_destination} {c.slow_ms:g} ms)": Scenario(
                "slow", slow={c.slow_destination: c.slow_ms / 1000}
            ),
            f"down ({c.down_destination} 503)": Scenario("down", down=(c.down_destination,)),
        }
        add = self.report.add
        references: list[RunResult] = []
        for round_ in range(1, c.lanes_rounds + 1):
            for label, scenario in scenarios.items():
                result = self._lanes(f"lanes {label} #{round_}", orders, scenario)
                result.notes.append(f"round {round_} of {c.lanes_rounds}")
                add(result)
                if scenario.label == "reference":
                    references.append(result)
        # a last reference: each impaired run is compared with the references before and after it
        closing = c.lanes_rounds + 1
        result = self._lanes(f"lanes reference #{closing}", orders, scenarios["reference"])
        result.notes.append("closing reference")
        add(result)
        references.append(result)
        measured = sorted(
            r.messages / r.measured_s
            for r in references
            if isinstance(r, LanesResult) and r.measured_s
        )
        if not c.lanes_paced_share or not measured:
            return
        rate = c.lanes_paced_share * measured[len(measured) // 2]
        for label, scenario in scenarios.items():
            name = f"lanes {label} @{c.lanes_paced_share:.0%}"
            add(self._lanes(name, orders, scenario, rate))

    def _ledger_pairs(self) -> None:
        """The lanes reference run on the memory ledger and on the Table ledger (Azurite, a fresh
        table each run), back to back on the same orders, in rounds whose order alternates
        (memory first, then Azurite first): each round's CPU-per-order ratio pairs two runs made
        under the same load. Then the same on the batch lanes."""
        c = self.config
        count = c.ledger_orders or c.lanes_orders
        if not count:
            return
        paths = [("one by one", Scenario("reference"))]
        if c.ledger_batch:
            paths.append(("batch", Scenario("batch", batch=True)))
        for round_ in range(1, c.ledger_rounds + 1):
            kinds = ("memory", "azurite") if round_ % 2 else ("azurite", "memory")
            for label, scenario in paths:
                tag = f"Q{round_}{'B' if scenario.batch else 'S'}"
                orders = OrderSet(count, cards=max(1, count // 2), tag=tag)
                for kind in kinds:
                    name = f"ledger {kind} {label} #{round_}"
                    result = self._lanes(name, orders, scenario, ledger_kind=kind, group="ledger")
                    order = " then ".join(kinds)
                    result.notes.append(f"round {round_} of {c.ledger_rounds}; {order}")
                    self.report.add(result)

    def _processes(self) -> None:
        from bench.processes import drive_processes

        c = self.config
        count = c.processes_orders or c.lanes_orders
        if not count:
            return
        for round_ in range(1, c.processes_rounds + 1):
            for n in c.processes_counts:
                name = f"processes x{n} #{round_}"
                if not isinstance(self.azurite, Azurite):
                    self.report.add(RunResult(name, skipped=str(self.azurite or "no Azurite")))
                    continue
                orders = OrderSet(count, cards=max(1, count // 2), tag=f"X{round_}p{n}")
                result = drive_processes(
                    name,
                    self.fakes,
                    orders,
                    processes=n,
                    azurite=self.azurite,
                    base=replace(c.fake_config(), latency=c.processes_latency_ms / 1000),
                    setup=replace(
                        c.lanes_setup,
                        concurrency=c.processes_concurrency,
                        feed_depth=c.processes_concurrency,
                    ),
                    resend_every=c.processes_resend_every,
                    log_level=c.log_level,
                )
                result.notes.append(
                    f"round {round_} of {c.processes_rounds}; vendors at "
                    f"{c.processes_latency_ms:g} ms, {c.processes_concurrency} calls in flight "
                    "per function and process"
                )
                self.report.add(result)

    def _experiments(self) -> None:
        """Each experiment and a reference without any, interleaved over several rounds (the
        machine's noise drifts over minutes); the run with the median CPU per message is kept."""
        c = self.config
        if not c.experiments:
            return
        count = max(1, min(c.orders, c.experiment_orders) // c.experiment_rounds)
        # One at a time: they are not all in the same direction (httpx-cookie-jar undoes a fix).
        groups: list[tuple[str, ...]] = [(), *((name,) for name in c.experiments)]
        runs: dict[str, list[RunResult]] = {}
        skipped: dict[str, RunResult] = {}
        for round_ in range(c.experiment_rounds):
            for names in groups:
                label = _experiment_label(names)
                if label in skipped:
                    continue
                try:
                    with applied(names):
                        result = self._core(label, self._orders(count, f"E{round_}"))
                except ExperimentUnavailable as exc:
                    skipped[label] = RunResult(label, skipped=str(exc))
                    continue
                runs.setdefault(label, []).append(result)
        for result in skipped.values():
            self.report.add(result)
        for results in runs.values():
            ordered = sorted(results, key=lambda r: r.cpu_per_message)
            median = ordered[len(ordered) // 2]
            median.notes.append(
                "median of rounds; CPU ms/msg per round: "
                + ", ".join(f"{r.cpu_per_message * 1000:.2f}" for r in results)
            )
            self.report.add(median)

    def _orders(self, count: int, tag: str) -> OrderSet:
        return OrderSet(count, cards=self.config.distinct_cards, tag=tag)

    def _slow_pair(self) -> None:
        c = self.config
        count = c.concurrency * c.slow_rounds
        orders = OrderSet(count, cards=c.distinct_cards, tag="L")
        slow = {c.slow_destination: c.slow_ms / 1000}
        self.report.add(self._core("slow reference", orders, time_destinations=True))
        name = f"slow ({c.slow_destination} {c.slow_ms:g} ms)"
        self.report.add(self._core(name, orders, latency=slow, time_destinations=True))


def _experiment_label(names: tuple[str, ...]) -> str:
    if not names:
        return "core (experiments' reference)"
    return f"core + {' + '.join(names)}"


def run_bench(config: BenchConfig) -> Report:
    for destination in (config.slow_destination, config.down_destination):
        if destination not in DESTINATION_NAMES:
            raise ValueError(
                f"slow and down destinations must be among {', '.join(DESTINATION_NAMES)}"
            )
    unknown = [mode for mode in config.modes if mode not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    needs_azurite = config.ledger == "azurite" or bool({"ledger", "processes"} & set(config.modes))
    with (
        production_logging(config.log_level),
        FakeVendors(config.fake_config()) as fakes,
        _azurite_if(needs_azurite) as env,
    ):
        return Bench(config, fakes, env).run()


@contextlib.contextmanager
def _azurite_if(wanted: bool) -> Iterator[Azurite | str | None]:
    """The bench's own Azurite when a mode needs one; else None, or why it could not start (the
    rows that need it are then reported as skipped)."""
    if not wanted:
        yield None
        return
    try:
        started = azurite()
        env = started.__enter__()
    except AzuriteUnavailable as exc:
        yield str(exc)
        return
    try:
        yield env
    finally:
        started.__exit__(None, None, None)


def top_functions(path: Path, count: int = 25) -> str:
    """The profile's heaviest functions by own time, as text."""
    import io

    stream = io.StringIO()
    pstats.Stats(str(path), stream=stream).sort_stats("tottime").print_stats(count)
    return stream.getvalue()


__all__ = ["MODES", "BenchConfig", "Report", "run_bench", "top_functions"]
