"""Message counts of a subscription (active, dead letters) and of a topic (scheduled), from one of
two places:

- `AtomCounts`: the namespace's management API (ATOM over HTTPS), through azure-servicebus's
  `ServiceBusAdministrationClient` (`get_subscription_runtime_properties`,
  `get_topic_runtime_properties`). It needs Manage rights: a connection string with Manage, or
  *Azure Service Bus Data Owner*, which also lets its holder create, change and delete entities.
- `ArmCounts`: Azure Resource Manager (`GET .../topics/<t>/subscriptions/<s>`, whose
  `countDetails` carries the same counts), which *Reader* on the topic allows: read-only, and no
  access to any message. What the `lane_metrics` function uses in Azure (`SERVICE_BUS_RESOURCE_ID`).

Service Bus counts scheduled messages where they wait: on the topic. A retry copy scheduled for
one lane is in the topic's count until it comes due, so `scheduled` is per topic, not per lane.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from azure.core import AsyncPipelineClient
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    AsyncRetryPolicy,
    HeadersPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest
from azure.servicebus.aio.management import ServiceBusAdministrationClient

from order_processor.settings import AppSettings, SettingsError

#: the API version the templates deploy Service Bus with (infra/main.bicep)
ARM_API_VERSION = "2024-01-01"
#: public cloud, as the rest of the deployment assumes (infra/README.md, "Limits")
ARM_ENDPOINT = "https://management.azure.com"


class Via(StrEnum):
    AUTO = "auto"
    ATOM = "atom"
    ARM = "arm"


@dataclass(frozen=True, slots=True)
class Counts:
    active: int
    dead_letters: int


class CountsSource(Protocol):
    via: Via

    async def subscription(self, topic: str, subscription: str) -> Counts: ...

    async def scheduled(self, topic: str) -> int: ...

    async def close(self) -> None: ...


def credential() -> AsyncTokenCredential:
    """The identity the app (or the operator's `az login`) has; a testing hook."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


def transport() -> AsyncHttpTransport[Any, Any] | None:
    """The HTTP transport under both clients (None: azure-core's aiohttp); a testing hook."""
    return None


class AtomCounts:
    """The namespace's management API (Manage rights)."""

    via = Via.ATOM

    def __init__(self, settings: AppSettings) -> None:
        settings.service_bus.require()
        options: dict[str, Any] = {"retry_total": 2}
        if (chosen := transport()) is not None:
            options["transport"] = chosen
        self._credential: AsyncTokenCredential | None = None
        if settings.service_bus.connection is not None:
            connection = settings.service_bus.connection.get_secret_value()
            self._client = ServiceBusAdministrationClient.from_connection_string(
                connection, **options
            )
        else:
            assert settings.service_bus.fully_qualified_namespace
            self._credential = credential()
            self._client = ServiceBusAdministrationClient(
                settings.service_bus.fully_qualified_namespace, self._credential, **options
            )

    async def subscription(self, topic: str, subscription: str) -> Counts:
        found = await self._client.get_subscription_runtime_properties(topic, subscription)
        return Counts(
            active=found.active_message_count or 0,
            dead_letters=found.dead_letter_message_count or 0,
        )

    async def scheduled(self, topic: str) -> int:
        return (await self._client.get_topic_runtime_properties(topic)).scheduled_message_count or 0

    async def close(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()


class ArmCounts:
    """Azure Resource Manager (Reader on the topics)."""

    via = Via.ARM

    def __init__(self, resource_id: str) -> None:
        self._namespace = resource_id.rstrip("/")
        self._credential = credential()
        policies = [
            HeadersPolicy({"Accept": "application/json"}),
            UserAgentPolicy(sdk_moniker="instore-order-sync-lanes"),
            AsyncRetryPolicy(retry_total=2),
            AsyncBearerTokenCredentialPolicy(self._credential, f"{ARM_ENDPOINT}/.default"),
        ]
        self._client: AsyncPipelineClient[Any, Any] = AsyncPipelineClient(
            ARM_ENDPOINT, policies=policies, transport=transport()
        )

    async def _properties(self, path: str) -> dict[str, Any]:
        url = f"{ARM_ENDPOINT}{self._namespace}/{path}?api-version={ARM_API_VERSION}"
        response = await self._client.send_request(HttpRequest("GET", url))
        if response.status_code == 404:
            raise ResourceNotFoundError(f"{path} not found", response=response)
        if response.status_code != 200:
            raise HttpResponseError(_arm_error(response.text()), response=response)
        properties = response.json().get("properties") or {}
        return dict(properties)

    async def subscription(self, topic: str, subscription: str) -> Counts:
        properties = await self._properties(f"topics/{topic}/subscriptions/{subscription}")
        details = properties.get("countDetails") or {}
        return Counts(
            active=int(details.get("activeMessageCount", 0)),
            dead_letters=int(details.get("deadLetterMessageCount", 0)),
        )

    async def scheduled(self, topic: str) -> int:
        details = (await self._properties(f"topics/{topic}")).get("countDetails") or {}
        return int(details.get("scheduledMessageCount", 0))

    async def close(self) -> None:
        await self._client.close()
        await self._credential.close()


def _arm_error(text: str) -> str:
    """ARM's error body, `{"error": {"code", "message"}}`, as one line."""
    try:
        error = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        return text[:200]
    return f"{error.get('code', 'Error')}: {error.get('message', '')}"[:300]


def counts_source(settings: AppSettings, via: Via = Via.AUTO) -> CountsSource:
    """ARM when asked, or (auto) when SERVICE_BUS_RESOURCE_ID is set; else the management API."""
    resource_id = settings.lane_status.service_bus_resource_id
    if via is Via.ARM or (via is Via.AUTO and resource_id):
        if not resource_id:
            raise SettingsError(
                ["--via arm reads Azure Resource Manager: set SERVICE_BUS_RESOURCE_ID"]
            )
        return ArmCounts(resource_id)
    return AtomCounts(settings)
