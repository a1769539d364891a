"""The engine's verdict for one request: what to steer, and the evidence for it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from steerguard.runtime.plan import SteeringPlan


class BundleRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    revision: str
    content_hash: str


class Evidence(BaseModel):
    """One predicate that held, and what it held on."""

    model_config = ConfigDict(frozen=True)

    predicate: str = Field(description="e.g. 'keywords', 'regex', 'profile.equals', 'activation'")
    source: str = Field(description="e.g. 'message.user', 'profile.age_band', 'context.channel'")
    detail: str = Field(description="The matched text span, field value or score vs threshold.")
    span: tuple[int, int] | None = None


class RuleMatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    priority: int
    description: str = ""
    evidence: tuple[Evidence, ...] = ()


class DropReason(StrEnum):
    DENIED = "denied"
    LOST_GROUP = "lost_exclusive_group"
    CLAMPED = "clamped_by_budget"
    OVER_VECTOR_LIMIT = "over_vector_limit"
    MISSING_VALUE = "profile_value_missing"  # strength comes from a profile field that is absent


class Dropped(BaseModel):
    """A rule or vector that matched but did not make it into the plan (or was reduced)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    vector: str | None = None
    reason: DropReason
    detail: str = ""


class Decision(BaseModel):
    """Immutable and a pure function of (bundle revision, messages, profile, context).

    `decision_id` is the hash of that input and the bundle hash, so a replay gives the same id.
    """

    model_config = ConfigDict(frozen=True)

    decision_id: str
    bundle: BundleRef
    matched: tuple[RuleMatch, ...] = ()
    dropped: tuple[Dropped, ...] = ()
    plan: SteeringPlan = SteeringPlan()
    explanation: str = ""
    failed_closed: bool = False
    error: str | None = None

    @property
    def rule_ids(self) -> list[str]:
        return [m.rule_id for m in self.matched]
