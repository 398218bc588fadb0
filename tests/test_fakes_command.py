"""`fakes`: the fake vendors served for local runs, and the settings it prints for them."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from order_processor.processor import Processor

from order_processor import devfakes
from order_processor.ledger import MemoryLedger
from order_processor.model import DeliveryStatus, MessageMetadata, Settlement
from order_processor.settings import load_settings
from tests.conftest import ROOT, sample
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY

CARD = "6330001234567890"  # known to the fake loyalty provider


async def test_the_printed_settings_deliver_an_order_to_every_fake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[str] = []
    servers, values = devfakes.start(host="127.0.0.1", base_port=0, say=lines.append)
    try:
        assert values["ALLOW_INSECURE_HTTP"] == "true"
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DELIVERY_LEDGER_ENABLED", "false")  # local.settings has Azurite
        processor = Processor.from_settings(load_settings(), ledger=MemoryLedger())
        try:
            outcome = await processor.process(
                sample("order-created.json"), MessageMetadata(message_id="m-1")
            )
        finally:
            await processor.aclose()
    finally:
        devfakes.stop(servers)

    assert outcome.settlement is Settlement.COMPLETE, outcome.description
    assert {r.destination: r.status for r in outcome.results} == dict.fromkeys(
        ("profile_store", "product_recs", "richrelevance", "esputnik"), DeliveryStatus.DELIVERED
    )
    assert "loyalty: GET /cards/*** -> 200" in lines  # each request is shown, the card masked
    assert not any(CARD in line for line in lines)


def test_the_command_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "order_processor", "fakes", "--base-port", "0"],
        cwd=ROOT,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()])
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not any("Ctrl+C" in line for line in output):
            output.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        (url,) = re.findall(r'"LOYALTY_API_BASE_URL": "([^"]+)"', "".join(output))
        reply = httpx.get(f"{url}/cards/{CARD}", headers={"Ocp-Apim-Subscription-Key": LOYALTY_KEY})
        assert reply.status_code == 200
        assert reply.json()["customerId"] == "C-000123"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=5)
    while not lines.empty():
        output.append(lines.get())
    text = "".join(output)
    assert "loyalty: GET /cards/*** -> 200" in text
    assert "fakes stopped" in text
    assert CARD not in text
