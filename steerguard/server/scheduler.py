"""How concurrent chat calls reach the engine. The HTTP layer only knows this interface:

    async for item in scheduler.stream(pipeline, call):   # content deltas, then the Turn
        ...

`submit` refuses at once with QueueFull when the bounded queue is full (the server answers
429 with Retry-After). A consumer that stops iterating (a client that disconnected) cancels
its call: the engine frees its row at the next step and the audit log records it cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from steerguard.chat.bridge import stream_in_thread
from steerguard.chat.call import ChatCall, stream_call
from steerguard.pipeline import SteeringPipeline, StreamBackend, Turn


class QueueFull(Exception):
    def __init__(self, depth: int, retry_after_s: float) -> None:
        super().__init__(f"{depth} requests are waiting; retry in {retry_after_s:.0f} s")
        self.depth = depth
        self.retry_after_s = retry_after_s


class Scheduler(Protocol):
    @property
    def queue_depth(self) -> int: ...

    def stream(self, pipeline: SteeringPipeline, call: ChatCall
               ) -> AsyncIterator[str | Turn]: ...

    async def close(self) -> None: ...


class ThreadScheduler:
    """Each call on a thread of its own, at most `concurrency` at once: concurrent calls share
    the model but not its batches. For backends that batch by themselves (vLLM), and the
    baseline the batching scheduler is measured against."""

    def __init__(self, concurrency: int = 8, max_queue: int = 64) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="steerguard-call")
        self._waiting = 0
        self._running = 0
        self._lock = threading.Lock()

    @property
    def queue_depth(self) -> int:
        return self._waiting

    @property
    def active_rows(self) -> int:
        return self._running

    async def stream(self, pipeline: SteeringPipeline, call: ChatCall,
                     backend: StreamBackend | None = None) -> AsyncIterator[str | Turn]:
        """`backend` runs the prompt in place of the engine (a batcher's rows)."""
        with self._lock:
            self._check_room()
            self._waiting += 1
        loop = asyncio.get_running_loop()

        def items() -> Iterator[str | Turn]:
            with self._lock:
                self._waiting -= 1
                self._running += 1
            try:
                yield from stream_call(pipeline, call, backend)
            finally:
                with self._lock:
                    self._running -= 1

        async with contextlib.aclosing(stream_in_thread(
            items, lambda produce: loop.run_in_executor(self._pool, produce), call.cancel
        )) as stream:
            async for item in stream:
                yield item

    def _check_room(self) -> None:
        """Called under the lock before a call is taken: QueueFull when there is none."""
        if self._waiting >= self.max_queue:
            raise QueueFull(self._waiting, 1.0)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
