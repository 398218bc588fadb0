"""Finding an interpreter of one Python minor version on this machine: `python3.X` on PATH, then
pyenv's `versions/3.X*`. The real-worker test looks for 3.13 with it (tests/worker/worker_env.py);
CI runs the whole suite on every other supported version with `python -m tests.pythons 3.X`, which
prints the interpreter's path or says where it looked and exits 1 (CI fails, never skips).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

Version = tuple[int, int]


class PythonMissing(RuntimeError):
    pass


def _version_of(python: str) -> str | None:
    """`3.13.0` for a working interpreter, None for a missing or broken one (pyenv shims exist
    for versions that are not selected and fail when run)."""
    try:
        done = subprocess.run(  # noqa: S603 - an interpreter we are probing
            [python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _candidates(version: Version, override_env: str | None) -> Iterator[str]:
    if override_env and os.environ.get(override_env):
        yield os.environ[override_env]
        return
    wanted = "python{}.{}".format(*version)
    on_path = shutil.which(wanted)
    if on_path:
        yield on_path
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    pattern = "{}.{}*/bin/{}".format(*version, wanted)
    yield from (str(p) for p in sorted((pyenv_root / "versions").glob(pattern)))


def find_python(version: Version, override_env: str | None = None) -> tuple[str, str]:
    """(path, full version) of a Python `version`, or PythonMissing saying where it looked.
    `override_env` names an environment variable that, when set, is the only candidate."""
    tried = []
    for candidate in _candidates(version, override_env):
        found = _version_of(candidate)
        if found and tuple(int(p) for p in found.split(".")[:2]) == version:
            return candidate, found
        tried.append(candidate)
    where = ", ".join(tried) or "python{}.{} on PATH and pyenv".format(*version)
    hint = f"; set {override_env} to one" if override_env else ""
    raise PythonMissing("no Python {}.{} found (tried {}{})".format(*version, where, hint))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not re.fullmatch(r"\d+\.\d+", argv[0]):
        print("usage: python -m tests.pythons 3.X", file=sys.stderr)
        return 2
    major, minor = argv[0].split(".")
    try:
        path, _ = find_python((int(major), int(minor)))
    except PythonMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
