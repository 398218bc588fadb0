"""Infrastructure and developer-kit checks, all offline.

Templates. No Bicep CLI can be installed on the CI machines (it ships as a GitHub/NuGet download,
neither reachable), so infra/main.json, the ARM twin of infra/main.bicep, is what these tests
evaluate: `Evaluator` resolves its expressions for the example parameters (infra/main.bicepparam)
and the tests assert on the concrete resources, scopes, role ids and app settings. main.bicep is
kept in step by comparing its declarations (parameters, variables, resource types and API
versions, app-setting keys, role ids) with main.json; both read their lanes from infra/lanes.json,
which `python -m order_processor.infra_lanes` generates from the destination registry and which the
tests compare with the registry. The lanes carry the destinations' app settings too (defaults,
Key Vault secrets, required ones): the tests check that the templates build every destination
setting from them and the one `destinationSettings` parameter, and that a deployment lacking a
required setting fails (`fail()`, raised as `TemplateFailure`). Where a `bicep` binary exists
(on PATH, or `BICEP=/path/to/bicep`; infra/validate.sh finds the one `az bicep install` put in
~/.azure/bin), main.bicep is also compiled and every template test runs on the compiled output
too.

Docs. In docs/local-dev.md and docs/deploy.md, a ```bash block whose first line is `# offline`
holds commands that need neither Azure, Docker nor Core Tools. Each line of such a block is run
here from the repository root (`python` means this interpreter) and must exit 0, on a clean
environment (no app settings inherited from the caller).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

import function_app
from order_processor import docgen, infra_lanes
from order_processor.destinations import DESTINATIONS
from order_processor.destinations import registered as registered_destination
from order_processor.infra_workbook import workbook
from order_processor.model import (
    DeadLetterReason,
    DeliveryStatus,
    DestinationResult,
    MessageMetadata,
    Outcome,
    Settlement,
)
from order_processor.observe import Delivered, MetricsObserver
from order_processor.settings import AppSettings, SettingsError, load_settings, setting_names
from order_processor.telemetry import Telemetry
from tests.infra_helpers import (
    INFRA,
    RG_ID,
    ROOT,
    BicepOutline,
    Evaluator,
    Resource,
    TemplateFailure,
    bash_blocks,
    calls,
    is_expression,
    offline_commands,
    parse,
    read_bicepparam,
    strings,
)

MAIN_JSON = INFRA / "main.json"
MAIN_BICEP = INFRA / "main.bicep"
LANES_JSON = INFRA / "lanes.json"
LANES = json.loads(LANES_JSON.read_text())["lanes"]
DESTINATION_LANES = [lane for lane in LANES if lane["kind"] == "destination"]
MAIN_PARAMS = INFRA / "main.bicepparam"
DOCS = {name: ROOT / "docs" / name for name in ("local-dev.md", "deploy.md")}
EMULATOR_CONFIG = ROOT / "devkit" / "servicebus-emulator" / "Config.json"
COMPOSE = ROOT / "devkit" / "docker-compose.yml"
BASH = shutil.which("bash") or "/bin/bash"
EXAMPLE_SETTINGS = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]

ROLE = {
    "Azure Service Bus Data Receiver": "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",
    "Azure Service Bus Data Sender": "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    # Azure Resource Manager read-only, scoped to a topic or a subscription (lane counts).
    "Reader": "acdd72a7-3385-485e-a4ce-3d80b5e72f4c",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "090c5cfd-751d-490a-894a-3ce6f1109419",  # Azure Service Bus Data Owner
    "17d1049b-9a84-46fb-8f53-869881c3d3ab",  # Storage Account Contributor
    "00482a5a-887f-4fb3-b363-3b7fe8e74483",  # Key Vault Administrator
}
# Secret app setting -> Key Vault secret (the names deployments already hold: the destinations'
# now come from lanes.json, generated, and must keep them).
SECRET_SETTINGS = {
    "PROFILE_STORE_API_KEY": "profile-store-api-key",
    "PRODUCT_RECS_SITE_TOKEN": "product-recs-site-token",
    "RICHRELEVANCE_API_KEY": "richrelevance-api-key",
    "RICHRELEVANCE_CLIENT_SECRET": "richrelevance-client-secret",
    "ESPUTNIK_API_KEY": "esputnik-api-key",
    "LOYALTY_API_KEY": "loyalty-api-key",
    "LOYALTY_CLIENT_SECRET": "loyalty-client-secret",
    "LOYALTY_PASSWORD": "loyalty-password",
}
# Settings the app reads that Azure deliberately leaves unset, and why.
UNSET_IN_AZURE = {
    "AzureWebJobsStorage": "identity connection AzureWebJobsStorage__accountName instead",
    "ServiceBusConnection": "identity connection ServiceBusConnection__fullyQualifiedNamespace",
    "DELIVERY_LEDGER_CONNECTION": "identity connection DELIVERY_LEDGER_CONNECTION__tableServiceUri",
    "DELIVERY_LEDGER_CONNECTION__accountName": "alternative to __tableServiceUri",
    "LOYALTY_FILE": "local runs only; Azure uses LOYALTY_API_BASE_URL",
}
# Settings in Azure that the app's settings model does not read (host, platform, upcoming).
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "ServiceBusConnection__credential",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "ALLOW_INSECURE_HTTP",
}
FLEX_REJECTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
}


# ------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------


def _bicep_binary() -> str | None:
    return os.environ.get("BICEP") or shutil.which("bicep")


@cache
def _compiled_bicep() -> dict[str, Any]:
    binary = _bicep_binary()
    assert binary
    done = subprocess.run(  # noqa: S603 - the developer's own bicep binary
        [binary, "build", str(MAIN_BICEP), "--stdout"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture(
    params=[
        "main.json",
        pytest.param(
            "main.bicep",
            marks=pytest.mark.skipif(
                _bicep_binary() is None,
                reason="no bicep CLI here (not installable from PyPI/npm); main.json is tested",
            ),
        ),
    ]
)
def template(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "main.bicep":
        return _compiled_bicep()
    return json.loads(MAIN_JSON.read_text())  # type: ignore[no-any-return]


def _params(**overrides: Any) -> dict[str, Any]:
    return {**read_bicepparam(MAIN_PARAMS)[1], **overrides}


def _evaluate(template: dict[str, Any], **overrides: Any) -> Evaluator:
    return Evaluator(template, _params(**overrides))


def _app_settings(evaluator: Evaluator) -> dict[str, Any]:
    settings = evaluator.one("Microsoft.Web/sites/config", "/appsettings").properties
    assert isinstance(settings, dict)
    return settings


def _role_assignments(evaluator: Evaluator) -> list[tuple[str, str, str]]:
    """(principal, role definition guid, scope) of every deployed role assignment."""
    found = []
    for resource in evaluator.deployed("Microsoft.Authorization/roleAssignments"):
        props = resource.properties
        found.append(
            (str(props["principalId"]), props["roleDefinitionId"].rsplit("/", 1)[1], resource.scope)
        )
    return found


SUBSCRIPTIONS = "Microsoft.ServiceBus/namespaces/topics/subscriptions"
TOPICS = "Microsoft.ServiceBus/namespaces/topics"
RULES = "Microsoft.ServiceBus/namespaces/topics/subscriptions/rules"


def _ids(evaluator: Evaluator) -> dict[str, str]:
    sb = evaluator.one("Microsoft.ServiceBus/namespaces")
    return {
        "namespace": sb.id,
        "topic": evaluator.one(TOPICS, "/orders").id,
        "subscription": evaluator.one(SUBSCRIPTIONS, "/orders/order-sync").id,
        "deliveries": evaluator.one(TOPICS, "/order-deliveries").id,
        "storage": evaluator.one("Microsoft.Storage/storageAccounts").id,
        "vault": evaluator.one("Microsoft.KeyVault/vaults").id,
        "insights": evaluator.one("Microsoft.Insights/components").id,
        "site": evaluator.one("Microsoft.Web/sites").id,
    }


def _lane_subscription_ids(evaluator: Evaluator) -> dict[str, str]:
    """Lane name -> the id of its subscription of the deliveries topic."""
    return {
        lane["name"]: evaluator.one(SUBSCRIPTIONS, f"/order-deliveries/{lane['subscription']}").id
        for lane in LANES
    }


def test_main_json_is_an_arm_template_with_known_functions() -> None:
    template = json.loads(MAIN_JSON.read_text())
    assert template["$schema"].endswith("/2019-04-01/deploymentTemplate.json#")
    assert template["contentVersion"] == "1.0.0.0"
    used: set[str] = set()
    for text in strings(template):
        if is_expression(text):
            used |= set(calls(parse(text[1:-1])))
    # Every function is one the evaluator implements (it rejects unknown names when used).
    for plan in ("FC1", "EP1"):
        evaluator = _evaluate(template, hostingPlan=plan, operatorPrincipalId="op-id")
        for resource in evaluator.resources():
            resource.value(dict(resource.raw))
        for output in template["outputs"].values():
            evaluator.value(output["value"])
    assert {"reference", "listKeys", "guid", "format", "copyIndex", "toObject"} <= used


def test_variables_never_call_reference_or_list_functions() -> None:
    # ARM rejects reference()/list*() in the variables section.
    template = json.loads(MAIN_JSON.read_text())
    for text in strings(template["variables"]):
        if is_expression(text):
            called = {name.lower() for name in calls(parse(text[1:-1]))}
            assert not {"reference", "listkeys"} & called, text


def test_bicep_and_json_declare_the_same_parameters() -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    declared = json.loads(MAIN_JSON.read_text())["parameters"]
    assert list(bicep.params) == list(declared)
    for name, (type_, default) in bicep.params.items():
        assert declared[name]["type"] == type_, name
        assert (default is None) == ("defaultValue" not in declared[name]), name


def test_bicep_and_json_declare_the_same_variables_and_resources() -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    template = json.loads(MAIN_JSON.read_text())
    assert set(bicep.variables) == set(template["variables"])
    assert sorted(bicep.resources.values()) == sorted(
        f"{r['type']}@{r['apiVersion']}" for r in template["resources"]
    )
    assert set(bicep.outputs) == set(template["outputs"])


@pytest.mark.parametrize(
    "variable",
    [
        "appSettings",
        "entitySettings",
        "tunableSettings",
        "connectionSettings",
        "premiumSettings",
        "secretSettings",
    ],
)
def test_bicep_and_json_set_the_same_app_settings(variable: str) -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    template = json.loads(MAIN_JSON.read_text())
    assert bicep.object_keys(variable) == list(template["variables"][variable])


def test_bicep_and_json_use_the_same_role_ids_and_secret_names() -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    template = json.loads(MAIN_JSON.read_text())
    roles = {k: v.strip("'") for k, v in bicep.object_values("roles").items()}
    assert roles == template["variables"]["roles"]
    assert set(roles.values()) <= set(ROLE.values())
    # The loyalty provider's secrets are written in both; the destinations' come from lanes.json.
    loyalty = {k: v for k, v in SECRET_SETTINGS.items() if k.startswith("LOYALTY_")}
    assert bicep.object_keys("secretSettings") == list(loyalty)
    for setting, secret in loyalty.items():
        assert f"secrets/{secret}/" in bicep.object_values("secretSettings")[setting]
        assert f"secrets/{secret}/" in template["variables"]["secretSettings"][setting]
    from_lanes = {k: v for lane in LANES for k, v in lane["secrets"].items()}
    assert {**loyalty, **from_lanes} == SECRET_SETTINGS


def test_bicepparam_matches_the_template() -> None:
    using, values = read_bicepparam(MAIN_PARAMS)
    assert (MAIN_PARAMS.parent / using).resolve() == MAIN_BICEP
    declared = json.loads(MAIN_JSON.read_text())["parameters"]
    assert set(values) <= set(declared), set(values) - set(declared)
    required = {name for name, spec in declared.items() if "defaultValue" not in spec}
    assert required <= set(values), required - set(values)
    python_type = {"string": str, "int": int, "bool": bool, "object": dict, "array": list}
    for name, value in values.items():
        spec = declared[name]
        assert type(value) is python_type[spec["type"]], name
        assert value in spec.get("allowedValues", [value]), name
        if isinstance(value, int):
            assert spec.get("minValue", value) <= value <= spec.get("maxValue", value), name
        if isinstance(value, str):
            assert spec.get("minLength", 0) <= len(value) <= spec.get("maxLength", 10**6), name
    # The example gives every setting its (enabled) destinations require, and only theirs.
    given = values["destinationSettings"]
    assert set(given) <= {k for lane in LANES for k in lane["settings"]}
    assert {k for lane in LANES for k in lane["required"]} <= set(given)


@pytest.mark.parametrize("plan", ["FC1", "EP1"])
def test_every_resource_is_there(template: dict[str, Any], plan: str) -> None:
    evaluator = _evaluate(template, hostingPlan=plan)
    deployed = {r.type for r in evaluator.resources() if r.deployed}
    assert {
        "Microsoft.ServiceBus/namespaces",
        "Microsoft.ServiceBus/namespaces/topics",
        "Microsoft.ServiceBus/namespaces/topics/subscriptions",
        "Microsoft.ServiceBus/namespaces/topics/subscriptions/rules",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/tableServices/tables",
        "Microsoft.KeyVault/vaults",
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.Insights/components",
        "Microsoft.Web/serverfarms",
        "Microsoft.Web/sites",
        "Microsoft.Web/sites/config",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Insights/metricAlerts",
        "Microsoft.Insights/scheduledQueryRules",
        "Microsoft.Insights/workbooks",
    } <= deployed
    # The retry queue is gone: retry copies are scheduled on the deliveries topic, for one lane.
    assert "Microsoft.ServiceBus/namespaces/queues" not in {r.type for r in evaluator.resources()}
    table = evaluator.one("Microsoft.Storage/storageAccounts/tableServices/tables")
    assert table.name.endswith("/default/orderdeliveries")
    assert evaluator.one("Microsoft.Insights/components").properties["WorkspaceResourceId"] == (
        evaluator.one("Microsoft.OperationalInsights/workspaces").id
    )


def _duration_days(value: str) -> int:
    match = re.fullmatch(r"P(\d+)D", value)
    assert match, value
    return int(match[1])


def test_service_bus_entities(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    namespace = evaluator.one("Microsoft.ServiceBus/namespaces")
    assert namespace.get("sku")["name"] == "Standard"
    assert namespace.properties["minimumTlsVersion"] == "1.2"
    assert namespace.properties["disableLocalAuth"] is True
    premium = _evaluate(template, serviceBusSku="Premium").one("Microsoft.ServiceBus/namespaces")
    assert premium.get("sku") == {"name": "Premium", "tier": "Premium", "capacity": 1}

    topic = evaluator.one(TOPICS, "/orders").properties
    assert topic["requiresDuplicateDetection"] is True
    assert topic["duplicateDetectionHistoryTimeWindow"] == "PT1H"

    subscription = evaluator.one(SUBSCRIPTIONS, "/orders/order-sync")
    assert subscription.properties == {
        "lockDuration": "PT1M",
        "maxDeliveryCount": 10,
        "deadLetteringOnMessageExpiration": True,
        "deadLetteringOnFilterEvaluationExceptions": True,
        "requiresSession": False,
        "defaultMessageTimeToLive": "P14D",
        "enableBatchedOperations": True,
    }
    sessions = _evaluate(template, ordersSessionsEnabled=True)
    assert sessions.one(SUBSCRIPTIONS, "/orders/order-sync").properties["requiresSession"]
    assert _app_settings(sessions)["ORDERS_SESSIONS_ENABLED"] == "true"
    assert _app_settings(evaluator)["ORDERS_BATCH_ENABLED"] == "false"
    batched = _evaluate(template, ordersBatchEnabled=True)
    assert _app_settings(batched)["ORDERS_BATCH_ENABLED"] == "true"


def test_the_deliveries_topic(template: dict[str, Any]) -> None:
    topic = _evaluate(template).one(TOPICS, "/order-deliveries").properties
    # Delivery messages have deterministic ids (<event key>:<destination>): a re-accepted order's
    # copies are dropped within the window, the ledger catches the rest.
    assert topic["requiresDuplicateDetection"] is True
    assert topic["duplicateDetectionHistoryTimeWindow"] == "P1D"
    assert _duration_days(topic["defaultMessageTimeToLive"]) >= 14
    longer = _evaluate(template, laneMessageTimeToLiveDays=30).one(TOPICS, "/order-deliveries")
    assert longer.properties["defaultMessageTimeToLive"] == "P30D"
    declared = template["parameters"]["laneMessageTimeToLiveDays"]
    assert declared["minValue"] == 14  # a paused lane keeps its messages two weeks at least


@pytest.mark.parametrize("sessions", [False, True])
def test_each_lane_has_its_subscription_and_filter(
    template: dict[str, Any], sessions: bool
) -> None:
    evaluator = _evaluate(template, ordersSessionsEnabled=sessions)
    subscriptions = {
        r.name.rsplit("/", 1)[1]: r
        for r in evaluator.deployed(SUBSCRIPTIONS)
        if r.name.split("/")[1] == "order-deliveries"
    }
    assert sorted(subscriptions) == sorted(lane["subscription"] for lane in LANES)
    rules: dict[str, list[Resource]] = {}
    for rule in evaluator.deployed(RULES):
        _, topic, subscription, _ = rule.name.split("/")
        assert topic == "order-deliveries"
        rules.setdefault(subscription, []).append(rule)
    for lane in LANES:
        properties = subscriptions[lane["subscription"]].properties
        assert properties["maxDeliveryCount"] == 10
        assert properties["lockDuration"] == "PT1M"
        assert properties["deadLetteringOnMessageExpiration"] is True
        assert properties["deadLetteringOnFilterEvaluationExceptions"] is True
        assert properties["requiresSession"] is sessions  # delivery messages carry SessionId
        assert _duration_days(properties["defaultMessageTimeToLive"]) >= 14
        assert "autoDeleteOnIdle" not in properties  # a paused lane keeps its subscription
        (rule,) = rules[lane["subscription"]]  # one rule: the filter, no catch-all beside it
        # Written over the $Default rule (a TrueFilter created with every subscription).
        assert rule.name.endswith("/$Default")
        assert rule.properties == {
            "filterType": "SqlFilter",
            "sqlFilter": {"sqlExpression": f"destination = '{lane['name']}'"},
        }


def test_lanes_json_and_main_json_are_what_the_registry_gives() -> None:
    document = infra_lanes.lanes_document()
    assert json.loads(LANES_JSON.read_text()) == document
    assert json.loads(MAIN_JSON.read_text())["variables"]["lanes"] == document["lanes"]
    assert infra_lanes.stale() == [], "run: python -m order_processor.infra_lanes"
    names = [lane["name"] for lane in document["lanes"]]
    assert names == [*DESTINATIONS, "accept"]
    for lane in document["lanes"]:
        assert lane["filter"] == docgen.lane_filters()[lane["subscription"]]  # as the emulator


def test_infra_lanes_check_fails_on_a_stale_copy(tmp_path: Any) -> None:
    (tmp_path / "infra").mkdir()
    template = json.loads(MAIN_JSON.read_text())
    template["variables"]["lanes"] = template["variables"]["lanes"][:-1]
    (tmp_path / "infra" / "main.json").write_text(json.dumps(template, indent=2) + "\n")
    (tmp_path / "infra" / "lanes.json").write_text(LANES_JSON.read_text())
    assert infra_lanes.main(["--check", "--root", str(tmp_path)]) == 1
    assert infra_lanes.main(["--root", str(tmp_path)]) == 0
    assert infra_lanes.main(["--check", "--root", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "infra" / "main.json").read_text())
    assert written == json.loads(MAIN_JSON.read_text())


def test_main_bicep_loops_over_lanes_json() -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    text = MAIN_BICEP.read_text()
    assert bicep.variables["lanes"] == ["loadJsonContent('lanes.json').lanes"]
    assert bicep.variables["destinationLanes"] == [
        "filter(lanes, lane => lane.kind == 'destination')"
    ]
    assert bicep.variables["laneSettings"] == [
        "toObject(lanes, lane => lane.subscriptionSetting, lane => lane.subscription)"
    ]
    loops = re.finditer(
        r"resource (\w+) '[^']+' = \[for [^:]+? in (.+?): (?:if \((\w+)\) )?\{", text
    )
    found = [(m[1], m[2], m[3]) for m in loops]
    sources = {symbol: source for symbol, source, _ in found}
    assert sources == {
        "laneSubscriptions": "lanes",
        "laneFilters": "lanes",
        "laneReceivers": "lanes",
        "operatorLaneReceivers": "(hasOperator ? lanes : [])",
        "laneDeadLetterAlerts": "lanes",
        "laneBacklogAlerts": "destinationLanes",
        "laneDlqDepthAlerts": "lanes",
        "laneAgeAlerts": "lanes",
        "lanePausedAlerts": "lanes",
    }
    conditions = {symbol: condition for symbol, _, condition in found if condition}
    assert conditions == dict.fromkeys(
        ("laneDlqDepthAlerts", "laneAgeAlerts", "lanePausedAlerts"), "laneMetricsEnabled"
    )
    # main.json: the same loops, over the same variables, under the same conditions
    template = json.loads(MAIN_JSON.read_text())
    counts = {r["copy"]["name"]: r["copy"]["count"] for r in template["resources"] if "copy" in r}
    assert counts == {
        **{symbol: f"[length(variables('{source}'))]" for symbol, source in sources.items()},
        "operatorLaneReceivers": (
            "[length(if(variables('hasOperator'), variables('lanes'), createArray()))]"
        ),
    }
    looped = {r["copy"]["name"]: r.get("condition") for r in template["resources"] if "copy" in r}
    assert {k: v for k, v in looped.items() if v} == {
        symbol: f"[parameters('{condition}')]" for symbol, condition in conditions.items()
    }


def _destination_prefixes() -> tuple[str, ...]:
    return tuple(
        str(cls.settings_class.model_config.get("env_prefix", "")) for cls in DESTINATIONS.values()
    )


def test_main_bicep_builds_destination_settings_from_the_lanes() -> None:
    """No hand-written destination setting is left in either template: they come from the
    lanes (defaults, secrets) and the one `destinationSettings` parameter, the same way in both."""
    bicep = BicepOutline.read(MAIN_BICEP)
    template = json.loads(MAIN_JSON.read_text())
    prefixes = _destination_prefixes()
    for variable in ("appSettings", "tunableSettings", "secretSettings", "entitySettings"):
        assert not [k for k in bicep.object_keys(variable) if k.startswith(prefixes)], variable
        assert not [k for k in template["variables"][variable] if k.startswith(prefixes)]
    words = ("profileStore", "productRecs", "richRelevance", "esputnik")
    assert not [p for p in bicep.params if p.startswith(words)]
    assert bicep.params["destinationSettings"] == ("object", "{}")
    assert template["parameters"]["destinationSettings"]["type"] == "object"
    expected = {
        "destinationDefaults": (
            "reduce(destinationLanes, {}, (merged, lane) => union(merged, lane.settings))"
        ),
        "destinationValues": "union(destinationDefaults, destinationOverrides)",
        "destinationSecrets": (
            "reduce(destinationLanes, {}, (merged, lane) => union(merged, lane.secrets))"
        ),
        "destinationSecretSettings": (
            "toObject(items(destinationSecrets), secret => secret.key, secret => "
            "'@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${secret.value}/)')"
        ),
        "requiredDestinationSettings": (
            "flatten(map(enabledDestinationLanes, lane => lane.required))"
        ),
        "missingDestinationSettings": (
            "filter(requiredDestinationSettings, name => empty(destinationValues[name]))"
        ),
    }
    for variable, text in expected.items():
        assert bicep.variables[variable] == [text], variable
    assert bicep.variables["destinationAppSettings"] == ["!empty(unknownDestinationSettings)"]
    # The same failures with the same messages: Bicep's interpolation is ARM's format().
    text = MAIN_BICEP.read_text()
    in_bicep = [
        re.sub(r"\$\{join\(\w+, ', '\)\}", "{0}", m).replace("\\'", "''")
        for m in re.findall(r"fail\('((?:\$\{[^}]*\}|\\.|[^'\\])*)'\)", text)
    ]
    in_json = re.findall(
        r"fail\(format\('((?:[^']|'')*)', join\(variables\('(\w+)'\), ', '\)\)\)",
        template["variables"]["destinationAppSettings"],
    )
    assert in_bicep == [message for message, _ in in_json]
    assert [variable for _, variable in in_json] == [
        "unknownDestinationSettings",
        "misplacedDestinationSettings",
        "missingDestinationSettings",
    ]
    # The app settings: destinationSettings over the lanes' defaults after appSettingsOverrides,
    # the lanes' Key Vault references last (nothing replaces them); the same order in main.json.
    union = text.split("name: 'appsettings'\n  properties: union(\n", 1)[1].split("\n  )", 1)[0]
    order = [line.strip().rstrip(",") for line in union.splitlines() if re.match(r"    \w", line)]
    assert order == [
        "appSettings",
        "tunableSettings",
        "appSettingsOverrides",
        "destinationAppSettings",
        "entitySettings",
        "laneSettings",
        "connectionSettings",
        "isFlex ? {} : premiumSettings",
        "secretSettings",
        "destinationSecretSettings",
    ]
    (config,) = [r for r in template["resources"] if r["type"] == "Microsoft.Web/sites/config"]
    names = re.findall(r"(?:variables|parameters)\('(\w+)'\)", config["properties"])
    assert [n for n in names if n in order or n == "premiumSettings"] == [
        *order[:7],
        "premiumSettings",
        *order[8:],
    ]


def test_the_lanes_defaults_are_the_apps_defaults() -> None:
    """Each default in the lanes, read back by the app, is the settings class's own default; the
    secrets are the SecretStr fields; the required ones are the class's required non-secrets."""
    for cls in DESTINATIONS.values():
        (lane,) = [lane for lane in LANES if lane["name"] == cls.name]
        settings_class = cls.settings_class
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        fields = settings_class.model_fields
        secret_fields = {f for f, info in fields.items() if "SecretStr" in str(info.annotation)}
        assert set(lane["secrets"]) == {f"{prefix}{f}".upper() for f in secret_fields}
        required = [f for f in settings_class.required if f not in secret_fields]
        assert lane["required"] == [f"{prefix}{f}".upper() for f in required]
        assert lane["enabledSetting"] == f"{prefix}ENABLED"
        assert set(lane["settings"]) | set(lane["secrets"]) | {lane["subscriptionSetting"]} == {
            f"{prefix}{f}".upper() for f in fields
        }
        # The example values stand in for the required settings (and secrets).
        example = {f"{prefix}{f}".upper(): v for f, v in settings_class.example.items()}
        with pytest.MonkeyPatch.context() as patch:
            for name in setting_names():
                patch.delenv(name, raising=False)
            from_class = settings_class(**settings_class.example)  # type: ignore[arg-type]
            for name, value in {**lane["settings"], **example}.items():
                patch.setenv(name, value)
            from_lane = settings_class()
        assert from_lane == from_class, cls.name


