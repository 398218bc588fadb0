"""The delivery overview workbook (Azure Monitor Workbooks, `Notebook/1.0`), generated: the lane
picker lists the lanes of infra/lanes.json, so a new destination appears in it with
`python -m order_processor.infra_lanes`, which writes this as infra/workbook.json (main.bicep
loads it) and as main.json's `workbookContent` variable.

Every tile queries Application Insights (`customMetrics`, `requests`, `traces`) for what the app
emits (docs/operations.md, "Traces and metrics"): the metrics of the observers, the lane gauges
of the `lane_metrics` function, the `deliver <name>` spans (consumer spans, which Application
Insights keeps in `requests`), the settled-message log lines. tests/test_workbook.py checks every
metric name, dimension, value and span or log attribute a query reads against what the app
emits, so a rename cannot leave a tile silently blank.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

#: Notebook/1.0 tiles: 1 text, 3 query, 9 parameters (the Workbooks schema,
#: https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json)
TEXT, QUERY, PARAMETERS = 1, 3, 9
LOGS = 0  # queryType: Logs (KQL)
INSIGHTS = "microsoft.insights/components"
SCHEMA = (
    "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"
)
#: the lane of the orders subscription in the lane gauges (order_processor.overview.lanes)
ORDERS_LANE = "orders"

_OUTCOMES = """customMetrics
| where name in ("orders.deliveries", "orders.retries_scheduled", "orders.dead_letters")
| extend destination = tostring(customDimensions["orders.destination"]),
         lane = tostring(customDimensions["orders.lane"]),
         result = tostring(customDimensions["orders.result"])
| extend lane = iff(name == "orders.deliveries", destination, lane)
| extend outcome = case(name == "orders.retries_scheduled", "retried",
                        name == "orders.dead_letters", "dead-lettered",
                        result in ("delivered", "skipped"), result, "")
| where isnotempty(outcome) and lane in ({Lanes})"""

_GAUGE = """customMetrics
| where name == "{metric}"
| extend lane = tostring(customDimensions["orders.lane"]),
         subscription = tostring(customDimensions["orders.subscription"])
| where lane in ({{Lanes}})
| summarize {column} = max(value){scale} by subscription, bin(timestamp, {{TimeRange:grain}})
| render timechart"""

_DELIVER_SPANS = """requests
| where name startswith "deliver "
| extend destination = tostring(customDimensions["orders.destination"])
| where destination in ({Lanes})"""


def _gauge(metric: str, column: str, scale: str = "") -> str:
    return _GAUGE.format(metric=metric, column=column, scale=scale)


#: (name, title, width %, visualization, query); the grid fills left to right
TILES: tuple[tuple[str, str, int, str, str], ...] = (
    (
        "outcomes-over-time",
        "Per lane: delivered, skipped, retried, dead-lettered",
        100,
        "timechart",
        _OUTCOMES
        + """
| summarize messages = sum(valueSum)
  by series = strcat(lane, ": ", outcome), bin(timestamp, {TimeRange:grain})
| render timechart""",
    ),
    (
        "outcomes-per-lane",
        "Per lane, over the time range",
        50,
        "table",
        _OUTCOMES
        + """
| summarize messages = sum(valueSum) by lane, outcome
| evaluate pivot(outcome, sum(messages))
| order by lane asc""",
    ),
    (
        "lanes-now",
        "Lanes now (lane_metrics, last 10 minutes)",
        50,
        "table",
        """customMetrics
| where timestamp > ago(10m)
| where name in ("orders.lane.active_messages", "orders.lane.dead_letter_messages",
                 "orders.lane.oldest_message_age", "orders.lane.paused")
| extend lane = tostring(customDimensions["orders.lane"]),
         subscription = tostring(customDimensions["orders.subscription"])
| where lane in ({Lanes})
| summarize arg_max(timestamp, value) by lane, subscription, name
| summarize active = take_anyif(value, name == "orders.lane.active_messages"),
            deadLetters = take_anyif(value, name == "orders.lane.dead_letter_messages"),
            oldestMinutes = round(
                take_anyif(value, name == "orders.lane.oldest_message_age") / 60.0, 1),
            paused = take_anyif(value, name == "orders.lane.paused") == 1
  by lane, subscription
