"""The plugin's settings (`additional_config["steerguard"]`) and what an engine must be for
steering to reach its layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steerguard.errors import SteerguardError

CONFIG_KEY = "steerguard"

# vLLM models whose decoder layers return (hidden, residual), summing to the residual stream.
SUPPORTED_ARCHITECTURES = frozenset(
    {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"}
)

WORKER_EXTENSION = "steerguard.vllm.worker.SteerguardWorkerExtension"


class PluginConfig(BaseModel):
    """Set with `--additional-config '{"steerguard": {"vector_dirs": ["..."]}}'` (or
    `additional_config=` in the Python API). Vectors are looked up only here: a request names
    vectors by content hash, never by path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vector_dirs: tuple[Path, ...] = ()
    unclaimed_reports: int = Field(
        default=1024, ge=0, description="Finished requests' reports kept until taken."
    )


def plugin_config(vllm_config: Any) -> PluginConfig:
    raw = (getattr(vllm_config, "additional_config", None) or {}).get(CONFIG_KEY, {})
    try:
        return PluginConfig.model_validate(raw)
    except ValidationError as exc:
        raise SteerguardError(f"additional_config.{CONFIG_KEY}: {exc}") from exc


def steering_unavailable(vllm_config: Any) -> str | None:
    """Why this engine cannot steer (None: it can)."""
    from vllm.config import CompilationMode, CUDAGraphMode

    architecture = vllm_config.model_config.architecture  # the class vLLM runs
    if architecture not in SUPPORTED_ARCHITECTURES:
        return (
            f"steering supports {', '.join(sorted(SUPPORTED_ARCHITECTURES))}; this model runs "
            f"as {architecture}"
        )
    compilation = vllm_config.compilation_config
    if compilation.mode != CompilationMode.NONE or compilation.cudagraph_mode not in (
        None, CUDAGraphMode.NONE
    ):
        return "steering needs an eager engine (enforce_eager=True, --enforce-eager)"
    if vllm_config.use_v2_model_runner:
        return "steering needs vLLM's V1 model runner (set VLLM_USE_V2_MODEL_RUNNER=0)"
    return None
