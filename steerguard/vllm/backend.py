"""VllmBackend: the SteeringEngine's generate, generate_batch and stream, served by vLLM.

The backend owns an AsyncLLM on an event loop thread of its own, so that callers on any thread
(the pipeline is synchronous) share vLLM's continuous batching: concurrent calls land in the
same steps. Each row's plan is resolved here (vector names to content hashes, strengths to
coefficients with the layer norms) and travels in its SamplingParams; the plugin steers it in
the workers. After a row finishes, its measurements are taken from the workers by
collective_rpc and turned into the same InterventionReports the HF engine returns.

Activation probes cannot choose a plan inside vLLM's step (the plan of a row is fixed when
the step is laid out). A row whose plan is a resolver therefore runs twice: one prefill that
reads the probe layers at the probe position (max_tokens=1), then the generation with the plan
the resolver chose. With prefix caching on, an unsteered second pass reuses the first pass's
blocks; a steered one is salted by its plan and prefills again (as the HF engine's second
prefill does when a plan steers prompt positions below the probe layer).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from transformers import AutoConfig, AutoTokenizer

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.probe import ActivationProbe
from steerguard.directions.storage import save_vector
from steerguard.directions.vector import SteeringVector
from steerguard.errors import ModelLoadError, PlanError
from steerguard.runtime.activations import Pooling
from steerguard.runtime.calibration import CALIBRATION_TEXTS
from steerguard.runtime.engine import GenerationParams, LogitsProcessor, StreamChunk
from steerguard.runtime.loading import (
    BUNDLED,
    bundled_model_dir,
    prepare_tokenizer,
    steerguard_home,
)
from steerguard.runtime.plan import SteeringPlan
from steerguard.runtime.program import PlanResolver
from steerguard.runtime.prompts import Prompt, encode_prompt, encode_rows
from steerguard.runtime.report import InterventionReport
from steerguard.runtime.result import FinishReason, GenerationResult
from steerguard.vllm.config import CONFIG_KEY, WORKER_EXTENSION
from steerguard.vllm.directions import stored_hash
from steerguard.vllm.ledger import WorkerReport
from steerguard.vllm.wire import Read, WirePlan, wire_plan

T = TypeVar("T")
RowPlan = SteeringPlan | PlanResolver | None


def default_engine_options() -> dict[str, Any]:
    """What steering needs (eager) and what fits a CPU box; `engine_options` override it.
    On CPU, gpu_memory_utilization is the share of the NUMA node's memory vLLM reserves."""
    on_gpu = torch.cuda.is_available()
    return {
        "dtype": "bfloat16" if on_gpu else "float32",
        "enforce_eager": True,
        "gpu_memory_utilization": 0.9 if on_gpu else 0.2,
        "max_model_len": 4096,
    }


def fingerprint_from_config(source: str, model_id: str) -> ModelFingerprint:
    """The model's fingerprint from its config alone (the weights load in vLLM's workers)."""
    config = AutoConfig.from_pretrained(source)
    text = config.get_text_config()
    return ModelFingerprint(
        model_id=model_id,
        architecture=(config.architectures or [type(config).__name__])[0],
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=int(text.hidden_size),
        num_layers=int(text.num_hidden_layers),
    )


@dataclass
class _Outcome:
    """One row after vLLM finished it."""

    ids: list[int]
    plan: SteeringPlan | None
    wire: WirePlan | None
    probes: Sequence[ActivationProbe] = ()  # read in this request (fixed plans): scored afterwards
    generated: int = 0  # tokens vLLM produced, an end token included
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: FinishReason = "length"
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def cutoff(self) -> int:
        """Positions vLLM ran for this row's tokens: the prompt, then each token but the
        last (later steps, whose output vLLM discarded, are not measured)."""
        return len(self.ids) + self.generated - 1


