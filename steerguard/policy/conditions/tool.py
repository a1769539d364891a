"""`tool: {requested, last_tool, last_failed}`: every given part holds of the tool state.
The evidence names tools (the application's), never their arguments or results."""

from __future__ import annotations

from pydantic import Field, model_validator

from steerguard.policy.conditions.base import CompileChild, ConditionKind, EvalInput, Node
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec


class ToolSpec(Spec):
    """All given parts must hold."""

    requested: list[str] | None = Field(
        default=None, description="Any of these tools is among the calls just requested."
    )
    last_tool: list[str] | None = Field(
        default=None, description="The last result came from one of these tools."
    )
    last_failed: bool | None = Field(
        default=None, description="The last tool call failed (true) or succeeded (false)."
    )

    @model_validator(mode="after")
    def _some(self) -> ToolSpec:
        if self.requested is None and self.last_tool is None and self.last_failed is None:
            raise ValueError("tool needs requested, last_tool or last_failed")
        return self


class ToolCond(Spec):
    tool: ToolSpec


def compile_tool(spec: ToolSpec, _: CompileChild) -> Node:
    requested = set(spec.requested) if spec.requested is not None else None
    last_tool = set(spec.last_tool) if spec.last_tool is not None else None

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        t = inp.tool
        local: list[Evidence] = []
        if requested is not None:
            hits = [n for n in t.requested if n in requested]
            if not hits:
                return False
            local.append(
                Evidence(predicate="tool.requested", source="tool", detail=", ".join(hits))
            )
        if last_tool is not None:
            if t.last_tool not in last_tool:
                return False
            local.append(
                Evidence(predicate="tool.last_tool", source="tool", detail=str(t.last_tool))
            )
        if spec.last_failed is not None:
            if t.last_result is None or t.last_failed != spec.last_failed:
                return False
            state = "failed" if t.last_failed else "succeeded"
            local.append(
                Evidence(
                    predicate="tool.last_failed", source="tool", detail=f"{t.last_tool} {state}"
                )
            )
        ev.extend(local)
        return True

    return node


KINDS = (ConditionKind(name="tool", model=ToolCond, compile=compile_tool, quotes_text=False),)
