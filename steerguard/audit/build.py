"""Turn one request (Decision + what the runtime reports) into record drafts: plain dict bodies
in the shape of records.py, with the index keys and aggregate counters each goes under. Runs
on the writer thread, never on the generation path. What a request's records share (user,
session, outcome, hour) is worked out once per request, not once per record."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from steerguard.audit.errors import MaskingError
from steerguard.audit.keyed import KeyedHash
from steerguard.audit.keys import index_suffix
from steerguard.audit.masking import Masker
from steerguard.audit.records import SCHEMA_VERSION, Outcome
from steerguard.policy.decision import Decision, Evidence
from steerguard.policy.explain import render
from steerguard.runtime.plan import Intervention, strength_key
from steerguard.runtime.report import InterventionReport
from steerguard.runtime.result import GenerationResult
from steerguard.vectors.fingerprint import ModelFingerprint

# Nearly every record has this outcome: an index of it would list the whole stream, so it is
# not indexed and a query for it reads the stream (see store.py).
UNINDEXED_OUTCOME = "completed"


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


@dataclass(slots=True)
class Draft:
    """A record body before the chain seals it, with what it is indexed and counted under."""

    body: dict[str, Any]
    indexes: tuple[str, ...]  # index key suffixes (keys.index_suffix)
    aggs: tuple[str, ...]  # "agg:HH\0field": aggregate hash suffix and field


class RecordBuilder:
    def __init__(
        self, key: bytes, masker: Masker, *, store_user_id: bool, store_text: bool
    ) -> None:
        self._hmac = KeyedHash(key)
        self._mask = masker
        self._store_user_id = store_user_id
        self._store_text = store_text
        self._model_cache: dict[int, tuple[ModelFingerprint, dict[str, Any]]] = {}
        self._static_fields: dict[tuple[Any, ...], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._user_refs: dict[str, str] = {}
        self._evidence_refs: dict[str, str] = {}
        self._decision_keys: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def keyed_hash(self, domain: str, value: str) -> str:
        return self._hmac.hex(f"{domain}\0{value}".encode())[:32]

    def user_ref(self, user_id: str) -> str:
        if self._store_user_id:
            return user_id
        # users repeat; an HMAC per record showed up in writer profiles
        return self._remembered(self._user_refs, "user", user_id, 65_536)

    def _remembered(self, cache: dict[str, str], domain: str, value: str, size: int) -> str:
        """keyed_hash(domain, value), kept for values that recur."""
        ref = cache.get(value)
        if ref is None:
            if len(cache) > size:
                cache.clear()
            ref = cache[value] = self.keyed_hash(domain, value)
        return ref

    def build(self, item: RequestItem) -> tuple[list[Draft], MaskingError | None]:
        """Drafts (the decision first, then one per intervention) and a masking error.

        Only the decision record carries text (content, evidence), so a masking failure drops
        it alone; intervention records still say what was done to the model."""
        common = self._common(item)
        status = item.outcome.status
        shared = request_indexes(common["user_ref"], item.session_id, status)
        hour = hour_prefix(item.ts)
        drafts = [Draft(body, shared + own, (hour + "n:intervention", hour + "v:" + vector))
                  for body, own, vector in self._interventions(item, common)]
        try:
            decision = self._decision(item, common, drafts)
        except MaskingError as exc:
            return drafts, exc
        own, aggs = self._decision_keys_of(hour, status, decision["rules"])
        drafts.insert(0, Draft(decision, shared + own, aggs))
        return drafts, None

    def _decision_keys_of(self, hour: str, status: str, rules: list[dict[str, Any]]
                          ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A decision record's own index keys and aggregate fields: the same few sets of
        matched rules recur, hour after hour."""
        ids = tuple(r["rule_id"] for r in rules)
        key = (hour, status, ids)
        hit = self._decision_keys.get(key)
        if hit is None:
            if len(self._decision_keys) > 4096:
                self._decision_keys.clear()
            hit = self._decision_keys[key] = (own_indexes(ids, None),
                                              agg_fields("decision", status, ids, None, hour))
        return hit

    def _quote(self, text: str) -> str:
        """A quote of the conversation as stored: with store_text the text (masked with the
        rest of its field), else a keyed hash of it."""
        if self._store_text:
            return repr(text)
        # the same keywords and phrases match request after request
        tag = self._remembered(self._evidence_refs, "evidence", text, 4096)[:16]
        return f"[text withheld, hmac {tag}]"

    def _evidence(self, e: Evidence) -> dict[str, Any]:
        return {"predicate": e.predicate, "source": e.source,
                "detail": self._mask(e.describe(self._quote)),
                "span": list(e.span) if e.span else None}

    def _decision(self, item: RequestItem, common: dict[str, Any],
                  interventions: list[Draft]) -> dict[str, Any]:
        d = item.decision
        quoted = any(e.quote is not None for m in d.matched for e in m.evidence)
        explanation = render(d, self._quote) if quoted else d.explanation
        decision = dict(common)
        decision.update(
            kind="decision",
            record_id=item.ids[0],
            rules=[
                {
                    "rule_id": m.rule_id,
                    "priority": m.priority,
                    "evidence": [self._evidence(e) for e in m.evidence],
                }
                for m in d.matched
            ],
            dropped=[
                {"rule_id": x.rule_id, "vector": x.vector, "reason": x.reason.value,
                 "detail": self._mask(x.detail)}
                for x in d.dropped
            ],
            plan_hash=d.plan.content_hash(),  # computed once per plan (telemetry asks too)
            intervention_ids=[i.body["record_id"] for i in interventions],
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
            "backend": item.backend,
            "bundle": {"name": d.bundle.name, "revision": d.bundle.revision,
                       "hash": d.bundle.content_hash},
            "outcome": {"status": item.outcome.status, "error_type": item.outcome.error_type},
            "trace_id": item.trace_id,
            "span_id": item.span_id,
        }

    def _model(self, fp: ModelFingerprint | None) -> dict[str, Any] | None:
        """The fingerprint's dict; a process serves one model or a few, as the same objects.
        The entry holds the object, so its id cannot be reused by another one."""
        if fp is None:
            return None
        hit = self._model_cache.get(id(fp))
        if hit is None or hit[0] is not fp:
            if len(self._model_cache) > 64:
                self._model_cache.clear()
            hit = self._model_cache[id(fp)] = (fp, fp.model_dump())
        return hit[1]

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

    def _interventions(self, item: RequestItem, common: dict[str, Any]
                       ) -> list[tuple[dict[str, Any], tuple[str, ...], str]]:
        """(body, own index keys, vector) per intervention: measured, or else as planned."""
        out = []
        if item.reports:
            for n, rep in enumerate(item.reports):
                fields, own = self._static(rep.intervention)
                affected, weighted, measurements = 0, 0.0, []
                for m in rep.layers:
                    affected += m.positions_affected
                    weighted += m.delta_norm * m.positions_affected
                    # The model's own field dict, read only: the fields a record's
                    # Measurement holds (tests/audit/test_records.py), without a copy.
                    measurements.append(m.__dict__)
                body = {**common, **fields, "record_id": item.ids[n + 1], "index": rep.index,
                        "vector_hash": rep.vector_hash,
                        "coefficients": {str(k): v for k, v in rep.coefficients.items()},
                        "measured": True, "measurements": measurements,
                        "positions_affected": affected,  # = InterventionReport's properties
                        "mean_delta_norm": weighted / affected if affected else 0.0}
                out.append((body, own, fields["vector"]))
            return out
        for n, iv in enumerate(planned(item.decision)):
            fields, own = self._static(iv)
            body = {**common, **fields, "record_id": item.ids[n + 1], "index": n,
                    "vector_hash": iv.vector_hash, "coefficients": {}, "measured": False,
                    "measurements": [], "positions_affected": 0, "mean_delta_norm": 0.0}
            out.append((body, own, fields["vector"]))
        return out

    def _static(self, iv: Intervention) -> tuple[dict[str, Any], tuple[str, ...]]:
        """An intervention's own fields and index keys. Rules ask for the same interventions
        request after request (as new objects), so the last few are kept by value."""
        key = (iv.vector, iv.layers, strength_key(iv.strength), iv.op, iv.positions.scope,
               iv.positions.n, iv.source)
        hit = self._static_fields.get(key)
        if hit is not None:
            return hit
        if len(self._static_fields) > 4096:
            self._static_fields.clear()
        fields = {"kind": "intervention", "vector": iv.vector, "layers": list(iv.layers),
                  "strength": iv.strength, "op": iv.op.value, "positions": str(iv.positions),
                  "rule_id": iv.source}
        hit = self._static_fields[key] = (fields, own_indexes((iv.source,), iv.vector))
        return hit


