"""The driver's handle on the fake vendors' process (`bench.fakeserver`): start, configure,
read the counters, stop. The fakes run in their own process so their CPU is not the driver's."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.fakeserver import Config
from bench.vendors import DESTINATION_NAMES

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class VendorStats:
    """What the fakes counted over one run."""

    systems: dict[str, dict[str, Any]]
    cpu_seconds: float
    wall_seconds: float

    def kind(self, kind: str) -> int:
        return sum(int(s["kinds"].get(kind, 0)) for s in self.systems.values())

    @property
    def destination_requests(self) -> int:
        return sum(self.kind(name) for name in DESTINATION_NAMES)

    @property
    def loyalty_requests(self) -> int:
        return self.kind("loyalty")

    @property
    def token_requests(self) -> int:
        return sum(
            n for s in self.systems.values() for k, n in s["kinds"].items() if k.endswith("_token")
        )

    @property
    def connections(self) -> int:
        return sum(int(s["connections"]) for s in self.systems.values())

    @property
    def validated(self) -> int:
        return sum(int(s["validated"]) for s in self.systems.values())

    @property
    def invalid(self) -> int:
        return sum(int(s["invalid"]) for s in self.systems.values())

    @property
    def problems(self) -> list[str]:
        return [f"{name}: {p}" for name, s in self.systems.items() for p in s["problems"]]

    def per_system(self, key: str) -> dict[str, Any]:
        return {name: s[key] for name, s in self.systems.items()}

    def accepted(self, system: str) -> dict[str, Any]:
        """Order ids the vendor accepted: `ids` (with repeats), `distinct`, `digest` (of the
        distinct set, `bench.vendors.digest`), `duplicates` and some `duplicated_ids`."""
        found: dict[str, Any] = self.systems[system]["accepted"]
        return found


@dataclass
class FakeVendors:
    """`with FakeVendors() as fakes:` ... `fakes.urls["profile_store"]`."""

    config: Config = field(default_factory=Config)
    urls: dict[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[str] | None = None

    def __enter__(self) -> FakeVendors:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.fakeserver"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ports = self._read()["ports"]
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        self.configure(self.config)
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._ask({"command": "stop"})
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._process is not None, "use FakeVendors as a context manager"
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        return self._process.stdin, self._process.stdout

    def _read(self) -> dict[str, Any]:
        line = self._pipes()[1].readline()
        if not line:
            raise RuntimeError("the fake vendors' process exited")
        document: dict[str, Any] = json.loads(line)
        return document

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin, _ = self._pipes()
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()

    def configure(self, config: Config) -> None:
        self.config = config
        self._ask({"command": "configure", "config": asdict(config)})

    def reset(self) -> None:
        self._ask({"command": "reset"})

    def stats(self) -> VendorStats:
        return VendorStats(**self._ask({"command": "stats"}))
