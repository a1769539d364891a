"""Turn one request (Decision + what the runtime reports) into record bodies (plain dicts in
the shape of records.py). Runs on the writer thread, never on the generation path."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerguard.audit.errors import MaskingError
from steerguard.audit.masking import Masker
from steerguard.audit.records import SCHEMA_VERSION, Outcome
from steerguard.policy.decision import Decision, Evidence
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult
from steerguard.vectors.fingerprint import ModelFingerprint

# Predicates whose evidence quotes conversation text (steerguard/policy/conditions.py).
TEXT_PREDICATES = frozenset({"keywords", "regex"})


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


class RecordBuilder:
    def __init__(
        self, key: bytes, masker: Masker, *, store_user_id: bool, store_text: bool
    ) -> None:
        self._key = key
        self._mask = masker
        self._store_user_id = store_user_id
        self._store_text = store_text
        self._model_cache: dict[int, dict[str, Any]] = {}
        self._plan_hashes: dict[int, tuple[Any, str]] = {}
        self._user_refs: dict[str, str] = {}

    def keyed_hash(self, domain: str, value: str) -> str:
        # hmac.digest: the one-shot C path, a third of hmac.new(...).hexdigest()'s cost
        return hmac.digest(self._key, f"{domain}\0{value}".encode(), "sha256").hex()[:32]

    def user_ref(self, user_id: str) -> str:
        if self._store_user_id:
            return user_id
        ref = self._user_refs.get(user_id)
        if ref is None:  # users repeat; an HMAC per record showed up in writer profiles
            if len(self._user_refs) > 65_536:
                self._user_refs.clear()
            ref = self._user_refs[user_id] = self.keyed_hash("user", user_id)
        return ref

    def build(self, item: RequestItem) -> tuple[list[dict[str, Any]], MaskingError | None]:
        """Record bodies (the decision first, then one per intervention) and a masking error.

        Only the decision record carries text (content, evidence), so a masking failure drops
        it alone; intervention records still say what was done to the model."""
        common = self._common(item)
        interventions = self._interventions(item, common)
        try:
            decision = self._decision(item, common, interventions)
        except MaskingError as exc:
            return interventions, exc
        return [decision, *interventions], None

    def _evidence_detail(self, e: Evidence) -> str:
        """Keyword and regex evidence quotes the user's text: stored (masked) only with
        store_text; otherwise the quote is replaced by a keyed hash of it."""
        if self._store_text or e.predicate not in TEXT_PREDICATES:
            return self._mask(e.detail)
        head, sep, _ = e.detail.rpartition(" matched ")
        tag = self.keyed_hash("evidence", e.detail)[:16]
        return (head + sep if sep else "") + f"[text withheld, hmac {tag}]"

    def _decision(self, item: RequestItem, common: dict[str, Any],
                  interventions: list[dict[str, Any]]) -> dict[str, Any]:
        d = item.decision
        details = {id(e): self._evidence_detail(e) for m in d.matched for e in m.evidence}
        explanation = d.explanation
        if not self._store_text:  # the explanation repeats each piece of evidence
            for m in d.matched:
                for e in m.evidence:
                    if e.predicate in TEXT_PREDICATES:
                        explanation = explanation.replace(e.detail, details[id(e)])
        decision = dict(common)
        decision.update(
            kind="decision",
            record_id=item.ids[0],
            rules=[
                {
                    "rule_id": m.rule_id,
                    "priority": m.priority,
                    "evidence": [
                        {"predicate": e.predicate, "source": e.source,
                         "detail": details[id(e)],
                         "span": list(e.span) if e.span else None}
                        for e in m.evidence
                    ],
                }
                for m in d.matched
            ],
            dropped=[
                {"rule_id": x.rule_id, "vector": x.vector, "reason": x.reason.value,
                 "detail": self._mask(x.detail)}
                for x in d.dropped
            ],
            plan_hash=self._plan_hash(d),
            intervention_ids=[i["record_id"] for i in interventions],
            explanation=self._mask(explanation),
            failed_closed=d.failed_closed,
            policy_error=d.error,
            content=self._content(item),
        )
        r = item.result
        if r is not None:
            decision.update(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                            finish_reason=r.finish_reason)
        latency = item.latency_s if item.latency_s is not None else (r.latency_s if r else None)
        decision["latency_ms"] = round(latency * 1000, 3) if latency is not None else None
        return decision

    def _common(self, item: RequestItem) -> dict[str, Any]:
        d = item.decision
        user_ref = kind = None
        if item.user_id is not None:
            user_ref, kind = self.user_ref(item.user_id), "raw" if self._store_user_id else "hmac"
        return {
            "schema_version": SCHEMA_VERSION,
            "ts": item.ts,
            "decision_id": d.decision_id,
            "request_id": item.request_id,
            "session_id": item.session_id,
            "user_ref": user_ref,
            "user_ref_kind": kind,
            "model": self._model(item.model),
            "bundle": {"name": d.bundle.name, "revision": d.bundle.revision,
                       "hash": d.bundle.content_hash},
            "outcome": {"status": item.outcome.status, "error_type": item.outcome.error_type},
            "trace_id": item.trace_id,
            "span_id": item.span_id,
        }

    def _plan_hash(self, d: Decision) -> str:
        """Plans repeat across requests; hashing one costs a JSON dump, so keep the last few."""
        hit = self._plan_hashes.get(id(d.plan))
        if hit is not None and hit[0] is d.plan:
            return hit[1]
        if len(self._plan_hashes) > 1024:
            self._plan_hashes.clear()
        digest = d.plan.content_hash()
        self._plan_hashes[id(d.plan)] = (d.plan, digest)
        return digest

    def _model(self, fp: ModelFingerprint | None) -> dict[str, Any] | None:
        if fp is None:
            return None
        cached = self._model_cache.get(id(fp))
        if cached is None:
            cached = self._model_cache[id(fp)] = fp.model_dump()
        return cached

    def _content(self, item: RequestItem) -> dict[str, Any]:
        answer = item.answer if item.answer is not None else (
            item.result.text if item.result is not None else None)
        content: dict[str, Any] = {
            "prompt_hmac": self.keyed_hash("prompt", item.prompt) if item.prompt else None,
            "answer_hmac": self.keyed_hash("answer", answer) if answer else None,
            "prompt_text": None,
            "answer_text": None,
        }
        if self._store_text:
            content["prompt_text"] = self._mask(item.prompt) if item.prompt else None
            content["answer_text"] = self._mask(answer) if answer else None
        return content

    def _interventions(self, item: RequestItem, common: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if item.reports:
            for n, rep in enumerate(item.reports):
                iv = rep.intervention
                body = self._intervention_body(common, item.ids[n + 1], rep.index, iv)
                body.update(
                    vector_hash=rep.vector_hash,
                    coefficients={str(k): v for k, v in rep.coefficients.items()},
                    measured=True,
                    measurements=[_measurement(m) for m in rep.layers],
                    positions_affected=rep.positions_affected,
                    mean_delta_norm=rep.mean_delta_norm,
                )
                out.append(body)
            return out
        for n, iv in enumerate(planned(item.decision)):
            body = self._intervention_body(common, item.ids[n + 1], n, iv)
            body.update(vector_hash=iv.vector_hash, coefficients={}, measured=False,
                        measurements=[], positions_affected=0, mean_delta_norm=0.0)
            out.append(body)
        return out

    @staticmethod
    def _intervention_body(common: dict[str, Any], record_id: str, index: int, iv: Any
                           ) -> dict[str, Any]:
        body = dict(common)
        body.update(kind="intervention", record_id=record_id, index=index, vector=iv.vector,
                    layers=list(iv.layers), strength=iv.strength, op=iv.op.value,
                    positions=str(iv.positions), rule_id=iv.source)
        return body


def _measurement(m: LayerMeasurement) -> dict[str, Any]:
    # The same dict model_dump() gives for these plain fields, at a fifth of the cost.
    return {"layer": m.layer, "positions_affected": m.positions_affected,
            "delta_norm": m.delta_norm, "projection_before": m.projection_before,
            "projection_after": m.projection_after}


def planned(decision: Decision) -> list[Any]:
    """Interventions the plan asked for (no-ops excluded): recorded when nothing was measured."""
    return [i for i in decision.plan.interventions if not i.is_noop]


def index_values(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, value) pairs a record is indexed under."""
    out: list[tuple[str, str]] = [("decision", body["decision_id"]),
                                  ("outcome", body["outcome"]["status"])]
    if body.get("user_ref"):
        out.append(("user", body["user_ref"]))
    if body.get("session_id"):
        out.append(("session", body["session_id"]))
    if body["kind"] == "decision":
        rules = {r["rule_id"] for r in body["rules"]}
        vectors = set()
    else:
        rules = {body["rule_id"]} if body.get("rule_id") else set()
        vectors = {body["vector"]}
    out.extend(("rule", r) for r in sorted(rules))
    out.extend(("vector", v) for v in sorted(vectors))
    return out


def agg_fields(body: dict[str, Any]) -> list[str]:
    """Aggregate counters a record adds one to, in its hour bucket."""
    if body["kind"] == "decision":
        fields = ["n:decision", "o:" + body["outcome"]["status"]]
        fields.extend("r:" + r["rule_id"] for r in body["rules"])
        return fields
    return ["n:intervention", "v:" + body["vector"]]
