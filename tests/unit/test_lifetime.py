"""Clients are closed on the loop they belong to when that loop stops (order_processor.lifetime)."""

from __future__ import annotations

import asyncio

import pytest

from order_processor.lifetime import PerLoop, close_on_idle_loops, close_with_loop


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


def test_per_loop_builds_once_a_loop_closes_on_that_loop_and_builds_anew_on_the_next() -> None:
    built: list[Closable] = []

    def build() -> Closable:
        built.append(Closable())
        return built[-1]

    holder = PerLoop(build)

    async def twice() -> tuple[Closable, Closable, asyncio.AbstractEventLoop]:
        return holder.get(), holder.get(), asyncio.get_running_loop()

    first, again, loop = asyncio.run(twice())
    assert first is again
    assert built == [first]
    assert first.closed_on == [loop]
    second, _, _ = asyncio.run(twice())
    assert second is not first
    assert built == [first, second]


def test_per_loop_hands_out_what_a_test_put_in_and_never_closes_it() -> None:
    given = Closable()
    holder = PerLoop(Closable)
    holder.use(given)

    async def get() -> Closable:
        return holder.get()

    assert asyncio.run(get()) is given
    assert given.closed_on == []
    holder.use(None)
    assert asyncio.run(get()) is not given
