"""Pinned names agree with the installed semantic-conventions package."""

from __future__ import annotations

from importlib.metadata import version

from opentelemetry.semconv import schemas
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes

from steerguard.telemetry import attributes as a


def test_pinned_version_is_installed() -> None:
    assert version("opentelemetry-semantic-conventions") == a.SEMCONV_PACKAGE_VERSION
    assert a.SCHEMA_URL in {s.value for s in schemas.Schemas}


def test_genai_names_match_semconv() -> None:
    ours = {k: v for k, v in vars(a).items() if k.startswith("GEN_AI_")}
    assert ours
    for key, value in ours.items():
        assert getattr(gen_ai, key) == value, key
    assert a.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert a.METRIC_TOKEN_USAGE == gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
    assert a.METRIC_OPERATION_DURATION == gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
    assert gen_ai.GenAiOperationNameValues.CHAT.value == a.OPERATION_CHAT
    assert gen_ai.GenAiTokenTypeValues.INPUT.value == a.TOKEN_TYPE_INPUT
    assert gen_ai.GenAiTokenTypeValues.OUTPUT.value == a.TOKEN_TYPE_OUTPUT


def test_names_are_unique() -> None:
    names = [v for k, v in vars(a).items() if k.isupper() and isinstance(v, str)
             and "." in v and not v.startswith("http")]
    assert len(names) == len(set(names))
