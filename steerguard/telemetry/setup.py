"""SDK setup for applications (the CLI, the demo, the examples); the library never calls this.

Exporters follow the standard environment variables:
  OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER  console, otlp, none (comma separated)
  OTEL_EXPORTER_OTLP_ENDPOINT (and the per-signal *_TRACES_/*_METRICS_ENDPOINT)
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_METRIC_EXPORT_INTERVAL, ...
With none of them set, `console=True` prints spans and metrics to stderr (stdout stays the
command's own output) and `console=False` exports nothing. An OTLP endpoint alone selects OTLP.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from steerguard.telemetry.attributes import SCHEMA_URL

log = logging.getLogger(__name__)

_OTLP_ENDPOINTS = {
    "traces": ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    "metrics": ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
}


@dataclass(frozen=True)
class TelemetrySetup:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    traces_exporters: tuple[str, ...]
    metrics_exporters: tuple[str, ...]

    def shutdown(self) -> None:
        """Flush and stop; the SDK also does this at interpreter exit."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_configured: TelemetrySetup | None = None
_lock = threading.Lock()


def exporter_names(signal: str, console: bool) -> tuple[str, ...]:
    """Which exporters the environment asks for `signal` ("traces" or "metrics")."""
    explicit = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if explicit:
        names = tuple(n.strip().lower() for n in explicit.split(",") if n.strip())
        return () if "none" in names else names
    if any(os.environ.get(var) for var in _OTLP_ENDPOINTS[signal]):
        return ("otlp",)
    return ("console",) if console else ()


def _check_protocol() -> None:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not installed; using http/protobuf",
                    protocol)


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _check_protocol()
        return OTLPSpanExporter()  # endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*
    log.warning("unknown traces exporter %r ignored", name)
    return None


def _metric_exporter(name: str) -> MetricExporter | None:
    if name == "console":
        return ConsoleMetricExporter(out=sys.stderr)
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        _check_protocol()
        return OTLPMetricExporter()
    log.warning("unknown metrics exporter %r ignored", name)
    return None


def configure_telemetry(
    console: bool = True,
    service_name: str = "steerguard",
    extra_readers: tuple[MetricReader, ...] = (),
) -> TelemetrySetup:
    """Install SDK tracer and meter providers globally, once per process (later calls return
    the first setup: the global providers cannot be replaced). `extra_readers` are added to
    the environment's (the server's Prometheus reader)."""
    global _configured
    with _lock:
        if _configured is not None:
            return _configured
        attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
        resource = Resource.create(attrs, schema_url=SCHEMA_URL)  # merges OTEL_RESOURCE_ATTRIBUTES

        traces = exporter_names("traces", console)
        tracer_provider = TracerProvider(resource=resource)
        for name in traces:
            span_exporter = _span_exporter(name)
            if span_exporter is not None:
                tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))

        metric_names = exporter_names("metrics", console)
        readers: list[MetricReader] = list(extra_readers)
        for name in metric_names:
            metric_exporter = _metric_exporter(name)
            if metric_exporter is not None:
                readers.append(PeriodicExportingMetricReader(metric_exporter))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)

        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _configured = TelemetrySetup(tracer_provider, meter_provider, traces, metric_names)
        return _configured
