"""Size limits as the product's users meet them: the order limit is a setting, and a vendor's own
size rule refuses only that vendor's lane."""

from __future__ import annotations

import json
from typing import Any

from order_processor.local import LocalRun
from order_processor.model import MessageMetadata, Settlement
from order_processor.outbox import MemoryOutbox
from order_processor.pipeline import Pipeline
from tests.conftest import FakeClock, business_requests, sample, settings_for
from tests.fakes.base import FakeServer


def order_of_about(megabytes: float) -> bytes:
    """A schema-valid order of about this size: many long-named lines, consistent totals."""
    document = json.loads(sample("order-created.json"))
    lines = 1000
    width = int(megabytes * 1024 * 1024 / lines / 2.2)
    document["lines"] = [
        {
            "sku": f"SKU-{i}",
            "productId": str(1000 + i),
            "name": "n" * width,
            "category": "c" * width,
            "quantity": 1,
            "unitPrice": "1.00",
        }
        for i in range(lines)
    ]
    document.update(subTotal="1000.00", total="1000.00", discount="0.00", shipping="0")
    return json.dumps(document).encode()


async def test_a_one_megabyte_order_reaches_every_vendor_but_the_one_whose_rule_refuses_it(
    fakes: dict[str, FakeServer], loyalty: FakeServer, clock: FakeClock
) -> None:
    body = order_of_about(1.0)
    assert 900_000 < len(body) < 1_200_000
    others = {name: server.url for name, server in fakes.items() if name != "profile_store"}
    core: dict[str, Any] = {"orders_max_message_bytes": 2 * 1024 * 1024}
    settings = settings_for(fakes["profile_store"].url, loyalty.url, others=others, core=core)
    pipeline = Pipeline.from_settings(settings, clock=clock, now=clock.utc, outbox=MemoryOutbox())
    try:
        run = await LocalRun(pipeline).run(body, MessageMetadata(message_id="big"))
    finally:
        await pipeline.aclose()
    assert run.accept.settlement is Settlement.COMPLETE
    refused = run.lanes["profile_store"]
    assert (refused.settlement, refused.reason) == (Settlement.DEAD_LETTER, "DestinationRejected")
    assert "over Profile Store's 256 KB per event" in (refused.description or "")
    assert business_requests(fakes["profile_store"]) == []  # refused before sending
    for name in ("product_recs", "richrelevance", "esputnik"):
        assert run.lanes[name].settlement is Settlement.COMPLETE, run.lanes[name].description
        assert len(business_requests(fakes[name])) == 1


async def test_over_the_setting_the_order_is_dead_lettered_naming_it(local: LocalRun) -> None:
    run = await local.run(order_of_about(1.0), MessageMetadata(message_id="big"))
    assert (run.accept.settlement, run.accept.reason) == (Settlement.DEAD_LETTER, "InvalidMessage")
    assert "ORDERS_MAX_MESSAGE_BYTES (262144)" in (run.accept.description or "")
    assert run.lanes == {}
