"""One pipeline, two backends: the same requests through the composition root on hf and on
vllm give the same policy decisions and the same audit records, but for the backend each
record names and the measurements (float noise of two implementations)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.records import DecisionRecord, InterventionRecord
from steerguard.config import SteerguardConfig
from steerguard.pipeline import Request, Turn
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile
from steerguard.root import Steerguard
from steerguard.runtime.engine import GenerationParams
from tests.vllm.conftest import needs_vllm

pytestmark = [needs_vllm, pytest.mark.real_model, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
PARAMS = GenerationParams(max_new_tokens=12)
ADULT = UserProfile(user_id="u-1", age_band="adult")
# The shipped support bundle: no rule, keywords, a profile rule, two rules at once, a context
# rule; its activation conditions (read by the probes on each backend) are decided on all.
REQUESTS = [
    ("Where is my order 1234?", ADULT, None),
    ("I'm completely overwhelmed, my card was charged three times and I can't cope.", ADULT,
     None),
    ("how do i change my username", UserProfile(user_id="u-2", age_band="minor"), None),
    ("Briefly, how do refunds work?",
     UserProfile(user_id="u-3", age_band="adult", preferences={"register": "formal"}), None),
    ("What are your opening hours?", ADULT, RequestContext(channel="sms")),
]
# Fields that differ by construction: ids, time, the chain, spans, the backend, and what the
# runtime measured or derived from the layer norms (compared approximately below).
APART = {"record_id", "ts", "chain", "seq", "prev", "decision_id", "intervention_ids",
         "trace_id", "span_id", "backend", "latency_ms", "coefficients", "measurements",
         "positions_affected", "mean_delta_norm"}
ANSWER = {"content", "completion_tokens", "finish_reason"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AuditLog]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefixes = {b: f"sgd{b}{uuid.uuid4().hex[:8]}" for b in ("hf", "vllm")}
    home: Path = tmp_path_factory.mktemp("audit")
    made = {
        b: AuditLog(AuditConfig(redis_url=REDIS_URL, key_prefix=p, home=home / b,
                                spill_fsync=False, user_hmac_key="same key on both"))
        for b, p in prefixes.items()
    }
    yield made
    for log in made.values():
        log.close()
    for prefix in prefixes.values():
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))  # only ours
        if keys:
            client.unlink(*keys)
    client.close()


def _request(text: str, profile: UserProfile, context: RequestContext | None) -> Request:
    return Request(messages=(ChatMessage(role="user", content=text),),
                   prompt=[{"role": "user", "content": text}], profile=profile,
                   context=context, session_id="s-1")


def _turns(root: Steerguard, requests: list[Request]) -> list[Turn]:
    pipeline = root.pipeline()
    turns = [pipeline.run(r, PARAMS) for r in requests[:-1]]
    *_, last = pipeline.run_stream(requests[-1], PARAMS)
    assert isinstance(last, Turn)
    return [*turns, last]


def _records(log: AuditLog) -> dict[tuple[str | None, str, int], Any]:
    assert log.flush(30)
    records = AuditStore(log.client, log.config).query(limit=1000).records
    return {(r.request_id, r.kind, getattr(r, "index", -1)): r for r in records}


def test_same_decisions_and_records_on_both_backends(real_engine, vllm_backend, logs):
    requests = [_request(*r) for r in REQUESTS]
    config = {b: SteerguardConfig.load(backend=b) for b in ("hf", "vllm")}
    with Steerguard(config["hf"], engine=real_engine, audit=logs["hf"]) as hf, \
            Steerguard(config["vllm"], engine=vllm_backend, audit=logs["vllm"]) as vl:
        assert hf.describe()["backend"] == "hf" and vl.describe()["backend"] == "vllm"
        on_hf, on_vllm = _turns(hf, requests), _turns(vl, requests)

    steered = 0
    for h, v in zip(on_hf, on_vllm, strict=True):
        assert h.outcome == v.outcome == "completed"
        assert h.decision.plan == v.decision.plan, h.request.last_user_text
        assert h.decision.rule_ids == v.decision.rule_ids
        assert h.activation_scores.keys() == v.activation_scores.keys()
        for name, score in h.activation_scores.items():
            assert v.activation_scores[name] == pytest.approx(score, abs=0.02), name
        steered += bool(h.decision.plan.interventions)
    assert 3 <= steered < len(requests)  # rules fired, and one request stayed unsteered

    mine, theirs = _records(logs["vllm"]), _records(logs["hf"])
    assert mine.keys() == theirs.keys()
    assert len(mine) == len(requests) + sum(len(t.decision.plan.interventions) for t in on_hf)
    same_answers = 0
    for key, v in mine.items():
        h = theirs[key]
        assert (v.backend, h.backend) == ("vllm", "hf")
        assert v.model_dump(exclude=APART | ANSWER) == h.model_dump(exclude=APART | ANSWER), key
        if isinstance(v, DecisionRecord):
            same = v.model_dump(include=ANSWER) == h.model_dump(include=ANSWER)
            same_answers += same
        else:
            assert isinstance(v, InterventionRecord) and isinstance(h, InterventionRecord)
            assert v.measured and h.measured
            assert v.coefficients.keys() == h.coefficients.keys()
            for layer, c in h.coefficients.items():
                assert v.coefficients[layer] == pytest.approx(c, rel=1e-4)
            assert [m.layer for m in v.measurements] == [m.layer for m in h.measurements]
            assert v.positions_affected > 0 and h.positions_affected > 0
    assert same_answers >= len(requests) - 1  # greedy tokens match (tests/vllm/test_parity.py)
