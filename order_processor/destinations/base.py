"""What a destination is: a settings block, a mapping from TrackingEvent to one HTTP request, and
a reading of the vendor's answer. Retries, timeouts, fan-out and settlement belong to the core."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Self

import httpx
from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from order_processor.contract import EventType
from order_processor.entity_names import check_subscription_name
from order_processor.mapping import Fields
from order_processor.model import TrackingEvent
from order_processor.outbound.errors import DeliveryError, FailureKind, error_from_response
from order_processor.outbound.http import Timeouts, send
from order_processor.outbound.redaction import excerpt, secret_values_of


class DestinationSettings(BaseSettings):
    """Base for one destination's `<NAME>_*` settings block.

    Subclasses set `env_prefix` and list in `required` the fields that must be set when the
    destination is enabled; a missing one fails start-up with the setting's name.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    enabled: bool = Field(default=True, description="`false`: never called, recorded as skipped")
    subscription: str | None = Field(
        default=None,
        description="the lane's subscription of DELIVERIES_TOPIC (its trigger binding reads it)",
    )
    required: ClassVar[tuple[str, ...]] = ()
    #: placeholder values a dry run uses for required settings the environment lacks
    example: ClassVar[dict[str, str]] = {}

    @property
    def prefix(self) -> str:
        return str(self.model_config.get("env_prefix", ""))

    @classmethod
    def default_subscription(cls) -> str:
        """`PROFILE_STORE_` -> `profile-store`: the lane's subscription unless set otherwise."""
        return str(cls.model_config.get("env_prefix", "")).strip("_").lower().replace("_", "-")

    @property
    def subscription_name(self) -> str:
        return self.subscription or self.default_subscription()

    @field_validator("subscription")
    @classmethod
    def _is_a_subscription_name(cls, value: str | None) -> str | None:
        return None if value is None else check_subscription_name(value)

    @model_validator(mode="wrap")
    @classmethod
    def _ignored_when_disabled(cls, data: Any, handler: Any) -> Any:
        """A disabled destination is never called, so its other settings do not matter: a
        leftover bad URL or key of a switched-off vendor must not stop the app."""
        try:
            return handler(data)
        except ValidationError:
            if isinstance(data, dict) and _is_false(data.get("enabled")):
                return handler({"enabled": False})
            raise

    @model_validator(mode="after")
    def _required_when_enabled(self) -> Self:
        if self.enabled:
            missing = [
                f"{self.prefix}{name.upper()}" for name in self.required if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    f"missing setting {', '.join(missing)} (or set {self.prefix}ENABLED=false)"
                )
        return self

    def secret_values(self) -> list[str]:
        """Every secret in this block, so output that may echo them (URLs too) can mask them."""
        return secret_values_of(self)

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        assert isinstance(value, SecretStr), name
        return value.get_secret_value()


def _is_false(value: Any) -> bool:
    try:
        return value is not None and TypeAdapter(bool).validate_python(value) is False
    except ValidationError:
        return False


@dataclass(frozen=True, slots=True)
class Skip:
    """The event is not sent to this destination, for a reason worth recording."""

    reason: str


@dataclass(frozen=True, slots=True)
class Sent:
    """The vendor accepted the event."""

    response_id: str | None = None
    note: str = ""
    #: for a bulk request, each element's own id in the order sent (when the vendor's ids are
    #: known per element); empty: every element gets `response_id`
    response_ids: tuple[str | None, ...] = ()


