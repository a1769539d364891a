"""Layer hooks that exist only while some call on the model is steering.

The first active call wraps each decoder layer's `forward` (an instance attribute shadowing the
class method) and the last one restores it. Each wrapper looks up the *calling* context's
program in a ContextVar, so concurrent calls on one model (threads or asyncio executors) never
see each other's vectors. Wrapping `forward` instead of registering torch forward hooks keeps
torch's hook-free fast path in `Module.__call__`, which on this model is worth about 3% of
decode speed; swapping an attribute is also atomic for a forward already running elsewhere.

A program may carry a `LayerReplay`: the layers below its start then return what an earlier
pass computed and fill the cache with that pass's keys and values, instead of running again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from steerguard.runtime.layers import decoder_layers


class ForwardStopped(Exception):
    """Raised by a program to end a forward early; carries the forward's KV cache (None when
    the layers were not given one), so a pass that follows can reuse what was computed."""

    cache: Any = None


@dataclass(frozen=True)
class LayerReplay:
    """An earlier pass over the same rows and positions, to stand in for layers below `start`:
    `output` is layer start-1's hidden state [B, T, H], `keys`/`values` each layer's cache."""

    start: int
    output: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    def run(self, index: int, cache: Any) -> torch.Tensor:
        cache.update(self.keys[index], self.values[index], index)
        return self.output  # only layer start-1's is read: the layers between are replayed too


class LayerProgram(Protocol):
    """Called with each layer's output; returns the steered output or None (unchanged). A
    program may also have a `replay` attribute (a LayerReplay or None)."""

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None: ...


_ACTIVE: ContextVar[LayerProgram | None] = ContextVar("steerguard_active_program", default=None)


def _cache_of(kwargs: dict[str, Any]) -> Any:
    """The KV cache a decoder layer was called with (its keyword moved between releases)."""
    for name in ("cache", "past_key_values", "past_key_value"):
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


class _Dispatcher:
    def __init__(self, model: nn.Module) -> None:
        self.layers = decoder_layers(model)
        self.lock = threading.Lock()
        self.users = 0
        self.saved: list[Any] = []
        # Layers seen returning a bare tensor: only those can be replayed (a tuple's other
        # members are the architecture's own).
        self.plain = [False] * len(self.layers)

    def _wrap(self, index: int, original: Callable[..., Any]) -> Callable[..., Any]:
        plain = self.plain

        def forward(*args: Any, **kwargs: Any) -> Any:
            program = _ACTIVE.get()
            if program is not None:
                replay: LayerReplay | None = getattr(program, "replay", None)
                if replay is not None and index < replay.start and all(plain[:replay.start]):
                    cache = _cache_of(kwargs)
                    if cache is not None:
                        return replay.run(index, cache)
            output = original(*args, **kwargs)
            plain[index] = isinstance(output, torch.Tensor)
            if program is None:
                return output
            hidden = output[0] if isinstance(output, tuple) else output
            try:
                steered = program(index, hidden)
            except ForwardStopped as stop:
                stop.cache = _cache_of(kwargs)
                raise
            if steered is None:
                return output
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        forward._steerguard = True  # type: ignore[attr-defined]
        return forward

    def acquire(self) -> None:
        with self.lock:
            if self.users == 0:
                # Keep whatever instance-level forward was there (accelerate sets one).
                self.saved = [layer.__dict__.get("forward") for layer in self.layers]
                for index, layer in enumerate(self.layers):
                    layer.forward = self._wrap(index, layer.forward)
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for layer, saved in zip(self.layers, self.saved, strict=True):
                    if saved is None:
                        del layer.forward
                    else:
                        layer.forward = saved
                self.saved = []


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
    """Forward hooks, pre-hooks and steerguard forward wrappers on the model (0 when idle)."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    wrapped = sum(
        getattr(m.__dict__.get("forward"), "_steerguard", False) for m in model.modules()
    )
    return hooks + wrapped
