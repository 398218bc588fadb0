"""TrackingEvents for mapping and contract tests, built from the samples."""

from __future__ import annotations

import json
from typing import Any

from loyalty_client.customer import Customer
from order_processor.contract import parse_order
from order_processor.model import TrackingEvent
from tests.conftest import sample

EMAIL = "ann.shopper@example.com"


def tracking_event(
    name: str = "order-created.json",
    *,
    customer: Customer | None = None,
    customer_id: str | None = "C-000123",
    email: str | None = EMAIL,
    known: bool = True,
    **changes: Any,
) -> TrackingEvent:
    """The sample `name` with top-level `changes`, for `customer` (default: Ann, by id/email)."""
    document = json.loads(sample(name))
    document.update(changes)
    return TrackingEvent(
        order=parse_order(json.dumps(document).encode()),
        customer=customer or Customer(customer_id=customer_id, email=email),
        customer_known=known,
        key="k",
    )
