"""Card -> customer over HTTP, for whichever provider the settings describe."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from loyalty_client.customer import Customer, text_at
from loyalty_client.settings import LoyaltyAuth, LoyaltySettings
from order_processor.outbound.errors import DeliveryError, FailureKind, error_from_response
from order_processor.outbound.http import (
    ClientCredentialsAuth,
    HeaderAuth,
    HttpOptions,
    Timeouts,
    new_client,
    send,
)
from order_processor.outbound.redaction import fingerprint
from order_processor.outbound.retry import RetryPolicy, call_with_retries

SYSTEM = "loyalty"

log = logging.getLogger("loyalty_client")


class CustomerLookup(Protocol):
    """Returns the customer, None for a card the provider does not know, or raises DeliveryError."""

    async def lookup(self, card: str, *, deadline: float) -> Customer | None: ...

    async def aclose(self) -> None: ...


#: what the inbound contract accepts as an email address (the destinations key contacts by it)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class InvalidEmails:
    """Counts loyalty records whose email is not an email address (telemetry reads it)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, customer_id: str | None) -> None:
        self.count += 1
        log.warning(
            "loyalty record %s has an email that is not an email address; treated as no email",
            fingerprint(customer_id),
        )


def customer_from_document(
    document: Any, settings: LoyaltySettings, *, invalid_email: InvalidEmails | None = None
) -> Customer | None:
    customer_id = text_at(document, settings.customer_id_field)
    email = text_at(document, settings.email_field)
    if email is not None and not (len(email) <= 254 and EMAIL.fullmatch(email)):
        # Sent on, it would become the customer's email at every destination.
        email = None
        if invalid_email is not None:
            invalid_email(customer_id)
    customer = Customer(
        customer_id=customer_id,
        email=email,
        phone=text_at(document, settings.phone_field),
        first_name=text_at(document, settings.first_name_field),
        last_name=text_at(document, settings.last_name_field),
    )
    # A record with neither an id nor an email identifies nobody: treat it like "not found".
    return customer if customer.customer_id or customer.email else None


class LoyaltyClient:
    """One pooled client per process; retries transient failures within the caller's deadline."""

    def __init__(
        self,
        settings: LoyaltySettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        options: HttpOptions | None = None,
    ) -> None:
        """`options`: HTTP_TRANSPORT and the response cap (CoreSettings.http_options)."""
        if settings.api_base_url is None:
            raise ValueError("missing setting LOYALTY_API_BASE_URL")
        self._settings = settings
        self._base = settings.api_base_url.rstrip("/")
        self._timeouts = Timeouts(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            total=settings.timeout_seconds,
        )
        self._retry = retry or RetryPolicy(max_attempts=settings.max_attempts)
        self._client = new_client(timeouts=self._timeouts, transport=transport, options=options)
        self._auth = self._build_auth(clock)
        #: outbound lookups made (the bench reports it)
        self.requests = 0
        self.invalid_emails = InvalidEmails()

    def _build_auth(self, clock: Callable[[], float]) -> httpx.Auth | None:
        s = self._settings
        match s.auth:
            case LoyaltyAuth.HEADER:
                assert s.api_key is not None
                return HeaderAuth(header=s.api_key_header, key=s.api_key, prefix=s.api_key_prefix)
            case LoyaltyAuth.BASIC:
                assert s.username is not None
                assert s.password is not None
                return httpx.BasicAuth(s.username, s.password.get_secret_value())
            case LoyaltyAuth.OAUTH2:
                assert s.token_url is not None
                assert s.client_id is not None
                assert s.client_secret is not None
                return ClientCredentialsAuth(
                    system=SYSTEM,
                    client=self._client,
                    token_url=s.token_url,
                    client_id=s.client_id,
                    client_secret=s.client_secret,
                    scope=s.scope,
                    timeouts=self._timeouts,
                    clock=clock,
                )
            case LoyaltyAuth.NONE:
                return None

    async def lookup(self, card: str, *, deadline: float) -> Customer | None:
        return await call_with_retries(
            lambda: self._lookup_once(card), policy=self._retry, deadline=deadline
        )

    async def _lookup_once(self, card: str) -> Customer | None:
        url = self._base + self._settings.lookup_path.format(
            card=quote(card.replace(" ", ""), safe="")
        )
        request = self._client.build_request("GET", url, headers={"Accept": "application/json"})
        self.requests += 1
        response = await send(
            self._client, request, system=SYSTEM, timeouts=self._timeouts, auth=self._auth
        )
        if response.status_code in self._settings.not_found_statuses:
            return None
        if response.status_code != 200:
            raise error_from_response(SYSTEM, response)
        try:
            document = response.json()
        except ValueError:
            # A 200 that is not JSON is a proxy or an outage page, not an answer about this card.
            raise DeliveryError(
                kind=FailureKind.TRANSIENT,
                system=SYSTEM,
                status=200,
                message="response is not JSON",
            ) from None
        return customer_from_document(document, self._settings, invalid_email=self.invalid_emails)

    async def aclose(self) -> None:
        await self._client.aclose()
