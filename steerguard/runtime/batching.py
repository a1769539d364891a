"""Continuous batching: concurrent generations share decode steps, each row with its own plan.

One worker thread owns the batch. At every decode-step boundary it
  1. admits waiting rows: they are prefilled together (rows reading the same probes share a
     pass; probes, mid-prefill plan resolution and the second prefill work as in
     `SteeringEngine.generate_batch`) and their KV caches join the running batch's, left
     padded to a common length;
  2. chooses one token per row (each row's own logits processor, temperature and seed);
  3. lets finished, cancelled and abandoned rows leave (their cache rows are dropped);
  4. runs one forward for all remaining rows. Each prefill group keeps its SteeringProgram;
     at every layer a group's program sees only its own rows, so a row's plan never touches
     another row and its measurements are its own.

`ContinuousBatcher.stream` has the signature of `SteeringEngine.stream`: a pipeline runs a
request through it unchanged (decide, steer, audit), only the engine work is shared.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerguard.directions.probe import ActivationProbe
from steerguard.errors import PlanError
from steerguard.runtime.activations import left_pad, positions_from_mask
from steerguard.runtime.engine import (
    GenerationParams,
    LogitsProcessor,
    Prompt,
    SteeringEngine,
    StreamChunk,
    _Row,
)
from steerguard.runtime.hooks import active_program, hooks_installed
from steerguard.runtime.plan import SteeringPlan
from steerguard.runtime.program import PlanResolver, SteeringProgram
from steerguard.runtime.prompts import encode_rows
from steerguard.runtime.result import GenerationResult


class BatcherClosed(RuntimeError):
    pass


class BatcherFull(RuntimeError):
    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} generations are waiting for a batch row")
        self.waiting = waiting


_DONE = object()


@dataclass(eq=False)
class _Job:
    ids: list[int]
    plan: SteeringPlan | PlanResolver | None
    params: GenerationParams
    probes: tuple[ActivationProbe, ...]
    probe_offset: int
    processor: LogitsProcessor | None
    cancel: threading.Event | None
    submitted: float = field(default_factory=time.perf_counter)
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False  # the consumer closed its iterator

    @property
    def stopped(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())

    def probe_key(self) -> tuple[tuple[str, int], ...]:
        return tuple((p.name, id(p)) for p in self.probes)


@dataclass(eq=False)
class _Group:
    """Rows prefilled together: one SteeringProgram (or none) over `size` program rows."""

    program: SteeringProgram | None
    size: int
    present: list[bool]

    def alive(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.present, dtype=torch.bool, device=device)


@dataclass(eq=False)
class _Active:
    job: _Job
    group: _Group
    index: int  # row in the group's program
    state: _Row
    logits: torch.Tensor  # [1, vocab]: what the next token is chosen from
    position: int  # position id of the next token fed
    generator: torch.Generator | None
    step: int = 0
    token: int | None = None
    sent: str = ""
    kept_logits: list[torch.Tensor] = field(default_factory=list)


class _BatchProgram:
    """The layer program of one decode step: each group's program on its own rows."""

    def __init__(self, parts: list[tuple[SteeringProgram, int, torch.Tensor, torch.Tensor]]):
        # (program, group size, batch rows, the same rows' indices in the group)
        self.parts = parts

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        out: torch.Tensor | None = None
        for program, size, rows, members in self.parts:
            if layer not in program.layers:
                continue
            sub = hidden.new_zeros((size, *hidden.shape[1:]))
            sub[members] = hidden[rows]
            steered = program(layer, sub)
            if steered is None:
                continue
            if out is None:
                out = hidden.clone()
            out[rows] = steered[members]
        return out


