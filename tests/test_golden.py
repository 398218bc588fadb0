"""The exact request every destination receives for every sample order is the committed one:
a mapping change shows up as a diff of tests/golden/ (regenerate with python -m tests.golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden import HERE, capture

CAPTURED = capture()


def test_every_sample_and_destination_has_a_golden_file() -> None:
    committed = set(HERE.rglob("*.http"))
    assert committed == set(CAPTURED), "run: python -m tests.golden"


@pytest.mark.parametrize("path", sorted(CAPTURED), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_request_is_the_golden_one(path: Path) -> None:
    assert path.exists(), "run: python -m tests.golden"
    assert CAPTURED[path] == path.read_text(encoding="utf-8"), (
        f"{path} differs: review the mapping change, then run python -m tests.golden"
    )
