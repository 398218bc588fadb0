"""Loyalty provider settings (`LOYALTY_*`). Providers differ, so almost everything is
configurable; the defaults are the README's default contract: `GET {base}/cards/{card}` returning
`{"customerId", "email", "firstName", "lastName", ...}`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from order_processor.outbound.redaction import basic_pairs, secret_values_of
from order_processor.outbound.urls import OutboundUrl


class LoyaltyAuth(StrEnum):
    NONE = "none"
    HEADER = "header"
    BASIC = "basic"
    OAUTH2 = "oauth2"


class LoyaltySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOYALTY_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    api_base_url: OutboundUrl | None = Field(
        default=None, description="Provider base URL; unset = use LOYALTY_FILE"
    )
    lookup_path: str = Field(
        default="/cards/{card}", description="Path template with a {card} slot"
    )
    auth: LoyaltyAuth = LoyaltyAuth.HEADER
    api_key: SecretStr | None = None
    api_key_header: str = "Ocp-Apim-Subscription-Key"
    api_key_prefix: str = ""
    username: str | None = None
    password: SecretStr | None = None
    token_url: OutboundUrl | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None

    email_field: str = "email"
    customer_id_field: str = "customerId"
    first_name_field: str = "firstName"
    last_name_field: str = "lastName"
    phone_field: str = "phone"
    not_found_statuses: frozenset[int] = frozenset({404})

    connect_timeout_seconds: float = Field(default=3.0, gt=0)
    read_timeout_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=8.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    cache_ttl_seconds: float = Field(default=3600.0, ge=0)
    negative_cache_ttl_seconds: float = Field(default=300.0, ge=0)
    cache_max_entries: int = Field(default=100_000, ge=0)

    file: Path | None = Field(
        default=None, description="JSON/CSV customer file when no provider is configured"
    )

    @field_validator("not_found_statuses", mode="before")
    @classmethod
    def _statuses(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("lookup_path")
    @classmethod
    def _has_card_slot(cls, value: str) -> str:
        if "{card}" not in value:
            raise ValueError("must contain the {card} slot, e.g. /cards/{card}")
        return value

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file (a JSON or CSV customer file, for local runs)")
        return value

    def secret_values(self) -> list[str]:
        """Every secret here, and the username:password pair Basic auth encodes."""
        values = secret_values_of(self)
        password = self.password.get_secret_value() if self.password else ""
        return values + basic_pairs(self.username, [password] if password else [])

    @model_validator(mode="after")
    def _auth_is_complete(self) -> Self:
        if self.api_base_url is None:
            if self.file is None:
                raise ValueError(
                    "missing setting LOYALTY_API_BASE_URL (or LOYALTY_FILE for local runs)"
                )
            return self
        needed: dict[LoyaltyAuth, list[tuple[str, object]]] = {
            LoyaltyAuth.NONE: [],
            LoyaltyAuth.HEADER: [("api_key", self.api_key)],
            LoyaltyAuth.BASIC: [("username", self.username), ("password", self.password)],
            LoyaltyAuth.OAUTH2: [
                ("token_url", self.token_url),
                ("client_id", self.client_id),
                ("client_secret", self.client_secret),
            ],
        }
        missing = [f"LOYALTY_{name.upper()}" for name, value in needed[self.auth] if not value]
        if missing:
            raise ValueError(
                f"missing setting {', '.join(missing)} (LOYALTY_AUTH={self.auth.value})"
            )
        return self

    @property
    def configured(self) -> bool:
        return self.api_base_url is not None or self.file is not None
