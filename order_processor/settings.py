"""All settings, read once per process from the environment (app settings in Azure, `Values` of
local.settings.json locally), validated together so start-up names every missing or bad one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, Self

from azure.data.tables import TableClient
from azure.servicebus import parse_connection_string
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from loyalty_client.settings import LoyaltySettings
from order_processor.contract import MAX_BODY_BYTES
from order_processor.destinations import DESTINATIONS, DestinationSettings
from order_processor.entity_names import check_subscription_name, check_topic_name
from order_processor.outbound.http import HttpOptions, Timeouts, TransportKind
from order_processor.outbound.redaction import register_secrets, secret_values_of
from order_processor.outbound.urls import check_outbound_url, is_plain_http

#: how an unresolved Key Vault reference reaches the app (the platform passes the text through)
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_ignore_empty=True, populate_by_name=True
    )

    orders_topic: str = Field(
        default="orders", description="topic the trigger listens to (%ORDERS_TOPIC%)"
    )
    orders_subscription: str = Field(
        default="order-sync", description="subscription (%ORDERS_SUBSCRIPTION%)"
    )
    orders_max_message_bytes: int = Field(
        default=MAX_BODY_BYTES,
        ge=1024,
        le=100 * 1024 * 1024,
        description="largest order message accepted (Standard 256 KB; Premium up to 100 MB)",
    )
    retry_budget_seconds: float = Field(default=30.0, gt=0, le=240)
    destination_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    destination_read_timeout_seconds: float = Field(default=10.0, gt=0)
    destination_timeout_seconds: float = Field(default=15.0, gt=0)
    destination_max_attempts: int = Field(default=4, ge=1, le=10)
    destination_max_response_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="largest response body any outbound call accepts (destinations, loyalty, "
        "tokens); a larger one is a protocol error, transient",
    )
    http_transport: TransportKind = Field(
        default="keepalive",
        description="keepalive: the app's own HTTP/1.1 pool (docs/performance.md); httpx: "
        "httpx's stock transport (httpcore), the fallback",
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json in Azure (auto: when WEBSITE_INSTANCE_ID is set)"
    )
    allow_insecure_http: bool = Field(
        default=False, description="accept http:// outbound URLs (local fakes only)"
    )
    applicationinsights_connection_string: SecretStr | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    deliveries_topic: str = Field(
        default="order-deliveries",
        description="topic the accept stage publishes delivery messages to; every lane "
        "subscribes to it (%DELIVERIES_TOPIC%)",
    )
    accept_retry_subscription: str = Field(
        default="accept-retry",
        description="subscription of DELIVERIES_TOPIC taking the accept stage's own retry "
        "copies (loyalty provider down) (%ACCEPT_RETRY_SUBSCRIPTION%)",
    )
    orders_sessions_enabled: bool = Field(
        default=False, description="the subscription requires sessions (SessionId = orderId)"
    )
    orders_batch_enabled: bool = Field(
        default=False,
        description="the topic trigger receives batches (cardinality many) and delivers them in "
        "bulk; host.json maxMessageBatchSize sizes them",
    )
    retry_window_minutes: float = Field(default=180.0, gt=0)
    retry_min_attempts: int = Field(default=3, ge=1, le=100)
    retry_backoff_minutes: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(1.0, 5.0, 15.0, 30.0, 60.0), min_length=1
    )

    @field_validator("orders_topic", "deliveries_topic")
    @classmethod
    def _is_a_topic_name(cls, value: str) -> str:
        return check_topic_name(value)

    @field_validator("orders_subscription", "accept_retry_subscription")
    @classmethod
    def _is_a_subscription_name(cls, value: str) -> str:
        return check_subscription_name(value)

    @field_validator("retry_backoff_minutes", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("retry_backoff_minutes")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(step <= 0 for step in value):
            raise ValueError("every step must be a positive number of minutes, e.g. 1,5,15,30,60")
        return value

    @property
    def destination_timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.destination_connect_timeout_seconds,
            read=self.destination_read_timeout_seconds,
            total=self.destination_timeout_seconds,
        )

    @property
    def http_options(self) -> HttpOptions:
        return HttpOptions(
            transport=self.http_transport, max_response_bytes=self.destination_max_response_bytes
        )

    @property
    def ledger_lease(self) -> timedelta:
        """How long a claim keeps other copies away: the whole retry budget plus one more
        request, after which the holder is presumed dead and its claim may be taken over."""
        return timedelta(seconds=self.retry_budget_seconds + self.destination_timeout_seconds)


class LedgerSettings(BaseSettings):
    """Where the delivery ledger lives: a connection string, or a table endpoint reached with the
    app's managed identity. Defaults to the Functions storage account (AzureWebJobsStorage)."""

    model_config = SettingsConfigDict(
        env_prefix="DELIVERY_LEDGER_",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        populate_by_name=True,
    )

    enabled: bool = True
    table: str = Field(default="orderdeliveries", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$")
    connection: SecretStr | None = None
    connection_table_service_uri: str | None = Field(
        default=None, validation_alias="DELIVERY_LEDGER_CONNECTION__tableServiceUri"
    )
    connection_account_name: str | None = Field(
        default=None, validation_alias="DELIVERY_LEDGER_CONNECTION__accountName"
    )
    web_jobs_storage: SecretStr | None = Field(default=None, validation_alias="AzureWebJobsStorage")
    #: while rows written by the layout before the lanes may still matter (docs/deploy.md)
    legacy_lookup: bool = False

    @field_validator("connection", "web_jobs_storage")
    @classmethod
    def _is_a_storage_connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if text and not text.startswith(KEY_VAULT_REFERENCE):
            try:
                TableClient.from_connection_string(text, table_name="check").close()
            except ValueError:
                raise ValueError(
                    "is not a storage connection string (DefaultEndpointsProtocol=https;"
                    "AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net, or "
                    "UseDevelopmentStorage=true for Azurite)"
                ) from None
        return value

    @field_validator("connection_table_service_uri")
    @classmethod
    def _is_a_url(cls, value: str | None) -> str | None:
        return None if value is None else check_outbound_url(value)

    @model_validator(mode="after")
    def _somewhere_when_enabled(self) -> Self:
        if self.enabled and not (self.connection_string or self.table_service_uri):
            raise ValueError(
                "missing setting DELIVERY_LEDGER_CONNECTION (or "
                "DELIVERY_LEDGER_CONNECTION__tableServiceUri / __accountName, or "
                "AzureWebJobsStorage); DELIVERY_LEDGER_ENABLED=false only for local runs (unsafe)"
            )
        return self

    @property
    def connection_string(self) -> str | None:
        chosen = self.connection or (None if self.table_service_uri else self.web_jobs_storage)
        return chosen.get_secret_value() if chosen else None

    @property
    def table_service_uri(self) -> str | None:
        if self.connection_table_service_uri:
            return self.connection_table_service_uri
        if self.connection_account_name:
            return f"https://{self.connection_account_name}.table.core.windows.net"
        return None


class ServiceBusSettings(BaseSettings):
    """The connection the trigger uses (`ServiceBusConnection`), reused to send retry copies."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_ignore_empty=True, populate_by_name=True
    )

    connection: SecretStr | None = Field(default=None, validation_alias="ServiceBusConnection")
    fully_qualified_namespace: str | None = Field(
        default=None, validation_alias="ServiceBusConnection__fullyQualifiedNamespace"
    )

    @field_validator("connection")
    @classmethod
    def _is_a_connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(KEY_VAULT_REFERENCE):
            try:
                parse_connection_string(value.get_secret_value())
            except ValueError:
                raise ValueError(
                    "is not a Service Bus connection string "
                    "(Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=...;"
                    "SharedAccessKey=...)"
                ) from None
        return value

    @field_validator("fully_qualified_namespace")
    @classmethod
    def _is_a_host_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*(:\d+)?", value):
            raise ValueError("must be a host name such as <namespace>.servicebus.windows.net")
        return value

    @property
    def configured(self) -> bool:
        return bool(self.connection or self.fully_qualified_namespace)

    def require(self) -> None:
        if not self.configured:
            raise SettingsError(
                [
                    "missing setting ServiceBusConnection "
                    "(or ServiceBusConnection__fullyQualifiedNamespace for a managed identity)"
                ]
            )


#: an ARM resource id of a Service Bus namespace (case-insensitive, as ARM treats ids)
_NAMESPACE_ID = re.compile(
    r"/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+"
    r"/providers/Microsoft\.ServiceBus/namespaces/[A-Za-z0-9-]+",
    re.IGNORECASE,
)


class LaneStatusSettings(BaseSettings):
    """How each lane's status is read (the `lanes` command, the `lane_metrics` function)."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_ignore_empty=True, populate_by_name=True
    )

    lane_metrics_enabled: bool = Field(
        default=False,
        description="the lane_metrics timer function: each lane's counts, oldest message and "
        "pause as gauges, every minute",
    )
    service_bus_resource_id: str | None = Field(
        default=None,
        description="the namespace's ARM id: counts are read from Azure Resource Manager "
        "(Reader on the topics) instead of the namespace's management API (Manage rights)",
    )

    @field_validator("service_bus_resource_id")
    @classmethod
    def _is_a_namespace_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_NAMESPACE_ID, value.strip()):
            raise ValueError(
                "must be the namespace's resource id: /subscriptions/<subscription id>/"
                "resourceGroups/<group>/providers/Microsoft.ServiceBus/namespaces/<namespace>"
            )
        return None if value is None else value.strip()


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
    ledger: LedgerSettings
    service_bus: ServiceBusSettings
    lane_status: LaneStatusSettings

    @property
    def enabled(self) -> list[str]:
        return [name for name, s in self.destinations.items() if s.enabled]


