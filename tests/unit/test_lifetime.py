"""Clients are closed on the loop they belong to when that loop stops (order_processor.lifetime)."""

from __future__ import annotations

import asyncio

import pytest

from order_processor.lifetime import close_on_idle_loops, close_with_loop


class Closable:
    def __init__(self, failure: Exception | None = None) -> None:
        self.closed_on: list[asyncio.AbstractEventLoop] = []
        self.forgotten = 0
        self.failure = failure

    async def aclose(self) -> None:
        self.closed_on.append(asyncio.get_running_loop())
        if self.failure:
            raise self.failure

    def forget(self) -> None:
        self.forgotten += 1


def test_asyncio_run_closes_on_its_own_loop_before_closing_it() -> None:
    client = Closable()
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        seen.append(asyncio.get_running_loop())
        close_with_loop(client.aclose, closed=client.forget)

    asyncio.run(main())
    assert client.closed_on == seen
    assert client.forgotten == 1


def test_a_failing_close_is_logged_and_still_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    client = Closable(failure=OSError("socket already gone"))

    async def main() -> None:
        close_with_loop(client.aclose, closed=client.forget)

    asyncio.run(main())
    assert client.forgotten == 1
    assert "closing the app's clients at shutdown failed" in caplog.text


def test_a_loop_left_open_and_idle_is_closed_at_exit() -> None:
    client = Closable()

    async def main() -> None:
        close_with_loop(client.aclose, closed=client.forget)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        assert client.closed_on == []
        close_on_idle_loops()  # what atexit runs
        assert client.closed_on == [loop]
        assert client.forgotten == 1
    finally:
        loop.close()