class Destination(ABC):
    """One marketing/personalisation system. Subclasses are stateless mappers plus `send`.

    The class is also the destination's registration: everything per destination (its lane's
    function and subscription, settings docs, dev fakes, bench vendors, test fixtures) is derived
    from these class attributes.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    settings_class: ClassVar[type[DestinationSettings]]
    #: its column of the routing table with its default settings: the destination's own name
    #: for each event it takes (`routes_for` when a setting switches an event on or off)
    routes: ClassVar[Mapping[EventType, str]]
    #: the declarative mappings (title -> fields) the vendor's bodies are built from; the docs
    #: page's mapping tables are generated from them
    mappings: ClassVar[Mapping[str, Fields]] = MappingProxyType({})
    #: the loopback fake implementing the vendor's documented behaviour: a module with RULES,
    #: settings_for(url) and the fake's credentials (tests, `fakes`, the bench)
    fake: ClassVar[str]
    #: the vendor's documented success answer, used by --dry-run instead of the network
    dry_run_status: ClassVar[int] = 200
    dry_run_body: ClassVar[Any] = None

    def __init__(
        self, settings: DestinationSettings, *, client: httpx.AsyncClient, timeouts: Timeouts
    ) -> None:
        self.settings = settings
        self.client = client
        self.timeouts = timeouts
        self._urls: dict[str, httpx.URL] = {}

    @classmethod
    def function_name(cls) -> str:
        """The lane's Azure Function."""
        return f"deliver_{cls.name}"

    @classmethod
    def routes_for(cls, settings: DestinationSettings) -> Mapping[EventType, str]:
        """Its routing column under these settings: what the accept stage publishes to its lane
        and the lane sends. `routes` unless the destination overrides this, for an event that a
        setting switches on (e.g. one the vendor must enable per account)."""
        return cls.routes

    @functools.cached_property
    def routing(self) -> Mapping[EventType, str]:
        """`routes_for(self.settings)`, decided once (settings are frozen)."""
        return type(self).routes_for(self.settings)

    @classmethod
    def subscription_setting(cls) -> str:
        """The app setting naming the lane's subscription (`%<NAME>_SUBSCRIPTION%`)."""
        return f"{cls.settings_class.model_config.get('env_prefix', '')}SUBSCRIPTION"

    def url(self, text: str) -> httpx.URL:
        """`text` parsed once: httpx parses a str URL on every request (~45 us each), and with
        `params=` twice; a destination's URLs come from its (frozen) settings."""
        parsed = self._urls.get(text)
        if parsed is None:
            parsed = self._urls[text] = httpx.URL(text)
        return parsed

    @abstractmethod
    def prepare(self, event: TrackingEvent, route: str) -> httpx.Request | Skip:
        """Map the event to the vendor's request, or Skip; raise a permanent DeliveryError when the
        vendor's own rules would reject it (size, totals) so it is never sent."""

    @classmethod
    def max_batch(cls, settings: DestinationSettings) -> int:
        """The most events one request may carry with these settings (the vendor's bulk form);
        1 means none. Decides whether the lane's trigger takes batches."""
        return 1

    def bulk_limit(self) -> int:
        return self.max_batch(self.settings)

    def encode(self, event: TrackingEvent, route: str) -> bytes | Skip:
        """One event as an element of a bulk body, checked and serialised once: Skip, or raise
        `rejected`, exactly as `prepare` would. Destinations with a bulk form implement it."""
        raise NotImplementedError(f"{self.name} has no bulk form")

    def prepare_bulk(self, elements: Sequence[bytes]) -> httpx.Request:
        """One request carrying up to `bulk_limit()` elements from `encode`."""
        raise NotImplementedError(f"{self.name} has no bulk form")

    def _check_bulk_size(self, elements: Sequence[bytes]) -> None:
        if not 0 < len(elements) <= self.bulk_limit():
            raise ValueError(
                f"{self.name} takes 1 to {self.bulk_limit()} events per request, "
                f"got {len(elements)}"
            )

    async def send(self, request: httpx.Request) -> Sent:
        """One attempt. Override to add auth flows; the core wraps this in retries."""
        response = await send(self.client, request, system=self.name, timeouts=self.timeouts)
        return self.interpret(response)

    def interpret(self, response: httpx.Response) -> Sent:
        """Default: any 2xx is success; everything else is classified by status."""
        if response.is_success:
            return Sent()
        raise error_from_response(self.name, response, message=self.error_text(response))

    @staticmethod
    def error_text(response: httpx.Response) -> str:
        """The vendor's error in a few words, redacted (bodies may echo what we sent)."""
        text = response.text.strip().replace("\n", " ") or response.reason_phrase
        return excerpt(text) if text else "request failed"

    def rejected(self, message: str, *, vendor_code: str | None = None) -> DeliveryError:
        """A permanent failure decided before sending (the vendor's rules would refuse it)."""
        return DeliveryError(
            kind=FailureKind.PERMANENT, system=self.name, message=message, vendor_code=vendor_code
        )
