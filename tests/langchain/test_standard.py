"""langchain-tests standard suites. Capability flags are honest; every skip and expected
failure is listed with its reason in the README ("LangChain standard tests")."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from steerguard.langchain import SteeredChatModel

# Small budgets: the bundled 135M model runs on shared CPUs here.
PARAMS: dict[str, Any] = {"audit": False, "max_string_chars": 12, "min_call_tokens": 16}
WRONG_VALUE = ("the 135M model makes a schema-valid call with a wrong argument value on some "
               "CPUs (input=-2 for 'magic_function(3)'); the grammar guarantees shape, not sense")
NO_OWN_TOOL_CALL = ("binds tools with tool_choice=auto; a 135M model does not decide to call a "
                    "tool on its own (the example forces the first call with tool_choice='any')")
JSON_NOT_SCHEMA = ("JSON mode constrains the answer to a JSON object, not to the Joke schema; "
                   "the 135M model leaves out 'punchline' (method='json_schema' constrains to "
                   "the schema)")
TEXT_NOT_COPIED = ("needs the model to copy '你好' into a tool argument; on some CPUs the 135M "
                   "model writes other text (the call itself parses and validates)")
BOTH_OUTPUTS = pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)


def may_fail(reason: str) -> pytest.MarkDecorator:
    """Expected to fail, not strictly: greedy output depends on the CPU's float rounding, and
    these pass on some machines here (AMD EPYC) and fail on others (Intel Xeon)."""
    return pytest.mark.xfail(reason=reason, strict=False)


class SteeredChatModelFlags:
    """What both suites are told about the model: its class, small budgets, and forced tool
    calls with grammar-constrained JSON."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return SteeredChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return dict(PARAMS)

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def tool_choice_value(self) -> str | None:
        # A 135M model does not choose to call a tool on its own; the suite's tool tests ask
        # for a call, so require one (grammar-constrained).
        return "any"


class TestSteeredChatModelUnit(SteeredChatModelFlags, ChatModelUnitTests):
    pass


@pytest.mark.real_model
class TestSteeredChatModelIntegration(SteeredChatModelFlags, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _share_engine(self, real_engine: Any) -> Any:
        # Models the suite builds itself find the session's engine instead of loading again.
        from steerguard.root import Steerguard

        before = Steerguard._default
        Steerguard.set_default(Steerguard(engine=real_engine, audit=False))
        yield
        Steerguard.set_default(before)

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # No 60 s timeout: a 40-token call can take longer on two busy CPU cores.
        return {"temperature": 0, "max_tokens": 6, "stop": [], "max_retries": 2}

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[Any]]:
        return {"invoke": [], "stream": []}

    @BOTH_OUTPUTS
    @may_fail(WRONG_VALUE)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @may_fail(WRONG_VALUE)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @BOTH_OUTPUTS
    @may_fail(NO_OWN_TOOL_CALL)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @may_fail(JSON_NOT_SCHEMA)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @may_fail(TEXT_NOT_COPIED)
    def test_unicode_tool_call_integration(self, model: BaseChatModel, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, **kwargs)
