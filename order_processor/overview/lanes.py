"""`lanes`: how each lane is doing. One row per subscription the app reads: the orders
subscription (`accept_order`), each destination's lane (`deliver_<name>`) and the accept stage's
retry lane (`accept_order_retry`), with

- its state: `off` (`<NAME>_ENABLED=false`: no function), `paused` (the platform's switch
  `AzureWebJobs.<function>.Disabled`, or its Linux form `AzureWebJobs_<function>_Disabled`, true
  in the environment this runs with: the app's own settings when the `lane_metrics` function
  runs it, the operator's shell for the command), else `enabled`;
- active messages and dead letters (`counts`: the management API or Azure Resource Manager);
- the age of its oldest active message: the first message a peek of the subscription returns
  (one peek per lane with messages; needs Listen, *Azure Service Bus Data Receiver*).

Scheduled messages are counted per topic (see `counts`): the retry copies of every lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.servicebus import aio
from pydantic import TypeAdapter, ValidationError

from order_processor.accept import ACCEPT_LANE
from order_processor.destinations import DESTINATIONS
from order_processor.outbound.redaction import excerpt, scrub
from order_processor.overview.counts import Counts, CountsSource
from order_processor.settings import AppSettings
from order_processor.telemetry import LaneReading, TopicReading

#: the lane name of the orders subscription (the accept stage's first delivery)
ORDERS_LANE = "orders"
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


@dataclass(frozen=True, slots=True)
class Lane:
    name: str
    topic: str
    subscription: str
    function: str
    #: `<NAME>_ENABLED` (destination lanes); False: the app has no function for it
    enabled: bool = True


def lanes_of(settings: AppSettings, environ: Mapping[str, str]) -> list[Lane]:
    core = settings.core
    lanes = [Lane(ORDERS_LANE, core.orders_topic, core.orders_subscription, "accept_order")]
    for name, cls in DESTINATIONS.items():
        block = settings.destinations.get(name)
        subscription = (
            block.subscription_name
            if block is not None
            else cls.settings_class.default_subscription()
        )
        prefix = str(cls.settings_class.model_config.get("env_prefix", ""))
        lanes.append(
            Lane(
                name,
                core.deliveries_topic,
                subscription,
                cls.function_name(),
                enabled=_enabled(environ.get(f"{prefix}ENABLED")),
            )
        )
    lanes.append(
        Lane(
            ACCEPT_LANE, core.deliveries_topic, core.accept_retry_subscription, "accept_order_retry"
        )
    )
    return lanes


def _enabled(value: str | None) -> bool:
    """As the app reads `<NAME>_ENABLED` (pydantic's booleans; unset or unreadable: on)."""
    if value is None or not value.strip():
        return True
    try:
        return _BOOL.validate_python(value.strip())
    except ValidationError:
        return True


def paused(function: str, environ: Mapping[str, str]) -> bool:
    """The platform's switch for one function, in either spelling."""
    for name in (f"AzureWebJobs.{function}.Disabled", f"AzureWebJobs_{function}_Disabled"):
        if environ.get(name, "").strip().lower() in ("true", "1"):
            return True
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneStatus:
    lane: Lane
    state: str  # enabled | paused | off
    counts: Counts | None = None
    oldest_enqueued: datetime | None = None
    error: str | None = None

    def oldest_age(self, now: datetime) -> timedelta | None:
        return now - self.oldest_enqueued if self.oldest_enqueued is not None else None


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_dead_letters: int = 0
    max_age: timedelta = timedelta(minutes=30)


@dataclass(frozen=True, slots=True, kw_only=True)
class LanesReport:
    via: str
    now: datetime
    lanes: tuple[LaneStatus, ...]
    scheduled_topic: str
    scheduled: int | None = None
    scheduled_error: str | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    def over(self) -> list[tuple[str, str]]:
        """(lane, why) for each lane past a threshold or not read."""
        found = []
        for status in self.lanes:
            name, limits = status.lane.name, self.thresholds
            if status.error:
                found.append((name, f"not read: {status.error}"))
                continue
            if status.counts and status.counts.dead_letters > limits.max_dead_letters:
                found.append((name, f"{status.counts.dead_letters} dead letters"))
            age = status.oldest_age(self.now)
            if age is not None and age > limits.max_age:
                found.append((name, f"oldest message {format_age(age)} old"))
        return found

    def readings(self) -> tuple[list[LaneReading], list[TopicReading]]:
        """What the gauges report: per lane (counts None when not read; the oldest age 0 when
        nothing waits, None when not peeked), and the topic's scheduled count."""
        lanes = []
        for status in self.lanes:
            counts = status.counts
            age = status.oldest_age(self.now)
            if age is None and counts is not None and counts.active == 0:
                age = timedelta()
            lanes.append(
                LaneReading(
                    lane=status.lane.name,
                    subscription=status.lane.subscription,
                    active=counts.active if counts else None,
                    dead_letters=counts.dead_letters if counts else None,
                    oldest_age_seconds=None if age is None else max(0.0, age.total_seconds()),
                    paused=status.state == "paused",
                )
            )
        return lanes, [TopicReading(self.scheduled_topic, self.scheduled)]

    def as_json(self) -> dict[str, Any]:
        lanes = []
        for status in self.lanes:
            age = status.oldest_age(self.now)
            lanes.append(
                {
                    "lane": status.lane.name,
                    "topic": status.lane.topic,
                    "subscription": status.lane.subscription,
                    "function": status.lane.function,
                    "state": status.state,
                    "active": status.counts.active if status.counts else None,
                    "deadLetters": status.counts.dead_letters if status.counts else None,
                    "oldestEnqueuedTime": status.oldest_enqueued.isoformat()
                    if status.oldest_enqueued
                    else None,
                    "oldestAgeSeconds": round(age.total_seconds()) if age is not None else None,
                    "error": status.error,
                }
            )
        return {
            "via": self.via,
            "at": self.now.isoformat(),
            "lanes": lanes,
            "scheduled": {
                "topic": self.scheduled_topic,
                "messages": self.scheduled,
                "error": self.scheduled_error,
            },
            "thresholds": {
                "maxDeadLetters": self.thresholds.max_dead_letters,
                "maxAgeSeconds": round(self.thresholds.max_age.total_seconds()),
            },
            "over": [{"lane": lane, "why": why} for lane, why in self.over()],
        }


def format_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // small_size}{smaller}"
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m" + (f" {seconds % 60}s" if seconds % 60 else "")


def _error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return excerpt(f"{type(exc).__name__}: {first}", clean=scrub)


async def _oldest(client: aio.ServiceBusClient, lane: Lane) -> datetime | None:
    async with client.get_subscription_receiver(lane.topic, lane.subscription) as receiver:
        first = await receiver.peek_messages(max_message_count=1)
    return first[0].enqueued_time_utc if first else None


async def _status(
    lane: Lane,
    counts: CountsSource,
    client: aio.ServiceBusClient | None,
    environ: Mapping[str, str],
) -> LaneStatus:
    state = "off" if not lane.enabled else "paused" if paused(lane.function, environ) else "enabled"
    try:
        found = await counts.subscription(lane.topic, lane.subscription)
    except Exception as exc:  # any failure is this lane's, reported in its row
        return LaneStatus(lane=lane, state=state, error=_error(exc))
    oldest = None
    if client is not None and found.active > 0:
        try:
            oldest = await _oldest(client, lane)
        except Exception as exc:
            return LaneStatus(lane=lane, state=state, counts=found, error=f"peek: {_error(exc)}")
    return LaneStatus(lane=lane, state=state, counts=found, oldest_enqueued=oldest)


async def read_lanes(
    settings: AppSettings,
    *,
    counts: CountsSource,
    client: aio.ServiceBusClient | None,
    environ: Mapping[str, str],
    now: datetime,
    thresholds: Thresholds = Thresholds(),
) -> LanesReport:
    """Every lane's status, read concurrently; a lane that cannot be read says why."""
    lanes = lanes_of(settings, environ)
    topic = settings.core.deliveries_topic

    async def scheduled() -> tuple[int | None, str | None]:
        try:
            return await counts.scheduled(topic), None
        except Exception as exc:
            return None, _error(exc)

    statuses, (waiting, problem) = await asyncio.gather(
        asyncio.gather(*(_status(lane, counts, client, environ) for lane in lanes)), scheduled()
    )
    return LanesReport(
        via=counts.via.value,
        now=now,
        lanes=tuple(statuses),
        scheduled_topic=topic,
        scheduled=waiting,
        scheduled_error=problem,
        thresholds=thresholds,
    )
