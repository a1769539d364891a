"""The plugin's part in each vLLM worker: find each request's plan, steer the decoder layers
step by step, keep measurements until the sender takes them.

Two extension points of vLLM's V1 GPUModelRunner (which the CPU runner inherits) are wrapped:
`_model_forward` (the batch is laid out by then: request order, token offsets, positions) and
`_on_request_state_removed` (a request finished or was aborted: its plan goes). Decoder layers
get an instance-level `forward` that asks the running step, if any, to steer its output.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError

from steerguard.errors import SteerguardError
from steerguard.vllm.config import plugin_config, steering_unavailable
from steerguard.vllm.directions import DirectionTable, VectorIndex
from steerguard.vllm.ledger import Ledger, WorkerReport
from steerguard.vllm.rows import RowPlan, compile_row
from steerguard.vllm.step import StepProgram, StepRow
from steerguard.vllm.wire import WirePlan

log = logging.getLogger("steerguard.vllm")


@dataclass(frozen=True)
class _Admitted:
    plan: RowPlan
    prompt_len: int
    ledger: Ledger | None
    key: str | None


class WorkerSteering:
    """Steering state of one model runner. Plans live exactly as long as vLLM keeps their
    request; ledgers of finished requests wait (a bounded number) to be taken."""

    def __init__(self, runner: Any) -> None:
        vllm_config = runner.vllm_config
        self.config = plugin_config(vllm_config)
        hf = vllm_config.model_config.hf_text_config
        self.table = DirectionTable(
            VectorIndex(self.config.vector_dirs),
            num_layers=int(hf.num_hidden_layers),
            hidden_size=int(hf.hidden_size),
            dtype=vllm_config.model_config.dtype,
            device=torch.device(runner.device),
        )
        self.unavailable = steering_unavailable(vllm_config)
        self.local_layers: frozenset[int] | None = None
        self.plans: dict[str, _Admitted | None] = {}
        self.ledgers: dict[str, Ledger] = {}
        self.unclaimed: OrderedDict[str, None] = OrderedDict()
        self.current: StepProgram | None = None
        if self.unavailable is None:
            self._wrap_layers(runner.get_model())

    # layers -----------------------------------------------------------------------------------

    def _wrap_layers(self, model: torch.nn.Module) -> None:
        layers = model.model.layers  # type: ignore[union-attr]
        local = []
        for index, layer in enumerate(layers):
            if type(layer).__name__ == "PPMissingLayer":
                continue
            layer.forward = self._wrapped(index, layer.forward)
            local.append(index)
        if len(local) != len(layers):
            self.local_layers = frozenset(local)

    def _wrapped(self, index: int, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            step = self.current
            if step is None:
                return output
            hidden, residual = output
            steered = step.apply(index, hidden, residual)
            return output if steered is None else steered

        return forward

    # steps ------------------------------------------------------------------------------------

    def begin(self, runner: Any) -> StepProgram | None:
        """The program of the step vLLM is about to run; None when no row has a plan."""
        batch = runner.input_batch
        count = batch.num_reqs
        if not count:
            return None
        req_ids = batch.req_ids
        starts = runner.query_start_loc.np
        computed = batch.num_computed_tokens_cpu
        rows = []
        for i in range(count):
            rid = req_ids[i]
            admitted = self.plans.get(rid, _MISSING)
            if admitted is _MISSING:
                admitted = self._admit(rid, runner.requests[rid])
            if admitted is None:
                continue
            start = int(starts[i])
            rows.append(
                StepRow(
                    admitted.plan,
                    start,
                    int(starts[i + 1]) - start,
                    int(computed[i]),
                    admitted.prompt_len,
                    admitted.ledger,
                )
            )
        if not rows:
            return None
        return StepProgram(rows, self.table, int(starts[count]))

    def _admit(self, rid: str, state: Any) -> _Admitted | None:
        params = state.sampling_params
        extra = getattr(params, "extra_args", None)
        try:
            wire = WirePlan.from_extra_args(extra)
        except ValidationError as exc:
            log.error("request %s: malformed steerguard plan, not steered: %s", rid, exc)
            self.plans[rid] = None
            return None
        if wire is None or not (wire.interventions or wire.reads):
            self.plans[rid] = None
            return None
        ledger = None
        if wire.report is not None:
            ledger = Ledger(None, state.num_prompt_tokens, self.local_layers)
            if wire.report in self.ledgers:
                log.warning("request %s reuses report key %r; the older report is lost",
                            rid, wire.report)
                self.unclaimed.pop(wire.report, None)
            self.ledgers[wire.report] = ledger
        try:
            if self.unavailable is not None:
                raise SteerguardError(self.unavailable)
            plan = compile_row(wire, self.table)
        except SteerguardError as exc:
            log.error("request %s: not steered: %s", rid, exc)
            if ledger is not None:
                ledger.error = str(exc)
            self.plans[rid] = None
            return None
        if ledger is not None:
            ledger.plan = plan
        admitted = self.plans[rid] = _Admitted(plan, state.num_prompt_tokens, ledger, wire.report)
        return admitted

    def forget(self, rid: str) -> None:
        """vLLM dropped the request: its plan goes; its ledger waits to be taken."""
        admitted = self.plans.pop(rid, None)
        if admitted is None or admitted.key is None or admitted.key not in self.ledgers:
            return
        self.unclaimed[admitted.key] = None
        while len(self.unclaimed) > self.config.unclaimed_reports:
            oldest, _ = self.unclaimed.popitem(last=False)
            self.ledgers.pop(oldest, None)

    # reports ----------------------------------------------------------------------------------

    def take(self, wanted: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        """Reports for (key, cutoff) pairs: measurements at positions < cutoff (the sender's
        prompt length + generated tokens - 1: the positions vLLM ran for its tokens)."""
        out = {}
        for key, cutoff in wanted:
            ledger = self.ledgers.pop(key, None)
            self.unclaimed.pop(key, None)
            if ledger is None:
                report = WorkerReport(error=f"no report under key {key!r} in this worker")
            else:
                report = ledger.take(cutoff)
            out[key] = report.model_dump(mode="json")
        return out

    def status(self) -> dict[str, int]:
        return {
            "plans": sum(a is not None for a in self.plans.values()),
            "requests": len(self.plans),
            "ledgers": len(self.ledgers),
        }


_MISSING: Any = object()


def steering_of(runner: Any) -> WorkerSteering:
    found = runner.__dict__.get("_steerguard")
    if found is None:
        found = runner.__dict__["_steerguard"] = WorkerSteering(runner)
    return found


def install_runner_hooks() -> None:
    """Wrap the V1 runner's extension points (once per process)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner, "_steerguard_hooks", False):
        return
    model_forward = GPUModelRunner._model_forward
    removed = GPUModelRunner._on_request_state_removed

    def _model_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        steering = steering_of(self)
        step = steering.begin(self)
        if step is None:
            return model_forward(self, *args, **kwargs)
        steering.current = step
        try:
            output = model_forward(self, *args, **kwargs)
        finally:
            steering.current = None
        step.finish()
        return output

    def _on_request_state_removed(self: Any, req_id: str, req_state: Any) -> None:
        found = self.__dict__.get("_steerguard")
        if found is not None:
            found.forget(req_id)
        removed(self, req_id, req_state)

    GPUModelRunner._model_forward = _model_forward
    GPUModelRunner._on_request_state_removed = _on_request_state_removed
    GPUModelRunner._steerguard_hooks = True


class SteerguardWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`), reached by collective_rpc."""

    def steerguard_take(self, wanted: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        return steering_of(self.model_runner).take(wanted)  # type: ignore[attr-defined]

    def steerguard_status(self) -> dict[str, int]:
        return steering_of(self.model_runner).status()  # type: ignore[attr-defined]
