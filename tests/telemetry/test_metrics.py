"""Metric points from a local MeterProvider with an in-memory reader."""

from __future__ import annotations

import gc

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

from steerguard.policy.decision import Decision
from steerguard.runtime.result import GenerationResult
from steerguard.telemetry import attributes as a
from tests.telemetry.conftest import Otel
from tests.telemetry.test_spans import run_request


def points(otel: Otel, name: str) -> list[HistogramDataPoint | NumberDataPoint]:
    metric = otel.metrics()[name]
    return list(metric.data.data_points)  # type: ignore[arg-type]


def by_attr(pts: list, key: str) -> dict[object, object]:
    return {dict(p.attributes)[key]: p for p in pts}


def test_token_usage_and_duration(otel: Otel, decision: Decision, result: GenerationResult
                                  ) -> None:
    run_request(otel, decision, result)
    usage = by_attr(points(otel, a.METRIC_TOKEN_USAGE), a.GEN_AI_TOKEN_TYPE)
    assert usage["input"].sum == 11  # type: ignore[attr-defined]
    assert usage["output"].sum == 3  # type: ignore[attr-defined]
    attrs = dict(usage["input"].attributes)  # type: ignore[attr-defined]
    assert attrs[a.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[a.GEN_AI_PROVIDER_NAME] == "steerguard"
    assert attrs[a.GEN_AI_REQUEST_MODEL] == "tiny"
    assert tuple(usage["input"].explicit_bounds) == a.TOKEN_USAGE_BUCKETS  # type: ignore[attr-defined]
    (duration,) = points(otel, a.METRIC_OPERATION_DURATION)
    assert duration.count == 1  # type: ignore[union-attr]
    assert a.ERROR_TYPE not in dict(duration.attributes or {})


def test_failed_call_duration_carries_error_type(otel: Otel) -> None:
    with pytest.raises(ValueError), otel.telemetry.model_call("tiny"):
        raise ValueError("bad")
    (duration,) = points(otel, a.METRIC_OPERATION_DURATION)
    assert dict(duration.attributes or {})[a.ERROR_TYPE] == "ValueError"


def test_interventions_by_vector_and_rule(otel: Otel, decision, result) -> None:
    run_request(otel, decision, result)
    run_request(otel, decision, result)
    counts = {
        (dict(p.attributes or {})[a.VECTOR_NAME], dict(p.attributes or {})[a.RULE_ID]): p.value
        for p in points(otel, a.METRIC_INTERVENTIONS)
    }
    assert counts == {("calm", "r.calm"): 2, ("formal", "none"): 2}


def test_decision_latency(otel: Otel, decision, result) -> None:
    run_request(otel, decision, result)
    (point,) = points(otel, a.METRIC_DECISION_DURATION)
    assert point.count == 1  # type: ignore[union-attr]
    assert dict(point.attributes or {}) == {a.POLICY_BUNDLE: "default",
                                           a.POLICY_OUTCOME: "steered"}


class FakeAuditLog:
    def __init__(self) -> None:
        self.numbers = {"queue_depth": 4, "written": 10, "spilled": 2, "dropped": 1,
                        "rewritten": 3, "lost": 0, "spill_rejected": 1}

    def stats(self) -> dict[str, int]:
        return self.numbers


def test_audit_gauge_and_counters(otel: Otel) -> None:
    log = FakeAuditLog()
    unregister = otel.telemetry.metrics.observe_audit(log.stats, source="main")
    for name, value in ((a.METRIC_AUDIT_QUEUE_DEPTH, 4), (a.METRIC_AUDIT_WRITTEN, 10),
                        (a.METRIC_AUDIT_SPILLED, 2), (a.METRIC_AUDIT_DROPPED, 1),
                        (a.METRIC_AUDIT_REWRITTEN, 3), (a.METRIC_AUDIT_LOST, 0),
                        (a.METRIC_AUDIT_SPILL_REJECTED, 1)):
        (point,) = points(otel, name)
        assert point.value == value  # type: ignore[union-attr]
        assert dict(point.attributes or {}) == {a.AUDIT_SOURCE: "main"}
    log.numbers = {**log.numbers, "written": 15}
    (point,) = points(otel, a.METRIC_AUDIT_WRITTEN)
    assert point.value == 15  # type: ignore[union-attr]
    unregister()
    assert a.METRIC_AUDIT_QUEUE_DEPTH not in otel.metrics() or not points(
        otel, a.METRIC_AUDIT_QUEUE_DEPTH)


def test_a_bound_method_source_is_held_weakly(otel: Otel) -> None:
    log = FakeAuditLog()
    otel.telemetry.metrics.observe_audit(log.stats)
    assert points(otel, a.METRIC_AUDIT_QUEUE_DEPTH)
    del log
    gc.collect()
    assert a.METRIC_AUDIT_QUEUE_DEPTH not in otel.metrics() or not points(
        otel, a.METRIC_AUDIT_QUEUE_DEPTH)


def test_audit_log_stats_reads_the_log_counters_weakly() -> None:
    from steerguard.audit.writer import AuditCounters
    from steerguard.telemetry.metrics import audit_log_stats

    class Log:
        counters = AuditCounters(queued=10, written=5, spilled=2, dropped_masking=1,
                                 dropped_overflow=4, rewritten=3, lost_by_server=1,
                                 spill_rejected=2)

    log = Log()
    stats = audit_log_stats(log)
    # overflow drops were never accepted, so they are not in the queue either way
    assert stats() == {"queue_depth": 2, "written": 5, "spilled": 2, "dropped": 5,
                       "rewritten": 3, "lost": 1, "spill_rejected": 2}
    del log
    gc.collect()
    assert stats() == {}
