"""Episerver/Optimizely Profile Store Track API; docs/destinations/profile_store.md has the
request, the generated mapping table and the sources.

`POST {base}/api/v1.0/Track` with one event; `TrackBulk` takes a JSON array of up to 100. Auth:
`Authorization: epi-single <key>` (current docs), or `Ocp-Apim-Subscription-Key` for older tenants.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import httpx

from order_processor import jsonbody
from order_processor.contract import EventType
from order_processor.destinations.base import Destination, DestinationSettings, Skip
from order_processor.destinations.profile_store import mapping
from order_processor.destinations.profile_store.settings import AuthStyle, ProfileStoreSettings
from order_processor.mapping import Context, apply
from order_processor.model import TrackingEvent

__all__ = ["AuthStyle", "ProfileStore", "ProfileStoreSettings"]

MAX_EVENT_BYTES = 256 * 1024
MAX_BULK_EVENTS = 100


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
    mappings = MappingProxyType({"Track event": mapping.EVENT})
    settings_class = ProfileStoreSettings
    dry_run_status = 202
    settings: ProfileStoreSettings

    def tracking_event(self, event: TrackingEvent, event_type: str) -> dict[str, Any]:
        return apply(mapping.EVENT, Context(event, self.settings, event_type))

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
