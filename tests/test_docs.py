"""The documentation operators rely on stays true: every setting is named in the README and the
example settings file, the example validates against the official schema and loads, host.json is
valid, and CI runs the README's test command."""

from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import pytest

from order_processor.settings import load_settings, setting_names
from tests.conftest import ROOT

SHARED_SCHEMAS = ROOT.parent / "shared" / "schemas"
README = (ROOT / "README.md").read_text()
EXAMPLE = json.loads((ROOT / "local.settings.example.json").read_text())


def _official(name: str) -> dict[str, object]:
    path = SHARED_SCHEMAS / name
    if not path.exists():
        pytest.skip(f"{path} is not beside this checkout")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", setting_names())
def test_every_setting_is_in_the_readme_and_the_example(name: str) -> None:
    assert f"`{name}`" in README
    assert name in EXAMPLE["Values"]


def test_the_example_lists_nothing_the_app_does_not_read() -> None:
    host_settings = {"FUNCTIONS_WORKER_RUNTIME"}
    assert set(EXAMPLE["Values"]) - set(setting_names()) == host_settings
    for name in host_settings:
        assert f"`{name}`" in README


def test_example_settings_validate_against_the_official_schema() -> None:
    jsonschema.Draft4Validator(_official("local.settings.schema.json")).validate(EXAMPLE)


def test_host_json_validates_against_the_official_schema() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    jsonschema.Draft7Validator(_official("host.schema.json")).validate(host)
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    assert host["extensions"]["serviceBus"]["autoCompleteMessages"] is False


def test_example_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name, value in EXAMPLE["Values"].items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.enabled == ["profile_store", "product_recs", "richrelevance", "esputnik"]


def test_missing_settings_are_all_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from order_processor.settings import SettingsError

    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    for expected in (
        "RETRY_BUDGET_SECONDS",
        "PROFILE_STORE_BASE_URL",
        "PRODUCT_RECS_SITE_TOKEN",
        "RICHRELEVANCE_CLIENT_SECRET",
        "ESPUTNIK_API_KEY",
    ):
        assert expected in text


def test_secrets_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE["Values"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROFILE_STORE_API_KEY", "very-secret-value")
    settings = load_settings()
    assert "very-secret-value" not in repr(settings)


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_runs_the_whole_suite_on_every_python_the_project_declares() -> None:
    """Whatever requires-python declares, CI proves: the test command runs on the oldest (3.11,
    the quick start's), .ci/run's loop on each later minor version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", project["requires-python"])
    assert declared, project["requires-python"]
    oldest, past = (int(minor) for minor in declared.groups())
    assert oldest == 11
    loop = re.search(r"^for version in (.+); do$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert loop, ".ci/run has no per-version loop"
    assert loop.group(1).split() == [f"3.{minor}" for minor in range(oldest + 1, past)]


def test_what_the_registry_decides_in_the_docs_is_current() -> None:
    from order_processor import docgen

    assert docgen.stale() == [], "run: python -m order_processor docs"