def _problems(error: ValidationError, cls: type[BaseSettings]) -> list[str]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        loc = [str(part) for part in item["loc"]]
        if loc and loc[0] not in cls.model_fields:  # an alias: already the environment name
            field, prefix = "_".join(loc), ""
        else:
            field, prefix = "_".join(loc).upper(), str(cls.model_config.get("env_prefix", ""))
        message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(f"{prefix}{field}: {message}" if field else message)
    return problems


def _load(cls: type[BaseSettings], overrides: Mapping[str, Any]) -> tuple[Any, list[str]]:
    try:
        return cls(**overrides), []
    except ValidationError as exc:
        return None, _problems(exc, cls)


def load_settings(
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    service_bus_only: bool = False,
    with_ledger: bool = False,
) -> AppSettings:
    """Read every block; raise SettingsError listing all problems at once.

    `overrides` (block name -> field values) is for the CLI's dry-run and for tests.
    `service_bus_only`: for the commands that only talk to Service Bus (publish, dlq peek/purge):
    destinations, loyalty provider and ledger are not used, so their settings are not demanded;
    `with_ledger` keeps the ledger's (trace reads it).
    """
    overrides = dict(overrides or {})
    if service_bus_only:
        overrides |= {name: {"enabled": False} for name in DESTINATIONS}
        if not with_ledger:
            overrides["ledger"] = {"enabled": False}
    problems: list[str] = []
    core, found = _load(CoreSettings, overrides.get("core", {}))
    problems += found
    if service_bus_only:
        loyalty, found = LoyaltySettings.model_construct(), []
    else:
        loyalty, found = _load(LoyaltySettings, overrides.get("loyalty", {}))
    problems += found
    destinations: dict[str, DestinationSettings] = {}
    for name, cls in DESTINATIONS.items():
        block, found = _load(cls.settings_class, overrides.get(name, {}))
        problems += found
        if block is not None:
            destinations[name] = block
    ledger, found = _load(LedgerSettings, overrides.get("ledger", {}))
    problems += found
    service_bus, found = _load(ServiceBusSettings, overrides.get("service_bus", {}))
    problems += found
    lane_status, found = _load(LaneStatusSettings, overrides.get("lane_status", {}))
    problems += found
    blocks = [b for b in (core, loyalty, ledger, service_bus, *destinations.values()) if b]
    # Read on its own: one bad core setting must not turn every http:// URL into a complaint.
    insecure_ok = core.allow_insecure_http if core else _insecure_http_allowed(overrides)
    problems += [
        p
        for block in blocks
        if not (isinstance(block, DestinationSettings) and not block.enabled)
        for p in _unsafe_values(block, insecure_ok=insecure_ok)
    ]
    if problems:
        raise SettingsError(problems)
    register_secrets(value for block in blocks for value in _secret_values(block))
    return AppSettings(
        core=core,
        loyalty=loyalty,
        destinations=destinations,
        ledger=ledger,
        service_bus=service_bus,
        lane_status=lane_status,
    )


