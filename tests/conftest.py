"""Shared fixtures: loopback fakes, settings pointing at them, real Service Bus messages."""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# function_app validates settings at import; give it a complete, harmless baseline.
BASELINE_ENV = {
    "PROFILE_STORE_BASE_URL": "http://127.0.0.1:9",
    "PROFILE_STORE_API_KEY": "baseline-key",
    "PROFILE_STORE_SCOPE": "retailsite",
    "PRODUCT_RECS_URL": "http://127.0.0.1:9/tracker/smart-api/orders/offline",
    "PRODUCT_RECS_SITE": "baseline",
    "PRODUCT_RECS_SITE_TOKEN": "baseline-token",
    "RICHRELEVANCE_BASE_URL": "http://127.0.0.1:9",
    "RICHRELEVANCE_API_KEY": "baseline-key",
    "RICHRELEVANCE_CLIENT_ID": "baseline",
    "RICHRELEVANCE_CLIENT_SECRET": "baseline-secret",
    "ESPUTNIK_BASE_URL": "http://127.0.0.1:9",
    "ESPUTNIK_API_KEY": "baseline-key",
    "LOYALTY_FILE": str(
        Path(__file__).resolve().parent.parent / "samples" / "loyalty" / "customers.json"
    ),
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "ALLOW_INSECURE_HTTP": "true",
    "ServiceBusConnection": "Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true",
}
for _name, _value in BASELINE_ENV.items():
    os.environ.setdefault(_name, _value)

from order_processor.destinations import DESTINATIONS  # noqa: E402
from order_processor.ledger import MemoryLedger  # noqa: E402
from order_processor.local import LocalRun  # noqa: E402
from order_processor.logs import install_redaction  # noqa: E402
from order_processor.model import MessageMetadata  # noqa: E402
from order_processor.outbound.retry import RetryPolicy  # noqa: E402
from order_processor.outbox import MemoryOutbox  # noqa: E402
from order_processor.pipeline import Pipeline  # noqa: E402
from order_processor.settings import load_settings  # noqa: E402
from tests.azurite import AzuriteMissing, azurite_tables  # noqa: E402
from tests.azurite import required as azurite_required  # noqa: E402
from tests.fakes import esputnik as esputnik_fake  # noqa: E402
from tests.fakes import product_recs as product_recs_fake  # noqa: E402
from tests.fakes import richrelevance as richrelevance_fake  # noqa: E402
from tests.fakes.base import FakeServer  # noqa: E402
from tests.fakes.loyalty import API_KEY as LOYALTY_KEY  # noqa: E402
from tests.fakes.loyalty import loyalty_server  # noqa: E402
from tests.fakes.profile_store import ProfileStoreRules, profile_store_server  # noqa: E402
from tests.pii_guard import PiiGuard  # noqa: E402

PII_GUARD = PiiGuard()


def pytest_configure(config: pytest.Config) -> None:
    # As in production (configure_logging at start-up), whichever subset of tests runs.
    install_redaction()
    logging.getLogger().addHandler(PII_GUARD)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any scenario logged personal data or a key in clear."""
    logging.getLogger().removeHandler(PII_GUARD)
    if PII_GUARD.findings:
        print(f"\nPII GUARD: {len(PII_GUARD.findings)} clear-text findings in the logs:")
        for leak, line in PII_GUARD.findings[:20]:
            print(f"  {leak!r} in: {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_baseline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline exists for importing function_app only: each test starts from a clean slate."""
    for name in BASELINE_ENV:
        monkeypatch.delenv(name, raising=False)


