"""A caching front for any CustomerLookup.

Known customers are kept for `ttl`, unknown cards for a shorter `negative_ttl` (a card registered
a minute ago should not stay unknown for an hour), both bounded in size. Concurrent lookups of the
same card share one request. Failures are never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cachetools import TTLCache

from loyalty_client.client import CustomerLookup
from loyalty_client.customer import Customer


class CachedLookup:
    def __init__(
        self,
        inner: CustomerLookup,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._known: TTLCache[str, Customer] | None = (
            TTLCache(max_entries, ttl, timer=clock) if ttl > 0 and max_entries > 0 else None
        )
        self._unknown: TTLCache[str, bool] | None = (
            TTLCache(max_entries, negative_ttl, timer=clock)
            if negative_ttl > 0 and max_entries > 0
            else None
        )
        self._in_flight: dict[str, asyncio.Future[Customer | None]] = {}
        self.hits = 0
        self.misses = 0

    def _cached(self, card: str) -> tuple[bool, Customer | None]:
        if self._known is not None and (customer := self._known.get(card)) is not None:
            return True, customer
        if self._unknown is not None and self._unknown.get(card):
            return True, None
        return False, None

    async def lookup(self, card: str, *, deadline: float) -> Customer | None:
        found, customer = self._cached(card)
        if found:
            self.hits += 1
            return customer
        if (pending := self._in_flight.get(card)) is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[Customer | None] = asyncio.get_running_loop().create_future()
        self._in_flight[card] = future
        try:
            customer = await self._inner.lookup(card, deadline=deadline)
        except BaseException as exc:
            future.set_exception(exc)
            # Mark retrieved so a failure nobody else waited for is not reported as unhandled.
            future.exception()
            raise
        else:
            future.set_result(customer)
            self._remember(card, customer)
            return customer
        finally:
            del self._in_flight[card]

    def _remember(self, card: str, customer: Customer | None) -> None:
        if customer is not None and self._known is not None:
            self._known[card] = customer
        elif customer is None and self._unknown is not None:
            self._unknown[card] = True

    def invalid_email_count(self) -> int:
        """Records whose email was not an email address (sent on as "no email")."""
        counter = getattr(self._inner, "invalid_emails", None)
        return counter.count if counter is not None else 0

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) since start: the telemetry's loyalty cache hit ratio."""
        return self.hits, self.misses

    async def aclose(self) -> None:
        await self._inner.aclose()