class _InsecureHttp(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    allow_insecure_http: bool = False


def _insecure_http_allowed(overrides: Mapping[str, Mapping[str, Any]]) -> bool | None:
    """ALLOW_INSECURE_HTTP alone, when the core block failed; None when it cannot be read
    either (then the https rule is not checked: its complaint would only add noise)."""
    try:
        return _InsecureHttp(**overrides.get("core", {})).allow_insecure_http
    except ValidationError:
        return None


def _secret_values(block: BaseSettings) -> list[str]:
    """Every secret of a block (a destination may add the forms its vendor sees, such as the
    user:key pair of Basic auth), so output that echoes them can be scrubbed by value."""
    if isinstance(block, DestinationSettings | LoyaltySettings):
        return block.secret_values()
    return secret_values_of(block)


def _env_name(block: BaseSettings, field: str) -> str:
    alias = type(block).model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    return f"{block.model_config.get('env_prefix', '')}{field}".upper()


def _unsafe_values(block: BaseSettings, *, insecure_ok: bool | None) -> list[str]:
    """Plain-http outbound URLs (unless ALLOW_INSECURE_HTTP) and Key Vault references the
    platform could not resolve (it then passes the reference text through as the value)."""
    problems = []
    for field in type(block).model_fields:
        value = getattr(block, field)
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            continue
        name = _env_name(block, field)
        if text.startswith(KEY_VAULT_REFERENCE):
            problems.append(
                f"{name}: unresolved Key Vault reference (does the secret exist, and may the "
                "app's identity read it: Key Vault Secrets User?)"
            )
        elif field.endswith("url") and is_plain_http(text) and insecure_ok is False:
            problems.append(
                f"{name}: outbound calls must use https:// (ALLOW_INSECURE_HTTP=true only "
                "for local fakes)"
            )
    return problems


def setting_names() -> list[str]:
    """Every environment name this app reads, block by block (for docs and their tests)."""
    blocks: list[type[BaseSettings]] = [
        CoreSettings,
        LedgerSettings,
        ServiceBusSettings,
        LaneStatusSettings,
        LoyaltySettings,
        *(cls.settings_class for cls in DESTINATIONS.values()),
    ]
    names = []
    for block in blocks:
        prefix = block.model_config.get("env_prefix", "")
        for field, info in block.model_fields.items():
            alias = info.validation_alias
            names.append(alias if isinstance(alias, str) else f"{prefix}{field}".upper())
    return names
