"""Looks customers up by loyalty card: an HTTP provider or a local file, behind a cache."""

from __future__ import annotations

from pathlib import Path

import httpx

from loyalty_client.cache import CachedLookup
from loyalty_client.client import CustomerLookup, LoyaltyClient
from loyalty_client.customer import Customer
from loyalty_client.directory import CustomerDirectory
from loyalty_client.settings import LoyaltyAuth, LoyaltySettings
from order_processor.outbound.http import HttpOptions
from order_processor.outbound.retry import RetryPolicy

__all__ = [
    "CachedLookup",
    "Customer",
    "CustomerDirectory",
    "CustomerLookup",
    "LoyaltyAuth",
    "LoyaltyClient",
    "LoyaltySettings",
    "build_lookup",
]


def build_lookup(
    settings: LoyaltySettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    fallback_file: Path | None = None,
    options: HttpOptions | None = None,
) -> CachedLookup:
    """The provider if LOYALTY_API_BASE_URL is set, else the customer file; always cached."""
    inner: CustomerLookup
    if settings.api_base_url:
        inner = LoyaltyClient(settings, transport=transport, retry=retry, options=options)
    elif (path := settings.file or fallback_file) is not None:
        inner = CustomerDirectory(path, settings)
    else:
        raise ValueError("missing setting LOYALTY_API_BASE_URL (or LOYALTY_FILE for local runs)")
    return CachedLookup(
        inner,
        ttl=settings.cache_ttl_seconds,
        negative_ttl=settings.negative_cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
    )
