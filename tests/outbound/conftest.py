"""The transport tests run on both transports `HTTP_TRANSPORT` offers, and say which versions of
httpx, httpcore and h11 they ran against (requirements.txt's upper bounds are those versions)."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from order_processor.outbound.http import TransportKind
from tests.outbound.pki import Pki, make_pki
from tests.outbound.scripted import KINDS

TESTED = ("httpx", "httpcore", "h11")


def versions_in_use() -> str:
    return ", ".join(f"{name} {version(name)}" for name in TESTED)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> TransportKind:
    """`keepalive` (the app's transport) or `httpx` (the stock one): the same case on each."""
    return request.param  # type: ignore[no-any-return]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if any(
        "tests/outbound/" in report.nodeid
        for reports in terminalreporter.stats.values()
        for report in reports
        if hasattr(report, "nodeid")
    ):
        terminalreporter.write_line(f"outbound transports tested against {versions_in_use()}")


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
