"""Clocks and gauges for the driver process only: wall time, CPU (process time, every thread),
RSS now and at its peak (the kernel's high-water mark, reset per run where Linux allows)."""

from __future__ import annotations

import gc
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(name: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    if kib is None:  # not Linux: the peak is the best we have
        return peak_rss_mib()
    return kib / 1024


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Meter:
    """`with Meter() as m:` ... then m.wall, m.cpu, m.rss_start/peak/end (MiB)."""

    wall: float = 0.0
    cpu: float = 0.0
    rss_start: float = 0.0
    rss_peak: float = 0.0
    rss_end: float = 0.0
    peak_is_per_run: bool = False
    marks: dict[str, float] = field(default_factory=dict)
    #: the machine's 1-minute load average when the run started and ended (other processes'
    #: load shows here: figures from a run at a load above the CPU count are noisy)
    load: tuple[float, float] = (0.0, 0.0)
    _wall0: float = 0.0
    _cpu0: float = 0.0

    def __enter__(self) -> Meter:
        gc.collect()
        self.peak_is_per_run = reset_peak_rss()
        self.rss_start = rss_mib()
        self.load = (_load(), 0.0)
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        return self

    def mark(self, name: str) -> None:
        """Remember the RSS now (e.g. after warm-up)."""
        self.marks[name] = rss_mib()

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.process_time() - self._cpu0
        self.wall = time.perf_counter() - self._wall0
        self.rss_end = rss_mib()
        self.rss_peak = max(peak_rss_mib(), self.rss_end)
        self.load = (self.load[0], _load())


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