class ContinuousBatcher:
    """Shares decode steps among concurrent generations on one engine (thread-safe)."""

    def __init__(
        self,
        engine: SteeringEngine,
        max_batch: int = 16,
        max_waiting: int = 64,
        on_step: Callable[[int], None] | None = None,
        gather_s: float = 0.05,
        quiet_s: float = 0.01,
        arriving: Callable[[], int] | None = None,
    ) -> None:
        """An idle batcher that gets a request waits up to `gather_s` for others arriving
        with it (until none came for `quiet_s`), so they share one prefill pass.
        `arriving()` counts generations known to be on their way (a server's calls still
        being planned): while there are any, the gather goes on however quiet it is, and a
        running batch admits waiting rows a step later, so a burst is one prefill, not many."""
        self.engine = engine
        self.gather_s = gather_s
        self.quiet_s = quiet_s
        self.arriving = arriving
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.on_step = on_step
        self._waiting: list[_Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._rows: list[_Active] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None
        self.steps = 0
        self.rows_stepped = 0
        self._thread = threading.Thread(target=self._loop, name="steerguard-batcher",
                                        daemon=True)
        self._thread.start()

    # public -----------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return len(self._rows)

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
        on_submit: Callable[[], None] | None = None,
    ) -> Iterator[StreamChunk]:
        """As `SteeringEngine.stream`, as one row of the shared batch. Closing the iterator
        frees the row at the next step. `on_submit()` runs once the row waits for the batch
        (the end of what `arriving` counted)."""
        try:
            job = self._submit(prompt, plan, params, probes, probe_offset, logits_processor,
                               cancel)
        finally:
            if on_submit is not None:
                on_submit()
        try:
            while True:
                item = job.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.abandoned = True

    def generate(self, prompt: Prompt, plan: SteeringPlan | PlanResolver | None = None,
                 params: GenerationParams | None = None, **options: Any) -> GenerationResult:
        result = None
        for chunk in self.stream(prompt, plan, params, **options):
            result = chunk.result or result
        if result is None:
            raise RuntimeError("the batcher ended a generation without a result")
        return result

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # submitting -------------------------------------------------------------------------

    def _submit(
        self,
        prompt: Prompt,
        plan: SteeringPlan | PlanResolver | None,
        params: GenerationParams | None,
        probes: Sequence[ActivationProbe],
        probe_offset: int,
        processor: LogitsProcessor | None,
        cancel: threading.Event | None,
    ) -> _Job:
        (ids,), _ = encode_rows(self.engine.encode, [prompt], [plan], [probe_offset])
        if plan is not None and not isinstance(plan, SteeringPlan) and not probes:
            raise PlanError("a plan resolver needs at least one probe to read")
        job = _Job(ids, plan, params or GenerationParams(), tuple(probes), probe_offset,
                   processor, cancel)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the batcher is closed")
            if len(self._waiting) >= self.max_waiting:
                raise BatcherFull(len(self._waiting))
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    # the worker -------------------------------------------------------------------------

    def _loop(self) -> None:
        hooks = contextlib.ExitStack()
        hooked = False
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._rows:
                        self._cond.wait()
                    if self._closed:
                        break
                    if not self._rows:
                        self._gather()
                    room = self.max_batch - len(self._rows)
                    admitted: list[_Job] = []
                    if not self._hold_for_arrivals(room):
                        admitted, self._waiting = self._waiting[:room], self._waiting[room:]
                try:
                    if not hooked:
                        hooks.enter_context(hooks_installed(self.engine.model))
                        hooked = True
                    for group in _by_probes(admitted):
                        self._admit(group)
                    self._step()
                except Exception as exc:  # a forward failed: every row in it gets the error
                    self._fail_all(exc)
                if not self._rows and hooked:
                    hooks.close()
                    hooks = contextlib.ExitStack()
                    hooked = False
            hooks.close()
        with self._cond:
            left, self._waiting = self._waiting, []
        for job in left:
            job.out.put(BatcherClosed("the server is shutting down"))
        self._fail_all(BatcherClosed("the server is shutting down"))

    def _gather(self) -> None:
        """Called with the lock held and the batch empty: let co-arriving requests in."""
        deadline = time.perf_counter() + self.gather_s
        seen = len(self._waiting)
        while len(self._waiting) < self.max_batch and not self._closed:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._cond.wait(min(left, self.quiet_s))
            if len(self._waiting) == seen and not self._arriving():
                return  # quiet: nobody else is coming
            seen = len(self._waiting)

    def _hold_for_arrivals(self, room: int) -> bool:
        """Called with the lock held while rows run: keep the waiting rows for the next step
        boundary when more are on their way and would fit, so the burst joins in one prefill
        (each prefill stalls the running rows). Never longer than `gather_s`."""
        if not self._rows or not self._waiting or len(self._waiting) >= room:
            return False
        if time.perf_counter() - self._waiting[0].submitted >= self.gather_s:
            return False
        return self._arriving() > 0

    def _arriving(self) -> int:
        return self.arriving() if self.arriving is not None else 0

    def _fail_all(self, exc: BaseException) -> None:
        for row in self._rows:
            row.job.out.put(exc)
        self._rows = []
        self._cache = None
        self._mask = None

    # admitting --------------------------------------------------------------------------

    def _admit(self, jobs: list[_Job]) -> None:
        """Prefill `jobs` together; when that fails, each alone, so one bad row (a plan the
        engine refuses) fails only itself."""
        jobs = [j for j in jobs if not self._drop_if_stopped(j)]
        if not jobs:
            return
        try:
            self._prefill(jobs)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].out.put(exc)
                return
            for job in jobs:
                self._admit([job])

    def _drop_if_stopped(self, job: _Job) -> bool:
        """A job cancelled while it waited never runs: it ends cancelled, with no tokens."""
        if not job.stopped:
            return False
        result = GenerationResult(text="", token_ids=(), prompt_tokens=len(job.ids),
                                  finish_reason="cancelled",
                                  latency_s=time.perf_counter() - job.submitted)
        job.out.put(StreamChunk(text="", result=result))
        job.out.put(_DONE)
        return True

    def _prefill(self, jobs: list[_Job]) -> None:
        engine = self.engine
        program = engine._program([j.plan for j in jobs], jobs[0].probes,
                                  [j.probe_offset for j in jobs])
        if program is not None:
            program.rerun_apart = True
        ids, mask = left_pad([j.ids for j in jobs], engine.tokenizer.pad_token_id, engine.device)
        positions = positions_from_mask(mask)
        logits, cache = engine._prefill(program, ids, mask, positions)
        group = _Group(program, len(jobs), [True] * len(jobs))
        again = program.rerun if program is not None else []
        if not again:
            self._join(self._activate(jobs, group, range(len(jobs)), logits), cache, mask)
            return
        # Some rows' resolved plans steer the prompt below the probe layer: only they run the
        # prompt again (as each would alone); the others keep this pass's cache and logits.
        assert program is not None
        kept = [g for g in range(len(jobs)) if g not in again]
        for g in again:
            group.present[g] = False
        rerun = [jobs[g] for g in again]
        second = engine._program([program.plans[g] for g in again], (),
                                 [j.probe_offset for j in rerun])
        ids2, mask2 = left_pad([j.ids for j in rerun], engine.tokenizer.pad_token_id,
                               engine.device)
        if second is not None:  # from the lowest layer they steer: below it the first pass stands
            second.replay = program.replay_for(again, cache, ids2.shape[1])
        try:
            logits2, cache2 = engine._prefill(second, ids2, mask2, positions_from_mask(mask2))
        finally:
            if second is not None:
                second.replay = None
        if second is not None:
            second.scores = [program.scores[g] for g in again]  # read in the first pass
        # Join only once both passes ran: a failure above retries each job alone.
        index = torch.tensor(kept, device=mask.device)
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self._join(self._activate(jobs, group, kept, logits.index_select(0, index)), cache,
                   mask.index_select(0, index))
        group2 = _Group(second, len(rerun), [True] * len(rerun))
        self._join(self._activate(rerun, group2, range(len(rerun)), logits2), cache2, mask2)

    def _activate(self, jobs: list[_Job], group: _Group, members: Sequence[int],
                  logits: torch.Tensor) -> list[_Active]:
        """Batch rows for `jobs[g]` (g in members, program row g), `logits` in that order."""
        rows = []
        for k, g in enumerate(members):
            job = jobs[g]
            generator = None
            if job.params.seed is not None:
                generator = torch.Generator(device=self.engine.device).manual_seed(
                    job.params.seed)
            rows.append(_Active(job, group, g, _Row(prompt_len=len(job.ids)),
                                logits[k:k + 1], len(job.ids), generator))
        return rows

    def _join(self, rows: list[_Active], cache: Any, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None or not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)])
            old.values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)])
        self._mask = torch.cat([_pad_mask(self._mask, width), _pad_mask(mask, width)])
        self._rows = self._rows + rows

    # stepping ---------------------------------------------------------------------------

    def _step(self) -> None:
        rows = self._rows
        if not rows:
            return
        engine = self.engine
        chosen = self._choose(rows)
        for row, token in zip(rows, chosen, strict=True):
            state, params = row.state, row.job.params
            before = len(state.tokens)
            engine._append(state, token, params)
            if row.step == params.max_new_tokens - 1 and state.finish is None:
                state.finish = "length"
            row.step += 1
            if row.job.stopped:
                state.finish = state.finish or "cancelled"
            delta, row.sent = state.text[len(row.sent):], state.text
            tok = token if len(state.tokens) > before else None
            if delta or tok is not None:
                row.job.out.put(StreamChunk(text=delta, token_id=tok))
            row.token = token
        leaving = [r for r in rows if r.state.finish is not None]
        for row in leaving:
            self._finish(row)
        if leaving:
            self._leave(leaving)
        rows = self._rows
        if not rows:
            return
        self._forward(rows)

    def _choose(self, rows: list[_Active]) -> list[int]:
        engine = self.engine
        processed: list[torch.Tensor] = []
        for row in rows:
            logits = row.logits
            if row.job.processor is not None:
                history = torch.tensor([row.job.ids + row.state.tokens], device=logits.device)
                logits = row.job.processor(history, logits)
            if row.job.params.return_logits:
                row.kept_logits.append(logits[0].float().cpu())
            processed.append(logits)
        greedy = [r.job.params.temperature == 0.0 for r in rows]
        tokens: list[int] = [0] * len(rows)
        if any(greedy):
            picks = [k for k, g in enumerate(greedy) if g]
            stacked = torch.cat([processed[k].float() for k in picks])
            for k, token in zip(picks, stacked.argmax(dim=-1).tolist(), strict=True):
                tokens[k] = token
        for k, row in enumerate(rows):
            if not greedy[k]:
                tokens[k] = int(engine._choose(processed[k], row.job.params, row.generator)[0])
        return tokens

    def _finish(self, row: _Active) -> None:
        program = row.group.program
        reports = program.reports()[row.index] if program is not None else []
        state = row.state
        result = GenerationResult(
            text=state.text,
            token_ids=tuple(state.tokens),
            prompt_tokens=state.prompt_len,
            finish_reason=state.finish or "length",
            reports=tuple(reports),
            latency_s=time.perf_counter() - row.job.submitted,
            logits=torch.stack(row.kept_logits) if row.kept_logits else None,
            probe_scores=program.scores[row.index] if program is not None else {},
        )
        row.job.out.put(StreamChunk(text="", result=result))
        row.job.out.put(_DONE)

    def _leave(self, leaving: list[_Active]) -> None:
        gone = {id(r) for r in leaving}
        for row in leaving:
            row.group.present[row.index] = False
        keep = [k for k, r in enumerate(self._rows) if id(r) not in gone]
        self._rows = [self._rows[k] for k in keep]
        if not keep:
            self._cache = None
            self._mask = None
            return
        assert self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0  # columns no row attends to any more
        self._mask = mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]

    def _forward(self, rows: list[_Active]) -> None:
        engine = self.engine
        assert self._mask is not None
        device = self._mask.device
        ids = torch.tensor([[r.token] for r in rows], device=device)
        positions = torch.tensor([[r.position] for r in rows], device=device)
        for r in rows:
            r.position += 1
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], dim=1)
        program = self._program(rows, device)
        with active_program(program):
            out = engine.model(input_ids=ids, attention_mask=self._mask, position_ids=positions,
                               cache=self._cache, use_cache=True)
        self._cache = out.cache
        logits = out.logits[:, -1, :]
        for k, row in enumerate(rows):
            row.logits = logits[k:k + 1]
        self.steps += 1
        self.rows_stepped += len(rows)
        if self.on_step is not None:
            self.on_step(len(rows))

    def _program(self, rows: list[_Active], device: torch.device) -> _BatchProgram | None:
        parts = []
        groups: dict[int, tuple[_Group, list[int], list[int]]] = {}
        for k, row in enumerate(rows):
            if row.group.program is not None:
                entry = groups.setdefault(id(row.group), (row.group, [], []))
                entry[1].append(k)
                entry[2].append(row.index)
        for group, batch_rows, members in groups.values():
            assert group.program is not None
            group.program.begin_decode(group.alive(device))
            parts.append((group.program, group.size, torch.tensor(batch_rows, device=device),
                          torch.tensor(members, device=device)))
        return _BatchProgram(parts) if parts else None


def _by_probes(jobs: list[_Job]) -> list[list[_Job]]:
    """Rows that read the same probes can share one prefill pass."""
    key = _Job.probe_key
    ordered = sorted(jobs, key=lambda j: key(j))
    return [list(g) for _, g in itertools.groupby(ordered, key=key)]


def _pad_left(x: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - x.shape[-2]
    if missing <= 0:
        return x
    pad = x.new_zeros((*x.shape[:-2], missing, x.shape[-1]))
    return torch.cat([pad, x], dim=-2)


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)
