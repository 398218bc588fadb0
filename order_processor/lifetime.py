"""Close what the app opened when the event loop it belongs to stops.

The Python worker tells an app nothing before it stops: azure-functions and the library worker
(azure-functions-runtime) have no startup or shutdown hook for apps (asked for in
Azure/azure-functions-python-worker#1521 and #1904, both open), and the host sends its
WorkerTerminate message only to workers that declare they handle it, which the Python worker does
not (nor does its proxy handle that message). What does happen on a graceful stop, in the worker
(`asyncio.run` in its start-up) as in a script, is that the loop cancels every task still pending
and waits for them before it closes. So a task that waits for ever and closes the clients in its
`finally` runs the close on the loop those clients belong to, which aiohttp (azure-sdk's async
transport) requires. A plain `atexit` handler would run after that loop is closed, too late to
await anything on it; the `atexit` handler here only covers a loop left open and idle at exit
(`run_until_complete` without `close`), which the worker never does. A killed process runs
nothing, and leaves nothing to warn about either.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("order_processor")

Close = Callable[[], Awaitable[None]]


class Closable(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closable)

# Strong references: the loop keeps only weak ones to its tasks.
_pending: set[asyncio.Task[None]] = set()


async def _close_when_cancelled(close: Close, closed: Callable[[], None]) -> None:
    try:
        await asyncio.get_running_loop().create_future()  # until the loop shuts down
    finally:
        try:
            await close()
        except Exception:
            log.warning("closing the app's clients at shutdown failed", exc_info=True)
        finally:
            closed()


def close_with_loop(close: Close, *, closed: Callable[[], None] = lambda: None) -> None:
    """Await `close()` on the running loop when that loop shuts down, then call `closed()`."""
    task = asyncio.get_running_loop().create_task(
        _close_when_cancelled(close, closed), name="close the app's clients at loop shutdown"
    )
    _pending.add(task)
    task.add_done_callback(_pending.discard)


class PerLoop(Generic[C]):
    """One object built on first use, closed when the loop it was first used on shuts down, and
    built anew if a later loop asks for it (the app's clients belong to one loop)."""

    def __init__(self, build: Callable[[], C]) -> None:
        self._build = build
        self._current: C | None = None

    def get(self) -> C:
        if self._current is None:
            built = self._build()
            close_with_loop(built.aclose, closed=lambda: self._forget(built))
            self._current = built
        return self._current

    def use(self, value: C | None) -> None:
        """Testing hook: hand out `value` (closed by whoever made it); None: build on next use."""
        self._current = value

    def _forget(self, built: C) -> None:
        if self._current is built:
            self._current = None


@atexit.register
def close_on_idle_loops() -> None:
    """At exit, run the close of tasks whose loop was left open and idle."""
    for task in list(_pending):
        loop = task.get_loop()
        if loop.is_closed() or loop.is_running():
            continue
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
