"""`trace ORDER_ID`: where one order went, from the delivery ledger on a real Azurite table and the
dead-letter queues of the Service Bus double, through the command line.

The scenario is one order through the real stages: RichRelevance and Product Recs deliver,
eSputnik is down (a retry copy is scheduled: only the ledger row can say so), Profile Store
refuses it (dead-lettered on its lane, its error echoing an email). The dead letters are seeded
where the functions would have put them, plus one the app never saw (a later event of the order
that expired in a paused lane) and another order's, which must not show.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from order_processor.cli import app
from order_processor.contract import parse_order
from order_processor.delivery import DeliveryMessage
from order_processor.ledger import build_ledger
from order_processor.local import received
from order_processor.model import MessageMetadata, Settlement, enriched_event, event_key
from order_processor.outbound.retry import RetryPolicy
from order_processor.outbox import MemoryOutbox
from order_processor.overview.trace import event_key_in
from order_processor.pipeline import Pipeline
from order_processor.settings import LedgerSettings
from tests.conftest import sample, settings_for
from tests.fakes.base import FakeServer, Reply
from tests.pii_guard import leaks
from tests.servicebus_fixtures import Entities, Namespace, dead_letter_properties, module_namespace
from tests.test_dlq import ANN

namespace = module_namespace()

ORDER = sample("order-created.json")
ERP_MESSAGE_ID = "erp-4711"


@dataclass
class Traced:
    entities: Entities
    env: dict[str, str]
    key: str
    retry_due: datetime

    def cli(self, *args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["trace", *args], env=self.env)
        return result.exit_code, result.output


def _dead_letter(
    namespace: Namespace, entities: Entities, message: DeliveryMessage, reason: str, text: str
) -> int:
    return namespace.put(
        entities.lane_dead_letters(message.destination),
        message.encode(),
        message_id=message.message_id,
        session_id=message.session_id,
        content_type="application/json",
        application_properties=dead_letter_properties(
            reason, text, **message.application_properties()
        ),
    )


def _delivery(body: bytes, lane: str) -> DeliveryMessage:
    order = parse_order(body)
    return DeliveryMessage.of(
        enriched_event(order, ANN, key=event_key(order), message_id="erp-other"),
        destination=lane,
        accepted_at=datetime.now(UTC),
        order_enqueued_at=None,
    )


async def _deliver_the_order(pipeline: Pipeline, outbox: MemoryOutbox) -> dict[str, Any]:
    accepted = await pipeline.accept.accept(ORDER, MessageMetadata(message_id=ERP_MESSAGE_ID))
    assert accepted.settlement is Settlement.COMPLETE
    published = {m.destination: m for m in outbox.take()}
    outcomes = {
        name: await pipeline.lanes[name].deliver(m.body, received(m))
        for name, m in published.items()
    }
    return {"key": accepted.event_key, "published": published, "outcomes": outcomes}


@pytest.fixture
def traced(
    namespace: Namespace,
    fakes: dict[str, FakeServer],
    loyalty: FakeServer,
    retry: RetryPolicy,
    azurite: str,
) -> Traced:
    entities = namespace.fresh()
    table = f"t{uuid.uuid4().hex[:12]}"
    fakes["esputnik"].inject(*[Reply(503)] * 3)
    fakes["profile_store"].inject(
        Reply(400, {"message": "bad user ann.shopper@example.com 6330001234567890"})
    )
    settings = settings_for(
        fakes["profile_store"].url,
        loyalty.url,
        others={name: fakes[name].url for name in ("product_recs", "richrelevance", "esputnik")},
    )
    outbox = MemoryOutbox()

    async def run() -> dict[str, Any]:
        ledger = build_ledger(LedgerSettings(connection=azurite, table=table))
        pipeline = Pipeline.from_settings(settings, retry=retry, ledger=ledger, outbox=outbox)
        try:
            return await _deliver_the_order(pipeline, outbox)
        finally:
            await pipeline.aclose()

    done = asyncio.run(run())
    outcomes, published = done["outcomes"], done["published"]
    rejected = outcomes["profile_store"]
    assert rejected.settlement is Settlement.DEAD_LETTER
    # Where deliver_profile_store put it, as the service stamps it.
    _dead_letter(
        namespace,
        entities,
        DeliveryMessage.model_validate_json(published["profile_store"].body),
        rejected.reason or "",
        rejected.description or "",
    )
    # A later event of the order that expired in eSputnik's paused lane: no ledger row.
    cancelled = _delivery(sample("order-cancelled.json"), "esputnik")
    _dead_letter(namespace, entities, cancelled, "TTLExpiredException", "expired")
    # Another order's letter in the same queue.
    other = json.loads(ORDER) | {"orderId": "900001"}
    _dead_letter(
        namespace,
        entities,
        _delivery(json.dumps(other).encode(), "richrelevance"),
        "DestinationRejected",
        "x",
    )
    assert outcomes["esputnik"].retry_at is not None
    return Traced(
        entities=entities,
        env=entities.env(DELIVERY_LEDGER_CONNECTION=azurite, DELIVERY_LEDGER_TABLE=table),
        key=done["key"],
        retry_due=outcomes["esputnik"].retry_at,
    )


def test_trace_an_order_shows_every_lane_and_confirms_its_dead_letters(traced: Traced) -> None:
    code, out = traced.cli("100245")
    assert code == 0, out
    assert "100245 (by order): rows_for_order: one range query per destination (4)" in out
    assert f"event {traced.key} (OrderCreated)" in out
    first = out.split("dead letters no ledger row")[0]
    lines = {line.split()[1]: line for line in first.splitlines() if line.startswith("│ ")}
    assert "delivered" in lines["richrelevance"]
    assert "delivered" in lines["product_recs"]
    assert "failed" in lines["esputnik"]
    assert "retry copy scheduled, due" in lines["esputnik"]
    assert "rejected" in lines["profile_store"]
    assert "dead-lettered DestinationRejected, in the DLQ (#" in lines["profile_store"]
    assert "last error, profile_store: " in out
    assert "<email>" in out
    # The later event that never reached a claim, found in the DLQ only.
    assert "dead letters no ledger row accounts for" in out
    assert "TTLExpiredException" in out
    assert "900001" not in out
    assert "ann.shopper@example.com" not in out
    assert leaks(out) == []
    peeked = "orders 0, profile_store 1, product_recs 0, richrelevance 1, esputnik 1, accept 0"
    assert f"dead letters peeked: {peeked}" in out


def test_trace_as_json_for_scripts(traced: Traced) -> None:
    code, out = traced.cli("100245", "--json")
    assert code == 0, out
    found = json.loads(out)
    assert found["by"] == "order"
    (created, cancelled) = sorted(found["events"], key=lambda e: e["eventType"] != "OrderCreated")
    assert created["eventKey"] == traced.key
    assert cancelled["eventType"] == "OrderCancelled"
    assert cancelled["destinations"] == []
    rows = {row["destination"]: row for row in created["destinations"]}
    assert set(rows) == {"profile_store", "product_recs", "richrelevance", "esputnik"}
    assert rows["richrelevance"]["status"] == "delivered"
    assert rows["richrelevance"]["attempts"] == 1
    assert rows["richrelevance"]["responseId"]  # the vendor's id of the order
    assert rows["richrelevance"]["messageId"] == ERP_MESSAGE_ID
    assert rows["esputnik"]["retryScheduled"] is True
    assert rows["esputnik"]["nextAttempt"] == traced.retry_due.isoformat()
    assert rows["esputnik"]["lastError"]
    assert rows["profile_store"]["deadLetterReason"] == "DestinationRejected"
    assert rows["profile_store"]["inDeadLetterQueue"] >= 1
    assert rows["profile_store"]["httpStatus"] == 400
    assert "<email>" in rows["profile_store"]["lastError"]
    (unrecorded,) = found["unrecordedDeadLetters"]
    assert (unrecorded["lane"], unrecorded["reason"]) == ("esputnik", "TTLExpiredException")
    assert {p["lane"] for p in found["peeked"]} == {
        "orders",
        "profile_store",
        "product_recs",
        "richrelevance",
        "esputnik",
        "accept",
    }
    assert "ann.shopper" not in out


def test_trace_by_event_key_or_message_id(traced: Traced) -> None:
    code, out = traced.cli(traced.key, "--json", "--peek", "0")
    assert code == 0, out
    found = json.loads(out)
    assert found["by"] == "event"
    assert "one point read per destination" in found["lookup"]
    assert [e["eventKey"] for e in found["events"]] == [traced.key]
    assert found["peeked"] == []
    # A MessageId the app made starts with the event key: read directly.
    code, out = traced.cli(f"{traced.key}:esputnik:retry-1", "--json", "--peek", "0")
    assert json.loads(out)["by"] == "event"
    # The ERP's own MessageId: every row carries it, no key holds it.
    code, out = traced.cli(ERP_MESSAGE_ID, "--by", "message", "--json", "--peek", "0")
    assert code == 0, out
    found = json.loads(out)
    assert "scan of the whole ledger table" in found["lookup"]
    assert len(found["events"][0]["destinations"]) == 4


def test_trace_of_an_unknown_order_exits_1(traced: Traced) -> None:
    code, out = traced.cli("no-such-order")
    assert code == 1, out
    assert "nothing found" in out
    code, out = traced.cli("no-such-order", "--by", "event")
    assert code == 2
    assert "not an event key" in out


def test_trace_without_a_ledger_is_a_settings_error(traced: Traced) -> None:
    env = {**traced.env, "DELIVERY_LEDGER_ENABLED": "false"}
    result = CliRunner().invoke(app, ["trace", "100245"], env=env)
    assert result.exit_code == 2
    assert "DELIVERY_LEDGER_ENABLED" in result.output


def test_message_ids_the_app_makes_start_with_the_event_key() -> None:
    key = event_key(parse_order(ORDER))
    assert event_key_in(key) == key
    assert event_key_in(f"{key}:esputnik") == key
    assert event_key_in(f"{key}:esputnik:replay-12") == key
    assert event_key_in("100245") is None
    assert event_key_in("erp-4711") is None


def test_trace_reads_and_never_creates_the_ledger_table(traced: Traced) -> None:
    """A reader's role (Storage Table Data Reader) cannot create tables: trace only reads."""
    env = {**traced.env, "DELIVERY_LEDGER_TABLE": f"t{uuid.uuid4().hex[:12]}"}
    result = CliRunner().invoke(app, ["trace", "100245", "--peek", "0"], env=env)
    assert result.exit_code == 1
    assert "delivery ledger: ledger query refused: HTTP 404" in result.output
