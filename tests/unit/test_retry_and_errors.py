"""Failure taxonomy and immediate retries, on controlled time."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from order_processor.outbound.errors import (
    DeliveryError,
    FailureKind,
    error_from_response,
    kind_for_status,
    parse_retry_after,
)
from order_processor.outbound.retry import RetryPolicy, call_with_retries
from tests.conftest import FakeClock


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (204, None),
        (400, FailureKind.PERMANENT),
        (401, FailureKind.PERMANENT),
        (404, FailureKind.PERMANENT),
        (408, FailureKind.TRANSIENT),
        (413, FailureKind.PERMANENT),
        (425, FailureKind.TRANSIENT),
        (429, FailureKind.TRANSIENT),
        (500, FailureKind.TRANSIENT),
        (503, FailureKind.TRANSIENT),
    ],
)
def test_status_classification(status: int, kind: FailureKind | None) -> None:
    assert kind_for_status(status) is kind


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_error_from_response_carries_status_and_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "3"})
    error = error_from_response("profile_store", response, message="slow down")
    assert (error.kind, error.status, error.retry_after) == (FailureKind.TRANSIENT, 429, 3.0)
    assert error.describe() == "profile_store HTTP 429: slow down"


def _failing(errors: list[DeliveryError]) -> tuple[list[int], object]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return calls, call


def transient(retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(
        kind=FailureKind.TRANSIENT, system="x", message="busy", retry_after=retry_after
    )


async def test_transient_errors_are_retried_with_full_jitter(clock: FakeClock) -> None:
    policy = RetryPolicy(
        max_attempts=4,
        initial_wait=1,
        max_wait=8,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(7),
    )
    calls, call = _failing([transient(), transient(), transient()])
    assert await call_with_retries(call, policy=policy, deadline=clock() + 60) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 4
    # Full jitter: each wait is uniform in [0, min(cap, base * 2^n)].
    assert all(0 <= wait <= bound for wait, bound in zip(clock.sleeps, [1, 2, 4], strict=True))


async def test_retry_after_is_honoured_up_to_the_cap(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3, retry_after_cap=10, sleep=clock.sleep, clock=clock)
    _, call = _failing([transient(retry_after=4), transient(retry_after=120)])
    await call_with_retries(call, policy=policy, deadline=clock() + 60)  # type: ignore[arg-type]
    assert clock.sleeps == [4, 10]


async def test_the_deadline_stops_retries_before_sleeping_past_it(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=10, sleep=clock.sleep, clock=clock)
    calls, call = _failing([transient(retry_after=5)] * 9)
    with pytest.raises(DeliveryError):
        await call_with_retries(call, policy=policy, deadline=clock() + 12)  # type: ignore[arg-type]
    assert clock.sleeps == [5, 5]
    assert len(calls) == 3


async def test_permanent_errors_are_not_retried(clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=5, sleep=clock.sleep, clock=clock)
    permanent = DeliveryError(kind=FailureKind.PERMANENT, system="x", message="bad", status=400)
    calls, call = _failing([permanent])
    with pytest.raises(DeliveryError) as caught:
        await call_with_retries(call, policy=policy, deadline=clock() + 60)  # type: ignore[arg-type]
    assert caught.value is permanent
    assert len(calls) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("max_attempts", "deadline", "calls_made"),
    [(1, 60, 1), (2, 60, 2), (5, 3, 1)],  # no retries allowed; one retry; first wait past deadline
)
async def test_attempt_limits_and_the_deadline_hold_from_the_first_failure(
    clock: FakeClock, max_attempts: int, deadline: float, calls_made: int
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, sleep=clock.sleep, clock=clock)
    errors = [transient(retry_after=4) for _ in range(5)]
    first = errors[0]
    calls, call = _failing(errors)
    with pytest.raises(DeliveryError) as caught:
        await call_with_retries(call, policy=policy, deadline=clock() + deadline)  # type: ignore[arg-type]
    assert len(calls) == calls_made
    assert clock.sleeps == [4] * (calls_made - 1)
    assert (caught.value is first) == (calls_made == 1)
