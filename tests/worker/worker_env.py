"""The Python 3.13 virtual environment the harness runs in, built from PyPI and cached.

It holds the app's requirements.txt plus tests/worker/requirements.txt (the library worker,
grpcio, protobuf) and lives in `.worker-venv/<key>`, where the key hashes the interpreter's
version and both requirement files: a second run reuses it, an edited requirement file builds a
new one (and older ones are removed). A build that did not finish leaves no `ready` marker, so
the next run starts that directory over.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests import pythons

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".worker-venv"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
APP_REQUIREMENTS = ROOT / "requirements.txt"
VERSION: pythons.Version = (3, 13)
#: An interpreter to use instead of looking for one (any path to a 3.13 python).
PYTHON_ENV = "WORKER_TEST_PYTHON"
_READY = "ready"

WorkerPythonMissing = pythons.PythonMissing


class WorkerVenvFailed(RuntimeError):
    pass


def find_python() -> tuple[str, str]:
    """(path, version) of a Python 3.13, or WorkerPythonMissing saying where it looked."""
    return pythons.find_python(VERSION, PYTHON_ENV)


def cache_key(version: str) -> str:
    digest = hashlib.sha256(version.encode())
    for path in (REQUIREMENTS, APP_REQUIREMENTS):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time, across processes (two pytest runs in one checkout)."""
    CACHE.mkdir(exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], step: str) -> None:
    done = subprocess.run(  # noqa: S603 - the chosen interpreter and its pip
        command, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise WorkerVenvFailed(f"{step} failed ({done.returncode}):\n{done.stderr[-4000:]}")


def worker_python() -> Path:
    """The environment's interpreter, building the environment first when needed."""
    python, version = find_python()
    target = CACHE / cache_key(version)
    interpreter = target / "bin" / "python"
    with _build_lock():
        if not (target / _READY).exists():
            shutil.rmtree(target, ignore_errors=True)
            _run([python, "-m", "venv", str(target)], "python -m venv")
            pip = [str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            _run(
                [*pip, "-r", str(REQUIREMENTS)], f"pip install -r {REQUIREMENTS.relative_to(ROOT)}"
            )
            (target / _READY).write_text(f"built with {python} ({version}) for {sys.platform}\n")
        for stale in CACHE.iterdir():
            if stale.is_dir() and stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return interpreter
