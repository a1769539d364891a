"""AuditLog: the facade the request path calls. record() only captures references and
appends to a bounded queue; the writer thread does everything else."""

from __future__ import annotations

import atexit
import itertools
import os
import secrets
import socket
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from steerguard.audit.build import RecordBuilder, RequestItem, planned
from steerguard.audit.chain import ChainHead
from steerguard.audit.config import AuditConfig
from steerguard.audit.connection import Client, connect
from steerguard.audit.embedded import EmbeddedServer
from steerguard.audit.errors import AuditConfigError, AuditUnavailableError
from steerguard.audit.keys import KeySpace
from steerguard.audit.masking import Masker, TextMasker
from steerguard.audit.recent import RecentWrites
from steerguard.audit.records import Outcome
from steerguard.audit.sink import RedisSink
from steerguard.audit.spill import SpillFile
from steerguard.audit.writer import AuditCounters, Writer
from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.policy.decision import Decision
from steerguard.runtime.report import InterventionReport
from steerguard.runtime.result import GenerationResult

_COMPLETED = Outcome.completed()
_CANCELLED = Outcome.cancelled()
OutcomeLike = Outcome | BaseException | Literal["completed", "cancelled"]


def hmac_key(config: AuditConfig, *, create: bool = True) -> bytes:
    """The configured key, or one made once and kept (0600) in the audit directory. Readers
    pass `create=False`: a key of their own would silently match no record."""
    if config.user_hmac_key is not None:
        return config.user_hmac_key.get_secret_value().encode()
    path = config.audit_dir / "hmac.key"
    if not path.exists() and not create:
        raise AuditConfigError(
            f"no user HMAC key: {path} does not exist and STEERGUARD_AUDIT_HMAC_KEY is not set; "
            "use the writer's key (copy its hmac.key or set the variable), or query by "
            "--user-ref"
        )
    if not path.exists():
        # Workers of one service may start together: the key appears whole (written aside,
        # then linked into place) or not at all, and the one linked first is everyone's.
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".hmac.key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    key = path.read_text().strip()
    if not key:
        raise AuditConfigError(f"user HMAC key file {path} is empty; restore the writer's key "
                               "or set STEERGUARD_AUDIT_HMAC_KEY")
    return key.encode()


def _outcome(value: OutcomeLike) -> Outcome:
    if isinstance(value, Outcome):
        return value
    if isinstance(value, BaseException):
        return Outcome.error(value)
    if value == "completed":
        return _COMPLETED
    if value == "cancelled":
        return _CANCELLED
    raise ValueError(f"outcome {value!r} is not an Outcome, an exception, "
                     "'completed' or 'cancelled'")


