"""`publish`: validated samples reach the topic with deterministic MessageIds; invalid ones stop
everything before a single message is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from order_processor.cli import app
from order_processor.contract import parse_order
from order_processor.model import event_key
from order_processor.publish import MAX_ID_LENGTH, message_id_for, prepare
from tests.conftest import SAMPLES
from tests.servicebus_fixtures import Entities, Namespace, module_namespace

VALID = sorted((SAMPLES / "valid").glob("*.json"))
INVALID = sorted((SAMPLES / "invalid").glob("*.json"))

namespace = module_namespace()


@pytest.fixture
def entities(namespace: Namespace) -> Entities:
    return namespace.fresh()


def publish(entities: Entities, *args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["publish", *map(str, args)], env=entities.env())
    return result.exit_code, result.output


def test_valid_samples_are_sent_with_deterministic_ids_session_and_properties(
    namespace: Namespace, entities: Entities
) -> None:
    code, output = publish(entities, *VALID)
    assert code == 0, output

    sent = namespace.double.active(entities.subscription_path)
    assert [m.body for m in sent] == [path.read_bytes() for path in VALID]
    for message, path in zip(sent, VALID, strict=True):
        order = parse_order(path.read_bytes())
        assert message.message_id == event_key(order)  # a re-publish is a duplicate
        assert message.session_id == order.order_id
        assert message.content_type == "application/json"
        assert message.application_properties == {
            "eventType": order.event_type.value,
            "orderId": order.order_id,
        }
    assert len({m.message_id for m in sent}) == len(VALID)
    assert "ann.shopper@example.com" not in output


def test_an_invalid_file_stops_the_whole_publish(namespace: Namespace, entities: Entities) -> None:
    code, output = publish(entities, VALID[0], SAMPLES / "invalid" / "naive-order-date.json")
    assert code == 1
    assert "naive-order-date.json" in output
    assert "orderDate" in output
    assert "nothing sent" in output
    assert namespace.double.active(entities.subscription_path) == []


def test_dry_run_shows_the_messages_and_sends_nothing(
    namespace: Namespace, entities: Entities
) -> None:
    code, output = publish(entities, "--dry-run", VALID[0])
    assert code == 0, output
    assert "dry run: nothing sent" in output
    assert namespace.double.active(entities.subscription_path) == []


def test_without_a_connection_the_exit_code_says_bad_settings() -> None:
    result = CliRunner().invoke(app, ["publish", str(VALID[0])])
    assert result.exit_code == 2
    assert "ServiceBusConnection" in result.output


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_every_invalid_sample_is_refused_with_its_description(path: Path) -> None:
    prepared, problems = prepare([path])
    assert prepared == []
    (problem,) = problems
    assert problem.startswith(f"{path}: ")


def test_message_ids_stay_within_the_service_limit() -> None:
    assert message_id_for("short") == "short"
    long_key = "x" * 300
    assert len(message_id_for(long_key)) <= MAX_ID_LENGTH
    assert message_id_for(long_key) == message_id_for(long_key)
