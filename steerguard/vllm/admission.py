"""Where a request enters vLLM: refused at the front door when it cannot be steered as asked,
and given a prefix-cache salt in the engine core so that cached blocks are shared only between
requests steered the same way.

The front door is the API process's InputProcessor: an error there is the request's own (the
OpenAI server answers 400) and nothing reaches the workers, which could otherwise only run the
row unsteered. The salt is set where the scheduler turns the request into its own `Request`,
whose block hashes it computes there, so every frontend gets it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from steerguard.errors import SteerguardError
from steerguard.vllm.config import plugin_config, steering_unavailable
from steerguard.vllm.directions import VectorIndex
from steerguard.vllm.wire import EXTRA_ARGS_KEY, WirePlan


@cache
def _index(folders: tuple[Path, ...]) -> VectorIndex:
    return VectorIndex(folders)


def check_request(vllm_config: Any, params: Any) -> WirePlan | None:
    """The request's plan, or SteerguardError saying why it cannot run as asked."""
    try:
        wire = WirePlan.from_extra_args(getattr(params, "extra_args", None))
    except ValidationError as exc:
        raise SteerguardError(f"extra_args.{EXTRA_ARGS_KEY}: {exc}") from exc
    if wire is None or not (wire.interventions or wire.reads):
        return wire
    problem = steering_unavailable(vllm_config)
    if problem is not None:
        raise SteerguardError(problem)
    if wire.report is not None and getattr(params, "n", 1) != 1:
        raise SteerguardError("a steerguard report key needs n = 1 (one sequence per request)")
    config = plugin_config(vllm_config)
    index = _index(config.vector_dirs)
    for iv in wire.interventions:
        index.path(iv.vector_hash)  # VectorError (a SteerguardError) names the hash and folders
    return wire


def install_front_door() -> None:
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.input_processor import InputProcessor

    if getattr(InputProcessor, "_steerguard_hooks", False):
        return
    process_inputs = InputProcessor.process_inputs

    def checked(self: Any, request_id: str, prompt: Any, params: Any, *args: Any,
                **kwargs: Any) -> Any:
        if isinstance(params, SamplingParams):
            try:
                check_request(self.vllm_config, params)
            except SteerguardError as exc:
                raise VLLMValidationError(
                    str(exc), parameter=f"extra_args.{EXTRA_ARGS_KEY}"
                ) from exc
        return process_inputs(self, request_id, prompt, params, *args, **kwargs)

    InputProcessor.process_inputs = checked
    InputProcessor._steerguard_hooks = True


def salt_request(request: Any) -> None:
    """Key the request's prefix-cache blocks by its plan; requests that read prompt positions
    compute all of them."""
    params = request.sampling_params
    extra = getattr(params, "extra_args", None)
    if not extra or EXTRA_ARGS_KEY not in extra:
        return
    try:
        wire = WirePlan.from_extra_args(extra)
    except ValidationError:
        return  # the worker refuses it too: it runs unsteered
    if wire is None:
        return
    salt = wire.cache_salt()
    if salt is not None:
        request.cache_salt = f"{request.cache_salt}|{salt}" if request.cache_salt else salt
    if wire.skips_prefix_cache:
        params.skip_reading_prefix_cache = True


def install_salt() -> None:
    from vllm.v1.request import Request

    if getattr(Request, "_steerguard_hooks", False):
        return
    original = Request.from_engine_core_request.__func__  # type: ignore[attr-defined]

    def from_engine_core_request(cls: type, request: Any, block_hasher: Any) -> Any:
        salt_request(request)
        return original(cls, request, block_hasher)

    Request.from_engine_core_request = classmethod(from_engine_core_request)  # type: ignore[method-assign]
    Request._steerguard_hooks = True
