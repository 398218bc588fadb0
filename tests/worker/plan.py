"""What the test asks the harness to send, and what the harness reports back (JSON files).

Shared by both sides: the pytest process (Python 3.11) writes the plan and reads the report; the
harness (Python 3.13, in its own virtual environment) reads the plan and writes the report.
Standard library only, so both interpreters can import it.
"""

from __future__ import annotations

from typing import TypedDict

# Environment variables naming the two files: the harness's command line is the host's.
PLAN_ENV = "WORKER_HARNESS_PLAN"
REPORT_ENV = "WORKER_HARNESS_REPORT"


class Message(TypedDict):
    label: str
    body_b64: str


class Plan(TypedDict):
    app_directory: str
    # (fnmatch pattern on the function name, messages); the first matching pattern applies.
    messages: list[tuple[str, list[Message]]]


class Status(TypedDict):
    status: str  # StatusResult.Status name: Success, Failure, Cancelled
    exception: str | None


class Function(TypedDict):
    name: str
    function_id: str
    bindings: list[dict[str, object]]


class Sent(TypedDict):
    label: str
    lock_token: str


class Invocation(TypedDict):
    function: str
    cardinality: str
    result: Status
    messages: list[Sent]


class Settlement(TypedDict):
    action: str
    lock_token: str
    reason: str | None
    description: str | None


class Report(TypedDict):
    worker_version: str
    python_version: str
    init: Status
    metadata: Status
    functions: list[Function]
    loads: dict[str, Status]
    unplanned: list[str]  # Service Bus triggers no pattern of the plan matched
    invocations: list[Invocation]
    settlements: list[Settlement]
