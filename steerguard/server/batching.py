"""The batching scheduler: concurrent chat calls share decode steps (continuous batching).

Each call still runs the whole pipeline on a thread of its own (decide, plan, audit), but its
generation is a row of the engine's shared batch (steerguard.runtime.batching): rows join and
leave at decode-step boundaries, each with the plan its own decision made.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from steerguard.chat.call import ChatCall
from steerguard.pipeline import SteeringPipeline, Turn
from steerguard.runtime.batching import ContinuousBatcher
from steerguard.runtime.engine import SteeringEngine, StreamChunk
from steerguard.server.scheduler import QueueFull, ThreadScheduler


class BatchingScheduler(ThreadScheduler):
    """At most `max_batch` rows decode together; `max_queue` more wait for a row, beyond
    that `stream` raises QueueFull (429 with Retry-After)."""

    def __init__(self, max_batch: int = 16, max_queue: int = 64) -> None:
        super().__init__(concurrency=max_batch + max_queue, max_queue=max_queue)
        self.max_batch = max_batch
        self._batchers: dict[int, ContinuousBatcher] = {}
        self._batchers_lock = threading.Lock()
        self._on_step: Callable[[int], None] | None = None
        self._arriving = 0  # calls taken that have not reached their batcher yet

    def observe_batch(self, record: Callable[[int], None]) -> None:
        """`record(rows)` after every decode step (the batch-size metric)."""
        self._on_step = record
        for batcher in self._batchers.values():
            batcher.on_step = record

    def batcher(self, engine: SteeringEngine) -> ContinuousBatcher:
        with self._batchers_lock:
            found = self._batchers.get(id(engine))
            if found is None:
                # HTTP requests sent together reach the batcher tens of ms apart (parsing,
                # prompt rendering, the policy decision): gather them for one prefill.
                found = self._batchers[id(engine)] = ContinuousBatcher(
                    engine, self.max_batch, self.max_batch + self.max_queue, self._on_step,
                    gather_s=0.25, quiet_s=0.04, arriving=lambda: self._arriving)
            return found

    @property
    def queue_depth(self) -> int:
        """Calls that hold no batch row yet."""
        active = sum(b.active for b in self._batchers.values())
        return max(0, self._waiting + self._running - active)

    @property
    def active_rows(self) -> int:
        return sum(b.active for b in self._batchers.values())

    def _check_room(self) -> None:
        if self._waiting + self._running >= self.max_batch + self.max_queue:
            depth = self.queue_depth
            raise QueueFull(depth, max(1.0, depth / max(1, self.max_batch)))

    def stream(self, pipeline: SteeringPipeline, call: ChatCall) -> AsyncIterator[str | Turn]:
        batcher = self.batcher(pipeline.engine)
        return self._stream_with(pipeline, call, batcher.stream)

    async def _stream_with(
        self, pipeline: SteeringPipeline, call: ChatCall,
        backend: Callable[..., Iterator[StreamChunk]],
    ) -> AsyncIterator[str | Turn]:
        # Counted from here until the row is submitted (or the call fails before): the
        # batcher waits for these while it gathers a prefill group.
        pending = [True]

        def arrived() -> None:
            with self._lock:
                if pending[0]:
                    pending[0] = False
                    self._arriving -= 1

        def rows(*args: Any, **kwargs: Any) -> Iterator[StreamChunk]:
            return backend(*args, on_submit=arrived, **kwargs)

        with self._lock:
            self._arriving += 1
        try:
            async for item in ThreadScheduler.stream(self, pipeline, call, backend=rows):
                yield item
        finally:
            arrived()

    async def close(self) -> None:
        await super().close()
        for batcher in list(self._batchers.values()):
            await asyncio.to_thread(batcher.close)

