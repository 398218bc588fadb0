"""requirements.txt bounds the outbound HTTP stack to the versions these tests ran against: the
installed versions must be inside those bounds (a newer httpx, httpcore or h11 installed by hand
fails here until tests/outbound/ passes on it and the bound is raised), and every bound has an
upper limit. The versions used are printed at the end of the run (conftest.py)."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.outbound.conftest import TESTED, versions_in_use


def _requirements() -> dict[str, Requirement]:
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


@pytest.mark.parametrize("name", TESTED)
def test_the_installed_version_is_inside_the_tested_bounds(
    name: str, record_property: pytest.RecordProperty
) -> None:
    requirement = _requirements()[name]
    installed = version(name)
    record_property(name, installed)
    assert any(spec.operator == "<" for spec in requirement.specifier), (
        f"{name} in requirements.txt needs an upper bound: the newest version tested"
    )
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is installed but requirements.txt says {requirement.specifier}: "
        f"run tests/outbound/ on it, then move the bound ({versions_in_use()})"
    )
