"""What the `lane_metrics` function runs every minute: every lane's status, read as the `lanes`
command reads it (counts from Azure Resource Manager in Azure, `SERVICE_BUS_RESOURCE_ID`; the
oldest message from a peek; paused from the app's own settings), handed to the observers, which
report it as gauges (`orders.lane.*`, `orders.topic.scheduled_messages`). Service Bus has no
per-subscription metric; these gauges are what the workbook and the per-lane depth, age and pause
alerts read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from azure.servicebus import aio

from order_processor.observe import Observer
from order_processor.overview.counts import CountsSource, counts_source
from order_processor.overview.lanes import LanesReport, read_lanes
from order_processor.servicebus import service_bus_client
from order_processor.settings import AppSettings


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LaneMetrics:
    """Its clients are opened on the first run and kept (one token, one connection) until
    `aclose`."""

    def __init__(
        self,
        settings: AppSettings,
        observer: Observer,
        *,
        environ: Mapping[str, str] = os.environ,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self._environ = environ
        self._now = now
        self._counts: CountsSource | None = None
        self._client: aio.ServiceBusClient | None = None

    async def run(self) -> LanesReport:
        if self._counts is None:
            self._counts = counts_source(self.settings)
        if self._client is None:
            self._client = service_bus_client(self.settings.service_bus)
        report = await read_lanes(
            self.settings,
            counts=self._counts,
            client=self._client,
            environ=self._environ,
            now=self._now(),
        )
        self.observer.lanes_read(*report.readings())
        return report

    async def aclose(self) -> None:
        counts, client, self._counts, self._client = self._counts, self._client, None, None
        if counts is not None:
            await counts.close()
        if client is not None:
            await client.close()
