"""PolicyStore: the bundle in force, reloaded atomically; a bad revision never replaces it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from steerguard.policy.catalog import VectorCatalog
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import bundle_file, load_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: bool  # a new revision (content hash) is now in force
    revision: str | None  # the revision in force after the attempt
    content_hash: str | None
    error: PolicyError | None = None


class PolicyStore:
    """Holds the PolicyEngine in force. Readers take one reference per request, so a reload
    in the middle of a request never mixes two revisions."""

    def __init__(
        self,
        path: str | Path,
        catalog: VectorCatalog | None = None,
        num_layers: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.catalog = catalog
        self.num_layers = num_layers  # the model's, when known: a layer beyond it is an error
        self._lock = threading.Lock()  # serialises reloads, not reads
        self._engine: PolicyEngine | None = None
        self.last_error: PolicyError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        result = self.reload()
        if not result.ok:
            assert result.error is not None
            raise result.error

    @property
    def engine(self) -> PolicyEngine:
        engine = self._engine
        assert engine is not None  # the constructor raised otherwise
        return engine

    def reload(self) -> ReloadResult:
        """Load the bundle again; on any error keep the current one and say why."""
        with self._lock:
            current = self._engine
            try:
                bundle = load_bundle(self.path, self.catalog, self.num_layers)
            except PolicyError as e:
                self.last_error = e
                if current is not None:
                    log.warning(
                        "policy reload of %s failed; keeping %s: %s",
                        self.path,
                        current.ref.revision,
                        e,
                    )
                return ReloadResult(
                    ok=False,
                    changed=False,
                    revision=current.ref.revision if current else None,
                    content_hash=current.ref.content_hash if current else None,
                    error=e,
                )
            self.last_error = None
            changed = current is None or current.ref.content_hash != bundle.content_hash
            if changed:
                self._engine = PolicyEngine(bundle)  # one assignment: atomic for readers
            return ReloadResult(
                ok=True,
                changed=changed,
                revision=bundle.spec.revision,
                content_hash=bundle.content_hash,
            )

    # ------------------------------------------------------------------ watching

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = bundle_file(self.path).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def watch(self, interval: float = 1.0) -> None:
        """Poll the bundle file and reload when it changes (a daemon thread)."""
        if self._thread is not None:
            return
        self._stop.clear()
        stamp = self._stamp()

        def loop() -> None:
            nonlocal stamp
            while not self._stop.wait(interval):
                now = self._stamp()
                if now != stamp:
                    stamp = now
                    self.reload()

        self._thread = threading.Thread(target=loop, name="steerguard-policy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