class AuditLog:
    def __init__(
        self,
        config: AuditConfig | None = None,
        *,
        client: Client | None = None,
        model: ModelFingerprint | None = None,
        masker: TextMasker | None = None,
        start: bool = True,
    ) -> None:
        self.config = config or AuditConfig.load()
        self.model = model
        self._embedded: EmbeddedServer | None = None
        if client is None:
            client, self._embedded = connect(self.config)
        self.client = client
        self.keys = KeySpace(self.config.key_prefix)
        self._closed = False
        self._start_on_record = False  # see _forked
        self._builder = RecordBuilder(
            hmac_key(self.config),
            Masker(self.config.mask_rules, masker),
            store_user_id=self.config.store_user_id,
            store_text=self.config.store_text,
        )
        self._begin_chain()
        # A log nobody closed still flushes at interpreter exit (before an embedded server,
        # registered earlier, is stopped): queued records are written or spilled, not lost.
        ref = weakref.ref(self)

        def close_at_exit() -> None:
            log = ref()
            if log is not None:
                log.close()

        def after_fork_in_child() -> None:
            log = ref()
            if log is not None:
                log._forked()

        self._close_at_exit = close_at_exit
        atexit.register(close_at_exit)
        os.register_at_fork(after_in_child=after_fork_in_child)
        if start:
            self._writer.start()

    def _begin_chain(self) -> None:
        """A chain of this process's own, and the writer that seals records into it."""
        host = socket.gethostname().split(".")[0][:16] or "host"
        self.chain_id = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
        self._ids = itertools.count()
        cfg = self.config
        self._writer = Writer(
            sink=RedisSink(self.client, self.keys, cfg.batch_size,
                           RecentWrites(cfg.rewrite_window_s, cfg.rewrite_window_records)),
            builder=self._builder,
            chain=ChainHead(self.chain_id),
            spill=SpillFile(cfg.resolved_spill_path, cfg.spill_max_bytes, cfg.spill_fsync),
            checkpoint_path=cfg.resolved_checkpoint_path,
            checkpoint_interval_s=cfg.checkpoint_interval_s,
            retry_initial_s=cfg.retry_initial_s,
            retry_max_s=cfg.retry_max_s,
            revive=self._embedded.ensure if self._embedded is not None else None,
        )

    def _forked(self) -> None:
        """In a child process made by fork (a pre-forking server that built the app first):
        the parent's writer thread did not come along, and its chain and queue are the
        parent's (the same seqs written from two processes would fork the chain). The child
        starts a chain and a writer of its own, and never stops the parent's embedded
        server."""
        started = self._writer.started
        if self._embedded is not None:
            self._embedded.disown()
        self._begin_chain()
        # Started by the first record(): a child that never records (a pool worker, a data
        # loader) gets no thread.
        self._start_on_record = started and not self._closed

    # ---- the request path ---------------------------------------------------------------
    def record(
        self,
        decision: Decision,
        result: GenerationResult | Sequence[InterventionReport] | None = None,
        outcome: OutcomeLike = "completed",
        *,
        request_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        model: ModelFingerprint | None = None,
        prompt: str | None = None,
        answer: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        latency_s: float | None = None,
        backend: str | None = None,
    ) -> list[str]:
        """Queue the records of one request; returns their ids (decision first). `backend`
        names the engine that generated (hf, vllm).

        Never blocks under `buffer`; under `block` waits up to block_timeout_s; under
        `refuse` (and `block` after waiting) raises AuditUnavailableError."""
        if isinstance(result, GenerationResult):
            gen, reports = result, result.reports
        else:
            gen, reports = None, result
        n = len(reports) if reports else len(planned(decision))
        w = self._writer
        if self._start_on_record:
            self._start_on_record = False
            w.start()
        busy = self._closed or len(w.queue) >= self.config.max_queue or w.no_sink
        if busy and not self._admit(n + 1):
            return []
        prefix = self.chain_id
        ids = [f"{prefix}-{next(self._ids)}" for _ in range(n + 1)]
        w.queue.append(RequestItem(
            ids, int(time.time() * 1000), decision, reports, gen, _outcome(outcome),
            request_id, session_id, user_id, model or self.model, prompt, answer,
            trace_id, span_id, latency_s, backend,
        ))
        w.counters.queued += n + 1
        if not w.wake.is_set():
            w.wake.set()
        return ids

    def _admit(self, n: int) -> bool:
        """Apply the overflow policy; False means drop (buffer), raising means refuse."""
        w, cfg = self._writer, self.config
        if self._closed:
            raise AuditUnavailableError("audit log is closed; no records are accepted")
        if cfg.overflow == "buffer":
            if len(w.queue) < cfg.max_queue:
                return True  # no sink: buffer in memory up to the bound
            w.counters.dropped_overflow += n
            return False
        if cfg.overflow == "block":
            deadline = time.monotonic() + cfg.block_timeout_s
            with w.cond:
                while len(w.queue) >= cfg.max_queue:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    w.cond.wait(min(left, 0.05))
            if len(w.queue) < cfg.max_queue:
                return True
        elif len(w.queue) < cfg.max_queue and not w.no_sink:
            return True
        w.counters.refused += 1
        raise AuditUnavailableError(self._why_unavailable())

    def _why_unavailable(self) -> str:
        w = self._writer
        if w.no_sink:
            return (f"audit unavailable: Redis unreachable ({w.last_error}) and the spill file "
                    f"{w.spill.path} refused records; overflow policy is "
                    f"{self.config.overflow!r}")
        return (f"audit queue full ({len(w.queue)} of max_queue={self.config.max_queue}); "
                f"overflow policy is {self.config.overflow!r}")

    def check_available(self) -> None:
        """Raise AuditUnavailableError when a record would be refused now (fail closed
        before steering)."""
        w = self._writer
        if self._closed or w.no_sink or len(w.queue) >= self.config.max_queue:
            raise AuditUnavailableError(self._why_unavailable())

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def counters(self) -> AuditCounters:
        return self._writer.counters

    @property
    def spill_path(self) -> Path:
        return self._writer.spill.path

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything recorded so far is in Redis; False if the timeout came first
        (records are then still queued, held, or in the spill file)."""
        w = self._writer
        deadline = time.monotonic() + timeout
        with w.cond:
            while not w.idle:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                w.wake.set()
                w.cond.wait(min(left, 0.05))
        return True

    def close(self, deadline: float = 10.0) -> AuditCounters:
        """Stop accepting, flush for up to `deadline` seconds, spill what is left, stop."""
        if self._closed:
            return self.counters
        start = time.monotonic()
        self._closed = True
        atexit.unregister(self._close_at_exit)
        if self._writer.started:
            self.flush(deadline)
        self._writer.stop(max(1.0, deadline - (time.monotonic() - start)))
        try:
            self.client.close()
        finally:
            if self._embedded is not None:
                self._embedded.stop()
        return self.counters

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
