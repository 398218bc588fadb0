"""All settings, read once per process from the environment (app settings in Azure, `Values` of
local.settings.json locally), validated together so start-up names every missing or bad one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from loyalty_client.settings import LoyaltySettings
from order_processor.destinations import DESTINATIONS, DestinationSettings
from order_processor.http import Timeouts


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    orders_topic: str = Field(
        default="orders", description="topic the trigger listens to (%ORDERS_TOPIC%)"
    )
    orders_subscription: str = Field(
        default="order-sync", description="subscription (%ORDERS_SUBSCRIPTION%)"
    )
    retry_budget_seconds: float = Field(default=30.0, gt=0, le=240)
    destination_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    destination_read_timeout_seconds: float = Field(default=10.0, gt=0)
    destination_timeout_seconds: float = Field(default=15.0, gt=0)
    destination_max_attempts: int = Field(default=4, ge=1, le=10)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @property
    def destination_timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.destination_connect_timeout_seconds,
            read=self.destination_read_timeout_seconds,
            total=self.destination_timeout_seconds,
        )


class SettingsError(Exception):
    """Start-up configuration problems, one line per setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AppSettings:
    core: CoreSettings
    loyalty: LoyaltySettings
    destinations: Mapping[str, DestinationSettings]

    @property
    def enabled(self) -> list[str]:
        return [name for name, s in self.destinations.items() if s.enabled]


def _problems(error: ValidationError, prefix: str) -> list[str]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{prefix}{field}: {message}" if field else message)
    return problems


def _load(cls: type[BaseSettings], overrides: Mapping[str, Any]) -> tuple[Any, list[str]]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    try:
        return cls(**overrides), []
    except ValidationError as exc:
        return None, _problems(exc, prefix)


def load_settings(*, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> AppSettings:
    """Read every block; raise SettingsError listing all problems at once.

    `overrides` (block name -> field values) is for the CLI's dry-run and for tests.
    """
    overrides = overrides or {}
    problems: list[str] = []
    core, found = _load(CoreSettings, overrides.get("core", {}))
    problems += found
    loyalty, found = _load(LoyaltySettings, overrides.get("loyalty", {}))
    problems += found
    destinations: dict[str, DestinationSettings] = {}
    for name, cls in DESTINATIONS.items():
        block, found = _load(cls.settings_class, overrides.get(name, {}))
        problems += found
        if block is not None:
            destinations[name] = block
    if problems:
        raise SettingsError(problems)
    return AppSettings(core=core, loyalty=loyalty, destinations=destinations)


def setting_names() -> list[str]:
    """Every environment name this app reads, block by block (for docs and their tests)."""
    blocks: list[type[BaseSettings]] = [
        CoreSettings,
        LoyaltySettings,
        *(cls.settings_class for cls in DESTINATIONS.values()),
    ]
    return [
        f"{block.model_config.get('env_prefix', '')}{field}".upper()
        for block in blocks
        for field in block.model_fields
    ]
