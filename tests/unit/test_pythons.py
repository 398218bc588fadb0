"""tests/pythons.py: CI's per-version suites and the real-worker test find their interpreter with
it, and a version it cannot find must be an error that says where it looked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import pythons

RUNNING = sys.version_info[:2]
MINOR = "python{}.{}".format(*RUNNING)


def test_finds_the_running_version_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / MINOR).symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    path, version = pythons.find_python(RUNNING)
    assert path == str(tmp_path / MINOR)
    assert version == "{}.{}.{}".format(*sys.version_info[:3])
    assert pythons.main(["{}.{}".format(*RUNNING)]) == 0
    assert capsys.readouterr().out == f"{path}\n"


def test_finds_it_under_pyenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "versions" / "{}.{}.99".format(*RUNNING) / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / MINOR).symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    assert pythons.find_python(RUNNING)[0] == str(bin_dir / MINOR)


def test_a_missing_version_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    with pytest.raises(pythons.PythonMissing, match=r"no Python 3\.99 found .*python3\.99"):
        pythons.find_python((3, 99))
    assert pythons.main(["3.99"]) == 1
    assert "no Python 3.99 found" in capsys.readouterr().err


def test_the_override_is_the_only_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_PYTHON", sys.executable)
    assert pythons.find_python(RUNNING, "SOME_PYTHON")[0] == sys.executable
    with pytest.raises(pythons.PythonMissing, match="set SOME_PYTHON to one"):
        pythons.find_python((3, 99), "SOME_PYTHON")


@pytest.mark.parametrize("argv", [[], ["3"], ["3.12", "3.13"], ["three.twelve"]])
def test_usage(argv: list[str]) -> None:
    assert pythons.main(argv) == 2
