"""The flattened-batch step program against the HF engine's SteeringProgram, on random states:
the same plans must change the same tokens the same way and report the same measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.storage import save_vector
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan
from steerguard.runtime.program import SteeringProgram
from steerguard.vllm.directions import DirectionTable, VectorIndex
from steerguard.vllm.ledger import Ledger
from steerguard.vllm.rows import compile_row
from steerguard.vllm.step import StepProgram, StepRow
from steerguard.vllm.wire import wire_plan

LAYERS, HIDDEN = 4, 16
FP = ModelFingerprint(
    model_id="synthetic", architecture="LlamaForCausalLM", hidden_size=HIDDEN, num_layers=LAYERS
)


def _vector(name: str, seed: int) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        name=name,
        fingerprint=FP,
        directions={layer: torch.randn(HIDDEN, generator=g) for layer in range(LAYERS)},
        extraction=ExtractionInfo(method="random"),
    )


def _iv(vector, strength, layers, op="add", positions="all"):
    return Intervention(
        vector=vector, strength=strength, layers=tuple(layers), op=Operation(op),
        positions=Positions.parse(positions),
    )


PLANS = [
    SteeringPlan(interventions=(_iv("a", 0.3, range(LAYERS)),)),
    None,
    SteeringPlan(interventions=(
        _iv("b", 0.0, (1, 2), "ablate", "prompt"),
        _iv("a", 0.2, (2, 3), "clamp", "generated"),
        _iv("b", 0.4, (0, 2), "add", "last_2"),
        _iv("a", -0.1, (2,), "clamp", "all"),
    )),
    SteeringPlan(interventions=(
        _iv("a", -0.5, range(LAYERS), "add", "generated"),
        _iv("b", 0.2, range(LAYERS), "add", "prompt"),
    )),
]
PROMPTS = [5, 3, 6, 4]
DECODE_STEPS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors")
    vectors = {"a": _vector("a", 1), "b": _vector("b", 2)}
    for v in vectors.values():
        save_vector(v, folder / f"{v.name}.safetensors")
    table = DirectionTable(
        VectorIndex([folder]), num_layers=LAYERS, hidden_size=HIDDEN,
        dtype=torch.float32, device=torch.device("cpu"),
    )
    norms = torch.rand(LAYERS) + 0.5
    return vectors, table, norms


def test_step_matches_hf_program(setup):
    vectors, table, norms = setup
    torch.manual_seed(0)
    hf = SteeringProgram(PLANS, vectors, norms, dtype=torch.float32, device=torch.device("cpu"))
    compiled = [
        compile_row(wire_plan(p, vectors, norms, report=f"r{i}"), table) if p else None
        for i, p in enumerate(PLANS)
    ]
    ledgers = [Ledger(c, PROMPTS[i]) if c else None for i, c in enumerate(compiled)]
    width = max(PROMPTS)
    mask = torch.zeros(len(PLANS), width, dtype=torch.long)
    for r, n in enumerate(PROMPTS):
        mask[r, width - n :] = 1

    def rows(counts, firsts):
        out, start = [], 0
        for r, c in enumerate(compiled):
            if c is not None:
                out.append(StepRow(c, start, counts[r], firsts[r], PROMPTS[r], ledgers[r]))
            start += counts[r]
        return out

    def run_step(program, hf_hidden, flat_index):
        for layer in range(LAYERS):
            h = hf_hidden[layer]
            expected = hf(layer, h.clone())
            expected = h if expected is None else expected
            flat = h[flat_index]  # [T, H] in vLLM's row-after-row order
            residual = torch.randn_like(flat)
            got = program.apply(layer, flat - residual, residual)
            steered = flat if got is None else got[0] + got[1]
            torch.testing.assert_close(steered, expected[flat_index], rtol=1e-5, atol=1e-5)
        program.finish()

    # prefill: every prompt token
    hf.begin_prefill(mask)
    hidden = [torch.randn(len(PLANS), width, HIDDEN) for _ in range(LAYERS)]
    flat_index = tuple(zip(*[(r, t) for r in range(len(PLANS)) for t in range(width) if mask[r, t]],
                           strict=True))
    program = StepProgram(rows(PROMPTS, [0] * len(PLANS)), table, sum(PROMPTS))
    run_step(program, hidden, flat_index)
    # decode steps: one token per row
    for d in range(DECODE_STEPS):
        hf.begin_decode(torch.ones(len(PLANS), dtype=torch.bool))
        hidden = [torch.randn(len(PLANS), 1, HIDDEN) for _ in range(LAYERS)]
        program = StepProgram(rows([1] * len(PLANS), [n + d for n in PROMPTS]), table, len(PLANS))
        run_step(program, hidden, (tuple(range(len(PLANS))), (0,) * len(PLANS)))

    for r, reports in enumerate(hf.reports()):
        if ledgers[r] is None:
            assert reports == []
            continue
        got = ledgers[r].take(PROMPTS[r] + DECODE_STEPS).interventions
        assert len(got) == len(reports)
        for mine, theirs in zip(got, reports, strict=True):
            assert [m.layer for m in mine] == [m.layer for m in theirs.layers]
            for a, b in zip(mine, theirs.layers, strict=True):
                assert a.positions_affected == b.positions_affected
                for name in ("delta_norm", "projection_before", "projection_after"):
                    assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-4, abs=1e-5)


def test_cutoff_drops_positions_after_the_last_token(setup):
    vectors, table, norms = setup
    plan = compile_row(wire_plan(PLANS[0], vectors, norms, report="k"), table)
    ledger = Ledger(plan, 2)
    for first, count in ((0, 2), (2, 1), (3, 1)):
        program = StepProgram([StepRow(plan, 0, count, first, 2, ledger)], table, count)
        for layer in range(LAYERS):
            h = torch.randn(count, HIDDEN)
            program.apply(layer, h, torch.zeros_like(h))
        program.finish()
    report = ledger.take(3)
    assert [m.positions_affected for m in report.interventions[0]] == [3] * LAYERS
    ledger.add(4, torch.zeros(1, LAYERS), torch.zeros(1, LAYERS), torch.zeros(1, LAYERS))
    assert len(ledger.chunks) == 3  # closed: a late step adds nothing


def test_rewind_forgets_recomputed_positions(setup):
    vectors, table, norms = setup
    plan = compile_row(wire_plan(PLANS[0], vectors, norms, report="k"), table)
    ledger = Ledger(plan, 3)
    for first, count in ((0, 3), (3, 1), (0, 4)):  # preempted, then recomputed from 0
        program = StepProgram([StepRow(plan, 0, count, first, 3, ledger)], table, count)
        for layer in range(LAYERS):
            h = torch.randn(count, HIDDEN)
            program.apply(layer, h, torch.zeros_like(h))
        program.finish()
    assert [(c.first, c.end) for c in ledger.chunks] == [(0, 4)]
    assert ledger.take(5).interventions[0][0].positions_affected == 4


def test_rows_without_a_plan_keep_their_bits(setup):
    vectors, table, norms = setup
    plan = compile_row(wire_plan(PLANS[2], vectors, norms), table)
    hidden, residual = torch.randn(7, HIDDEN), torch.randn(7, HIDDEN)
    program = StepProgram([StepRow(plan, 2, 3, 0, 3, None)], table, 7)
    for layer in range(LAYERS):
        got = program.apply(layer, hidden, residual)
        if got is not None:
            assert torch.equal(got[0], hidden)
            untouched = np.r_[0:2, 5:7]
            assert torch.equal(got[1][untouched], residual[untouched])


def test_reads_return_layer_outputs_before_that_layers_steering(setup):
    from steerguard.vllm.wire import Read

    vectors, table, norms = setup
    reads = (Read(layers=(1, 2), positions=(2,)), Read(layers=(0,), kind="norm"))
    plan = compile_row(wire_plan(PLANS[0], vectors, norms, reads=reads, report="k"), table)
    ledger = Ledger(plan, 3)
    program = StepProgram([StepRow(plan, 0, 3, 0, 3, ledger)], table, 3)
    states = {}
    for layer in range(LAYERS):
        h = torch.randn(3, HIDDEN)
        states[layer] = h.clone()
        program.apply(layer, h, torch.zeros_like(h))
    program.finish()
    got = {(r.read, r.layer): r for r in ledger.take(4).reads}
    assert got[(0, 1)].positions == (2,)
    torch.testing.assert_close(torch.tensor(got[(0, 2)].values[0]), states[2][2])
    torch.testing.assert_close(torch.tensor(got[(1, 0)].values), states[0].norm(dim=-1))
