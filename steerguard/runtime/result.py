"""What one generation (one batch row) returns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from steerguard.runtime.report import InterventionReport

if TYPE_CHECKING:
    import torch

FinishReason = Literal["stop", "length", "cancelled"]


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    reports: tuple[InterventionReport, ...] = ()
    latency_s: float = 0.0
    # [new_tokens, vocab] when asked for; typed Any so that audit records, which carry
    # results, do not import torch (the check below does, when there are logits)
    logits: Any = None
    probe_scores: dict[str, float] = {}

    @field_validator("logits")
    @classmethod
    def _a_tensor(cls, value: Any) -> torch.Tensor | None:
        if value is not None:
            import torch

            if not isinstance(value, torch.Tensor):
                raise ValueError(f"logits must be a torch.Tensor, not {type(value).__name__}")
        return value

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
