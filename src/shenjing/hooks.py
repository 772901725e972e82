"""The one low-level hook mechanism: forward hooks and pre-hooks that are always removed.

Everything that observes a model's layers (capture and feature maps through
:class:`shenjing.capture.recorder.Recorder`, dead-unit counts, the landscape engine's
first-layer probe) goes through :func:`forward_hooks` or :func:`forward_pre_hooks`, so "no
hook is left behind" holds in one place; ``tests/test_no_hooks_left.py`` checks it for
every caller, also when forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import nn

HookFn = Callable[[nn.Module, tuple[Any, ...], Any], None]
PreHookFn = Callable[[nn.Module, tuple[Any, ...]], None]


@contextlib.contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, HookFn]) -> Iterator[None]:
    """Register ``hooks[name]`` as a forward hook on ``model.get_submodule(name)``.

    The hooks observe only: their return value is ignored, so a layer's output is never
    replaced. They are removed when the block exits, also when forward raises.
    """
    handles = []
    try:
        for name, fn in hooks.items():
            module = model.get_submodule(name) if name else model

            def observe(mod: nn.Module, args: tuple[Any, ...], out: Any,
                        _fn: HookFn = fn) -> None:
                _fn(mod, args, out)  # returning None keeps the module's own output

            handles.append(module.register_forward_hook(observe))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def forward_pre_hooks(model: nn.Module, hooks: Mapping[str, PreHookFn]) -> Iterator[None]:
    """Register ``hooks[name]`` as a forward pre-hook on ``model.get_submodule(name)``
    (``""`` is the model itself).

    The hooks observe a module's inputs before it runs; their return value is ignored, so
    the inputs are never replaced. A hook may raise to stop the forward pass early (the
    caller catches it). They are removed when the block exits, also when forward raises.
    """
    handles = []
    try:
        for name, fn in hooks.items():
            module = model.get_submodule(name) if name else model

            def observe(mod: nn.Module, args: tuple[Any, ...], _fn: PreHookFn = fn) -> None:
                _fn(mod, args)  # returning None keeps the module's own inputs

            handles.append(module.register_forward_pre_hook(observe))
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_hooks(model: nn.Module) -> int:
    """Number of forward (pre-)hooks registered on ``model`` and all its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
