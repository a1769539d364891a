"""The engine's verdict for one request: what to steer, and the evidence for it."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from steerguard.runtime.plan import SteeringPlan


class BundleRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    revision: str
    content_hash: str


class Evidence(BaseModel):
    """One predicate that held, and what it held on.

    Conversation text a predicate matched is kept apart in `quote`, and the application's data
    about the user it read (a profile or context field's value) in `value`, never inside
    `detail`: the audit log withholds or masks them by these fields, without parsing any
    text."""

    model_config = ConfigDict(frozen=True)

    predicate: str = Field(description="e.g. 'keywords', 'regex', 'profile.equals', 'activation'")
    source: str = Field(description="e.g. 'message.user', 'profile.age_band', 'context.channel'")
    detail: str = Field(
        default="",
        description="What held, in the policy's own terms (pattern, field name, score vs "
        "threshold); never text from the conversation nor a profile or context value.",
    )
    value: str | None = Field(
        default=None,
        description="The profile or context value the predicate read, as shown after "
        "`detail` (its repr, or 'absent'), if any.",
    )
    quote: str | None = Field(
        default=None, description="The conversation text the predicate matched, if any."
    )
    span: tuple[int, int] | None = None

    def describe(
        self, quote: Callable[[str], str] = repr, value: Callable[[str], str] = str
    ) -> str:
        """`detail` followed by the value as `value` renders it and the quote as `quote` does."""
        parts = [self.detail] if self.detail else []
        if self.value is not None:
            parts.append(value(self.value))
        if self.quote is not None:
            parts.append(quote(self.quote))
        return " ".join(parts)


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
    errors: tuple[str, ...] = Field(
        default=(), description="Predicates that could not be evaluated (on_error open), or "
        "the reason the decision failed closed."
    )

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None

    @property
    def rule_ids(self) -> list[str]:
        return [m.rule_id for m in self.matched]