| order by lane asc""",
    ),
    (
        "backlog",
        "Backlog per subscription (active messages)",
        50,
        "timechart",
        _gauge("orders.lane.active_messages", "active"),
    ),
    (
        "dead-letter-depth",
        "Dead-letter depth per subscription",
        50,
        "timechart",
        _gauge("orders.lane.dead_letter_messages", "deadLetters"),
    ),
    (
        "oldest-message",
        "Oldest waiting message per subscription (minutes)",
        50,
        "timechart",
        _gauge("orders.lane.oldest_message_age", "oldestMinutes", " / 60.0"),
    ),
    (
        "paused",
        "Paused lanes (1 while AzureWebJobs.<function>.Disabled)",
        50,
        "timechart",
        _gauge("orders.lane.paused", "paused"),
    ),
    (
        "scheduled",
        "Retry copies scheduled on the topic (all lanes)",
        50,
        "timechart",
        """customMetrics
| where name == "orders.topic.scheduled_messages"
| extend topic = tostring(customDimensions["orders.topic"])
| summarize scheduled = max(value) by topic, bin(timestamp, {TimeRange:grain})
| render timechart""",
    ),
    (
        "loyalty-cache",
        "Loyalty cache hit ratio",
        50,
        "timechart",
        """customMetrics
| where name == "orders.loyalty.lookups"
| extend cache = tostring(customDimensions["cache"])
| summarize hits = sumif(valueSum, cache == "hit"), lookups = sum(valueSum)
  by bin(timestamp, {TimeRange:grain})
| extend hitRatio = iff(lookups > 0, hits / lookups, real(null))
| project timestamp, hitRatio
| render timechart""",
    ),
    (
        "latency-percentiles",
        "Time in the lane per message, by vendor (ms; per batch with ORDERS_BATCH_ENABLED)",
        50,
        "table",
        _DELIVER_SPANS
        + """
| summarize p50 = percentile(duration, 50), p95 = percentile(duration, 95),
            p99 = percentile(duration, 99), spans = count() by destination
| order by destination asc""",
    ),
    (
        "latency-p95",
        "p95 per vendor over time (ms)",
        50,
        "timechart",
        _DELIVER_SPANS
        + """
| summarize p95 = percentile(duration, 95) by destination, bin(timestamp, {TimeRange:grain})
| render timechart""",
    ),
    (
        "end-to-end",
        "Order to vendor, end to end (minutes: average, worst)",
        50,
        "timechart",
        """customMetrics
| where name == "orders.delivery.latency" and valueCount > 0
| extend destination = tostring(customDimensions["orders.destination"])
| where destination in ({Lanes})
| summarize average = sum(valueSum) / sum(valueCount) / 60000.0, worst = max(valueMax) / 60000.0
  by destination, bin(timestamp, {TimeRange:grain})
| render timechart""",
    ),
    (
        "dead-letter-reasons",
        "Top dead-letter reasons per lane",
        50,
        "table",
        """customMetrics
| where name == "orders.dead_letters"
| extend lane = tostring(customDimensions["orders.lane"]),
         reason = tostring(customDimensions["orders.reason"])
| where lane in ({Lanes})
| summarize deadLetters = sum(valueSum) by lane, reason
| top 10 by deadLetters desc""",
    ),
    (
        "rejections",
        "Top rejections, in the vendors' words (dead-letter descriptions)",
        100,
        "table",
        """traces
| where message startswith "deliver message "
| where tostring(customDimensions["outcome"]) == "dead-letter"
| extend lane = tostring(customDimensions["destination"]),
         reason = tostring(customDimensions["reason"]),
         description = substring(tostring(customDimensions["description"]), 0, 160),
         order = tostring(customDimensions["order_id"])
