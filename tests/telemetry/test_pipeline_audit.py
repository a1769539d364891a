"""Through the real pipeline (tiny random Llama, real policy engine, real Redis): every audit
record carries the trace and span ids of an exported span, and the spans nest as documented."""

from __future__ import annotations

import pytest
import torch
from opentelemetry import trace

from steerguard.audit import AuditLog, AuditStore
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.pipeline import Request, Turn
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.inputs import ChatMessage
from steerguard.policy.loader import load_bundle_text
from steerguard.root import Steerguard
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.telemetry import attributes as a
from tests.conftest import audit_log_fixture
from tests.policy.helpers import keyword_bundle
from tests.telemetry.conftest import Otel

pytestmark = pytest.mark.redis
PARAMS = GenerationParams(max_new_tokens=4)
BUNDLE = keyword_bundle("teltest", {"calm": ("[1, 2]", 0.3), "formal": ("[2, 3]", 0.2)},
                        ["furious"], rule="upset-calm", priority=10, revision="r1")


@pytest.fixture(scope="module")
def engine() -> SteeringEngine:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from steerguard.errors import ModelLoadError
    from steerguard.runtime.loading import bundled_model_dir, wrap_model

    try:
        tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())  # the real chat template
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    loaded = wrap_model(model, tokenizer, "tiny-llama")
    vectors = {
        name: SteeringVector(name=name, fingerprint=loaded.fingerprint,
                             directions={layer: torch.randn(64) for layer in range(4)},
                             extraction=ExtractionInfo(method="random"))
        for name in ("calm", "formal")
    }
    return SteeringEngine(loaded, vectors)


audit = audit_log_fixture("audit", "sgtel")


def request(text: str) -> Request:
    return Request(messages=(ChatMessage(role="user", content=text),),
                   prompt=[{"role": "user", "content": text}])


def hex_ids(span: object) -> tuple[str, str]:
    ctx = span.context  # type: ignore[attr-defined]
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def test_audit_records_carry_exported_span_ids(engine, audit: AuditLog, otel: Otel) -> None:
    policy = PolicyEngine(load_bundle_text(BUNDLE, "bundle.yaml"))
    pipeline = Steerguard(engine=engine, policy=policy, audit=audit,
                          telemetry=otel.telemetry).pipeline()

    turns = [pipeline.run(request("I am furious about my order"), PARAMS),
             pipeline.run(request("hello there"), PARAMS)]
    streamed = list(pipeline.run_stream(request("still furious"), PARAMS))
    assert isinstance(streamed[-1], Turn)
    turns.append(streamed[-1])
    early = pipeline.run_stream(request("furious again"), PARAMS)
    next(early)
    early.close()  # cancelled mid-stream: still recorded, still traced
    assert audit.flush(10)

    spans = otel.spans()
    by_ids = {hex_ids(s): s for s in spans}
    records = AuditStore(audit.client, audit.config).query(limit=100).records
    steered = [t for t in turns if t.decision.plan.interventions]
    expected = sum(1 + len(t.decision.plan.interventions) for t in turns) + 3  # + cancelled
    assert len(records) == expected
    for record in records:
        assert record.backend == "hf"  # the engine that generated
        span = by_ids[(record.trace_id, record.span_id)]  # type: ignore[index]
        assert span.name == a.SPAN_AUDIT
        assert span.parent is not None
        root = by_ids[(record.trace_id, trace.format_span_id(span.parent.span_id))]
        assert root.name == "chat tiny-llama"
        assert dict(root.attributes or {})[a.DECISION_ID] == record.decision_id

    roots = [s for s in spans if s.name == "chat tiny-llama"]
    assert len(roots) == 4
    assert len({s.context.trace_id for s in roots}) == 4  # one trace per request
    for root in roots:
        children = sorted(s.name for s in spans
                          if s.parent is not None and s.parent.span_id == root.context.span_id)
        assert children == sorted([a.SPAN_DECISION, a.SPAN_STEERING, a.SPAN_AUDIT])
    cancelled = [s for s in roots
                 if tuple(dict(s.attributes or {}).get(a.GEN_AI_RESPONSE_FINISH_REASONS, ()))
                 == ("cancelled",)]
    assert len(cancelled) == 1
    events = [e for s in spans if s.name == a.SPAN_STEERING for e in s.events]
    assert len(events) == 2 * 3  # calm and formal on three steered requests
    assert all(e.attributes and e.attributes[a.INTERVENTION_DELTA_NORM] >= 0 for e in events)
    assert len(steered) == 2

    names = otel.metrics()
    assert a.METRIC_AUDIT_WRITTEN in names
    (written,) = names[a.METRIC_AUDIT_WRITTEN].data.data_points
    assert written.value == expected  # type: ignore[union-attr]


def test_a_forked_worker_reports_audit_metrics_under_its_own_chain(
        engine, audit: AuditLog, otel: Otel) -> None:
    """The child's log takes a chain of its own at fork; the pipeline's audit metrics follow
    it, so workers do not report under one label (the parent's)."""
    import os

    root = Steerguard(engine=engine, audit=audit, telemetry=otel.telemetry,
                      policy=PolicyEngine(load_bundle_text(BUNDLE, "bundle.yaml")))
    pipeline = root.pipeline()
    parent_chain = audit.chain_id

    def sources() -> set[object]:
        metric = otel.metrics()[a.METRIC_AUDIT_WRITTEN]
        return {dict(p.attributes or {})[a.AUDIT_SOURCE] for p in metric.data.data_points}

    assert sources() == {parent_chain} and pipeline.audit is audit
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = audit.chain_id != parent_chain and sources() == {audit.chain_id}
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sources() == {parent_chain}