def planned(decision: Decision) -> list[Any]:
    """Interventions the plan asked for (no-ops excluded): recorded when nothing was measured."""
    return [i for i in decision.plan.interventions if not i.is_noop]


def hour_prefix(ts: int) -> str:
    """Suffix of the aggregate hash of `ts`'s UTC hour, with the field separator."""
    return f"agg:{(ts // 3_600_000) % 24:02d}\0"


def request_indexes(user_ref: str | None, session_id: str | None, status: str
                    ) -> tuple[str, ...]:
    """Index keys every record of a request goes under (its decision is looked up in the
    day's decision hash instead: see lua.py)."""
    out: list[str] = []
    if user_ref:
        out.append(index_suffix("user", user_ref))
    if session_id:
        out.append(index_suffix("session", session_id))
    if status != UNINDEXED_OUTCOME:
        out.append(index_suffix("outcome", status))
    return tuple(out)


def own_indexes(rules: Iterable[str | None], vector: str | None) -> tuple[str, ...]:
    """Index keys of one record's own rules and vector."""
    out = [index_suffix("rule", r) for r in sorted({r for r in rules if r})]
    if vector:
        out.append(index_suffix("vector", vector))
    return tuple(out)


def agg_fields(kind: str, status: str, rules: Sequence[str], vector: str | None, hour: str
               ) -> tuple[str, ...]:
    """Aggregate counters a record adds one to, in its hour's hash."""
    if kind == "decision":
        return (hour + "n:decision", hour + "o:" + status, *(hour + "r:" + r for r in rules))
    return (hour + "n:intervention", hour + "v:" + str(vector))


def draft_of(body: dict[str, Any]) -> Draft:
    """The draft of a stored body: the same rules as build(), for records read back from
    the spill file."""
    status = body["outcome"]["status"]
    hour = hour_prefix(body["ts"])
    shared = request_indexes(body.get("user_ref"), body.get("session_id"), status)
    if body["kind"] == "decision":
        rules = [r["rule_id"] for r in body["rules"]]
        return Draft(body, shared + own_indexes(rules, None),
                     agg_fields("decision", status, rules, None, hour))
    vector = body["vector"]
    return Draft(body, shared + own_indexes((body.get("rule_id"),), vector),
                 agg_fields("intervention", status, (), vector, hour))
