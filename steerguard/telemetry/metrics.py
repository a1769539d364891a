"""Metric instruments. Created once per meter provider; the global API is the fallback."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MethodType
from typing import TYPE_CHECKING, Any, Literal, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.util.types import Attributes, AttributeValue

from steerguard.telemetry import attributes as a

if TYPE_CHECKING:
    from steerguard.runtime.plan import Intervention

# What an audit log reports when asked; missing keys are simply not observed.
AuditStat = Literal[
    "queue_depth", "written", "spilled", "dropped", "rewritten", "lost", "spill_rejected"
]
AuditStats = Callable[[], Mapping[str, int]]
_NO_RULE = "none"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("steerguard")
    except PackageNotFoundError:
        return "0"


class SteerguardMetrics:
    """All instruments. Audit gauges and counters are observed through registered callbacks so
    the audit writer stays free of any telemetry calls on its hot path."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(
            a.INSTRUMENTATION_NAME, _version(), meter_provider, schema_url=a.SCHEMA_URL
        )
        self.token_usage = meter.create_histogram(
            a.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=a.TOKEN_USAGE_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            a.METRIC_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=a.DURATION_BUCKETS,
        )
        self.interventions = meter.create_counter(
            a.METRIC_INTERVENTIONS,
            unit="{intervention}",
            description="Steering interventions applied, by vector and policy rule.",
        )
        self.decision_duration = meter.create_histogram(
            a.METRIC_DECISION_DURATION,
            unit="s",
            description="Time the policy engine took to decide one request.",
            explicit_bucket_boundaries_advisory=a.DECISION_BUCKETS,
        )
        self._sources: dict[int, tuple[str, Callable[[], AuditStats | None]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        meter.create_observable_gauge(
            a.METRIC_AUDIT_QUEUE_DEPTH,
            callbacks=[self._observer("queue_depth")],
            unit="{record}",
            description="Audit records waiting in the in-memory queue.",
        )
        for stat, name, what in (
            ("written", a.METRIC_AUDIT_WRITTEN, "written to the store"),
            ("spilled", a.METRIC_AUDIT_SPILLED, "spilled to the local file"),
            ("dropped", a.METRIC_AUDIT_DROPPED, "dropped (masking failed or no room)"),
            ("rewritten", a.METRIC_AUDIT_REWRITTEN,
             "the server lost after acknowledging them, written again"),
            ("lost", a.METRIC_AUDIT_LOST,
             "the server lost after acknowledging them, too late to write again"),
            ("spill_rejected", a.METRIC_AUDIT_SPILL_REJECTED,
             "set aside: spill file lines that were not records, kept in <spill>.rejected"),
        ):
            meter.create_observable_counter(
                name,
                callbacks=[self._observer(stat)],  # type: ignore[arg-type]
                unit="{record}",
                description=f"Audit records {what}.",
            )

    # recording -------------------------------------------------------------------------------

    def record_tokens(
        self, attrs: Mapping[str, AttributeValue], input_tokens: int, output_tokens: int
    ) -> None:
        self.token_usage.record(input_tokens, {**attrs, a.GEN_AI_TOKEN_TYPE: a.TOKEN_TYPE_INPUT})
        self.token_usage.record(
            output_tokens, {**attrs, a.GEN_AI_TOKEN_TYPE: a.TOKEN_TYPE_OUTPUT}
        )

    def record_duration(self, attrs: Attributes, seconds: float) -> None:
        self.operation_duration.record(seconds, attrs)

    def record_decision(self, seconds: float, attrs: Attributes) -> None:
        self.decision_duration.record(seconds, attrs)

    def record_interventions(self, interventions: Iterable[Intervention]) -> None:
        for iv in interventions:
            self.interventions.add(
                1, {a.VECTOR_NAME: iv.vector, a.RULE_ID: iv.source or _NO_RULE}
            )

    # audit callbacks -------------------------------------------------------------------------

    def observe_audit(self, stats: AuditStats, source: str = "default") -> Callable[[], None]:
        """Observe an audit log's counters under `source` (one series per source); returns a
        function that stops observing.

        A bound method is held weakly, so a forgotten registration never keeps a closed audit
        log alive.
        """
        # A plain function is held strongly, behind the same call shape as a WeakMethod.
        ref: Callable[[], AuditStats | None] = (
            weakref.WeakMethod(stats) if isinstance(stats, MethodType) else lambda: stats
        )
        with self._lock:
            # One registration per source: registering it again replaces the old one.
            kept = {k: v for k, v in self._sources.items() if v[0] != source}
            key, self._next = self._next, self._next + 1
            self._sources = {**kept, key: (source, ref)}

        def unregister() -> None:
            with self._lock:
                self._sources = {k: v for k, v in self._sources.items() if k != key}

        return unregister

    def _observer(
        self, stat: AuditStat
    ) -> Callable[[CallbackOptions], Sequence[Observation]]:
        def observe(_: CallbackOptions) -> Sequence[Observation]:
            out: list[Observation] = []
            for source, ref in self._sources.values():
                fn = ref()
                if fn is None:
                    continue
                try:
                    value = fn().get(stat)
                except Exception:  # a broken source must not break the whole collection
                    continue
                if value is not None:
                    out.append(Observation(int(value), {a.AUDIT_SOURCE: source}))
            return out

        return observe


class AuditLogLike(Protocol):
    @property
    def counters(self) -> Any: ...  # AuditCounters: queued, written, spilled, dropped, ...


def audit_log_stats(log: AuditLogLike) -> AuditStats:
    """A stats callable for `observe_audit` that holds the log weakly.

    Queue depth is what record() accepted and the writer has not yet settled (written,
    spilled or dropped after acceptance); records refused at a full queue were never
    accepted, so they are not subtracted.
    """
    ref = weakref.ref(log)

    def stats() -> Mapping[str, int]:
        current = ref()
        if current is None:
            return {}
        c = current.counters
        depth = getattr(current, "queue_depth", None)
        if depth is None:
            depth = c.queued - c.written - c.spilled - c.dropped_masking - c.dropped_error
        return {"queue_depth": max(0, int(depth)), "written": c.written,
                "spilled": c.spilled, "dropped": c.dropped, "rewritten": c.rewritten,
                "lost": c.lost_by_server, "spill_rejected": c.spill_rejected}

    return stats
