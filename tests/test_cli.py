"""The command line, run as a user runs it: a subprocess with a clean environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES

VALID = sorted(str(p.relative_to(ROOT)) for p in (SAMPLES / "valid").glob("*.json"))


def run(
    *args: str, env: dict[str, str] | None = None, module: str = "order_processor"
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME", "LANG"}
    }
    return subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=clean | (env or {}) | {"COLUMNS": "80", "NO_COLOR": "1"},  # piped: width ignored
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_process_with_nothing_configured_is_a_dry_run_of_every_sample() -> None:
    result = run("process", *VALID)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no destination is configured: dry run" in result.stdout
    assert "POST https://track-emea01.profilestore.episerver.net/api/v1.0/Track" in result.stdout
    assert result.stdout.count("-> complete") == len(VALID)
    # Secrets and personal data are masked in what it prints.
    assert "dry-run-key" not in result.stdout
    assert "/omnichannel/api/v1/***/orders?mode=offline" in result.stdout  # key in the URL path
    assert "client_secret=***" in result.stdout
    assert "authorization: epi-single ***" in result.stdout
    assert "ann.shopper@example.com" not in result.stdout


def test_dry_run_can_show_personal_data_when_asked() -> None:
    result = run("process", "--dry-run", "--show-personal-data", VALID[0])
    assert result.returncode == 0
    assert "@example.com" in result.stdout


def test_invalid_message_is_reported_with_its_field_and_a_failing_exit_code() -> None:
    result = run("process", "samples/orders/invalid/naive-order-date.json")
    assert result.returncode == 1
    assert "dead-letter InvalidMessage" in result.stdout
    assert "orderDate" in result.stdout


def test_send_without_settings_names_the_missing_ones() -> None:
    result = run("process", "--send", VALID[0])
    assert result.returncode == 2
    assert "missing setting PROFILE_STORE_BASE_URL" in result.stdout


def test_schema_check_passes_on_the_committed_schema() -> None:
    result = run("schema", "--check")
    assert result.returncode == 0, result.stdout


def test_schema_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "order-message.v1.schema.json"
    stale.write_text("{}")
    result = run("schema", "--check", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "stale" in result.stdout


def test_send_without_a_loyalty_provider_is_a_settings_error_not_a_traceback() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    env = {k: v for k, v in example.items() if v and not k.startswith("LOYALTY_")}
    result = run("process", "--send", VALID[0], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "missing setting LOYALTY_API_BASE_URL" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_publish_checks_its_settings_before_showing_anything() -> None:
    result = run("publish", VALID[0])
    assert result.returncode == 2
    assert "missing setting ServiceBusConnection" in result.stdout
    assert "message(s) for the topic" not in result.stdout
    assert run("publish", "--dry-run", VALID[0]).returncode == 0  # a dry run needs no namespace


def test_piped_output_is_not_hard_wrapped() -> None:
    long_name = "samples/orders/valid/order-created-with-email.json"
    table = run("publish", "--dry-run", long_name)
    assert long_name in table.stdout  # whole, in one cell, though COLUMNS=80
    assert "100246:OrderCreated:9307724d67e40c0d" in table.stdout
    help_text = run("dlq", "replay", "--help").stdout
    assert (
        "or accept (the accept stage's retry lane); left out: the orders subscription's"
        in help_text
    )
    assert "[default: topic]" in help_text


def test_what_the_commands_log_is_redacted_as_in_the_functions() -> None:
    """`process --send` and `dlq replay --to process` run the app's code, whose warnings (and
    any library's) reach the terminal: the command line installs the same redaction."""
    script = (
        "import logging, sys\n"
        "from order_processor.cli import main\n"
        "sys.argv = ['order_processor', 'schema', '--check']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "logging.getLogger('order_processor').warning('card 6330001234567890 for a@b.example')\n"
    )
    done = subprocess.run(  # noqa: S603 (our own code)
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "card <number> for <email>" in done.stderr


def test_the_bench_help_is_not_hard_wrapped_either_and_shows_every_default() -> None:
    help_text = run("--help", module="bench")
    assert help_text.returncode == 0, help_text.stderr
    assert (
        "share of 503 answers (the inline rows do not run the retry copies this causes, so their "
        "work checks fail: exploration only)  [default: 0.0]" in help_text.stdout
    )
    options = [
        line
        for line in help_text.stdout.splitlines()
        if line.lstrip().startswith("-") and "--help" not in line
    ]
    assert len(options) > 30
    assert [line for line in options if "[default: " not in line] == []
    # Left out, an option takes the preset's value: the help says which, for both presets.
    assert "[default: (20000; --quick: 2000)]" in help_text.stdout
