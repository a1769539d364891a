"""Turn one request (Decision + what the runtime reports) into record drafts (records.py).
Runs on the writer thread, never on the generation path."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from steerguard.audit.errors import MaskingError
from steerguard.audit.masking import Masker
from steerguard.audit.records import (
    BundleInfo,
    Content,
    DecisionDraft,
    DroppedInfo,
    EvidenceInfo,
    InterventionDraft,
    Outcome,
    RuleInfo,
)
from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.policy.decision import Decision, Evidence
from steerguard.policy.explain import render
from steerguard.runtime.plan import Intervention
from steerguard.runtime.report import InterventionReport
from steerguard.runtime.result import GenerationResult


@dataclass(slots=True)
class RequestItem:
    """What record() captured; cheap to make (no serialisation, no hashing)."""

    ids: list[str]
    ts: int
    decision: Decision
    reports: Sequence[InterventionReport] | None
    result: GenerationResult | None
    outcome: Outcome
    request_id: str | None
    session_id: str | None
    user_id: str | None
    model: ModelFingerprint | None
    prompt: str | None
    answer: str | None
    trace_id: str | None
    span_id: str | None
    latency_s: float | None
    backend: str | None = None


class RecordBuilder:
    def __init__(
        self, key: bytes, masker: Masker, *, store_user_id: bool, store_text: bool
    ) -> None:
        # the key's HMAC pads, hashed once: each keyed hash copies them (hmac.digest hashes the
        # key again every call)
        self._hmac = hmac.new(key, digestmod="sha256")
        self._mask = masker
        self._store_user_id = store_user_id
        self._store_text = store_text

    def keyed_hash(self, domain: str, value: str) -> str:
        h = self._hmac.copy()
        h.update(f"{domain}\0{value}".encode())
        return h.hexdigest()[:32]

    def user_ref(self, user_id: str) -> str:
        return user_id if self._store_user_id else self.keyed_hash("user", user_id)

    def build(self, item: RequestItem
              ) -> tuple[list[DecisionDraft | InterventionDraft], MaskingError | None]:
        """Drafts (the decision first, then one per intervention) and a masking error.

        Only the decision record carries text (content, evidence), so a masking failure drops
        it alone; intervention records still say what was done to the model."""
        common = self._common(item)
        interventions = self._interventions(item, common)
        try:
            decision = self._decision(item, common, interventions)
        except MaskingError as exc:
            return list(interventions), exc
        return [decision, *interventions], None

    def _common(self, item: RequestItem) -> dict[str, Any]:
        """The fields every record of the request shares."""
        d = item.decision
        user_ref = kind = None
        if item.user_id is not None:
            user_ref, kind = self.user_ref(item.user_id), "raw" if self._store_user_id else "hmac"
        return {
            "ts": item.ts,
            "decision_id": d.decision_id,
            "request_id": item.request_id,
            "session_id": item.session_id,
            "user_ref": user_ref,
            "user_ref_kind": kind,
            "model": item.model,
            "backend": item.backend,
            "bundle": BundleInfo(name=d.bundle.name, revision=d.bundle.revision,
                                 hash=d.bundle.content_hash),
            "outcome": item.outcome,
            "trace_id": item.trace_id,
            "span_id": item.span_id,
        }

    def _quote(self, text: str) -> str:
        """A quote of the conversation as stored: with store_text the text (masked with the
        rest of its field), else a keyed hash of it."""
        if self._store_text:
            return repr(text)
        return f"[text withheld, hmac {self.keyed_hash('evidence', text)[:16]}]"

    def _value(self, value: str) -> str:
        """A profile or context value as stored: with store_user_id the value, else a keyed
        hash of it (the values describe the user as an id would)."""
        if self._store_user_id:
            return value
        return f"[value withheld, hmac {self.keyed_hash('value', value)[:16]}]"

    def _evidence(self, e: Evidence, quote: Callable[[str], str]) -> EvidenceInfo:
        return EvidenceInfo(predicate=e.predicate, source=e.source,
                            detail=self._mask(e.describe(quote, self._value)), span=e.span)

    def _decision(self, item: RequestItem, common: dict[str, Any],
                  interventions: Sequence[InterventionDraft]) -> DecisionDraft:
        d, r = item.decision, item.result
        # a quote appears in its evidence and again in the explanation: one keyed hash each,
        # per request
        quoted: dict[str, str] = {}

        def quote(text: str) -> str:
            if text not in quoted:
                quoted[text] = self._quote(text)
            return quoted[text]

        withheld = any(e.quote is not None or (e.value is not None and not self._store_user_id)
                       for m in d.matched for e in m.evidence)
        explanation = render(d, quote, self._value) if withheld else d.explanation
        latency = item.latency_s if item.latency_s is not None else (r.latency_s if r else None)
        # model_validate of one dict: __init__(**fields) adds about 1.5 us per record
        return DecisionDraft.model_validate({
            **common,
            "record_id": item.ids[0],
            "rules": [RuleInfo(rule_id=m.rule_id, priority=m.priority,
                               evidence=[self._evidence(e, quote) for e in m.evidence])
                      for m in d.matched],
            "dropped": [DroppedInfo(rule_id=x.rule_id, vector=x.vector, reason=x.reason.value,
                                    detail=self._mask(x.detail))
                        for x in d.dropped],
            "plan_hash": d.plan.content_hash(),
            "intervention_ids": [i.record_id for i in interventions],
            "explanation": self._mask(explanation),
            "failed_closed": d.failed_closed,
            "policy_error": d.error,
            "content": self._content(item),
            "prompt_tokens": r.prompt_tokens if r else None,
            "completion_tokens": r.completion_tokens if r else None,
            "finish_reason": r.finish_reason if r else None,
            "latency_ms": round(latency * 1000, 3) if latency is not None else None,
        })

    def _content(self, item: RequestItem) -> Content:
        answer = item.answer if item.answer is not None else (
            item.result.text if item.result is not None else None)
        prompt = item.prompt
        return Content(
            prompt_hmac=self.keyed_hash("prompt", prompt) if prompt else None,
            answer_hmac=self.keyed_hash("answer", answer) if answer else None,
            prompt_text=self._mask(prompt) if prompt and self._store_text else None,
            answer_text=self._mask(answer) if answer and self._store_text else None,
        )

    def _interventions(self, item: RequestItem, common: dict[str, Any]
                       ) -> list[InterventionDraft]:
        """One per intervention: measured, or else as planned."""
        if item.reports:
            return [InterventionDraft.model_validate({
                **common, **_planned_fields(rep.intervention), "record_id": item.ids[n + 1],
                "index": rep.index, "vector_hash": rep.vector_hash,
                "coefficients": rep.coefficients, "measured": True,
                "measurements": rep.layers, "positions_affected": rep.positions_affected,
                "mean_delta_norm": rep.mean_delta_norm,
            }) for n, rep in enumerate(item.reports)]
        return [InterventionDraft.model_validate({
            **common, **_planned_fields(iv), "record_id": item.ids[n + 1], "index": n,
            "vector_hash": iv.vector_hash, "measured": False,
        }) for n, iv in enumerate(planned(item.decision))]


def _planned_fields(iv: Intervention) -> dict[str, Any]:
    return {"vector": iv.vector, "layers": iv.layers, "strength": iv.strength,
            "op": iv.op.value, "positions": str(iv.positions), "rule_id": iv.source}


def planned(decision: Decision) -> list[Intervention]:
    """Interventions the plan asked for (no-ops excluded): recorded when nothing was measured."""
    return [i for i in decision.plan.interventions if not i.is_noop]