SAMPLES = ROOT / "samples" / "orders"
SAMPLE_CUSTOMERS = ROOT / "samples" / "loyalty" / "customers.json"
EPOCH = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeClock:
    """Time that only moves when the code under test sleeps: no test waits for real."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def utc(self) -> datetime:
        """The same time as a wall clock (ledger rows, retry schedules)."""
        return EPOCH + timedelta(seconds=self.now)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def retry(clock: FakeClock) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, sleep=clock.sleep, clock=clock)


@pytest.fixture
def loyalty() -> Iterator[FakeServer]:
    with loyalty_server() as server:
        yield server


@pytest.fixture
def profile_store() -> Iterator[tuple[FakeServer, ProfileStoreRules]]:
    server, rules = profile_store_server()
    with server:
        yield server, rules


@pytest.fixture
def product_recs() -> Iterator[tuple[FakeServer, product_recs_fake.ProductRecsRules]]:
    server, rules = product_recs_fake.product_recs_server()
    with server:
        yield server, rules


@pytest.fixture
def richrelevance() -> Iterator[tuple[FakeServer, richrelevance_fake.RichRelevanceRules]]:
    server, rules = richrelevance_fake.richrelevance_server()
    with server:
        yield server, rules


@pytest.fixture
def esputnik() -> Iterator[tuple[FakeServer, esputnik_fake.EsputnikRules]]:
    server, rules = esputnik_fake.esputnik_server()
    with server:
        yield server, rules


def destination_overrides(name: str, url: str) -> dict[str, Any]:
    """Settings that point one destination at its loopback fake, with the fake's credentials
    (the registry names each destination's fake)."""
    module = importlib.import_module(DESTINATIONS[name].fake)
    return dict(module.settings_for(url))


def settings_for(
    profile_store_url: str,
    loyalty_url: str | None,
    *,
    others: dict[str, str] | None = None,
    **extra: dict[str, Any],
) -> Any:
    """Profile Store (and `others`, name -> fake URL) at their fakes; destinations not given are
    disabled; `extra` overrides fields per block."""
    loyalty: dict[str, Any] = (
        {"api_base_url": loyalty_url, "api_key": LOYALTY_KEY}
        if loyalty_url
        else {"file": SAMPLE_CUSTOMERS}
    )
    urls = {"profile_store": profile_store_url, **(others or {})}
    # Tests pass a MemoryLedger (or Azurite's) to the processor; the settings need no storage.
    overrides: dict[str, dict[str, Any]] = {
        "loyalty": loyalty,
        "ledger": {"enabled": False},
        "core": {"allow_insecure_http": True},  # the fakes speak plain http on loopback
    }
    for name in DESTINATIONS:
        overrides[name] = (
            destination_overrides(name, urls[name]) if name in urls else {"enabled": False}
        )
    for block, values in extra.items():
        overrides.setdefault(block, {}).update(values)
    return load_settings(overrides=overrides)


@pytest.fixture
def outbox() -> MemoryOutbox:
    """The deliveries topic, in memory: what the accept stage published, retry copies too."""
    return MemoryOutbox()


@pytest.fixture
async def pipeline(
    profile_store: tuple[FakeServer, ProfileStoreRules],
    product_recs: tuple[FakeServer, Any],
    richrelevance: tuple[FakeServer, Any],
    esputnik: tuple[FakeServer, Any],
    loyalty: FakeServer,
    retry: RetryPolicy,
    clock: FakeClock,
    ledger: MemoryLedger,
    outbox: MemoryOutbox,
) -> AsyncIterator[Pipeline]:
    """The real stages wired to all four fake destinations and the fake loyalty provider."""
    others = {
        "product_recs": product_recs[0].url,
        "richrelevance": richrelevance[0].url,
        "esputnik": esputnik[0].url,
    }
    settings = settings_for(profile_store[0].url, loyalty.url, others=others)
    built = Pipeline.from_settings(
        settings, retry=retry, clock=clock, now=clock.utc, ledger=ledger, outbox=outbox
    )
    yield built
    await built.aclose()


@pytest.fixture
def local(pipeline: Pipeline) -> LocalRun:
    """Both stages in process: an order message through accept and then every lane."""
    return LocalRun(pipeline)


@pytest.fixture
def fakes(
    profile_store: tuple[FakeServer, Any],
    product_recs: tuple[FakeServer, Any],
    richrelevance: tuple[FakeServer, Any],
    esputnik: tuple[FakeServer, Any],
) -> dict[str, FakeServer]:
    """The four destination fakes by destination name."""
    return {
        "profile_store": profile_store[0],
        "product_recs": product_recs[0],
        "richrelevance": richrelevance[0],
        "esputnik": esputnik[0],
    }


def business_requests(server: FakeServer) -> list[str]:
    """What a destination fake received, token requests aside."""
    return [r.path for r in server.requests if not r.path.endswith("/oauth2/token")]


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A real Azurite Table service's connection string (skipped locally if absent, never in CI)."""
    try:
        with azurite_tables() as connection:
            yield connection
    except AzuriteMissing as exc:
        if azurite_required():
            raise
        pytest.skip(str(exc))


def sample(name: str) -> bytes:
    return next(SAMPLES.rglob(name)).read_bytes()


def metadata(message_id: str = "m-1") -> MessageMetadata:
    return MessageMetadata(message_id=message_id)


def received_message(
    body: bytes,
    *,
    message_id: str | None = None,
    session_id: str | None = None,
    properties: dict[str, str] | None = None,
) -> Any:
    """A real azure.servicebus.ServiceBusReceivedMessage, built the way the Functions extension
    builds it: lock token bytes + b"x-opt-lock-token" + an encoded AMQP message."""
    import uamqp
    from azurefunctions.extensions.bindings.servicebus import ServiceBusReceivedMessage

    class _ModelBindingData:
        version = "1.0"
        source = "AzureServiceBus"
        content_type = "application/octet-stream"

        def __init__(self, content: bytes) -> None:
            self.content = content

    amqp = uamqp.Message(
        body=body,
        properties=uamqp.message.MessageProperties(
            message_id=message_id or str(uuid.uuid4()), group_id=session_id
        ),
        application_properties=properties or {},
        annotations={b"x-opt-enqueued-time": 1_763_650_000_000, b"x-opt-sequence-number": 1},
    )
    content = uuid.uuid4().bytes_le + b"x-opt-lock-token" + amqp.encode_message()
    return ServiceBusReceivedMessage(data=_ModelBindingData(content)).get_sdk_type()