def test_every_destination_setting_comes_from_the_lanes(template: dict[str, Any]) -> None:
    settings = _app_settings(_evaluate(template))
    given = _params()["destinationSettings"]
    from_lanes: set[str] = set()
    for lane in DESTINATION_LANES:
        for name, default in lane["settings"].items():
            assert settings[name] == given.get(name, default), name
        from_lanes |= {*lane["settings"], *lane["secrets"], lane["subscriptionSetting"]}
    # ... and no destination setting from anywhere else
    prefixes = _destination_prefixes()
    assert {k for k in settings if k.startswith(prefixes)} == from_lanes


def test_destination_secrets_are_key_vault_references(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    settings = _app_settings(evaluator)
    vault = evaluator.one("Microsoft.KeyVault/vaults").name
    for lane in DESTINATION_LANES:
        assert lane["secrets"], lane["name"]  # every destination here has one
        for name, secret in lane["secrets"].items():
            assert re.fullmatch(r"[a-z0-9-]{1,127}", secret), secret  # a Key Vault secret name
            assert settings[name] == (
                f"@Microsoft.KeyVault(SecretUri=https://{vault}.vault.azure.net/secrets/{secret}/)"
            )
            assert name not in lane["settings"]
    # A secret (or a subscription) is not a parameter: giving one fails the deployment, and
    # appSettingsOverrides still cannot replace the reference.
    for name in ("PROFILE_STORE_API_KEY", "ESPUTNIK_SUBSCRIPTION", "PROFILE_STORE_BASEURL"):
        with pytest.raises(TemplateFailure, match=rf"destinationSettings: {name}: not a "):
            _app_settings(_evaluate(template, destinationSettings={**_given(), name: "x"}))
    overridden = _evaluate(template, appSettingsOverrides={"PROFILE_STORE_API_KEY": "plain"})
    assert _app_settings(overridden)["PROFILE_STORE_API_KEY"].startswith("@Microsoft.KeyVault(")


def _given(**changes: Any) -> dict[str, Any]:
    """The example's destinationSettings with `changes` (None removes a setting)."""
    given = {**_params()["destinationSettings"], **changes}
    return {k: v for k, v in given.items() if v is not None}


def test_a_required_destination_setting_missing_fails_the_deployment(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    no_scope = _given(PROFILE_STORE_SCOPE=None)
    with pytest.raises(
        TemplateFailure, match=r"destinationSettings: missing PROFILE_STORE_SCOPE, required"
    ):
        _app_settings(_evaluate(template, destinationSettings=no_scope))
    every = (
        r"missing PROFILE_STORE_BASE_URL, PROFILE_STORE_SCOPE, PRODUCT_RECS_URL, "
        r"PRODUCT_RECS_SITE, RICHRELEVANCE_CLIENT_ID, required while the destination is enabled "
        r"\(or set its <NAME>_ENABLED to 'false'\)"
    )
    with pytest.raises(TemplateFailure, match=every):
        _app_settings(_evaluate(template, destinationSettings={}))
    blank = _given(RICHRELEVANCE_CLIENT_ID="")
    with pytest.raises(TemplateFailure, match=r"missing RICHRELEVANCE_CLIENT_ID,"):
        _app_settings(_evaluate(template, destinationSettings=blank))
    # A disabled destination needs none of them (as the app: its other settings do not matter).
    for off in ("false", False, "0", "off", "False"):
        disabled = _given(
            PROFILE_STORE_ENABLED=off, PROFILE_STORE_SCOPE=None, PROFILE_STORE_BASE_URL=None
        )
        settings = _app_settings(_evaluate(template, destinationSettings=disabled))
        assert settings["PROFILE_STORE_BASE_URL"] == ""
    assert settings["PROFILE_STORE_ENABLED"] == "False"  # as given; the app parses it
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, "resolved" if value.startswith("@Microsoft.KeyVault(") else value)
    assert load_settings().enabled == [n for n in DESTINATIONS if n != "profile_store"]
    # A destination's setting in appSettingsOverrides (the place before destinationSettings)
    # would bypass the check: the deployment says where it belongs instead.
    moved = {"RICHRELEVANCE_MODE": "online", "LOYALTY_CACHE_TTL_SECONDS": "60"}
    with pytest.raises(
        TemplateFailure,
        match=r"appSettingsOverrides: RICHRELEVANCE_MODE: a destination's setting, set it in "
        r"destinationSettings",
    ):
        _app_settings(_evaluate(template, appSettingsOverrides=moved))


def test_destination_settings_override_defaults_as_app_settings(template: dict[str, Any]) -> None:
    given = _given(
        RICHRELEVANCE_MODE="online",
        RICHRELEVANCE_ORDER_ID_BITS=53,
        PRODUCT_RECS_SEND_ANONYMOUS=True,
        ESPUTNIK_ENABLED=False,
        ESPUTNIK_EVENT_TIME_ZONE="Europe/Kyiv",
    )
    settings = _app_settings(_evaluate(template, destinationSettings=given))
    assert settings["RICHRELEVANCE_MODE"] == "online"
    assert settings["RICHRELEVANCE_ORDER_ID_BITS"] == "53"  # app settings are strings
    assert settings["PRODUCT_RECS_SEND_ANONYMOUS"] == "true"
    assert settings["ESPUTNIK_ENABLED"] == "false"
    assert settings["ESPUTNIK_EVENT_TIME_ZONE"] == "Europe/Kyiv"
    assert settings["RICHRELEVANCE_SKU_ID"] == "string"  # the rest keep the lanes' defaults
    assert all(isinstance(value, str) for value in settings.values())


def test_a_new_destination_gets_its_lane_and_settings_from_the_one_command(
    template: dict[str, Any],
) -> None:
    from tests.test_registry import Acme  # the fifth destination of the registry test

    with registered_destination(Acme):
        lanes = infra_lanes.lanes_document()["lanes"]
        assert infra_lanes.secret_names()[-1] == "acme-api-key"  # docs/deploy.md's secrets loop
    assert [lane for lane in lanes if lane["name"] == "acme"] == [
        {
            "name": "acme",
            "kind": "destination",
            "function": "deliver_acme",
            "subscription": "acme",
            "subscriptionSetting": "ACME_SUBSCRIPTION",
            "filter": "destination = 'acme'",
            "settings": {"ACME_ENABLED": "true", "ACME_BASE_URL": ""},
            "secrets": {"ACME_API_KEY": "acme-api-key"},
            "required": ["ACME_BASE_URL"],
            "enabledSetting": "ACME_ENABLED",
        }
    ]
    # What `python -m order_processor.infra_lanes` writes into main.json (main.bicep reads
    # lanes.json): nothing else changes, and the lane has everything the others have. Until the
    # deployment gives Acme's required setting, it fails naming it.
    acme_template = infra_lanes._main_json(template, lanes)
    with pytest.raises(TemplateFailure, match=r"destinationSettings: missing ACME_BASE_URL,"):
        _app_settings(Evaluator(acme_template, _params()))
    given = {**_params()["destinationSettings"], "ACME_BASE_URL": "https://api.acme.example"}
    evaluator = Evaluator(
        acme_template, _params(operatorPrincipalId="op", destinationSettings=given)
    )
    subscription = evaluator.one(SUBSCRIPTIONS, "/order-deliveries/acme")
    rule = evaluator.one(RULES, "/order-deliveries/acme/$Default")
    assert rule.properties["sqlFilter"]["sqlExpression"] == "destination = 'acme'"
    settings = _app_settings(evaluator)
    vault = evaluator.one("Microsoft.KeyVault/vaults").name
    assert {k: v for k, v in settings.items() if k.startswith("ACME_")} == {
        "ACME_SUBSCRIPTION": "acme",
        "ACME_ENABLED": "true",
        "ACME_BASE_URL": "https://api.acme.example",
        "ACME_API_KEY": (
            f"@Microsoft.KeyVault(SecretUri=https://{vault}.vault.azure.net/secrets/acme-api-key/)"
        ),
    }
    scopes = {(role, scope) for _, role, scope in _role_assignments(evaluator)}
    assert (ROLE["Azure Service Bus Data Receiver"], subscription.id) in scopes
    alerts = {r.name for r in evaluator.deployed("Microsoft.Insights/scheduledQueryRules")}
    assert {"ordersync-lane-dead-letters-acme", "ordersync-lane-backlog-acme"} <= alerts
    # The app, with Acme registered, starts on those settings and delivers to it.
    with registered_destination(Acme):
        loaded = _deployed_app_settings(evaluator)
        assert set(settings) >= set(setting_names()) - set(UNSET_IN_AZURE)
    assert loaded.enabled == [*DESTINATIONS, "acme"]


def test_app_role_assignments_are_least_privilege(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    ids = _ids(evaluator)
    lanes = _lane_subscription_ids(evaluator)
    app = [(role, scope) for who, role, scope in _role_assignments(evaluator) if ids["site"] in who]
    receiver, sender = (
        ROLE["Azure Service Bus Data Receiver"],
        ROLE["Azure Service Bus Data Sender"],
    )
    # Each function receives from its own subscription only (a role can be scoped to one), the
    # app sends only to the deliveries topic (delivery messages, retry copies), nothing to orders.
    assert sorted(app) == sorted(
        [
            (receiver, ids["subscription"]),
            *((receiver, lanes[lane["name"]]) for lane in LANES),
            (sender, ids["deliveries"]),
            (ROLE["Storage Blob Data Owner"], ids["storage"]),
            (ROLE["Storage Table Data Contributor"], ids["storage"]),
            (ROLE["Key Vault Secrets User"], ids["vault"]),
            (ROLE["Monitoring Metrics Publisher"], ids["insights"]),
            # lane_metrics: the lanes' counts from ARM, read-only, no message data
            (ROLE["Reader"], ids["deliveries"]),
            (ROLE["Reader"], ids["subscription"]),
        ]
    )
    assert ids["subscription"].endswith("/topics/orders/subscriptions/order-sync")
    assert (sender, ids["topic"]) not in app
    for resource in evaluator.deployed("Microsoft.Authorization/roleAssignments"):
        assert resource.properties["principalType"] == "ServicePrincipal"
        assert resource.scope != RG_ID  # never the whole resource group
        assert resource.scope != ids["namespace"]  # nor the whole namespace


def test_the_lane_metrics_reader_roles_go_with_the_function(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template, laneMetricsEnabled=False)
    site = _ids(evaluator)["site"]
    roles = {role for who, role, _ in _role_assignments(evaluator) if site in who}
    assert ROLE["Reader"] not in roles
    settings = _app_settings(evaluator)
    assert settings["LANE_METRICS_ENABLED"] == "false"
    on = _app_settings(_evaluate(template))
    assert on["LANE_METRICS_ENABLED"] == "true"
    namespace = _evaluate(template).one("Microsoft.ServiceBus/namespaces")
    assert on["SERVICE_BUS_RESOURCE_ID"] == namespace.id


def test_each_function_may_receive_from_the_subscription_it_listens_to(
    template: dict[str, Any],
) -> None:
    evaluator = _evaluate(template)
    site = _ids(evaluator)["site"]
    received = {
        scope
        for who, role, scope in _role_assignments(evaluator)
        if site in who and role == ROLE["Azure Service Bus Data Receiver"]
    }
    for binding in _bindings(_deployed_app_settings(evaluator)).values():
        if binding["type"] == "serviceBusTrigger":
            assert _entity_id(evaluator, binding) in received


def test_operator_roles_only_when_an_operator_is_given(template: dict[str, Any]) -> None:
    assert all("operator" not in who for who, _, _ in _role_assignments(_evaluate(template)))
    evaluator = _evaluate(template, operatorPrincipalId="operator-object-id")
    ids = _ids(evaluator)
    lanes = _lane_subscription_ids(evaluator)
    operator = [(r, s) for who, r, s in _role_assignments(evaluator) if who == "operator-object-id"]
    assert sorted(operator) == sorted(
        [
            (ROLE["Key Vault Secrets Officer"], ids["vault"]),
            (ROLE["Azure Service Bus Data Receiver"], ids["subscription"]),
            *((ROLE["Azure Service Bus Data Receiver"], lanes[lane["name"]]) for lane in LANES),
            (ROLE["Azure Service Bus Data Sender"], ids["topic"]),
            (ROLE["Azure Service Bus Data Sender"], ids["deliveries"]),
        ]
    )


def test_no_broad_role_anywhere(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template, operatorPrincipalId="operator-object-id")
    assert not {role for _, role, _ in _role_assignments(evaluator)} & BROAD_ROLES


@pytest.mark.parametrize("plan", ["FC1", "EP1"])
def test_app_settings_use_identities_and_key_vault(template: dict[str, Any], plan: str) -> None:
    evaluator = _evaluate(template, hostingPlan=plan)
    settings = _app_settings(evaluator)
    namespace = evaluator.one("Microsoft.ServiceBus/namespaces").name
    storage = evaluator.one("Microsoft.Storage/storageAccounts").name
    vault = evaluator.one("Microsoft.KeyVault/vaults").name
    assert settings["ServiceBusConnection__fullyQualifiedNamespace"] == (
        f"{namespace}.servicebus.windows.net"
    )
    assert settings["AzureWebJobsStorage__accountName"] == storage
    assert settings["DELIVERY_LEDGER_CONNECTION__tableServiceUri"] == (
        f"https://{storage}.table.core.windows.net"
    )
    assert "ConnectionString" in settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert "ServiceBusConnection" not in settings
    assert "AzureWebJobsStorage" not in settings
    for setting, secret in SECRET_SETTINGS.items():
        assert settings[setting] == (
            f"@Microsoft.KeyVault(SecretUri=https://{vault}.vault.azure.net/secrets/{secret}/)"
        )
    for name, value in settings.items():
        assert isinstance(value, str), name  # app settings are strings
        text = value.lower()
        assert "accountkey=" not in text, name
        assert "sharedaccesskey" not in text, name
        assert not value.startswith("listKeys"), name
    if plan == "FC1":
        assert not FLEX_REJECTED_SETTINGS & set(settings)
    else:
        assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
        assert settings["FUNCTIONS_EXTENSION_VERSION"] == "~4"
        assert settings["WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"].startswith(
            f"@Microsoft.KeyVault(SecretUri=https://{vault}.vault.azure.net/secrets/"
        )
        share = evaluator.one("Microsoft.Storage/storageAccounts/fileServices/shares")
        assert share.name.endswith("/" + settings["WEBSITE_CONTENTSHARE"])


def test_overrides_cannot_replace_identities_or_secrets(template: dict[str, Any]) -> None:
    overrides = {
        "LOYALTY_CACHE_TTL_SECONDS": "60",
        "ESPUTNIK_API_KEY": "plain",
        "ORDERS_TOPIC": "x",
        "DELIVERIES_TOPIC": "x",
        "ESPUTNIK_SUBSCRIPTION": "x",
        "AzureWebJobs.deliver_esputnik.Disabled": "true",
    }
    settings = _app_settings(_evaluate(template, appSettingsOverrides=overrides))
    assert settings["LOYALTY_CACHE_TTL_SECONDS"] == "60"
    assert settings["ESPUTNIK_API_KEY"].startswith("@Microsoft.KeyVault(")
    # The bindings' entity names must name what the template creates.
    assert (settings["ORDERS_TOPIC"], settings["DELIVERIES_TOPIC"]) == (
        "orders",
        "order-deliveries",
    )
    assert settings["ESPUTNIK_SUBSCRIPTION"] == "esputnik"
    # A pause kept in the parameters survives the next deployment (which resets app settings).
    assert settings["AzureWebJobs.deliver_esputnik.Disabled"] == "true"


def _deployed_app_settings(evaluator: Evaluator) -> AppSettings:
    """The app's settings as it loads them in Azure from the deployed app settings."""
    deployed = _app_settings(evaluator)
    with pytest.MonkeyPatch.context() as patch:
        for name in setting_names():
            patch.delenv(name, raising=False)
        for name, value in deployed.items():
            # The platform resolves Key Vault references before the app reads them.
            resolved = "resolved-secret" if value.startswith("@Microsoft.KeyVault(") else value
            patch.setenv(name, resolved)
        return load_settings()


def _bindings(settings: AppSettings) -> dict[str, dict[str, Any]]:
    """Function name -> its trigger binding, as the app declares them for these settings."""
    found = {}
    for function in function_app.build_app(settings).get_functions():
        (binding,) = json.loads(function.get_function_json())["bindings"]
        found[function.get_function_name()] = binding
    return found


def _resolved(expression: str, settings: dict[str, Any]) -> str:
    match = re.fullmatch(r"%(\w+)%", expression)
    assert match, f"{expression}: not an app-setting expression"
    assert match[1] in settings, f"{match[1]}: a binding reads it, the template does not set it"
    return str(settings[match[1]])


def _entity_id(evaluator: Evaluator, binding: dict[str, Any]) -> str:
    """The subscription a binding listens to, as a resource id of the template."""
    settings = _app_settings(evaluator)
    topic = _resolved(binding["topicName"], settings)
    subscription = _resolved(binding["subscriptionName"], settings)
    return evaluator.one(SUBSCRIPTIONS, f"/{topic}/{subscription}").id


def test_every_setting_the_app_reads_is_configured(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    configured = set(_app_settings(evaluator))
    read = set(setting_names())
    assert read - configured == set(UNSET_IN_AZURE)
    assert configured - read <= PLATFORM_SETTINGS, configured - read - PLATFORM_SETTINGS
    # ... and every setting a binding reads, with the value the app expects there
    expected = function_app.binding_settings(_deployed_app_settings(evaluator))
    assert {"DELIVERIES_TOPIC", "ACCEPT_RETRY_SUBSCRIPTION"} <= set(expected)
    assert {lane["subscriptionSetting"] for lane in LANES} <= set(expected)
    assert {k: _app_settings(evaluator)[k] for k in expected} == expected
    assert "ORDERS_RETRY_QUEUE" not in configured


@pytest.mark.parametrize("sessions", [False, True])
def test_trigger_bindings_resolve_to_the_templates_entities(
    template: dict[str, Any], sessions: bool
) -> None:
    evaluator = _evaluate(template, ordersSessionsEnabled=sessions)
    settings = _app_settings(evaluator)
    bindings = _bindings(_deployed_app_settings(evaluator))
    assert bindings.pop("lane_metrics")["type"] == "timerTrigger"  # laneMetricsEnabled
    assert set(bindings) == {"accept_order"} | {lane["function"] for lane in LANES}
    for name, binding in bindings.items():
        assert binding["type"] == "serviceBusTrigger", name
        assert f"{binding['connection']}__fullyQualifiedNamespace" in settings, name
        entity_id = _entity_id(evaluator, binding)
        (entity,) = [r for r in evaluator.deployed(SUBSCRIPTIONS) if r.id == entity_id]
        # A session-enabled trigger on a subscription without sessions (or the reverse) fails.
        assert binding["isSessionsEnabled"] is entity.properties["requiresSession"] is sessions
    for lane in LANES:
        binding = bindings[lane["function"]]
        assert _resolved(binding["topicName"], settings) == "order-deliveries"
        assert _resolved(binding["subscriptionName"], settings) == lane["subscription"]


def test_deployed_settings_pass_the_apps_startup_validation(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    deployed = _app_settings(_evaluate(template))
    for name, value in deployed.items():
        # The platform resolves Key Vault references before the app reads them.
        resolved = "resolved-secret" if value.startswith("@Microsoft.KeyVault(") else value
        monkeypatch.setenv(name, resolved)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "azure")  # the check only runs in Azure
    settings = load_settings()
    settings.service_bus.require()
    function_app.require_binding_settings(settings)
    assert settings.enabled == list(DESTINATIONS)
    # Unresolved (secret missing, or no access), the reference text would reach the app:
    monkeypatch.setenv("ESPUTNIK_API_KEY", deployed["ESPUTNIK_API_KEY"])
    with pytest.raises(SettingsError, match="ESPUTNIK_API_KEY: unresolved Key Vault reference"):
        load_settings()
    assert settings.core.orders_topic == "orders"
    assert settings.core.orders_subscription == "order-sync"
    assert settings.core.deliveries_topic == "order-deliveries"
    assert settings.core.accept_retry_subscription == "accept-retry"
    assert settings.ledger.table_service_uri
    assert settings.service_bus.fully_qualified_namespace
    monkeypatch.setenv("ESPUTNIK_API_KEY", "resolved-secret")
    monkeypatch.delenv("DELIVERIES_TOPIC")
    with pytest.raises(SettingsError, match="missing setting DELIVERIES_TOPIC"):
        function_app.require_binding_settings(load_settings())


@pytest.mark.parametrize("plan", ["FC1", "EP1"])
def test_function_app_hosting(template: dict[str, Any], plan: str) -> None:
    evaluator = _evaluate(template, hostingPlan=plan)
    site = evaluator.one("Microsoft.Web/sites")
    assert site.get("kind") == "functionapp,linux"
    assert site.get("identity") == {"type": "SystemAssigned"}
    props = site.properties
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["scmMinTlsVersion"] == "1.2"
    policies = {
        r.name.rsplit("/", 1)[1]: r.properties["allow"]
        for r in evaluator.deployed("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    plan_resource = evaluator.one("Microsoft.Web/serverfarms")
    if plan == "FC1":
        assert plan_resource.get("sku") == {"name": "FC1", "tier": "FlexConsumption"}
        config = props["functionAppConfig"]
        assert config["runtime"] == {"name": "python", "version": "3.11"}
        container = evaluator.one("Microsoft.Storage/storageAccounts/blobServices/containers")
        storage, _, name = container.name.split("/")
        assert config["deployment"]["storage"] == {
            "type": "blobContainer",
            "value": f"https://{storage}.blob.core.windows.net/{name}",
            "authentication": {"type": "SystemAssignedIdentity"},
        }
        # Flex: no FTPS at all, ftpsState/linuxFxVersion are not valid site properties there.
        assert "ftpsState" not in props["siteConfig"]
        assert "linuxFxVersion" not in props["siteConfig"]
        assert policies == {"scm": False}
    else:
        assert plan_resource.get("sku") == {"name": "EP1", "tier": "ElasticPremium"}
        assert plan_resource.get("kind") == "elastic"
        assert "functionAppConfig" not in props
        assert props["siteConfig"]["linuxFxVersion"] == "Python|3.11"
        assert props["siteConfig"]["ftpsState"] == "Disabled"
        assert policies == {"scm": False, "ftp": False}
    assert plan_resource.properties["reserved"] is True  # Linux


@pytest.mark.parametrize("plan", ["FC1", "EP1"])
def test_storage_and_key_vault_hardening(template: dict[str, Any], plan: str) -> None:
    evaluator = _evaluate(template, hostingPlan=plan)
    storage = evaluator.one("Microsoft.Storage/storageAccounts").properties
    assert storage["allowBlobPublicAccess"] is False
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["supportsHttpsTrafficOnly"] is True
    assert storage["allowSharedKeyAccess"] is (plan == "EP1")  # EP1 content share needs a key
    vault = evaluator.one("Microsoft.KeyVault/vaults").properties
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault
    insights = evaluator.one("Microsoft.Insights/components").properties
    assert insights["DisableLocalAuth"] is True
    # Key Vault secrets written by the template: only the EP1 content-share connection string.
    secrets = [r.name for r in evaluator.deployed("Microsoft.KeyVault/vaults/secrets")]
    assert secrets == ([] if plan == "FC1" else [secrets[0]])
    assert all(s.endswith("/content-share-connection-string") for s in secrets)


def test_app_settings_wait_for_the_roles_they_need(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    settings = evaluator.one("Microsoft.Web/sites/config", "/appsettings")
    app_roles = [
        r.id
        for r in evaluator.deployed("Microsoft.Authorization/roleAssignments")
        if _ids(evaluator)["site"] in str(r.properties["principalId"])
    ]
    assert len(app_roles) == 6 + len(LANES) + 2  # + the lane counts' two Reader roles
    assert set(app_roles) <= set(settings.depends_on())


def test_every_dependency_is_a_resource_of_the_template(template: dict[str, Any]) -> None:
    for plan in ("FC1", "EP1"):
        evaluator = _evaluate(template, hostingPlan=plan, operatorPrincipalId="op")
        resources = evaluator.resources()
        known = {r.id.lower() for r in resources}
        for resource in resources:
            for dependency in resource.depends_on():
                assert dependency.lower() in known, (resource.type, dependency)


def _metric_alerts(evaluator: Evaluator) -> dict[tuple[str, str], Resource]:
    """(metric, entity) -> the Service Bus metric alert on it."""
    alerts = {}
    for alert in evaluator.deployed("Microsoft.Insights/metricAlerts"):
        (criterion,) = alert.properties["criteria"]["allOf"]
        assert criterion["metricNamespace"] == "Microsoft.ServiceBus/namespaces"
        (dimension,) = criterion["dimensions"]
        # Service Bus metrics are per queue or topic: no subscription dimension exists.
        assert dimension["name"] == "EntityName"
        (entity,) = dimension["values"]
        alerts[(criterion["metricName"], entity)] = alert
    return alerts


def _query_alerts(evaluator: Evaluator) -> dict[str, Resource]:
    return {r.name: r for r in evaluator.deployed("Microsoft.Insights/scheduledQueryRules")}


def test_alerts(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template)
    namespace = evaluator.one("Microsoft.ServiceBus/namespaces").id
    insights = evaluator.one("Microsoft.Insights/components").id
    group = evaluator.one("Microsoft.Insights/actionGroups").id
    alerts = _metric_alerts(evaluator)
    assert set(alerts) == {
        ("DeadletteredMessages", "orders"),
        ("DeadletteredMessages", "order-deliveries"),
        ("ActiveMessages", "order-deliveries"),
    }
    for alert in alerts.values():
        assert alert.properties["scopes"] == [namespace]
        assert alert.properties["actions"] == [{"actionGroupId": group}]
    (backlog,) = alerts[("ActiveMessages", "order-deliveries")].properties["criteria"]["allOf"]
    assert (backlog["timeAggregation"], backlog["threshold"]) == ("Minimum", 1000)

    queries = _query_alerts(evaluator)
    for alert in queries.values():
        assert alert.properties["scopes"] == [insights]
        assert alert.properties["actions"]["actionGroups"] == [group]
        assert alert.get("kind") == "LogAlert"

    quiet = _evaluate(template, alertEmail="")
    assert not quiet.deployed("Microsoft.Insights/actionGroups")
    assert all(a.properties["actions"] == [] for a in _metric_alerts(quiet).values())
    assert all(a.properties["actions"]["actionGroups"] == [] for a in _query_alerts(quiet).values())


GAUGE_ALERTS = ("dlq-depth", "age", "paused")


def test_each_lane_has_its_dead_letter_and_backlog_alerts(template: dict[str, Any]) -> None:
    queries = _query_alerts(_evaluate(template))
    expected = {f"ordersync-lane-dead-letters-{lane['subscription']}" for lane in LANES}
    expected |= {f"ordersync-lane-backlog-{lane['subscription']}" for lane in DESTINATION_LANES}
    gauges = {
        f"ordersync-lane-{kind}-{lane['subscription']}" for kind in GAUGE_ALERTS for lane in LANES
    }
    assert set(queries) == expected | gauges
    assert set(_query_alerts(_evaluate(template, laneMetricsEnabled=False))) == expected
    for lane in LANES:
        alert = queries[f"ordersync-lane-dead-letters-{lane['subscription']}"].properties
        (criterion,) = alert["criteria"]["allOf"]
        assert f'customDimensions["orders.lane"]) == "{lane["name"]}"' in criterion["query"]
        assert "orders.dead_letters" in criterion["query"]
        assert (criterion["timeAggregation"], criterion["metricMeasureColumn"]) == (
            "Total",
            "deadLetters",
        )
        assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
        assert f"dlq peek --destination {lane['name']}" in alert["description"]
    for lane in DESTINATION_LANES:
        alert = queries[f"ordersync-lane-backlog-{lane['subscription']}"].properties
        (criterion,) = alert["criteria"]["allOf"]
        assert f'customDimensions["orders.destination"]) == "{lane["name"]}"' in criterion["query"]
        assert "orders.delivery.latency" in criterion["query"]
        assert (criterion["timeAggregation"], criterion["metricMeasureColumn"]) == (
            "Average",
            "ageMinutes",
        )
        assert criterion["threshold"] == 30
    later = _query_alerts(_evaluate(template, laneBacklogMinutes=90))
    (criterion,) = later["ordersync-lane-backlog-esputnik"].properties["criteria"]["allOf"]
    assert criterion["threshold"] == 90


def test_each_lane_has_its_depth_age_and_pause_alerts(template: dict[str, Any]) -> None:
    """From the lane_metrics gauges: what waits in the lane's DLQ, for how long its oldest
    message has waited, for how long it has been paused."""
    queries = _query_alerts(
        _evaluate(template, laneDeadLetterDepth=5, laneOldestMessageMinutes=45, lanePausedHours=6)
    )
    expected = {
        "dlq-depth": ("orders.lane.dead_letter_messages", "Maximum", "depth", 5, "PT15M"),
        "age": ("orders.lane.oldest_message_age", "Minimum", "ageMinutes", 45, "PT15M"),
        "paused": ("orders.lane.paused", "Minimum", "paused", 0, "PT6H"),
    }
    for lane in LANES:
        for kind, (metric, aggregation, column, threshold, window) in expected.items():
            alert = queries[f"ordersync-lane-{kind}-{lane['subscription']}"].properties
            (criterion,) = alert["criteria"]["allOf"]
            assert f'name == "{metric}"' in criterion["query"]
            assert f'customDimensions["orders.lane"]) == "{lane["name"]}"' in criterion["query"]
            assert f"project timestamp, {column} = " in criterion["query"]
            assert (criterion["timeAggregation"], criterion["metricMeasureColumn"]) == (
                aggregation,
                column,
            )
            assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", threshold)
            assert alert["windowSize"] == window
            assert alert["autoMitigate"] is True
        paused = queries[f"ordersync-lane-paused-{lane['subscription']}"].properties
        assert f"AzureWebJobs.{lane['function']}.Disabled" in paused["description"]
        depth = queries[f"ordersync-lane-dlq-depth-{lane['subscription']}"].properties
        assert f"dlq peek --destination {lane['name']}" in depth["description"]


def test_the_lane_alerts_read_what_the_app_records() -> None:
    """The metric names and attributes the alert queries filter on are the app's own."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    observer = MetricsObserver(Telemetry.create(meter_provider=MeterProvider([reader])))
    observer.settled(
        "deliver",
        MessageMetadata(),
        Outcome(
            settlement=Settlement.DEAD_LETTER,
            reason=DeadLetterReason.DESTINATION_REJECTED,
            destination="esputnik",
        ),
    )
    observer.delivered(
        Delivered(
            lane="esputnik",
            order_id="1",
            event_key="k",
            result=DestinationResult(
                destination="esputnik", status=DeliveryStatus.DELIVERED, detail=""
            ),
            end_to_end_ms=1000.0,
        )
    )
    data = reader.get_metrics_data()
    assert data is not None
    recorded = {
        metric.name: [dict(point.attributes or {}) for point in metric.data.data_points]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"orders.lane": "esputnik"}.items() <= recorded["orders.dead_letters"][0].items()
    assert recorded["orders.delivery.latency"] == [{"orders.destination": "esputnik"}]


def test_the_delivery_overview_workbook(template: dict[str, Any]) -> None:
    """A shared workbook on the app's Application Insights, generated with the lanes; its
    queries are checked against the app's telemetry in tests/test_workbook.py."""
    evaluator = _evaluate(template)
    insights = _ids(evaluator)["insights"]
    book = evaluator.one("Microsoft.Insights/workbooks")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", book.name)
    assert book.get("kind") == "shared"
    properties = book.properties
    assert (properties["category"], properties["sourceId"]) == ("workbook", insights)
    assert properties["displayName"] == "ordersync: delivery overview"
    content = json.loads(properties["serializedData"])
    assert content["version"] == "Notebook/1.0"
    assert content["fallbackResourceIds"] == [insights]
    lanes = json.loads(LANES_JSON.read_text())["lanes"]
    expected = dict(workbook(lanes), fallbackResourceIds=[insights])
    assert content == expected
    # The same name on every deployment (a GUID per resource group and baseName).
    assert _evaluate(template).one("Microsoft.Insights/workbooks").name == book.name


def test_main_bicep_loads_the_generated_workbook() -> None:
    bicep = BicepOutline.read(MAIN_BICEP)
    assert bicep.variables["workbookContent"] == ["loadJsonContent('workbook.json')"]
    text = MAIN_BICEP.read_text()
    data = "string(union(workbookContent, { fallbackResourceIds: [ appInsights.id ] }))"
    assert f"serializedData: {data}" in text
    assert json.loads((INFRA / "workbook.json").read_text()) == workbook(
        json.loads(LANES_JSON.read_text())["lanes"]
    )


def test_names_fit_azure_limits(template: dict[str, Any]) -> None:
    evaluator = _evaluate(template, baseName="abcdefghijkl")  # the longest baseName allowed
    storage = evaluator.one("Microsoft.Storage/storageAccounts").name
    vault = evaluator.one("Microsoft.KeyVault/vaults").name
    assert re.fullmatch(r"[a-z0-9]{3,24}", storage)
    assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", vault)
    assert "--" not in vault
    assert 6 <= len(evaluator.one("Microsoft.ServiceBus/namespaces").name) <= 50
    assert len(evaluator.one("Microsoft.Web/sites").name) <= 60


def test_main_bicep_parses() -> None:
    """Syntax check with the pycep parser, when installed (`pip install pycep-parser`). Not in
    requirements-dev.txt: pycep-parser 0.7.1 (the latest on PyPI) cannot parse the template's
    two-parameter lambdas (`reduce(..., (merged, lane) => ...)`), which Bicep accepts."""
    pycep = pytest.importorskip("pycep")
    tree = pycep.BicepParser().parse(file_path=MAIN_BICEP)
    assert set(tree["resources"]) == set(BicepOutline.read(MAIN_BICEP).resources)


# ------------------------------------------------------------------------------------------
# Developer kit
# ------------------------------------------------------------------------------------------

# The emulator's limits (Azure/azure-service-bus-emulator-installer, Config-schema.json).
EMULATOR_PROPERTIES = {
    "queue": {
        "DeadLetteringOnMessageExpiration",
        "DefaultMessageTimeToLive",
        "DuplicateDetectionHistoryTimeWindow",
        "ForwardDeadLetteredMessagesTo",
        "ForwardTo",
        "LockDuration",
        "MaxDeliveryCount",
        "RequiresDuplicateDetection",
        "RequiresSession",
    },
    "topic": {
        "DefaultMessageTimeToLive",
        "DuplicateDetectionHistoryTimeWindow",
        "RequiresDuplicateDetection",
    },
    "subscription": {
        "DeadLetteringOnMessageExpiration",
        "DefaultMessageTimeToLive",
        "LockDuration",
        "MaxDeliveryCount",
        "ForwardDeadLetteredMessagesTo",
        "ForwardTo",
        "RequiresSession",
    },
}


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, duration
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_emulator_properties(kind: str, props: dict[str, Any]) -> None:
    assert set(props) <= EMULATOR_PROPERTIES[kind], set(props) - EMULATOR_PROPERTIES[kind]
    if "MaxDeliveryCount" in props:
        assert 1 <= props["MaxDeliveryCount"] <= 10
    if "DefaultMessageTimeToLive" in props:
        assert 300 <= _seconds(props["DefaultMessageTimeToLive"]) <= 3600
    if "DuplicateDetectionHistoryTimeWindow" in props:
        assert 5 <= _seconds(props["DuplicateDetectionHistoryTimeWindow"]) <= 300
    if "LockDuration" in props:
        low = 60 if kind == "subscription" else 5
        assert low <= _seconds(props["LockDuration"]) <= 300


def test_emulator_config_declares_the_apps_entities() -> None:
    config = json.loads(EMULATOR_CONFIG.read_text())["UserConfig"]
    assert config["Logging"]["Type"] in {"File", "Console", "File,Console", "Console,File"}
    (namespace,) = config["Namespaces"]
    assert namespace["Name"] == "sbemulatorns"  # the only name the emulator accepts
    assert not namespace.get("Queues")  # the retry queue is gone
    topics = {t["Name"]: t for t in namespace["Topics"]}
    topic = topics[EXAMPLE_SETTINGS["ORDERS_TOPIC"]]
    assert topic["Properties"]["RequiresDuplicateDetection"] is True
    _check_emulator_properties("topic", topic["Properties"])
    subscriptions = {s["Name"]: s for s in topic["Subscriptions"]}
    subscription = subscriptions[EXAMPLE_SETTINGS["ORDERS_SUBSCRIPTION"]]["Properties"]
    _check_emulator_properties("subscription", subscription)
    assert subscription["MaxDeliveryCount"] == 10
    assert subscription["DeadLetteringOnMessageExpiration"] is True
    assert subscription["RequiresSession"] is False  # ORDERS_SESSIONS_ENABLED defaults to false
    # The deliveries topic has the same lanes as Azure (infra/lanes.json), with the same filters.
    deliveries = topics[EXAMPLE_SETTINGS["DELIVERIES_TOPIC"]]
    assert deliveries["Properties"]["RequiresDuplicateDetection"] is True
    _check_emulator_properties("topic", deliveries["Properties"])
    lanes = {s["Name"]: s for s in deliveries["Subscriptions"]}
    assert sorted(lanes) == sorted(lane["subscription"] for lane in LANES)
    for lane in LANES:
        found = lanes[lane["subscription"]]
        _check_emulator_properties("subscription", found["Properties"])
        assert found["Properties"]["DeadLetteringOnMessageExpiration"] is True
        (rule,) = found["Rules"]
        assert rule["Properties"]["SqlFilter"]["SqlExpression"] == lane["filter"]


def test_compose_runs_the_emulator_sql_server_and_azurite() -> None:
    text = COMPOSE.read_text()
    assert "\t" not in text
    for needed in (
        "image: mcr.microsoft.com/azure-messaging/servicebus-emulator:",
        "image: mcr.microsoft.com/mssql/server:",
        "image: mcr.microsoft.com/azure-storage/azurite",
        "./servicebus-emulator/Config.json:/ServiceBus_Emulator/ConfigFiles/Config.json",
        '"5672:5672"',
        '"5300:5300"',
        '"10000:10000"',
        '"10002:10002"',
        "SQL_SERVER: sqlserver",
        "ACCEPT_EULA: ${ACCEPT_EULA",
        "MSSQL_SA_PASSWORD: ${MSSQL_SA_PASSWORD",
    ):
        assert needed in text, needed
    top_level = re.findall(r"^([a-z]+):", text, re.M)
    assert top_level == ["name", "services", "networks"]
    services_block = text.split("\nservices:\n", 1)[1].split("\nnetworks:\n", 1)[0]
    services = re.findall(r"^  ([a-z-]+):$", services_block, re.M)
    assert services == ["servicebus-emulator", "sqlserver", "azurite"]


def test_local_dev_uses_the_emulator_connection_string() -> None:
    text = DOCS["local-dev.md"].read_text()
    assert EXAMPLE_SETTINGS["ServiceBusConnection"] in text
    assert "UseDevelopmentEmulator=true" in EXAMPLE_SETTINGS["ServiceBusConnection"]


def test_deploy_doc_sets_every_secret_the_template_references(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = "\n".join(bash_blocks(DOCS["deploy.md"].read_text()))
    (loop,) = [
        block for block in bash_blocks(DOCS["deploy.md"].read_text()) if "secret set" in block
    ]
    # The destinations' secrets come from the registry (a new destination's too), the loyalty
    # provider's are written out.
    assert "for name in $(python -m order_processor.infra_lanes --secrets)" in loop
    assert infra_lanes.main(["--secrets"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == [secret for lane in LANES for secret in lane["secrets"].values()]
    for setting, secret in SECRET_SETTINGS.items():
        if setting.startswith("LOYALTY_"):
            assert re.search(rf"\b{secret}\b", loop), secret
        else:
            assert secret in listed, secret
    assert "az keyvault secret set" in commands


# ------------------------------------------------------------------------------------------
# Documentation commands
# ------------------------------------------------------------------------------------------


def _doc_commands() -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    for name, path in DOCS.items():
        for command in offline_commands(path.read_text()):
            if command not in seen:  # the same check in both docs runs once
                seen.add(command)
                yield name, command


DOC_COMMANDS = list(_doc_commands())


def test_each_doc_has_offline_commands() -> None:
    for path in DOCS.values():
        assert offline_commands(path.read_text()), path


@pytest.mark.parametrize(("doc", "command"), DOC_COMMANDS, ids=[c for _, c in DOC_COMMANDS])
def test_offline_doc_command_runs(doc: str, command: str) -> None:
    if re.match(r"python3? ", command):
        command = shlex.quote(sys.executable) + command[command.index(" ") :]
    assert not re.search(r"\b(az|func|docker|npx)\b", command), f"{doc}: needs a tool CI lacks"
    environment = {k: v for k, v in os.environ.items() if k not in set(setting_names())}
    done = subprocess.run(  # noqa: S603 - commands written in our own docs
        [BASH, "-c", command],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{doc}: {command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_validate_script_is_valid_bash() -> None:
    script = INFRA / "validate.sh"
    done = subprocess.run(  # noqa: S603 - a syntax check of our own script
        [BASH, "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
