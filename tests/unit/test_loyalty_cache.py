"""The loyalty cache: TTLs, a shorter negative TTL, bounded size, single-flight, no cached
failures."""

from __future__ import annotations

import asyncio

import pytest

from loyalty_client import CachedLookup, Customer
from order_processor.outbound.errors import DeliveryError, FailureKind
from tests.conftest import FakeClock

ANN = Customer(customer_id="C-1", email="ann@example.com")


class CountingLookup:
    def __init__(
        self, answers: dict[str, Customer | None], *, gate: asyncio.Event | None = None
    ) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.gate = gate
        self.fail_next = 0

    async def lookup(self, card: str, *, deadline: float) -> Customer | None:
        self.calls.append(card)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise DeliveryError(kind=FailureKind.TRANSIENT, system="loyalty", message="down")
        return self.answers.get(card)

    async def aclose(self) -> None:
        return None


def cached(inner: CountingLookup, clock: FakeClock, **kw: float) -> CachedLookup:
    options = {"ttl": 60.0, "negative_ttl": 10.0, "max_entries": 100} | kw
    return CachedLookup(inner, clock=clock, **options)  # type: ignore[arg-type]


async def test_known_customers_are_cached_for_the_ttl(clock: FakeClock) -> None:
    inner = CountingLookup({"1": ANN})
    cache = cached(inner, clock)
    assert await cache.lookup("1", deadline=0) == ANN
    clock.now += 59
    assert await cache.lookup("1", deadline=0) == ANN
    clock.now += 2
    await cache.lookup("1", deadline=0)
    assert inner.calls == ["1", "1"]
    assert (cache.hits, cache.misses) == (1, 2)


async def test_unknown_cards_use_the_shorter_negative_ttl(clock: FakeClock) -> None:
    inner = CountingLookup({})
    cache = cached(inner, clock)
    assert await cache.lookup("9", deadline=0) is None
    clock.now += 9
    assert await cache.lookup("9", deadline=0) is None
    clock.now += 2
    await cache.lookup("9", deadline=0)
    assert inner.calls == ["9", "9"]


async def test_failures_are_not_cached(clock: FakeClock) -> None:
    inner = CountingLookup({"1": ANN})
    inner.fail_next = 1
    cache = cached(inner, clock)
    with pytest.raises(DeliveryError):
        await cache.lookup("1", deadline=0)
    assert await cache.lookup("1", deadline=0) == ANN


async def test_concurrent_lookups_of_one_card_share_one_request(clock: FakeClock) -> None:
    gate = asyncio.Event()
    inner = CountingLookup({"1": ANN}, gate=gate)
    cache = cached(inner, clock)
    waiting = [asyncio.create_task(cache.lookup("1", deadline=0)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [ANN] * 50
    assert inner.calls == ["1"]


async def test_a_shared_failure_reaches_every_waiter(clock: FakeClock) -> None:
    gate = asyncio.Event()
    inner = CountingLookup({"1": ANN}, gate=gate)
    inner.fail_next = 1
    cache = cached(inner, clock)
    waiting = [asyncio.create_task(cache.lookup("1", deadline=0)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, DeliveryError) for r in results)
    assert inner.calls == ["1"]


async def test_size_is_bounded(clock: FakeClock) -> None:
    inner = CountingLookup({str(n): ANN for n in range(10)})
    cache = cached(inner, clock, max_entries=3)
    for n in range(10):
        await cache.lookup(str(n), deadline=0)
    assert cache._known is not None
    assert len(cache._known) == 3


def test_customer_repr_hides_contact_details() -> None:
    assert "ann@example.com" not in repr(ANN)
    assert "ann@example.com" not in str(ANN)


def test_customer_repr_hides_the_id_too() -> None:
    """Some providers make the customer id of the card number."""
    card_as_id = Customer(customer_id="6330001234567890", email=None)
    assert "6330001234567890" not in repr(card_as_id)
    assert repr(card_as_id) == repr(Customer(customer_id="6330001234567890", phone="+44"))
