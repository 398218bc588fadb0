"""Outbound URL settings, checked at start-up.

A malformed URL would otherwise load fine and then fail every message as a *transient* network
error (httpx's UnsupportedProtocol), to be retried for hours. The scheme's case is normalised, so
`HTTP://` meets the same https-only rule as `http://`.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

SCHEMES = frozenset({"http", "https"})


def check_outbound_url(value: str) -> str:
    """The URL with its scheme lower-cased, or ValueError saying what is wrong (never echoing
    the whole value: a URL may carry a key in its path)."""
    text = value.strip()
    if any(character.isspace() for character in text):
        raise ValueError("must not contain spaces")
    if "://" not in text:
        raise ValueError("must be an absolute URL with its scheme, such as https://api.example.com")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"must be an https:// URL (got a {scheme or 'missing'} scheme)")
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if not host:
        raise ValueError("must name a host, such as https://api.example.com")
    return scheme + text[len(parts.scheme) :]


#: a str setting that must be an absolute http(s) URL with a host
OutboundUrl = Annotated[str, AfterValidator(check_outbound_url)]


def is_plain_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "http"
