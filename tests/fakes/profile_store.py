"""Profile Store Track API as documented: `POST /api/v1.0/Track` (one event) and
`POST /api/v1.0/TrackBulk` (an array of up to 100), subscription key or epi-single auth,
deviceId/eventType/value required, eventTime in UTC `Z`, the site's lowercase scope,
256 KB an event."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.base import FakeServer, Recorded, Reply

API_KEY = "profile-store-test-key"
SCOPE = "retailsite"
MAX_EVENT_BYTES = 256 * 1024


class ProfileStoreRules:
    def __init__(self, *, auth_style: str = "epi-single", scope: str = SCOPE) -> None:
        self.auth_style = auth_style
        self.scope = scope
        self.accepted: list[dict[str, Any]] = []

    def _authorised(self, request: Recorded) -> bool:
        if self.auth_style == "epi-single":
            return request.header("authorization") == f"epi-single {API_KEY}"
        return request.header("ocp-apim-subscription-key") == API_KEY

    def _problem(self, event: Any) -> str | None:
        if not isinstance(event, dict):
            return "event must be a JSON object"
        for name in ("deviceId", "eventType", "value"):
            if not isinstance(event.get(name), str) or not event[name]:
                return f"{name} is required"
        if "eventTime" in event and not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", event["eventTime"]
        ):
            return "eventTime must be UTC ISO 8601 ending in Z"
        if event.get("scope") != self.scope:
            return "scope does not match the site's scope"
        if len(json.dumps(event).encode()) > MAX_EVENT_BYTES:
            return "event is larger than 256 KB"
        return None

    def __call__(self, request: Recorded) -> Reply:
        if not self._authorised(request):
            return Reply(
                401,
                {"statusCode": 401, "message": "Access denied due to invalid subscription key."},
            )
        if request.method != "POST" or request.path not in (
            "/api/v1.0/Track",
            "/api/v1.0/TrackBulk",
        ):
            return Reply(404, {"statusCode": 404, "message": "Resource not found"})
        if not (request.header("content-type") or "").startswith("application/json"):
            return Reply(415, {"message": "Content-Type must be application/json"})
        try:
            document = request.json()
        except ValueError:
            return Reply(400, {"message": "body is not valid JSON"})
        events = document if request.path.endswith("TrackBulk") else [document]
        if request.path.endswith("TrackBulk") and (
            not isinstance(document, list) or not 0 < len(document) <= 100
        ):
            return Reply(400, {"message": "TrackBulk takes an array of 1 to 100 events"})
        for event in events:
            if (problem := self._problem(event)) is not None:
                return Reply(400, {"message": problem})
        self.accepted.extend(events)
        return Reply(202, None)


def settings_for(url: str) -> dict[str, Any]:
    """The destination's settings (field -> value) that point it at this fake."""
    return {"base_url": url, "api_key": API_KEY, "scope": SCOPE}


RULES = ProfileStoreRules


def profile_store_server(**rules: Any) -> tuple[FakeServer, ProfileStoreRules]:
    handler = ProfileStoreRules(**rules)
    return FakeServer(handler), handler
