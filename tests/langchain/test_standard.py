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
# Not strict: greedy output depends on the CPU's float rounding, and these pass on some
# machines here (AMD EPYC) and fail on others (Intel Xeon).
WRONG_VALUE = ("the 135M model makes a schema-valid call with a wrong argument value on some "
               "CPUs (input=-2 for 'magic_function(3)'); the grammar guarantees shape, not sense")
BOTH_OUTPUTS = pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)


class TestSteeredChatModelUnit(ChatModelUnitTests):
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
        return "any"


@pytest.mark.real_model
class TestSteeredChatModelIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _share_engine(self, real_engine: Any) -> Any:
        # Models the suite builds itself find the session's engine instead of loading again.
        from steerguard.root import Steerguard

        before = Steerguard._default
        Steerguard.set_default(Steerguard(engine=real_engine, audit=False))
        yield
        Steerguard.set_default(before)

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return SteeredChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return dict(PARAMS)

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # No 60 s timeout: a 40-token call can take longer on two busy CPU cores.
        return {"temperature": 0, "max_tokens": 6, "stop": [], "max_retries": 2}

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
    @pytest.mark.xfail(reason=WRONG_VALUE, strict=False)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=WRONG_VALUE, strict=False)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @BOTH_OUTPUTS
    @pytest.mark.xfail(
        reason="binds tools with tool_choice=auto; a 135M model does not decide to call a "
        "tool on its own (the example forces the first call with tool_choice='any')",
        strict=False,
    )
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        reason="JSON mode constrains the answer to a JSON object, not to the Joke schema; the "
        "135M model leaves out 'punchline' (method='json_schema' constrains to the schema)",
        strict=False,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason="needs the model to copy '你好' into a tool argument; on some CPUs the 135M "
        "model writes other text (the call itself parses and validates)",
        strict=False,
    )
    def test_unicode_tool_call_integration(self, model: BaseChatModel, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, **kwargs)
