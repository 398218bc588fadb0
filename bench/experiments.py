"""Candidate changes to the core, applied in the bench's process only, so their gain is measured in
the same run as the core they would change (docs/performance.md). The retry fast path was one;
measured at -13% CPU per message, it is now in `order_processor/retry.py`.

- `httpx-cookie-jar`: the reverse of a change made: the app's clients with httpx's cookie jar back
  (`order_processor.http.ApiClient` has none), to keep measuring what that saves.
- `one-log-per-message`: the per-destination result lines (`LogObserver.delivered`) are not
  logged (proposed: DEBUG); the per-message settlement lines still are.
- `quiet-logs`: the app's loggers at WARNING (what INFO logging costs in all).
- `transport-httpx`: the app's clients on httpx's stock transport (httpcore's pool), the
  fallback `HTTP_TRANSPORT=httpx` selects; the reference runs on the keep-alive transport.
- `transport-aiohttp`: the app's clients on `httpx_aiohttp.AiohttpTransport` (aiohttp's pool and
  parser under httpx's client), the candidate to replace the hand-written transport
  (docs/performance.md). Needs `pip install httpx-aiohttp`; without it the run is skipped.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import httpx

from order_processor.observe import LogObserver
from order_processor.outbound import http as http_module

T = TypeVar("T")


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = inspect.getattr_static(target, name)  # keeps a staticmethod a staticmethod
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


@contextlib.contextmanager
def httpx_cookie_jar() -> Iterator[None]:
    with _patched(http_module, "ApiClient", httpx.AsyncClient):
        yield


class ExperimentUnavailable(Exception):
    """The experiment cannot run in this environment (say why); its rows are skipped."""


@contextlib.contextmanager
def transport_httpx() -> Iterator[None]:
    make = http_module.make_transport

    def stock(
        options: http_module.HttpOptions, *, limits: httpx.Limits, **tls: Any
    ) -> httpx.AsyncBaseTransport:
        return make(replace(options, transport="httpx"), limits=limits, **tls)

    with _patched(http_module, "make_transport", stock):
        yield


@contextlib.contextmanager
def transport_aiohttp() -> Iterator[None]:
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        raise ExperimentUnavailable("httpx-aiohttp is not installed") from None

    def aiohttp_transport(
        options: http_module.HttpOptions, *, limits: httpx.Limits, **tls: Any
    ) -> httpx.AsyncBaseTransport:
        return AiohttpTransport(limits=limits)  # no response cap: httpx-aiohttp has none

    with _patched(http_module, "make_transport", aiohttp_transport):
        yield


@contextlib.contextmanager
def one_log_per_message() -> Iterator[None]:
    def unlogged(*args: Any) -> None:
        return None

    with _patched(LogObserver, "delivered", unlogged):
        yield


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("order_processor", "loyalty_client")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


EXPERIMENTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "httpx-cookie-jar": httpx_cookie_jar,
    "one-log-per-message": one_log_per_message,
    "quiet-logs": quiet_logs,
    "transport-httpx": transport_httpx,
    "transport-aiohttp": transport_aiohttp,
}


@contextlib.contextmanager
def applied(names: tuple[str, ...]) -> Iterator[None]:
    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(EXPERIMENTS[name]())
        yield
