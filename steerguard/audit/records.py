"""Versioned audit records: one DecisionRecord per request, one InterventionRecord per
intervention, linked by `decision_id`. These models are the one schema: the writer builds
drafts (a record but for its place in the chain, build.py), stores each draft's JSON sealed
into its chain (sealed.py), and readers parse the stored bytes back into records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.runtime.report import LayerMeasurement

SCHEMA_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Outcome(_Frozen):
    status: Literal["completed", "error", "cancelled"]
    error_type: str | None = None

    @classmethod
    def completed(cls) -> Outcome:
        return cls(status="completed")

    @classmethod
    def cancelled(cls) -> Outcome:
        return cls(status="cancelled")

    @classmethod
    def error(cls, exc: BaseException | str) -> Outcome:
        name = exc if isinstance(exc, str) else type(exc).__name__
        return cls(status="error", error_type=name)

    @property
    def label(self) -> str:
        """The value indexed and aggregated: 'completed', 'cancelled' or 'error'."""
        return self.status


class BundleInfo(_Frozen):
    name: str
    revision: str
    hash: str


class EvidenceInfo(_Frozen):
    predicate: str
    source: str
    detail: str  # masked
    span: tuple[int, int] | None = None


class RuleInfo(_Frozen):
    rule_id: str
    priority: int
    evidence: tuple[EvidenceInfo, ...] = ()


class DroppedInfo(_Frozen):
    rule_id: str
    vector: str | None = None
    reason: str
    detail: str = ""


class Content(_Frozen):
    """Keyed hashes (HMAC-SHA256) of the texts; the texts only when configured, masked."""

    prompt_hmac: str | None = None
    answer_hmac: str | None = None
    prompt_text: str | None = None
    answer_text: str | None = None


# The runtime's per-layer measurement, recorded as it is: an intervention record holds the
# report's own objects (no copy to validate), so a field added there is a field added here
# (a schema change: schema_version).
Measurement = LayerMeasurement


class DraftBase(_Frozen):
    """What every record holds but its place in the chain."""

    schema_version: Literal[1] = SCHEMA_VERSION
    record_id: str
    ts: int = Field(description="Milliseconds since the epoch, UTC, taken when record() ran.")
    decision_id: str
    request_id: str | None = None
    session_id: str | None = None
    user_ref: str | None = Field(default=None, description="HMAC of the user id, or raw id.")
    user_ref_kind: Literal["hmac", "raw"] | None = None
    model: ModelFingerprint | None = None
    backend: Literal["hf", "vllm"] | None = Field(
        default=None, description="The engine that generated: hf (transformers) or vllm."
    )
    bundle: BundleInfo
    outcome: Outcome
    trace_id: str | None = None
    span_id: str | None = None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts / 1000, UTC)


class ChainLink(_Frozen):
    """A record's place in its writer's chain, stamped when it is sealed (chain.py)."""

    chain: str = Field(description="Writer chain id; seq and prev are per chain.")
    seq: int = Field(ge=0)
    prev: str = Field(description="Hash of the chain's previous record; '' at its start.")


class DecisionDraft(DraftBase):
    kind: Literal["decision"] = "decision"
    rules: tuple[RuleInfo, ...] = ()
    dropped: tuple[DroppedInfo, ...] = ()
    plan_hash: str
    intervention_ids: tuple[str, ...] = ()
    explanation: str = ""
    failed_closed: bool = False
    policy_error: str | None = None
    content: Content = Content()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    latency_ms: float | None = None


class InterventionDraft(DraftBase):
    kind: Literal["intervention"] = "intervention"
    index: int
    vector: str
    vector_hash: str | None = None
    layers: tuple[int, ...]
    strength: float
    op: str
    positions: str
    rule_id: str | None = None
    coefficients: dict[int, float] = {}
    measured: bool
    measurements: tuple[Measurement, ...] = ()
    positions_affected: int = 0
    mean_delta_norm: float = 0.0


Draft = DecisionDraft | InterventionDraft


class DecisionRecord(DecisionDraft, ChainLink):
    """A stored decision record."""


class InterventionRecord(InterventionDraft, ChainLink):
    """A stored intervention record."""


AuditRecord = Annotated[DecisionRecord | InterventionRecord, Field(discriminator="kind")]
RECORD_ADAPTER: TypeAdapter[DecisionRecord | InterventionRecord] = TypeAdapter(AuditRecord)


def parse_record(data: bytes | str) -> DecisionRecord | InterventionRecord:
    return RECORD_ADAPTER.validate_json(data)
