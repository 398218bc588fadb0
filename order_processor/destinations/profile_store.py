"""Episerver/Optimizely Profile Store Track API (seed 004, DESIGN.md).

`POST {base}/api/v1.0/Track` with one TrackingEvent; `TrackBulk` takes up to 100. Auth is a
subscription key, sent as `Ocp-Apim-Subscription-Key` (older docs) or `Authorization: epi-single`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Skip
from order_processor.model import TrackingEvent
from order_processor.outbound.urls import OutboundUrl

MAX_EVENT_BYTES = 256 * 1024
MAX_BULK_EVENTS = 100


class AuthStyle(StrEnum):
    SUBSCRIPTION_KEY = "subscription-key"
    EPI_SINGLE = "epi-single"


class ProfileStoreSettings(DestinationSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILE_STORE_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_key", "scope")
    example: ClassVar[dict[str, str]] = {
        "base_url": "https://track-emea01.profilestore.episerver.net",
        "api_key": "dry-run-key",
        "scope": "default",
    }

    base_url: OutboundUrl | None = Field(
        default=None,
        description="Track API host, e.g. `https://track-emea01.profilestore.episerver.net`",
    )
    api_key: SecretStr | None = Field(default=None, description="subscription key (secret)")
    auth_style: AuthStyle = Field(
        default=AuthStyle.SUBSCRIPTION_KEY,
        description="`subscription-key` (`Ocp-Apim-Subscription-Key: <key>`) or `epi-single` "
        "(`Authorization: epi-single <key>`)",
    )
    scope: str | None = Field(
        default=None, description="the website's tracking scope, lowercase letters and digits"
    )
    device_id: str = Field(default="InStoreDevice", description="`deviceId` of in-store events")

    @field_validator("scope")
    @classmethod
    def _scope_is_lowercase_word(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]+", value):
            raise ValueError(
                "must be lowercase letters and digits only, the same as the website's scope"
            )
        return value


# What goes into `payload`: the order, minus identifiers Profile Store has no use for.
_PAYLOAD_EXCLUDE: dict[str, Any] = {"customer": {"loyalty_card_number", "email", "phone"}}


class ProfileStore(Destination):
    name = "profile_store"
    routes = MappingProxyType(
        {
            EventType.ORDER_CREATED: "StorePurchase",
            EventType.ORDER_UPDATED: "StoreOrderUpdated",
            EventType.ORDER_DELIVERED: "StoreOrderDelivered",
            EventType.ORDER_CANCELLED: "StoreOrderCancelled",
        }
    )
    fake = "tests.fakes.profile_store"
    title = "Optimizely Profile Store"
    settings_class = ProfileStoreSettings
    dry_run_status = 202
    settings: ProfileStoreSettings

    def tracking_event(self, event: TrackingEvent, event_type: str) -> dict[str, Any]:
        order = event.order
        user = {"email": event.customer.email}
        if event.customer.name:
            user["name"] = event.customer.name
        return {
            "deviceId": self.settings.device_id,
            "eventType": event_type,
            "value": event_type,
            "eventTime": jsonbody.utc_z(order.order_date),
            "scope": self.settings.scope,
            "user": user,
            "payload": order.model_dump(
                mode="python", by_alias=True, exclude=_PAYLOAD_EXCLUDE, exclude_none=True
            ),
        }

    def _headers(self) -> Mapping[str, str]:
        return self._header_values

    @functools.cached_property
    def _header_values(self) -> Mapping[str, str]:
        """Built once (settings are frozen) and read-only, since every request shares it."""
        key = self.settings.secret("api_key")
        if self.settings.auth_style is AuthStyle.EPI_SINGLE:
            return MappingProxyType(
                {"Authorization": f"epi-single {key}", "Content-Type": "application/json"}
            )
        return MappingProxyType(
            {"Ocp-Apim-Subscription-Key": key, "Content-Type": "application/json"}
        )

    def _url(self, operation: str) -> httpx.URL:
        assert self.settings.base_url is not None
        return self.url(f"{self.settings.base_url.rstrip('/')}/api/v1.0/{operation}")

    def _post(self, operation: str, body: bytes) -> httpx.Request:
        return self.client.build_request(
            "POST", self._url(operation), headers=self._headers(), content=body
        )

    @classmethod
    def max_batch(cls, settings: DestinationSettings) -> int:
        return MAX_BULK_EVENTS

    def encode(self, event: TrackingEvent, route: str) -> bytes | Skip:
        if not event.customer.email:
            return Skip("no customer email: Profile Store links events to profiles by email")
        body = jsonbody.dumps(self.tracking_event(event, route))
        if len(body) > MAX_EVENT_BYTES:
            raise self.rejected(
                f"event is {len(body)} bytes, over Profile Store's 256 KB per event"
            )
        return body

    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        encoded = self.encode(event, route)
        return encoded if isinstance(encoded, Skip) else self._post("Track", encoded)

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """One TrackBulk request (a JSON array of up to 100 events)."""
        self._check_bulk_size(elements)
        return self._post("TrackBulk", jsonbody.array(elements))