| where lane in ({Lanes})
| summarize messages = count(), orders = dcount(order) by lane, reason, description
| top 10 by messages desc""",
    ),
)

INTRO = """## Delivery overview

Where orders went and how each lane is doing. Lanes: `orders` (the orders subscription, \
`accept_order`), one per destination (`deliver_<name>`), `accept` (the accept stage's retry \
lane). One order's story: `python -m order_processor trace ORDER_ID`; the lanes right now: \
`python -m order_processor lanes`; what to do when a tile turns red: docs/operations.md."""


def _id(name: str) -> str:
    """Stable ids, so a regenerated workbook is the same document."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"instore-order-sync/workbook/{name}"))


def lane_names(lanes: list[dict[str, Any]]) -> list[str]:
    return [ORDERS_LANE, *(lane["name"] for lane in lanes)]


def _parameters(lanes: list[dict[str, Any]]) -> dict[str, Any]:
    choices = [{"value": name, "label": name} for name in lane_names(lanes)]
    return {
        "type": PARAMETERS,
        "name": "parameters",
        "content": {
            "version": "KqlParameterItem/1.0",
            "style": "pills",
            "queryType": LOGS,
            "resourceType": INSIGHTS,
            "parameters": [
                {
                    "id": _id("TimeRange"),
                    "version": "KqlParameterItem/1.0",
                    "name": "TimeRange",
                    "label": "Time range",
                    "type": 4,
                    "isRequired": True,
                    "value": {"durationMs": 86_400_000},
                    "typeSettings": {
                        "allowCustom": True,
                        "selectableValues": [
                            {"durationMs": ms}
                            for ms in (3_600_000, 14_400_000, 86_400_000, 259_200_000, 604_800_000)
                        ],
                    },
                },
                {
                    "id": _id("Lanes"),
                    "version": "KqlParameterItem/1.0",
                    "name": "Lanes",
                    "label": "Lanes",
                    "type": 2,
                    "isRequired": True,
                    "multiSelect": True,
                    "quote": "'",
                    "delimiter": ",",
                    "jsonData": json.dumps(choices),
                    "value": ["value::all"],
                    "typeSettings": {"additionalResourceOptions": ["value::all"]},
                    "defaultValue": "value::all",
                },
            ],
        },
    }


def _tile(name: str, title: str, width: int, visualization: str, query: str) -> dict[str, Any]:
    content: dict[str, Any] = {
        "version": "KqlItem/1.0",
        "query": query,
        "size": 0,
        "title": title,
        "queryType": LOGS,
        "resourceType": INSIGHTS,
        "visualization": visualization,
    }
    if "ago(" in query:
        content["timeContext"] = {"durationMs": 900_000}
    else:
        content["timeContextFromParameter"] = "TimeRange"
    tile: dict[str, Any] = {"type": QUERY, "name": name, "content": content}
    if width != 100:
        tile["customWidth"] = str(width)
    return tile


def workbook(lanes: list[dict[str, Any]]) -> dict[str, Any]:
    """The workbook's content (serializedData without `fallbackResourceIds`, which the template
    adds: the Application Insights resource it opens on)."""
    return {
        "version": "Notebook/1.0",
        "items": [
            {"type": TEXT, "name": "intro", "content": {"json": INTRO}},
            _parameters(lanes),
            *(_tile(*tile) for tile in TILES),
        ],
        "isLocked": False,
        "$schema": SCHEMA,
    }


def queries(content: dict[str, Any]) -> dict[str, str]:
    """Tile name -> its KQL, from a workbook's content (what the tests check)."""
    return {
        item["name"]: item["content"]["query"] for item in content["items"] if item["type"] == QUERY
    }


def arm_literal(value: Any) -> Any:
    """`value` as a literal inside an ARM template: a string that starts with `[` would be read as
    an expression, so it is escaped as `[[` (what Bicep's compiler writes)."""
    if isinstance(value, str):
        return "[" + value if value.startswith("[") else value
    if isinstance(value, dict):
        return {key: arm_literal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [arm_literal(item) for item in value]
    return value
