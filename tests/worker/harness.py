"""Run this app under Microsoft's library worker (azure-functions-runtime), as Azure does on 3.13.

    python -m tests.worker.harness      (from the app directory, in the 3.13 environment)

On Python 3.13 Azure starts a proxy worker that owns the gRPC stream to the host and hands each
request to the library worker's public coroutines. This harness plays both the host and that
proxy, in one process and without a gRPC stream:

1. as the host: start the fake Settlement service on a loopback port, and put on the command line
   what the host puts there (`--host`, `--port`, `--functions-grpc-max-message-length`, ...);
   ServiceBusMessageActions reads its settlement endpoint from exactly those arguments;
2. as the proxy: `start_threadpool_executor()`, then `worker_init_request` (with the `protos`
   and `host` properties only init gets), `functions_metadata_request`, `function_load_request`
   for every function the metadata lists, `invocation_request` for every Service Bus trigger,
   each request wrapped in a StreamingMessage as the proxy receives it;
3. invocations: for each trigger the plan's first matching pattern gives the message bodies; a
   `cardinality=many` trigger gets them all in one invocation, any other one per invocation;
4. the report (worker results, functions, what the fake recorded) goes to $WORKER_HARNESS_REPORT.

Nothing here names a function: they are discovered from the worker's metadata response.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.worker import host_messages, protos
from tests.worker.fake_settlement import serve_settlement
from tests.worker.plan import (
    PLAN_ENV,
    REPORT_ENV,
    Function,
    Invocation,
    Message,
    Plan,
    Report,
    Sent,
    Status,
)

HOST = "127.0.0.1"
# The host's default (int.MaxValue); the extension requires the argument to be present.
GRPC_MAX_MESSAGE_LENGTH = 2_147_483_647


@dataclass
class WorkerRequest:
    """What the proxy worker passes to each library worker coroutine."""

    name: str
    request: protos.StreamingMessage
    properties: dict[str, Any] = field(default_factory=dict)


def host_command_line(port: int) -> list[str]:
    """The worker's arguments as the host passes them (both spellings, as the proxy accepts)."""
    worker_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    return [
        *("--host", HOST, "--port", str(port)),
        *("--workerId", worker_id, "--requestId", request_id),
        *("--grpcMaxMessageLength", str(GRPC_MAX_MESSAGE_LENGTH)),
        *("--functions-uri", f"http://{HOST}:{port}/"),
        *("--functions-worker-id", worker_id, "--functions-request-id", request_id),
        *("--functions-grpc-max-message-length", str(GRPC_MAX_MESSAGE_LENGTH)),
    ]


def status(result: protos.StatusResult) -> Status:
    name = protos.StatusResult.Status.Name(result.status)
    exception = None
    if result.HasField("exception"):
        exception = f"{result.exception.message}\n{result.exception.stack_trace}".strip()
    return {"status": name, "exception": exception}


def service_bus_triggers(function: Function) -> list[dict[str, Any]]:
    return [b for b in function["bindings"] if b.get("type") == "serviceBusTrigger"]


def planned_messages(plan: Plan, function_name: str) -> list[Message] | None:
    for pattern, messages in plan["messages"]:
        if fnmatch.fnmatchcase(function_name, pattern):
            return messages
    return None


class Proxy:
    """The proxy worker's side of each request, for one library worker module."""

    def __init__(self, worker: Any, app_directory: str) -> None:
        self.worker = worker
        self.app_directory = app_directory
        self.metadata: dict[str, protos.RpcFunctionMetadata] = {}

    async def init(self) -> Status:
        self.worker.start_threadpool_executor()
        message = host_messages.worker_init(
            app_directory=self.app_directory, worker_directory=str(Path(__file__).parent)
        )
        request = WorkerRequest("WorkerInitRequest", message, {"protos": protos, "host": HOST})
        return status((await self.worker.worker_init_request(request)).result)

    async def functions(self) -> tuple[Status, list[Function]]:
        message = host_messages.functions_metadata(self.app_directory)
        response = await self.worker.functions_metadata_request(
            WorkerRequest("WorkerMetadataRequest", message)
        )
        found: list[Function] = []
        for metadata in response.function_metadata_results:
            self.metadata[metadata.name] = metadata
            bindings = [json.loads(raw) for raw in metadata.raw_bindings]
            found.append(
                {"name": metadata.name, "function_id": metadata.function_id, "bindings": bindings}
            )
        return status(response.result), found

    async def load(self, name: str) -> Status:
        message = host_messages.function_load(self.metadata[name])
        response = await self.worker.function_load_request(
            WorkerRequest("FunctionLoadRequest", message)
        )
        return status(response.result)

    async def invoke(
        self, name: str, binding: dict[str, Any], messages: list[Message]
    ) -> list[Invocation]:
        many = str(binding.get("cardinality", "one")).lower() == "many"
        sessions = bool(binding.get("isSessionsEnabled"))
        sent = [
            host_messages.ServiceBusMessage(
                body=base64.b64decode(m["body_b64"]),
                message_id=f"{name}-{index}",
                session_id=f"session-{index}" if sessions else None,
                sequence_number=index + 1,
            )
            for index, m in enumerate(messages)
        ]
        labels = [m["label"] for m in messages]
        batches = [list(zip(labels, sent, strict=True))]
        if not many:
            batches = [[pair] for pair in batches[0]]
        invocations: list[Invocation] = []
        for batch in batches:
            request = host_messages.invocation(
                function=self.metadata[name],
                binding_name=str(binding["name"]),
                messages=[message for _, message in batch],
                many=many,
            )
            response = await self.worker.invocation_request(
                WorkerRequest("FunctionInvocationRequest", request)
            )
            invocations.append(
                {
                    "function": name,
                    "cardinality": "many" if many else "one",
                    "result": status(response.result),
                    "messages": [
                        Sent(label=label, lock_token=str(message.lock_token))
                        for label, message in batch
                    ],
                }
            )
        return invocations

    def stop(self) -> None:
        # What the proxy's Dispatcher.stop() asks of the library when the worker stops.
        self.worker.stop_threadpool_executor()


async def drive(plan: Plan) -> Report:
    import azure_functions_runtime  # the library the proxy picks for a function_app.py app

    proxy = Proxy(azure_functions_runtime, plan["app_directory"])
    init = await proxy.init()
    metadata, functions = await proxy.functions()
    report: Report = {
        "worker_version": azure_functions_runtime.version.VERSION,
        "python_version": sys.version.split()[0],
        "init": init,
        "metadata": metadata,
        "functions": functions,
        "loads": {f["name"]: await proxy.load(f["name"]) for f in functions},
        "unplanned": [],
        "invocations": [],
        "settlements": [],
    }
    for function in functions:
        for binding in service_bus_triggers(function):
            messages = planned_messages(plan, function["name"])
            if messages is None:
                report["unplanned"].append(function["name"])
                continue
            report["invocations"] += await proxy.invoke(function["name"], binding, messages)
    proxy.stop()
    return report


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    plan: Plan = json.loads(Path(os.environ[PLAN_ENV]).read_text())
    # The proxy puts the app's directory on sys.path before the library imports function_app.
    if plan["app_directory"] not in sys.path:
        sys.path.insert(0, plan["app_directory"])
    server, recorder, port = serve_settlement(HOST)
    sys.argv[1:] = host_command_line(port)
    try:
        report = asyncio.run(drive(plan))
    finally:
        server.stop(grace=None)
    report["settlements"] = [settled.as_json() for settled in recorder.settled]
    Path(os.environ[REPORT_ENV]).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
