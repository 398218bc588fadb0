"""The CI dependency audit never says "passed" for packages it could not look up."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.conftest import ROOT


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit", ROOT / ".ci" / "audit_dependencies.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SKIPPED = {"name": "httpx", "skip_reason": "Dependency not found on PyPI and could not be audited"}


def test_nothing_audited_is_reported_as_not_audited_not_as_passed() -> None:
    code, text = _audit().summarise({"dependencies": [SKIPPED]})
    assert code == 0
    assert "0 of 1 packages audited" in text
    assert "NOT AUDITED: 1" in text
    assert "no known vulnerabilities" not in text


def test_a_known_vulnerability_fails_the_build() -> None:
    vulnerable = {"name": "aiohttp", "version": "3.9.0", "vulns": [{"id": "GHSA-xxxx"}]}
    code, text = _audit().summarise({"dependencies": [vulnerable, SKIPPED]})
    assert code == 1
    assert "VULNERABLE aiohttp 3.9.0: GHSA-xxxx" in text


def test_a_clean_audit_says_how_much_it_covered() -> None:
    clean = {"name": "pydantic", "version": "2.7.0", "vulns": []}
    code, text = _audit().summarise({"dependencies": [clean, SKIPPED]})
    assert code == 0
    assert "1 of 2 packages audited" in text
    assert "no known vulnerabilities in the audited packages" in text