class VllmBackend:
    """Steered generation on vLLM with SteeringEngine's call shapes (see docs/vllm.md)."""

    backend: ClassVar[str] = "vllm"

    def __init__(
        self,
        model: str = BUNDLED,
        *,
        vectors: Iterable[SteeringVector] = (),
        layer_norms: torch.Tensor | None = None,
        vector_dir: Path | None = None,
        engine_options: Mapping[str, Any] | None = None,
        exact_reports: bool = True,
    ) -> None:
        """`exact_reports`: steered rows compute their whole prompt, so that measurements cover
        every position as on the hf backend; False lets them reuse prompt blocks cached by
        requests steered the same way, and measures the positions they compute."""
        self.exact_reports = exact_reports
        if model == BUNDLED:
            self.source, model_id = str(bundled_model_dir()), BUNDLED
        else:
            self.source, model_id = model, model
        try:
            self.fingerprint = fingerprint_from_config(self.source, model_id)
            self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(self.source))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {model!r} for vLLM: {exc}") from exc
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id).strip("_") or "model"
        self.vector_dir = Path(vector_dir or steerguard_home() / "vllm" / "vectors" / slug)
        self.vector_dir.mkdir(parents=True, exist_ok=True)
        self._vectors: dict[str, SteeringVector] = {}
        self._vectors_lock = threading.Lock()
        for vector in vectors:
            self.add_vector(vector)
        self._norms = layer_norms
        self._norms_lock = asyncio.Lock()
        options = {**default_engine_options(), **dict(engine_options or {})}
        extra = dict(options.pop("additional_config", None) or {})
        mine = dict(extra.get(CONFIG_KEY) or {})
        mine["vector_dirs"] = [str(self.vector_dir), *mine.get("vector_dirs", [])]
        extra[CONFIG_KEY] = mine
        options["additional_config"] = extra
        options.setdefault("worker_extension_cls", WORKER_EXTENSION)
        # Steering reaches the layers through the V1 runner's hooks (config.py).
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="steerguard-vllm", daemon=True
        )
        self._thread.start()
        try:
            self.engine = self.run(self._start(self.source, options))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _start(source: str, options: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(model=source, **options))

    # life cycle -------------------------------------------------------------------------------

    def close(self) -> None:
        engine = self.__dict__.pop("engine", None)
        if engine is not None and self._loop.is_running():
            self.run(self._shutdown(engine))
        self._stop_loop()

    @staticmethod
    async def _shutdown(engine: Any) -> None:
        # Its output task ends first: it would report the engine processes' exit as a death.
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        engine.shutdown()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> VllmBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine's event loop and wait for it (for callers that drive
        `self.engine` directly)."""
        return self._submit(coro).result()

    # vectors and norms ------------------------------------------------------------------------

    def add_vector(self, vector: SteeringVector) -> None:
        """Make `vector` available to plans: checked against the model and stored where the
        workers look vectors up by content hash."""
        vector.check_fits(self.fingerprint)
        path = self.vector_dir / f"{vector.name}-{vector.content_hash()}.safetensors"
        if stored_hash(path) != vector.content_hash():
            save_vector(vector, path)
        with self._vectors_lock:
            self._vectors = {**self._vectors, vector.name: vector}

    @property
    def vectors(self) -> Mapping[str, SteeringVector]:
        return self._vectors

    @property
    def layer_norms(self) -> torch.Tensor:
        """Each layer's mean hidden-state norm over the calibration texts, as
        steerguard.runtime.calibration computes it (first tokens left out), read from vLLM
        once."""
        if self._norms is not None:
            return self._norms
        return self.run(self._layer_norms_once())

    async def _layer_norms_once(self) -> torch.Tensor:
        """For code on the engine's loop, which must not wait on the loop (`run`)."""
        async with self._norms_lock:
            if self._norms is None:
                self._norms = await self._layer_norms()
        return self._norms

    async def _layer_norms(self) -> torch.Tensor:
        layers = tuple(range(self.fingerprint.num_layers))
        prompts = [list(self.tokenizer(text)["input_ids"]) for text in CALIBRATION_TEXTS]
        wires = [
            WirePlan(reads=(Read(layers=layers, kind="norm"),), report=_key()) for _ in prompts
        ]
        pairs = list(zip(prompts, wires, strict=True))
        await asyncio.gather(*(self._prefill_only(ids, w) for ids, w in pairs))
        reports = await self.take_reports([(w, len(ids)) for ids, w in pairs])
        per_row = []
        for report in reports:
            by_layer = {r.layer: torch.tensor(r.values[1:]).mean() for r in report.reads}
            per_row.append(torch.stack([by_layer[layer] for layer in layers]))
        return torch.stack(per_row).mean(0)

    # prompts ----------------------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def activations(
        self, prompts: Sequence[Prompt], layers: Sequence[int], pooling: Pooling = "last"
    ) -> dict[int, torch.Tensor]:
        """Unsteered pooled outputs of `layers` for each prompt -> {layer: [n, hidden]}, read
        from vLLM's layers as SteeringEngine.activations pools them (vector extraction and
        probe calibration run on this backend too)."""
        wanted = tuple(sorted(set(layers)))
        encoded = [self.encode(p) for p in prompts]
        if not encoded or not wanted:
            return {layer: torch.empty(0, self.fingerprint.hidden_size) for layer in wanted}
        pooled: list[dict[int, torch.Tensor]] = []
        # Whole prompts come back as lists of floats: a few prompts at a time bound the size.
        chunk = 8 if pooling != "last" else 64
        for start in range(0, len(encoded), chunk):
            pooled.extend(self.run(self._pooled(encoded[start : start + chunk], wanted, pooling)))
        return {layer: torch.stack([row[layer] for row in pooled]) for layer in wanted}

    async def _pooled(
        self, encoded: Sequence[list[int]], layers: tuple[int, ...], pooling: Pooling
    ) -> list[dict[int, torch.Tensor]]:
        wires = [
            WirePlan(
                reads=(Read(layers=layers, positions=(len(ids) - 1,) if pooling == "last"
                            else None),),
                report=_key(),
            )
            for ids in encoded
        ]
        pairs = list(zip(encoded, wires, strict=True))
        await asyncio.gather(*(self._prefill_only(ids, w) for ids, w in pairs))
        reports = await self.take_reports([(w, len(ids)) for ids, w in pairs])
        rows = []
        for report in reports:
            row = {}
            for read in report.reads:
                values = torch.tensor(read.values, dtype=torch.float32)
                if pooling == "last":
                    row[read.layer] = values[-1]
                elif len(values) > 1:  # the first token left out, as runtime.activations.pool
                    row[read.layer] = values[1:].mean(0)
                else:
                    row[read.layer] = torch.zeros(values.shape[-1])
            rows.append(row)
        return rows

    def hidden_states(
        self, prompt: Prompt, layers: Sequence[int], plan: SteeringPlan | None = None
    ) -> dict[int, torch.Tensor]:
        """{layer: [prompt tokens, hidden]}: each layer's output at every prompt position,
        before that layer's own steering (where probes read), `plan` steering the others."""
        ids = self.encode(prompt)
        wire = self.wire(plan, reads=(Read(layers=tuple(layers)),))
        self.run(self._prefill_only(ids, wire))
        (report,) = self.run(self.take_reports([(wire, len(ids))]))
        return {r.layer: torch.tensor(r.values) for r in report.reads}

    def wire(self, plan: SteeringPlan | None, reads: Sequence[Read] = ()) -> WirePlan | None:
        """The payload a request carries in `SamplingParams.extra_args` (`.extra_args()`) for
        `plan`; None for an unsteered row that reads nothing. Its report key is fresh."""
        steered = plan is not None and bool(plan.interventions)
        if not (steered or reads):
            return None
        return wire_plan(
            plan if steered else SteeringPlan.empty(),  # type: ignore[arg-type]
            self.vectors,
            self.layer_norms if steered else torch.zeros(0),
            reads=reads,
            report=_key(),
            full_prefill=steered and self.exact_reports,
        )

    # generation -------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        plan: RowPlan = None,
        params: GenerationParams | None = None,
        **options: Any,
    ) -> GenerationResult:
        return self.generate_batch([prompt], [plan], params, **options)[0]

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        plans: Sequence[RowPlan],
        params: GenerationParams | None = None,
        **options: Any,
    ) -> list[GenerationResult]:
        """Each row with its own plan (None: unsteered); rows run as concurrent vLLM requests.
        `options` as agenerate_batch takes them."""
        return self.run(self.agenerate_batch(prompts, plans, params, **options))

    async def agenerate_batch(
        self,
        prompts: Sequence[Prompt],
        plans: Sequence[RowPlan],
        params: GenerationParams | None = None,
        *,
        probes: Sequence[ActivationProbe] = (),
        probe_offsets: Sequence[int] | None = None,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        """generate_batch for a caller's own event loop."""
        if asyncio.get_running_loop() is not self._loop:
            return await asyncio.wrap_future(self._submit(self.agenerate_batch(
                prompts, plans, params, probes=probes, probe_offsets=probe_offsets,
                logits_processor=logits_processor, cancel=cancel,
            )))
        params = params or GenerationParams()
        encoded, offsets = self._check(prompts, plans, params, probes, probe_offsets,
                                       logits_processor)
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(
            self._row(ids, plan, params, probes, offset, cancel, None)
            for ids, plan, offset in zip(encoded, plans, offsets, strict=True)
        ))
        return await self._results(outcomes, time.perf_counter() - started)

    def stream(
        self,
        prompt: Prompt,
        plan: RowPlan = None,
        params: GenerationParams | None = None,
        *,
        probes: Sequence[ActivationProbe] = (),
        probe_offset: int = 0,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        """Text deltas as tokens arrive; the last chunk carries the result. Closing the
        iterator aborts the request."""
        params = params or GenerationParams()
        (ids,), (offset,) = self._check([prompt], [plan], params, probes, [probe_offset],
                                        logits_processor)
        chunks: queue.Queue[StreamChunk | BaseException | None] = queue.Queue()
        stop = threading.Event()

        async def run() -> None:
            try:
                started = time.perf_counter()
                outcome = await self._row(ids, plan, params, probes, offset,
                                          _Either(cancel, stop), chunks.put)
                (result,) = await self._results([outcome], time.perf_counter() - started)
                chunks.put(StreamChunk(text="", result=result))
            except BaseException as exc:  # handed to the consumer's thread
                chunks.put(exc)
            finally:
                chunks.put(None)

        future = self._submit(run())
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            future.result()

    # rows -------------------------------------------------------------------------------------

    def _check(
        self,
        prompts: Sequence[Prompt],
        plans: Sequence[RowPlan],
        params: GenerationParams,
        probes: Sequence[ActivationProbe],
        probe_offsets: Sequence[int] | None,
        logits_processor: LogitsProcessor | None,
    ) -> tuple[list[list[int]], list[int]]:
        if logits_processor is not None:
            raise PlanError(
                "logits processors (constrained JSON and tool-call output) run on the hf "
                "backend only; vLLM's own structured outputs are not wired to steerguard"
            )
        if params.return_logits:
            raise PlanError("return_logits needs the hf backend")
        encoded, offsets = encode_rows(self.encode, prompts, plans, probe_offsets)
        if any(not isinstance(p, SteeringPlan) and p is not None for p in plans) and not probes:
            raise PlanError("a plan resolver needs at least one probe to read")
        for probe in probes:
            for part in probe.parts:
                if not 0 <= part.layer < self.fingerprint.num_layers:
                    raise PlanError(
                        f"probe {probe.name!r} reads layer {part.layer}, out of range"
                    )
        return encoded, offsets

    async def _row(
        self,
        ids: list[int],
        plan: RowPlan,
        params: GenerationParams,
        probes: Sequence[ActivationProbe],
        offset: int,
        cancel: threading.Event | _Either | None,
        on_chunk: Any,
    ) -> _Outcome:
        reads = _probe_reads(probes, len(ids) - 1 - offset)
        scores: dict[str, float] = {}
        if plan is not None and not isinstance(plan, SteeringPlan):
            # A resolver: read the probes in a prefill of its own, then let it choose.
            first = WirePlan(reads=reads, report=_key())
            await self._prefill_only(ids, first)
            (report,) = await self.take_reports([(first, len(ids))])
            scores = _probe_scores(probes, report)
            plan, reads = plan(scores), ()
        steered = plan is not None and bool(plan.interventions)
        if steered:
            await self._layer_norms_once()  # before `wire`, which reads them
        outcome = _Outcome(ids, plan if steered else None, self.wire(plan, reads),
                           probes if reads else (), scores=scores)
        await self._generate(outcome, params, cancel, on_chunk)
        return outcome

    async def _generate(
        self,
        outcome: _Outcome,
        params: GenerationParams,
        cancel: threading.Event | _Either | None,
        on_chunk: Any,
    ) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        sampling = SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            output_kind=RequestOutputKind.DELTA,
            extra_args=outcome.wire.extra_args() if outcome.wire is not None else None,
        )
        stream = self.engine.generate(
            {"prompt_token_ids": outcome.ids}, sampling, request_id=_key()
        )
        try:
            async for output in stream:
                done = output.outputs[0]
                outcome.generated += len(done.token_ids)
                outcome.token_ids.extend(done.token_ids)
                outcome.text += done.text
                if on_chunk is not None and (done.text or done.token_ids):
                    token = done.token_ids[-1] if done.token_ids else None
                    on_chunk(StreamChunk(text=done.text, token_id=token))
                if done.finish_reason is not None:
                    outcome.finish = _finish(done.finish_reason)
                    if done.finish_reason == "stop" and not isinstance(done.stop_reason, str):
                        outcome.token_ids = outcome.token_ids[:-1]  # an end token: not output
                if cancel is not None and cancel.is_set():
                    outcome.finish = "cancelled"
                    break
        finally:
            await stream.aclose()  # aborts the request in vLLM if it is still running

    async def _prefill_only(self, ids: list[int], wire: WirePlan | None) -> None:
        outcome = _Outcome(ids, None, wire)
        await self._generate(outcome, GenerationParams(max_new_tokens=1), None, None)

    async def take_reports(self, wanted: Sequence[tuple[WirePlan, int]]) -> list[WorkerReport]:
        """The workers' reports of finished requests, for (payload, cutoff) pairs: positions
        below cutoff count (prompt length + tokens generated - 1). Each report is taken once."""
        keys = [(w.report, cutoff) for w, cutoff in wanted]
        replies = await self.engine.collective_rpc("steerguard_take", args=(keys,))
        reports = []
        for key, _ in keys:
            report = WorkerReport.merge(
                [WorkerReport.model_validate(reply[key]) for reply in replies]
            )
            if report.error is not None:
                raise PlanError(f"the vLLM workers could not steer this request: {report.error}")
            reports.append(report)
        return reports

    async def _results(
        self, outcomes: Sequence[_Outcome], elapsed: float
    ) -> list[GenerationResult]:
        measured = [(o, o.wire) for o in outcomes if o.wire is not None]
        reports = await self.take_reports([(w, o.cutoff) for o, w in measured]) if measured else []
        by_row = {id(o): r for (o, _), r in zip(measured, reports, strict=True)}
        results = []
        for o in outcomes:
            report = by_row.get(id(o))
            if report is not None and o.probes:
                o.scores = _probe_scores(o.probes, report)
            results.append(
                GenerationResult(
                    text=o.text,
                    token_ids=tuple(o.token_ids),
                    prompt_tokens=len(o.ids),
                    finish_reason=o.finish,
                    reports=self._reports(o, report) if report is not None else (),
                    latency_s=elapsed,
                    probe_scores=o.scores,
                )
            )
        return results

    def _reports(self, o: _Outcome, report: WorkerReport) -> tuple[InterventionReport, ...]:
        if o.plan is None or o.wire is None:
            return ()
        return tuple(
            InterventionReport(
                index=index,
                intervention=iv,
                vector_hash=wire.vector_hash,
                coefficients=dict(wire.coefficients),
                layers=tuple(layers),
            )
            for index, (iv, wire, layers) in enumerate(
                zip(o.plan.interventions, o.wire.interventions, report.interventions,
                    strict=True)
            )
        )

    # for tests and operators ------------------------------------------------------------------

    def worker_status(self) -> list[dict[str, int]]:
        """Per worker: plans alive, requests known, ledgers kept (all 0 when idle)."""
        return self.run(self.engine.collective_rpc("steerguard_status"))


class _Either:
    """Set when either event is."""

    def __init__(self, *events: threading.Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _key() -> str:
    return uuid.uuid4().hex


def _finish(reason: str) -> FinishReason:
    return "stop" if reason == "stop" else "length" if reason == "length" else "cancelled"


def _probe_reads(probes: Sequence[ActivationProbe], position: int) -> tuple[Read, ...]:
    layers = tuple(sorted({part.layer for p in probes for part in p.parts}))
    return (Read(layers=layers, positions=(position,)),) if layers else ()


def _probe_scores(probes: Sequence[ActivationProbe], report: WorkerReport) -> dict[str, float]:
    """Each probe's mean standardised projection over its parts, as SteeringProgram reads it."""
    states = {r.layer: torch.tensor(r.values[0]) for r in report.reads}
    scores: dict[str, float] = {}
    for probe in probes:
        values = [(float(states[part.layer] @ part.direction_tensor().float()) - part.center)
                  / part.spread for part in probe.parts]
        scores[probe.name] = sum(values) / len(values)
    return scores

