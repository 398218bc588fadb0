"""The loopback fake of tests/test_registry.py's fifth destination, "Acme CDP": what a new
destination's fake module holds (RULES, settings_for and its credentials)."""

from __future__ import annotations

from typing import Any

from tests.fakes.base import Recorded, Reply

API_KEY = "acme-test-key"


class AcmeRules:
    """Acme CDP's documented behaviour: POST /orders with X-Api-Key, a JSON order, 201."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []

    def __call__(self, request: Recorded) -> Reply:
        if request.header("x-api-key") != API_KEY:
            return Reply(401, {"error": "bad key"})
        if (request.method, request.path) != ("POST", "/orders"):
            return Reply(404, {"error": "not found"})
        self.accepted.append(request.json())
        return Reply(201, {"id": "acme-1"})


RULES = AcmeRules


def settings_for(url: str) -> dict[str, Any]:
    """The destination's settings (field -> value) that point it at this fake."""
    return {"base_url": url, "api_key": API_KEY}
