"""Calibrated activation probes for a bundle's activation conditions, per model and revision.

Probes given by the caller win, then the bundle's own `probes/<name>.json`, then one fit
earlier and cached under $STEERGUARD_HOME; otherwise the condition is calibrated once from its
dataset. Every probe is checked against the engine before it is used: one fit for another
model or other layers would read the wrong hidden state.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from steerguard.errors import PlanError
from steerguard.home import steerguard_home
from steerguard.policy.activation import ActivationProbe
from steerguard.policy.engine import PolicyEngine
from steerguard.runtime.engine import SteeringEngine
from steerguard.runtime.program import Probe

_KEPT_REVISIONS = 4  # per model: older bundle revisions' probes are dropped


def probe_score(probe: ActivationProbe, projection: float) -> float:
    """The calibrated probability for a raw projection h . direction (what the runtime reads)."""
    z = (projection - probe.threshold) / probe.scale
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


def runtime_probes(probes: Mapping[str, ActivationProbe]) -> tuple[Probe, ...]:
    """What the engine reads during prefill: one per condition and layer."""
    return tuple(
        Probe(name, part.layer, part.direction_tensor(), part.center, part.spread)
        for name, p in probes.items() for part in p.parts
    )


class ProbeProvider:
    """Thread-safe; shared by every pipeline of a composition root."""

    def __init__(self, given: Mapping[str, ActivationProbe] | None = None) -> None:
        self._given = dict(given or {})
        self._known: dict[tuple[str, str], dict[str, ActivationProbe]] = {}
        self._lock = threading.Lock()

    def for_policy(
        self, policy: PolicyEngine, engine: SteeringEngine
    ) -> dict[str, ActivationProbe]:
        """Probes for each of the bundle's activation conditions ({} when it has none)."""
        wanted = policy.activation_conditions
        if not wanted:
            return {}
        model = engine.fingerprint.model_id
        with self._lock:
            known = self._known.get((model, policy.ref.content_hash))
            if known is None:
                mine = [k for k in self._known if k[0] == model]
                for old in mine[: max(0, len(mine) - _KEPT_REVISIONS + 1)]:
                    del self._known[old]
                known = self._known[(model, policy.ref.content_hash)] = {}
            for name, spec in wanted.items():
                if name not in known:
                    probe = self._given.get(name) or _calibrate(
                        policy, engine, name, spec.read_layers, spec.dataset
                    )
                    _check_fits(policy, engine, name, spec.read_layers, probe)
                    known[name] = probe
            return {n: known[n] for n in wanted}


def _check_fits(
    policy: PolicyEngine,
    engine: SteeringEngine,
    name: str,
    layers: tuple[int, ...],
    probe: ActivationProbe,
) -> None:
    problem = _misfit(engine, layers, probe)
    if problem is not None:
        raise PlanError(
            f"bundle {policy.ref.name}@{policy.ref.revision}, condition {name!r}: {problem}; "
            "recalibrate (steerguard eval --conditions-only)"
        )


def _misfit(engine: SteeringEngine, layers: tuple[int, ...], probe: ActivationProbe
            ) -> str | None:
    fp = engine.fingerprint
    if sorted(probe.layers) != sorted(layers):
        return (f"the bundle reads layers {list(layers)} but its probe was calibrated at "
                f"layers {list(probe.layers)}")
    width = len(probe.parts[0].direction)
    if width != fp.hidden_size or (probe.model and probe.model != fp.model_id):
        return (f"the probe was calibrated for model {probe.model!r} with hidden size {width}, "
                f"the engine runs {fp.model_id!r} with hidden size {fp.hidden_size}")
    return None


def _calibrate(
    policy: PolicyEngine,
    engine: SteeringEngine,
    name: str,
    layers: tuple[int, ...],
    dataset: str | None,
) -> ActivationProbe:
    from steerguard.policy.activation import fit_condition_probe, load_condition_data

    shipped = policy.bundle.root / "probes" / f"{name}.json"
    if shipped.is_file():  # calibrated and committed with the bundle, for one model
        probe = ActivationProbe.load(shipped)
        if _misfit(engine, layers, probe) is None:
            return probe
    fp = engine.fingerprint
    cache = (
        steerguard_home() / "probes" / f"{fp.model_id}-{policy.ref.content_hash[:12]}"
        / f"{name}-L{'-'.join(map(str, layers))}.json"
    )
    if cache.is_file():
        return ActivationProbe.load(cache)
    data = load_condition_data(policy.bundle.root / (dataset or f"conditions/{name}"))
    probe = fit_condition_probe(engine, name, data, layers, model=fp.model_id)
    cache.parent.mkdir(parents=True, exist_ok=True)
    probe.save(cache)
    return probe
