"""The destination registry is the single source: registering a fifth destination gives it its
lane (function, subscription, filter), its settings and their docs rows, its dev fake and its test
fixtures, with no other edit. The destination below lives only in this file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar

import httpx
import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

import function_app
from order_processor import devfakes, docgen, jsonbody
from order_processor.contract import EventType
from order_processor.destinations import DESTINATIONS, Destination, DestinationSettings, Skip
from order_processor.destinations import registered as registered_destination
from order_processor.local import LocalRun
from order_processor.model import MessageMetadata, Settlement, TrackingEvent
from order_processor.outbound.urls import OutboundUrl
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from order_processor.settings import setting_names
from tests.conftest import FakeClock, destination_overrides, sample, settings_for
from tests.fakes.base import FakeServer
from tests.registry_fake import API_KEY, AcmeRules

# -- the fifth destination (its fake is tests/registry_fake.py) -------------------------------


class AcmeSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="ACME_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_key")
    example: ClassVar[dict[str, str]] = {"base_url": "https://api.acme.example"}

    base_url: OutboundUrl | None = Field(default=None, description="Acme API host")
    api_key: SecretStr | None = Field(default=None, description="Acme API key (secret)")


class Acme(Destination):
    name = "acme"
    title = "Acme CDP"
    settings_class = AcmeSettings
    routes: ClassVar[Mapping[EventType, str]] = MappingProxyType({EventType.ORDER_CREATED: "order"})
    fake = "tests.registry_fake"
    settings: AcmeSettings

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        body = {"orderRef": event.order.order_id, "amount": event.order.total}
        return self.client.build_request(
            "POST",
            f"{self.settings.base_url}/orders",
            headers={"X-Api-Key": self.settings.secret("api_key")},
            content=jsonbody.dumps(body),
        )


@pytest.fixture
def acme() -> Iterator[type[Destination]]:
    with registered_destination(Acme) as cls:
        yield cls


# -- what follows from the one registration ---------------------------------------------------


def test_its_settings_are_read_and_validated(acme: type[Destination]) -> None:
    assert {"ACME_ENABLED", "ACME_SUBSCRIPTION", "ACME_BASE_URL", "ACME_API_KEY"} <= set(
        setting_names()
    )
    settings = settings_for("http://127.0.0.1:9", None, others={"acme": "http://127.0.0.1:9"})
    assert "acme" in settings.enabled
    assert settings.destinations["acme"].subscription_name == "acme"


def test_its_lane_function_is_declared_on_its_subscription(acme: type[Destination]) -> None:
    settings = settings_for("http://127.0.0.1:9", None, others={"acme": "http://127.0.0.1:9"})
    functions = {f.get_function_name(): f for f in function_app.build_app(settings).get_functions()}
    described = json.loads(functions["deliver_acme"].get_function_json())
    (binding,) = described["bindings"]
    assert (binding["topicName"], binding["subscriptionName"]) == (
        "%DELIVERIES_TOPIC%",
        "%ACME_SUBSCRIPTION%",
    )
    assert function_app.binding_settings(settings)["ACME_SUBSCRIPTION"] == "acme"


def test_its_docs_rows_example_settings_and_emulator_subscription_are_generated(
    acme: type[Destination],
) -> None:
    readme = docgen.destination_settings_section()
    assert "#### Acme CDP (`ACME_*`): [docs](docs/destinations/acme.md)" in readme
    assert "| `ACME_API_KEY` | (required) | Acme API key (secret) |" in readme
    assert "| `ACME_SUBSCRIPTION` | `acme` |" in readme
    example = docgen.example_document({"Values": {}})["Values"]
    assert example["ACME_BASE_URL"] == "https://api.acme.example"
    assert example["ACME_API_KEY"] == "<acme-api-key>"
    assert "| `acme` | `deliver_acme` / `ACME_SUBSCRIPTION` |" in docgen.destinations_table()
    assert docgen.lane_filters()["acme"] == "destination = 'acme'"


def test_its_dev_fake_and_test_fixture_come_from_its_registration(
    acme: type[Destination],
) -> None:
    module, prefix = devfakes.fakes()["acme"]
    assert (module.RULES, prefix) == (AcmeRules, "ACME_")
    assert destination_overrides("acme", "http://x") == {"base_url": "http://x", "api_key": API_KEY}
    values = devfakes.local_settings(
        dict.fromkeys(devfakes.fakes(), "http://127.0.0.1:1"), devfakes.fakes()
    )
    assert values["ACME_API_KEY"] == API_KEY


async def test_an_order_reaches_it_through_its_own_lane(
    acme: type[Destination], loyalty: FakeServer, clock: FakeClock
) -> None:
    rules = AcmeRules()
    with FakeServer(rules) as server:
        settings = settings_for(
            "http://127.0.0.1:9",
            loyalty.url,
            others={"acme": server.url},
            profile_store={"enabled": False},
        )
        pipeline = Pipeline.from_settings(settings, clock=clock, outbox=MemoryOutbox())
        try:
            run = await LocalRun(pipeline).run(sample("order-created.json"), MessageMetadata())
        finally:
            await pipeline.aclose()
    assert run.accept.routed == ("acme",)
    assert run.lanes["acme"].settlement is Settlement.COMPLETE
    assert rules.accepted == [{"orderRef": "100245", "amount": 90.0}]


def test_the_registry_is_back_to_the_four_afterwards() -> None:
    assert list(DESTINATIONS) == ["profile_store", "product_recs", "richrelevance", "esputnik"]
