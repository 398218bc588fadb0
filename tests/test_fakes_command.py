"""`fakes`: the fake vendors served for local runs, and the settings it prints for them."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from order_processor import devfakes
from tests.azurite import connection_string as azurite_connection_string
from tests.conftest import ROOT
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY

CARD = "6330001234567890"  # known to the fake loyalty provider
SAMPLE = "samples/orders/valid/order-created.json"


def _process_send(values: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    """`process --send` on one sample, as a developer runs it with the printed Values."""
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME"}}
    return subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "order_processor", "process", "--send", SAMPLE],
        cwd=ROOT,
        env=clean | values | extra | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_printed_settings_deliver_an_order_to_every_fake(azurite: str) -> None:
    lines: list[str] = []
    servers, values = devfakes.start(host="127.0.0.1", base_port=0, say=lines.append)
    try:
        assert values["ALLOW_INSECURE_HTTP"] == "true"
        assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
        # Azurite runs here on a free port rather than 10002: point the ledger at it.
        done = _process_send(values, AzureWebJobsStorage=azurite)
    finally:
        devfakes.stop(servers)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("profile_store", "product_recs", "richrelevance", "esputnik"):
        assert f"{name}: delivered" in done.stdout
    assert "exit 0" in done.stdout.splitlines()[-1]
    assert "loyalty: GET /cards/*** -> 200" in lines  # each request is shown, the card masked
    assert not any(CARD in line for line in lines)
    # RichRelevance's key travels in its path: the request line masks it
    assert "richrelevance: PUT /omnichannel/api/v1/***/orders -> 200" in lines
    assert not any(values["RICHRELEVANCE_API_KEY"] in line for line in lines)


def test_without_azurite_the_ledger_is_named_not_a_traceback() -> None:
    servers, values = devfakes.start(host="127.0.0.1", base_port=0, say=lambda _: None)
    try:
        # Nothing listens where the printed connection points (no Azurite on this port).
        done = _process_send(values, AzureWebJobsStorage=azurite_connection_string(_closed_port()))
    finally:
        devfakes.stop(servers)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "DELIVERY_LEDGER_CONNECTION: the delivery ledger cannot be reached" in done.stdout
    assert "DELIVERY_LEDGER_ENABLED=false" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
