"""`steerguard demo`: a scripted support conversation for three users, steered by the shipped
policy, each answer beside its unsteered twin, then what the audit log recorded."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from steerguard.cli.common import console, err_console, load_engine, open_root, user_errors

if TYPE_CHECKING:
    from steerguard.pipeline import Request, SteeringPipeline, Turn
    from steerguard.runtime.batching import ContinuousBatcher
    from steerguard.runtime.engine import GenerationParams, GenerationResult


@dataclass(frozen=True)
class Persona:
    label: str
    profile: dict[str, Any]
    turns: tuple[str, ...]


PERSONAS = (
    Persona(
        "Dana · adult, prefers formal language",
        {
            "user_id": "dana",
            "roles": ["customer"],
            "age_band": "adult",
            "preferences": {"register": "formal"},
            "formality_preference": 0.9,
        },
        (
            "hey, where is my order? it was due yesterday",
            "ok. can you tell me how refunds work, briefly?",
        ),
    ),
    Persona(
        "Sam · distressed",
        {"user_id": "sam", "roles": ["customer"], "age_band": "adult"},
        (
            "I'm so stressed out, I was charged three times and I can't cope with this anymore.",
            "Nobody answers my emails. What am I supposed to do now?",
        ),
    ),
    Persona(
        "Alex · minor",
        {"user_id": "alex", "roles": ["customer"], "age_band": "minor"},
        (
            "can u help me change the password on my account",
            "cool, what happens if i delete my account?",
        ),
    ),
)


def _reason(decision: Any) -> str:
    if decision.failed_closed:
        return f"failed closed: {decision.error}"
    if not decision.matched:
        return "no rule matched: unsteered"
    lines = []
    for match in decision.matched:
        evidence = "; ".join(f"{e.predicate} {e.describe()}" for e in match.evidence[:2])
        lines.append(f"[bold]{match.rule_id}[/] ({evidence})")
    for dropped in decision.dropped:
        lines.append(f"[dim]dropped {dropped.vector or dropped.rule_id}: {dropped.reason}[/]")
    plan = ", ".join(f"{i.vector} {i.strength:+.2f}" for i in decision.plan.interventions)
    lines.append(f"plan: {plan or 'none'}")
    return "\n".join(lines)


def _answer_together(
    pipeline: SteeringPipeline,
    batcher: ContinuousBatcher,
    requests: list[Request],
    params: GenerationParams,
) -> tuple[list[Turn], list[GenerationResult]]:
    """The steered turns through the pipeline and the same prompts unsteered, all submitted
    at once so they join one batch."""

    def steered(request: Request) -> Turn:
        *_, turn = pipeline.run_stream(request, params, backend=batcher.stream)
        return turn

    with ThreadPoolExecutor(2 * len(requests)) as pool:
        turns = [pool.submit(steered, r) for r in requests]
        plain = [pool.submit(batcher.generate, r.prompt, None, params) for r in requests]
        return [t.result() for t in turns], [p.result() for p in plain]


@user_errors
def demo(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model spec or path (default: configured).")
    ] = None,
    bundle: Annotated[Path | None, typer.Option(help="Policy bundle folder.")] = None,
    config: Annotated[Path | None, typer.Option(help="steerguard config file.")] = None,
    max_tokens: Annotated[int, typer.Option(help="New tokens per answer.")] = 48,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    threads: Annotated[
        int, typer.Option(help="Torch CPU threads; 1 is fastest on a shared, busy machine.")
    ] = 1,
) -> None:
    """Three users, two turns each: decision, steered and unsteered answers, then the audit."""
    import torch

    from steerguard.audit import AuditStore
    from steerguard.pipeline import Request
    from steerguard.policy import ChatMessage, RequestContext, UserProfile
    from steerguard.runtime.batching import ContinuousBatcher
    from steerguard.runtime.engine import GenerationParams
    from steerguard.telemetry.setup import configure_telemetry

    started = time.perf_counter()
    torch.set_num_threads(threads)  # oversubscribed threads slow torch 3-5x on shared CPUs
    configure_telemetry(console=False)  # OTLP when OTEL_* says so; silent otherwise
    sg = open_root(model, config=config, bundle=bundle)
    engine = load_engine(sg)
    with err_console.status("starting the audit store ..."):
        audit = sg.audit
    assert audit is not None  # the demo shows the audit: a config that turns it off is refused
    pipeline = sg.pipeline()
    # Every turn's six rows, steered and unsteered, share one batch, each with its own plan.
    batcher = ContinuousBatcher(engine, max_batch=2 * len(PERSONAS), gather_s=0.5, quiet_s=0.1)
    params = GenerationParams(max_new_tokens=max_tokens)
    run_id = uuid.uuid4().hex[:8]
    histories: list[list[dict[str, str]]] = [[] for _ in PERSONAS]
    transcript: list[dict[str, Any]] = []

    try:
        for turn_no in range(max(len(p.turns) for p in PERSONAS)):
            table = Table(title=f"turn {turn_no + 1}", show_lines=True, expand=True)
            for column in ("user", "decision and why", "steered answer", "unsteered answer"):
                table.add_column(column, ratio=1 if column == "user" else 2)
            prompts = []
            for persona, history in zip(PERSONAS, histories, strict=True):
                history.append({"role": "user", "content": persona.turns[turn_no]})
                prompts.append(list(history))
            requests = [
                Request(
                    messages=tuple(ChatMessage(**m) for m in prompt),
                    prompt=prompt,
                    profile=UserProfile(**persona.profile),
                    context=RequestContext(channel="chat"),
                    session_id=f"demo-{run_id}-{persona.profile['user_id']}",
                )
                for persona, prompt in zip(PERSONAS, prompts, strict=True)
            ]
            with err_console.status(f"turn {turn_no + 1}: steered and unsteered answers ..."):
                turns, plain = _answer_together(pipeline, batcher, requests, params)
            for index, (persona, turn) in enumerate(zip(PERSONAS, turns, strict=True)):
                answer = turn.result.text if turn.result is not None else ""
                histories[index].append({"role": "assistant", "content": answer})
                table.add_row(
                    f"[bold]{persona.label}[/]\n{persona.turns[turn_no]}",
                    _reason(turn.decision),
                    answer,
                    f"[dim]{plain[index].text}[/]",
                )
                transcript.append(
                    {
                        "turn": turn_no + 1,
                        "user": persona.profile["user_id"],
                        "message": persona.turns[turn_no],
                        "decision_id": turn.decision.decision_id,
                        "rules": turn.decision.rule_ids,
                        "plan": turn.decision.plan.summary(),
                        "explanation": turn.decision.explanation,
                        "steered": answer,
                        "unsteered": plain[index].text,
                        "audit_ids": turn.audit_ids,
                    }
                )
            if not as_json:
                console.print(table)

    finally:
        batcher.close()
    audit.flush(timeout=10.0)
    store = AuditStore.from_config(sg.config.audit)
    records = []
    for persona in PERSONAS:
        session = f"demo-{run_id}-{persona.profile['user_id']}"
        records.extend(store.query(session=session, limit=500).records)
    per_vector = Counter(r.vector for r in records if r.kind == "intervention")
    per_outcome = Counter(r.outcome.status for r in records if r.kind == "decision")
    report = store.verify()
    store.close()
    sg.close()
    counters = audit.counters.as_dict()
    elapsed = time.perf_counter() - started
    summary = {
        "run_id": run_id,
        "records": len(records),
        "decisions": sum(1 for r in records if r.kind == "decision"),
        "interventions_by_vector": dict(sorted(per_vector.items())),
        "outcomes": dict(per_outcome),
        "chain_verified": report.ok,
        "chain_records": report.records,
        "first_problem": str(report.first) if report.first else None,
        "audit_counters": counters,
        "seconds": round(elapsed, 1),
    }
    if as_json:
        print(json.dumps({"turns": transcript, "audit": summary}, indent=2, default=str))
        return
    table = Table("vector", "interventions recorded", title="audit log: this run")
    for vector, count in sorted(per_vector.items()):
        table.add_row(vector, str(count))
    console.print(table)
    verdict = "[green]verified[/]" if report.ok else f"[red]FAILED[/]: {report.first}"
    console.print(
        Panel(
            f"{summary['decisions']} decision records and {sum(per_vector.values())} intervention "
            f"records for this run (sessions demo-{run_id}-*).\n"
            f"hash chain over {report.records} records: {verdict}\n"
            f"ask it yourself: steerguard audit query --session demo-{run_id}-sam\n"
            f"done in {elapsed:.0f} s",
            title="oversight",
        )
    )
