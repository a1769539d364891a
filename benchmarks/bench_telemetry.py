"""Telemetry overhead: tokens/s of steered generation on the bundled model through the
pipeline, tracing off vs on, interleaved so drift on a shared machine hits every mode alike.

    python benchmarks/bench_telemetry.py [--repeats 21] [--requests 1] [--tokens 16]

Modes: `off` (the global no-op API, what a library user gets without an SDK), `noop` (SDK
providers, BatchSpanProcessor to an exporter that discards, a metric reader) and `memory`
(SimpleSpanProcessor to an in-memory exporter). The steering vectors are random unit
directions: the cost of steering does not depend on what a direction means. Also times the
instrumentation alone (every span, event and metric of one steered request, no model) to
give the overhead in microseconds, which the end-to-end ratio cannot resolve below the noise.
Writes benchmarks/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.pipeline import Request, SteeringPipeline
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.inputs import ChatMessage
from steerguard.policy.loader import load_bundle_text
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.runtime.loading import load_model
from steerguard.telemetry import Telemetry
from tests.policy.helpers import keyword_bundle

RESULTS = Path(__file__).parent / "results" / "telemetry.json"
BUNDLE = keyword_bundle("bench", {"calm": ("8-14", 0.2), "formal": ("8-14", 0.15)}, ["order"],
                        rule="always")
PROMPTS = ("Where is my order? It was due last week.",
           "Can you tell me how to change the address on my order?",
           "My order arrived damaged, what can I do?")


class DiscardExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def telemetry_for(mode: str) -> tuple[Telemetry, TracerProvider | None]:
    if mode == "off":
        return Telemetry(), None  # global API, no SDK installed: no-op
    tracer_provider = TracerProvider()
    processor = (BatchSpanProcessor(DiscardExporter()) if mode == "noop"
                 else SimpleSpanProcessor(InMemorySpanExporter()))
    tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return Telemetry(tracer_provider, meter_provider), tracer_provider


def make_engine() -> SteeringEngine:
    loaded = load_model()
    fp = loaded.fingerprint
    gen = torch.Generator().manual_seed(0)
    vectors = {
        name: SteeringVector(
            name=name, fingerprint=fp, extraction=ExtractionInfo(method="random"),
            directions={layer: torch.randn(fp.hidden_size, generator=gen)
                        for layer in range(8, 15)})
        for name in ("calm", "formal")
    }
    return SteeringEngine(loaded, vectors)


def run_mode(pipeline: SteeringPipeline, params: GenerationParams, requests: int
             ) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of this process)."""
    tokens, started, cpu = 0, time.perf_counter(), time.process_time()
    for i in range(requests):
        text = PROMPTS[i % len(PROMPTS)]
        req = Request(messages=(ChatMessage(role="user", content=text),),
                      prompt=[{"role": "user", "content": text}])
        turn = pipeline.run(req, params)
        assert turn.result is not None and turn.result.reports, "generation was not steered"
        tokens += turn.result.completion_tokens
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu)


def instrumentation_us(engine: SteeringEngine, policy: PolicyEngine, mode: str,
                       n: int = 2000) -> float:
    """Microseconds of telemetry per steered request, model excluded."""
    tel, provider = telemetry_for(mode)
    req = Request(messages=(ChatMessage(role="user", content=PROMPTS[0]),), prompt=PROMPTS[0])
    decision = policy.decide(req.messages)
    result = engine.generate(req.prompt, decision.plan, GenerationParams(max_new_tokens=2))
    params = GenerationParams()
    started = time.perf_counter()
    for _ in range(n):
        with tel.model_call("smollm2-135m", params, messages=req.messages) as call:
            with call.decision() as d:
                d.record(decision)
            with call.steering(decision.plan) as s:
                s.record(result)
            with call.audit():
                pass
    elapsed = (time.perf_counter() - started) / n * 1e6
    if provider is not None:
        provider.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--requests", type=int, default=1,
                        help="requests per mode per repeat (1: modes alternate per request)")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per request")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 keeps a shared machine's noise down)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    engine = make_engine()
    policy = PolicyEngine(load_bundle_text(BUNDLE, "bench.yaml"))
    # No eos stop: every request generates exactly --tokens tokens in every mode.
    params = GenerationParams(max_new_tokens=args.tokens)
    modes = ("off", "noop", "memory")
    pipelines = {}
    providers = []
    for mode in modes:
        tel, provider = telemetry_for(mode)
        pipelines[mode] = SteeringPipeline(engine, policy, telemetry=tel)
        providers.append(provider)
        run_mode(pipelines[mode], params, 1)  # warm-up: calibration, caches

    # Wall-clock rates on a shared machine swing by tens of percent with the neighbours'
    # load; CPU time of this process (torch on one thread, plus the SDK's export thread)
    # is the cost tracing adds, and is far less disturbed by them.
    rates: dict[str, list[float]] = {m: [] for m in modes}
    cpu_rates: dict[str, list[float]] = {m: [] for m in modes}
    rng = random.Random(0)
    for r in range(args.repeats):
        order = list(modes)
        rng.shuffle(order)
        for mode in order:
            wall, cpu = run_mode(pipelines[mode], params, args.requests)
            rates[mode].append(wall)
            cpu_rates[mode].append(cpu)
        print(f"repeat {r + 1}/{args.repeats}: "
              + "  ".join(f"{m} {rates[m][-1]:.2f} tok/s ({cpu_rates[m][-1]:.2f} per cpu-s)"
                          for m in modes), flush=True)

    def paired(series: dict[str, list[float]]) -> dict[str, float]:
        # Ratios within a repeat cancel slow drift better than a ratio of medians.
        return {m: statistics.median(on / off for on, off in zip(series[m], series["off"],
                                                                  strict=True))
                for m in modes if m != "off"}

    median = {m: statistics.median(v) for m, v in rates.items()}
    cpu_median = {m: statistics.median(v) for m, v in cpu_rates.items()}
    wall_ratio, cpu_ratio = paired(rates), paired(cpu_rates)
    micro = {m: instrumentation_us(engine, policy, m) for m in modes}
    per_request_s = args.tokens / median["off"]
    out = {
        "machine": platform.platform(),
        "model": engine.fingerprint.model_id,
        "torch_threads": args.threads,
        "repeats": args.repeats,
        "requests_per_mode_per_repeat": args.requests,
        "new_tokens_per_request": args.tokens,
        "tokens_per_s_median": median,
        "tokens_per_s_all": rates,
        "tokens_per_cpu_s_median": cpu_median,
        "tokens_per_cpu_s_all": cpu_rates,
        "ratio_on_over_off_wall_paired_median": wall_ratio,
        "ratio_on_over_off_cpu_paired_median": cpu_ratio,
        "instrumentation_us_per_request": micro,
        "instrumentation_share_of_request": {
            m: (micro[m] - micro["off"]) * 1e-6 / per_request_s for m in modes if m != "off"},
        "target": "tokens/s with tracing on within 1% of tracing off",
    }
    for provider in providers:
        if provider is not None:
            provider.shutdown()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for m in wall_ratio:
        print(f"{m}: {median[m]:.2f} tok/s vs off {median['off']:.2f} tok/s, ratio on/off "
              f"wall {wall_ratio[m]:.4f}, cpu {cpu_ratio[m]:.4f}; "
              f"instrumentation {micro[m]:.0f} us/request "
              f"(off: {micro['off']:.0f} us) = "
              f"{out['instrumentation_share_of_request'][m]:.5%} of a request")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
