"""Forward hooks that exist only while some call on the model is steering.

One dispatcher hook per decoder layer is installed by the first active call and removed by the
last one. Each hook looks up the *calling* context's steering state in a ContextVar, so
concurrent calls on one model (threads or asyncio executors) never see each other's vectors.
Installing and removing happen under a lock and only when no other call is inside the model,
so torch never iterates a hook dict while it changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch
from torch import nn

from steerguard.runtime.layers import decoder_layers


class LayerProgram(Protocol):
    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None: ...


_ACTIVE: ContextVar[LayerProgram | None] = ContextVar("steerguard_active_program", default=None)


class _Dispatcher:
    def __init__(self, model: nn.Module) -> None:
        self.layers = decoder_layers(model)
        self.lock = threading.Lock()
        self.users = 0
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook_for(self, index: int):
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            program = _ACTIVE.get()
            if program is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            steered = program(index, hidden)
            if steered is None:
                return None
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    def acquire(self) -> None:
        with self.lock:
            if self.users == 0:
                self.handles = [
                    layer.register_forward_hook(self._hook_for(i))
                    for i, layer in enumerate(self.layers)
                ]
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for handle in self.handles:
                    handle.remove()
                self.handles = []


_DISPATCHERS: dict[int, _Dispatcher] = {}
_DISPATCHERS_LOCK = threading.Lock()


def _dispatcher(model: nn.Module) -> _Dispatcher:
    with _DISPATCHERS_LOCK:
        found = _DISPATCHERS.get(id(model))
        if found is None or found.layers is not decoder_layers(model):
            found = _DISPATCHERS[id(model)] = _Dispatcher(model)
        return found


@contextmanager
def hooks_installed(model: nn.Module) -> Iterator[None]:
    """Keep the dispatcher hooks on `model` for the duration of the block (reference counted)."""
    dispatcher = _dispatcher(model)
    dispatcher.acquire()
    try:
        yield
    finally:  # also on KeyboardInterrupt and GeneratorExit
        dispatcher.release()


@contextmanager
def active_program(program: LayerProgram | None) -> Iterator[None]:
    """Route this context's forwards through `program`; set around each forward only, so a
    suspended generator never leaks its program into its consumer's code."""
    token = _ACTIVE.set(program)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def hook_count(model: nn.Module) -> int:
    """Forward hooks and pre-hooks currently on the model's modules (0 when idle)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
