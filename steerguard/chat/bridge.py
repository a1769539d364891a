"""A blocking iterator consumed from asyncio: it runs on a worker thread and hands each item to
the event loop through a queue. The server's thread scheduler and the LangChain model's
`_astream` both stream a chat call this way."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


async def stream_in_thread(
    items: Callable[[], Iterator[T]],  # a generator: closing it stops it
    run: Callable[[Callable[[], None]], Awaitable[Any]],
    cancel: threading.Event,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[T]:
    """Yield what `items()` yields, the iteration running on a thread that `run` starts.

    The iterator is closed on that thread when it ends, raises (the error is raised here) or
    `stop()` (default: `cancel` is set) holds after an item. A consumer that stops early or is
    cancelled sets `cancel`; either way this waits (up to 30 s) for the thread to finish."""
    stopped = stop or cancel.is_set
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone after a cancel
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def produce() -> None:
        try:
            with contextlib.closing(items()) as it:  # type: ignore[type-var]
                for item in it:
                    put("item", item)
                    if stopped():
                        break  # consumer left: closing tells the iterator
        except BaseException as exc:  # handed to the consumer
            put("error", exc)
        finally:
            put("done", None)

    worker = asyncio.ensure_future(run(produce))
    finished = False
    try:
        while True:
            kind, value = await queue.get()
            if kind == "done":
                finished = True
                return
            if kind == "error":
                finished = True
                raise value
            yield value
    finally:
        if not finished:
            cancel.set()  # consumer stopped early or was cancelled
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(worker), timeout=30)
