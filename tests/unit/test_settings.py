"""Start-up validation as a new user meets it: every bad setting stops start-up with a message
naming it, and nothing unrelated is reported alongside."""

from __future__ import annotations

import json

import pytest

from order_processor.destinations import DESTINATIONS
from order_processor.settings import SettingsError, load_settings
from tests.conftest import ROOT

EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The example settings (which load), as a starting point to break one thing at a time."""
    monkeypatch.chdir(ROOT)
    for name, value in EXAMPLE.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def problems(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.problems


@pytest.mark.parametrize(
    "value", ["not-a-url", "ftp://x", "https://", "esputnik.com", "https://a b"]
)
@pytest.mark.parametrize("setting", ["PROFILE_STORE_BASE_URL", "ESPUTNIK_BASE_URL"])
def test_a_malformed_url_stops_start_up_naming_the_setting(
    example_env: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    example_env.setenv(setting, value)
    (problem,) = problems(example_env)
    assert problem.startswith(f"{setting}: ")


@pytest.mark.parametrize(
    "setting", ["LOYALTY_API_BASE_URL", "RICHRELEVANCE_BASE_URL", "PRODUCT_RECS_URL"]
)
def test_every_outbound_url_is_checked(example_env: pytest.MonkeyPatch, setting: str) -> None:
    example_env.setenv(setting, "not-a-url")
    assert any(p.startswith(f"{setting}: ") for p in problems(example_env))


def test_the_https_rule_ignores_the_scheme_case(example_env: pytest.MonkeyPatch) -> None:
    example_env.setenv("ESPUTNIK_BASE_URL", "HTTP://127.0.0.1:9")
    (problem,) = problems(example_env)
    assert problem.startswith("ESPUTNIK_BASE_URL: outbound calls must use https://")
    example_env.setenv("ALLOW_INSECURE_HTTP", "true")
    assert load_settings().destinations["esputnik"].base_url == "http://127.0.0.1:9"  # type: ignore[attr-defined]


def test_one_bad_core_setting_is_the_only_problem_reported(
    example_env: pytest.MonkeyPatch,
) -> None:
    example_env.setenv("ALLOW_INSECURE_HTTP", "true")
    for name in ("PROFILE_STORE_BASE_URL", "ESPUTNIK_BASE_URL", "RICHRELEVANCE_BASE_URL"):
        example_env.setenv(name, "http://127.0.0.1:9")
    example_env.setenv("RETRY_BUDGET_SECONDS", "abc")
    (problem,) = problems(example_env)
    assert problem.startswith("RETRY_BUDGET_SECONDS: ")


def test_a_disabled_destination_settings_do_not_matter(example_env: pytest.MonkeyPatch) -> None:
    example_env.setenv("PROFILE_STORE_ENABLED", "false")
    example_env.setenv("PROFILE_STORE_BASE_URL", "not-a-url")
    example_env.setenv("PROFILE_STORE_SCOPE", "Not A Scope!")
    example_env.setenv("PROFILE_STORE_API_KEY", "@Microsoft.KeyVault(SecretUri=https://kv/x)")
    settings = load_settings()
    assert "profile_store" not in settings.enabled


def test_an_unreadable_enabled_flag_is_itself_the_problem(
    example_env: pytest.MonkeyPatch,
) -> None:
    example_env.setenv("PROFILE_STORE_ENABLED", "maybe")
    (problem,) = problems(example_env)
    assert problem.startswith("PROFILE_STORE_ENABLED: ")


def test_no_loyalty_provider_and_no_file_stops_start_up(example_env: pytest.MonkeyPatch) -> None:
    example_env.delenv("LOYALTY_FILE")
    (problem,) = problems(example_env)
    assert "missing setting LOYALTY_API_BASE_URL (or LOYALTY_FILE" in problem


def test_a_loyalty_file_that_does_not_exist_stops_start_up(
    example_env: pytest.MonkeyPatch,
) -> None:
    example_env.setenv("LOYALTY_FILE", "samples/loyalty/nobody.json")
    (problem,) = problems(example_env)
    assert problem.startswith("LOYALTY_FILE: no such file")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ServiceBusConnection", "not a connection string"),
        ("ServiceBusConnection__fullyQualifiedNamespace", "https://ns.servicebus.windows.net/"),
        ("DELIVERY_LEDGER_CONNECTION", "AccountName=x"),
        ("DELIVERY_LEDGER_CONNECTION__tableServiceUri", "account.table.core.windows.net"),
    ],
)
def test_a_malformed_connection_stops_start_up_naming_it(
    example_env: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    example_env.setenv(setting, value)
    (problem,) = problems(example_env)
    assert problem.startswith(f"{setting}: ")
    assert value not in problem  # connection strings hold keys: never echoed


#: every Service Bus entity-name setting, and whether it names a topic or a subscription
ENTITY_SETTINGS = {
    "ORDERS_TOPIC": "topic",
    "DELIVERIES_TOPIC": "topic",
    "ORDERS_SUBSCRIPTION": "subscription",
    "ACCEPT_RETRY_SUBSCRIPTION": "subscription",
    **{cls.subscription_setting(): "subscription" for cls in DESTINATIONS.values()},
}


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ORDERS_TOPIC", "bad topic!!"),
        ("DELIVERIES_TOPIC", "a/b c"),
        ("DELIVERIES_TOPIC", "/order-deliveries"),
        ("DELIVERIES_TOPIC", "order-deliveries/"),
        ("ORDERS_TOPIC", "t" * 261),
        ("ORDERS_SUBSCRIPTION", "-order-sync"),
        ("ACCEPT_RETRY_SUBSCRIPTION", "accept/retry"),
        ("ESPUTNIK_SUBSCRIPTION", "bad name!"),
        ("PROFILE_STORE_SUBSCRIPTION", "s" * 51),
        ("RICHRELEVANCE_SUBSCRIPTION", "richrelevance."),
    ],
)
def test_a_malformed_entity_name_stops_start_up_naming_the_setting_and_the_rule(
    example_env: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    example_env.setenv(setting, value)
    (problem,) = problems(example_env)
    kind = ENTITY_SETTINGS[setting]
    assert problem.startswith(f"{setting}: {value!r} is not a valid {kind} name: ")
    assert "Azure Service Bus naming rules" in problem


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ORDERS_TOPIC", "erp/orders"),
        ("ORDERS_TOPIC", "Orders.v2_eu-west"),
        ("DELIVERIES_TOPIC", "d" * 260),
        ("ORDERS_SUBSCRIPTION", "o"),
        ("ACCEPT_RETRY_SUBSCRIPTION", "Accept_Retry.2"),
        ("ESPUTNIK_SUBSCRIPTION", "s" * 50),
    ],
)
def test_entity_names_within_the_rules_load(
    example_env: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    example_env.setenv(setting, value)
    load_settings()


def _deployed_names() -> dict[str, str]:
    """The entity names the deployment gives (infra/main.json's variables, infra/lanes.json)."""
    variables = json.loads((ROOT / "infra" / "main.json").read_text())["variables"]
    names = {
        "ORDERS_TOPIC": variables["ordersTopic"],
        "ORDERS_SUBSCRIPTION": variables["ordersSubscription"],
        "DELIVERIES_TOPIC": variables["deliveriesTopic"],
    }
    lanes = json.loads((ROOT / "infra" / "lanes.json").read_text())["lanes"]
    return names | {lane["subscriptionSetting"]: lane["subscription"] for lane in lanes}


def test_the_names_the_deployment_the_example_and_the_defaults_use_are_valid(
    example_env: pytest.MonkeyPatch,
) -> None:
    deployed = _deployed_names()
    assert deployed.keys() == ENTITY_SETTINGS.keys()
    example = {name: EXAMPLE[name] for name in ENTITY_SETTINGS}
    for names in (deployed, example):
        for setting, value in names.items():
            example_env.setenv(setting, value)
        load_settings()
    for setting in ENTITY_SETTINGS:
        example_env.delenv(setting)
    settings = load_settings()
    assert settings.core.orders_topic == deployed["ORDERS_TOPIC"]
    assert {
        cls.subscription_setting(): settings.destinations[name].subscription_name
        for name, cls in DESTINATIONS.items()
    }.items() <= deployed.items()


def test_a_disabled_destination_s_subscription_name_does_not_matter(
    example_env: pytest.MonkeyPatch,
) -> None:
    example_env.setenv("ESPUTNIK_ENABLED", "false")
    example_env.setenv("ESPUTNIK_SUBSCRIPTION", "bad name!")
    assert "esputnik" not in load_settings().enabled
