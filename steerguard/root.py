"""The composition root: one configuration in, every part of steerguard out.

`Steerguard` owns the engines (one per model), the policy store (hot reload), the activation
probes, the audit log and telemetry, and their life cycle: built on first use, observed after
a fork, closed once. The chat model, the CLI, the server and the examples are shells over it:

    with Steerguard(SteerguardConfig.load("steerguard.yaml")) as sg:
        turn = sg.pipeline().run(request, params)

Parts given to the constructor are used as they are and stay their owner's to close.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerguard.config import SteerguardConfig
from steerguard.pipeline import PolicySource, SteeringPipeline
from steerguard.policy.activation import ActivationProbe
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.store import PolicyStore
from steerguard.probes import ProbeProvider
from steerguard.resources import concepts_dir, default_bundle_path
from steerguard.runtime.engine import SteeringEngine
from steerguard.telemetry import Telemetry, get_telemetry
from steerguard.telemetry.metrics import audit_log_stats

if TYPE_CHECKING:
    from steerguard.audit.log import AuditLog
    from steerguard.chat.grammar import GrammarFactory

# A fixed policy, a store (hot reload), a bundle path, or a getter of the policy in force.
PolicyLike = PolicyEngine | PolicyStore | str | Path | Callable[[], PolicyEngine]


class Steerguard:
    """Thread-safe; build one per process (or take `Steerguard.default()`)."""

    def __init__(
        self,
        config: SteerguardConfig | None = None,
        *,
        engine: SteeringEngine | None = None,
        policy: PolicyLike | None = None,
        audit: AuditLog | bool | None = None,
        probes: Mapping[str, ActivationProbe] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`engine` serves `config.model`; `policy` replaces `config.bundle`; `audit` is a
        log to use, False for none, or None for the configured one."""
        self.config = config or SteerguardConfig.load()
        self.telemetry = telemetry or get_telemetry()
        self.probes = ProbeProvider(probes)
        self._lock = threading.RLock()
        self._engines: dict[str, SteeringEngine] = {}
        if engine is not None:
            self._engines[self.config.model] = engine
        self._pipelines: dict[str, SteeringPipeline] = {}
        self._grammars: dict[str, GrammarFactory] = {}
        self._policy_given = policy
        self._policy: PolicySource | None = None
        self._store: PolicyStore | None = None  # the one this root made, to stop watching
        self._audit_given = audit
        self._audit: AuditLog | None = None
        self._owns_audit = False
        self._unobserve: Callable[[], None] | None = None
        self._fork_hooked = False
        self._closed = False

    # parts ------------------------------------------------------------------------------

    @property
    def model(self) -> str:
        """The default model spec."""
        return self.config.model

    def engine(
        self, model: str | None = None, *, vectors: bool | set[str] = True
    ) -> SteeringEngine:
        """The engine for `model` (default: the configured one). `vectors`: load every
        concept's vector (stored, else shipped, else built), only those named, or none yet."""
        spec = model or self.config.model
        with self._lock:
            engine = self._engines.get(spec)
            if engine is None:
                from steerguard.runtime.loading import load_model

                engine = self._engines[spec] = SteeringEngine(load_model(spec))
            if vectors:
                names = None if vectors is True else vectors - set(engine.vectors)
                if (names is None and not engine.vectors) or names:
                    self._load_vectors(engine, names)
            return engine

    def _load_vectors(self, engine: SteeringEngine, names: set[str] | None) -> None:
        from steerguard.vectors.library import VectorLibrary

        concepts = self.config.concepts or concepts_dir()
        VectorLibrary(engine.fingerprint).load_into(engine, concepts, names)

    def policy_source(self, num_layers: int | None = None) -> PolicySource:
        """What pipelines ask for the policy in force (a store's getter picks up reloads).
        `num_layers`, the model's, makes a bundle naming a layer beyond it an error; it is
        taken from the configured model's engine when that is loaded."""
        with self._lock:
            if self._policy is None:
                loaded = self._engines.get(self.config.model)
                if num_layers is None and loaded is not None:
                    num_layers = loaded.fingerprint.num_layers
                self._policy = self._make_policy(num_layers)
            return self._policy

    def _make_policy(self, num_layers: int | None) -> PolicySource:
        given = self._policy_given
        if isinstance(given, PolicyEngine) or callable(given):
            return given
        if isinstance(given, PolicyStore):
            store = given
        else:
            path = Path(given) if given is not None else self.config.bundle
            store = self._store = PolicyStore(path or default_bundle_path(), num_layers=num_layers)
            if self.config.watch_bundle_s is not None:
                store.watch(self.config.watch_bundle_s)
        return lambda: store.engine

    @property
    def policy(self) -> PolicyEngine:
        """The policy revision in force now."""
        source = self.policy_source()
        return source if isinstance(source, PolicyEngine) else source()

    @property
    def audit(self) -> AuditLog | None:
        """The audit log (started on first use), or None when auditing is off."""
        with self._lock:
            if self._audit is None and self._audit_given is not False:
                if self._audit_given is not None and self._audit_given is not True:
                    self._audit = self._audit_given
                elif self.config.audit_enabled:
                    from steerguard.audit.log import AuditLog

                    self._audit = AuditLog(self.config.audit)
                    self._owns_audit = True
                if self._audit is not None:
                    self._observe_audit()
            return self._audit

    def _observe_audit(self) -> None:
        """Audit queue depth and counters as metrics, under the log's chain id."""
        log = self._audit
        if log is None:
            return
        if self._unobserve is not None:
            self._unobserve()
        self._unobserve = self.telemetry.metrics.observe_audit(
            audit_log_stats(log), source=log.chain_id
        )
        if not self._fork_hooked:
            # A forked worker's log takes a chain of its own (AuditLog registers first, so
            # its hook runs first): the metrics follow under that chain's id.
            ref = weakref.ref(self)
            self._fork_hooked = True
            os.register_at_fork(after_in_child=lambda: _observe_again(ref))

    def grammar(self, model: str | None = None) -> GrammarFactory:
        """The grammar compiler for `model`'s tokenizer (built once; compiling is costly)."""
        from steerguard.chat.grammar import GrammarFactory

        spec = model or self.config.model
        engine = self.engine(spec)
        with self._lock:
            factory = self._grammars.get(spec)
            if factory is None:
                vocab = int(engine.model.get_output_embeddings().weight.shape[0])
                factory = self._grammars[spec] = GrammarFactory(
                    engine.tokenizer, vocab, engine.eos_ids
                )
            return factory

    def pipeline(self, model: str | None = None) -> SteeringPipeline:
        """The request pipeline for `model`: its engine, the policy, the probes, the audit."""
        spec = model or self.config.model
        with self._lock:
            if self._closed:
                raise RuntimeError("this Steerguard is closed")
            pipe = self._pipelines.get(spec)
            if pipe is None:
                engine = self.engine(spec)
                pipe = self._pipelines[spec] = SteeringPipeline(
                    engine, self.policy_source(engine.fingerprint.num_layers), self.audit,
                    probes=self.probes, telemetry=self.telemetry,
                )
            return pipe

    # life cycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the bundle watcher and close the audit log this root made (flushing it).
        Parts given to the constructor are left to their owner."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._unobserve is not None:
                self._unobserve()
                self._unobserve = None
            if self._store is not None:
                self._store.stop()
            if self._owns_audit and self._audit is not None:
                self._audit.close()

    def __enter__(self) -> Steerguard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the process default ----------------------------------------------------------------

    _default: Steerguard | None = None
    _default_lock = threading.Lock()

    @classmethod
    def default(cls) -> Steerguard:
        """The process's shared root, built from the environment on first use: what
        `SteeredChatModel()` runs on when given no parts of its own."""
        with cls._default_lock:
            if cls._default is None or cls._default._closed:
                cls._default = cls()
            return cls._default

    @classmethod
    def set_default(cls, root: Steerguard | None) -> None:
        """Make `root` the process's shared root (None: build one again on next use)."""
        with cls._default_lock:
            cls._default = root

    def describe(self) -> dict[str, Any]:
        """What runs, for logs and health checks."""
        return {
            "model": self.config.model,
            "backend": self.config.backend,
            "engines": sorted(self._engines),
            "bundle": f"{self.policy.ref.name}@{self.policy.ref.revision}",
            "audit": self._audit.chain_id if self._audit is not None else None,
        }


def _observe_again(ref: weakref.ReferenceType[Steerguard]) -> None:
    root = ref()
    if root is not None and not root._closed:
        root._observe_audit()
