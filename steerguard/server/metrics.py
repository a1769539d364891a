"""The server's own instruments, next to the ones steerguard.telemetry defines: queue depth,
rows per decode step, time to first token, requests by status."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from steerguard.telemetry import attributes as a

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 6, 8, 12, 16, 24, 32, 64)


class ServerMetrics:
    def __init__(
        self,
        queue_depth: Callable[[], int],
        active_rows: Callable[[], int],
        meter_provider: MeterProvider | None = None,
    ) -> None:
        meter = metrics.get_meter("steerguard.server", None, meter_provider,
                                  schema_url=a.SCHEMA_URL)

        def gauge(read: Callable[[], int]) -> Callable[[CallbackOptions], Sequence[Observation]]:
            return lambda _options: [Observation(read())]

        meter.create_observable_gauge(
            "steerguard.server.queue_depth", callbacks=[gauge(queue_depth)], unit="{request}",
            description="Requests waiting for a batch row.",
        )
        meter.create_observable_gauge(
            "steerguard.server.active_rows", callbacks=[gauge(active_rows)], unit="{request}",
            description="Requests generating now.",
        )
        self.batch_size = meter.create_histogram(
            "steerguard.server.batch_size", unit="{request}",
            description="Rows in each decode step.",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self.ttft = meter.create_histogram(
            "steerguard.server.time_to_first_token", unit="s",
            description="From receiving a chat request to its first output token.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.requests = meter.create_counter(
            "steerguard.server.requests", unit="{request}",
            description="Chat completion requests answered, by HTTP status.",
        )
