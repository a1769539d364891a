"""Local (never global) SDK providers with in-memory exporters, and small domain fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from steerguard.policy.decision import BundleRef, Decision, Evidence, RuleMatch
from steerguard.runtime.plan import Intervention, Positions, SteeringPlan
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult
from steerguard.telemetry import Telemetry


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    telemetry: Telemetry

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"{name}: {[s.name for s in self.spans()]}"
        return found[0]

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            m.name: m
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }


def make_otel(capture_content: bool = False) -> Otel:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tel = Telemetry(tracer_provider, meter_provider, capture_content=capture_content)
    return Otel(exporter, reader, tracer_provider, meter_provider, tel)


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = make_otel()
    yield o
    o.tracer_provider.shutdown()
    o.meter_provider.shutdown()


def intervention(vector: str = "calm", rule: str | None = "r.calm") -> Intervention:
    return Intervention(vector=vector, layers=(2, 3), strength=0.25,
                        positions=Positions.parse("generated"), source=rule)


@pytest.fixture
def decision() -> Decision:
    plan = SteeringPlan(interventions=(intervention(), intervention("formal", None)))
    return Decision(
        decision_id="dec-1",
        bundle=BundleRef(name="default", revision="rev-7", content_hash="abc123"),
        matched=(RuleMatch(rule_id="r.calm", priority=10,
                           evidence=(Evidence(predicate="keywords", source="message.user",
                                              detail="angry"),)),),
        plan=plan,
    )


@pytest.fixture
def result(decision: Decision) -> GenerationResult:
    reports = tuple(
        InterventionReport(
            index=n, intervention=iv, vector_hash=f"h{n}", coefficients={2: 1.5, 3: 2.0},
            layers=(LayerMeasurement(layer=2, positions_affected=4, delta_norm=1.0,
                                     projection_before=0.1, projection_after=1.1),
                    LayerMeasurement(layer=3, positions_affected=4, delta_norm=3.0,
                                     projection_before=0.2, projection_after=2.2)),
        )
        for n, iv in enumerate(decision.plan.interventions)
    )
    return GenerationResult(text="hello there", token_ids=(5, 6, 7), prompt_tokens=11,
                            finish_reason="stop", reports=reports)
