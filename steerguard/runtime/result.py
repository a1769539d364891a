"""What one generation (one batch row) returns."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict

from steerguard.runtime.report import InterventionReport

FinishReason = Literal["stop", "length", "cancelled"]


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    reports: tuple[InterventionReport, ...] = ()
    latency_s: float = 0.0
    logits: torch.Tensor | None = None  # [new_tokens, vocab] when asked for
    probe_scores: dict[str, float] = {}

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
