"""A destination's routing column may depend on its settings (`Destination.routes_for`): the
routing table, the accept stage and the lane all read the column under the destination's own
settings, and `routes` stays the column with the default settings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar

import httpx
import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from order_processor import routing
from order_processor.contract import EventType
from order_processor.destinations import Destination, DestinationSettings, Skip, registered
from order_processor.model import TrackingEvent
from order_processor.outbound.http import Timeouts, new_client


class SwitchSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCH_")

    refunds_enabled: bool = Field(default=False, description="route OrderCancelled too")


class Switch(Destination):
    name = "switch"
    title = "A destination with a setting-dependent route"
    settings_class = SwitchSettings
    routes: ClassVar[Mapping[EventType, str]] = MappingProxyType({EventType.ORDER_CREATED: "new"})
    fake = "tests.registry_fake"
    settings: SwitchSettings

    @classmethod
    def routes_for(cls, settings: DestinationSettings) -> Mapping[EventType, str]:
        assert isinstance(settings, SwitchSettings)
        if not settings.refunds_enabled:
            return cls.routes
        return MappingProxyType({**cls.routes, EventType.ORDER_CANCELLED: "refund"})

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        return Skip("never sent")


@pytest.fixture
def switch() -> Iterator[type[Destination]]:
    with registered(Switch) as cls:
        yield cls


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [(False, None), (True, "refund")],
    ids=["default-settings", "switched-on"],
)
def test_the_column_is_decided_under_the_destination_settings(
    switch: type[Destination], enabled: bool, expected: str | None
) -> None:
    settings = SwitchSettings(refunds_enabled=enabled)

    assert routing.route("switch", EventType.ORDER_CANCELLED, settings) == expected
    assert routing.route("switch", EventType.ORDER_CREATED, settings) == "new"
    assert routing.column("switch", settings) == switch.routes_for(settings)


def test_without_settings_the_column_is_the_default_one(switch: type[Destination]) -> None:
    assert routing.column("switch") == {EventType.ORDER_CREATED: "new"}
    assert routing.route("switch", EventType.ORDER_CANCELLED) is None
    assert routing.column("no-such-destination") == {}


async def test_the_lane_reads_the_column_under_its_settings(switch: type[Destination]) -> None:
    timeouts = Timeouts()
    lane = Switch(
        SwitchSettings(refunds_enabled=True),
        client=new_client(timeouts=timeouts),
        timeouts=timeouts,
    )
    try:
        assert lane.routing == {EventType.ORDER_CREATED: "new", EventType.ORDER_CANCELLED: "refund"}
    finally:
        await lane.client.aclose()
