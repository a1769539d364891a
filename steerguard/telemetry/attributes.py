"""Every span, event, metric and attribute name steerguard emits, in one place.

GenAI names follow the OpenTelemetry Semantic Conventions 1.44.0, as shipped in the Python
package opentelemetry-semantic-conventions 0.66b2. The `gen_ai.*` namespace is still in
Development status upstream (0.66b2 already marks it as moving to the separate
semantic-conventions-genai repository), so the strings are copied here rather than imported
from `opentelemetry.semconv._incubating`: an upgrade of that package cannot rename what we
emit. tests/telemetry/test_attributes.py checks them against the installed package.
"""

from __future__ import annotations

from typing import Final

SEMCONV_VERSION: Final = "1.44.0"
SEMCONV_PACKAGE_VERSION: Final = "0.66b2"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
INSTRUMENTATION_NAME: Final = "steerguard"

# --- GenAI semantic conventions -------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
# Opt-in only: they carry what users typed and what the model answered.
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

# Values. The provider is a custom one: an in-process model served by steerguard itself.
PROVIDER: Final = "steerguard"
OPERATION_CHAT: Final = "chat"
OPERATION_TEXT_COMPLETION: Final = "text_completion"
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"
# The conventions' fallback error.type when no better classification exists.
ERROR_TYPE_OTHER: Final = "_OTHER"

# --- steerguard.* ----------------------------------------------------------------------------
DECISION_ID: Final = "steerguard.decision.id"
POLICY_BUNDLE: Final = "steerguard.policy.bundle"
POLICY_REVISION: Final = "steerguard.policy.revision"
POLICY_BUNDLE_HASH: Final = "steerguard.policy.bundle_hash"
POLICY_RULES: Final = "steerguard.policy.rules"
POLICY_DROPPED: Final = "steerguard.policy.dropped"
POLICY_FAILED_CLOSED: Final = "steerguard.policy.failed_closed"
POLICY_OUTCOME: Final = "steerguard.policy.outcome"
PLAN_HASH: Final = "steerguard.plan.hash"
VECTORS: Final = "steerguard.vectors"
INTERVENTION_COUNT: Final = "steerguard.plan.interventions"
REQUEST_ID: Final = "steerguard.request.id"
AUDIT_RECORD_IDS: Final = "steerguard.audit.record_ids"
AUDIT_SOURCE: Final = "steerguard.audit.source"
AUDIT_DROP_REASON: Final = "steerguard.audit.drop_reason"

# One event per intervention on the steering span.
INTERVENTION_EVENT: Final = "steerguard.intervention"
INTERVENTION_INDEX: Final = "steerguard.intervention.index"
VECTOR_NAME: Final = "steerguard.vector.name"
VECTOR_HASH: Final = "steerguard.vector.hash"
RULE_ID: Final = "steerguard.rule.id"
INTERVENTION_LAYERS: Final = "steerguard.intervention.layers"
INTERVENTION_STRENGTH: Final = "steerguard.intervention.strength"
INTERVENTION_OP: Final = "steerguard.intervention.op"
INTERVENTION_POSITIONS: Final = "steerguard.intervention.positions"
INTERVENTION_POSITIONS_AFFECTED: Final = "steerguard.intervention.positions_affected"
INTERVENTION_DELTA_NORM: Final = "steerguard.intervention.delta_norm"
INTERVENTION_MEASURED_LAYERS: Final = "steerguard.intervention.measured_layers"
INTERVENTION_LAYER_DELTA_NORMS: Final = "steerguard.intervention.layer_delta_norms"
INTERVENTION_PROJECTION_BEFORE: Final = "steerguard.intervention.projection_before"
INTERVENTION_PROJECTION_AFTER: Final = "steerguard.intervention.projection_after"

# --- span names ------------------------------------------------------------------------------
SPAN_DECISION: Final = "steerguard.policy.decide"
SPAN_STEERING: Final = "steerguard.steer"
SPAN_AUDIT: Final = "steerguard.audit.enqueue"

# --- metric names ----------------------------------------------------------------------------
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_INTERVENTIONS: Final = "steerguard.interventions"
METRIC_DECISION_DURATION: Final = "steerguard.policy.decision.duration"
METRIC_AUDIT_QUEUE_DEPTH: Final = "steerguard.audit.queue.depth"
METRIC_AUDIT_WRITTEN: Final = "steerguard.audit.records.written"
METRIC_AUDIT_SPILLED: Final = "steerguard.audit.records.spilled"
METRIC_AUDIT_DROPPED: Final = "steerguard.audit.records.dropped"
METRIC_AUDIT_REWRITTEN: Final = "steerguard.audit.records.rewritten"
METRIC_AUDIT_LOST: Final = "steerguard.audit.records.lost"
METRIC_AUDIT_SPILL_REJECTED: Final = "steerguard.audit.spill.rejected"

# Bucket advice from the conventions for the two gen_ai.client.* histograms.
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)
# Policy decisions are sub-millisecond to tens of milliseconds (activation conditions run a
# forward pass), so they get finer buckets than a whole model call.
DECISION_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
