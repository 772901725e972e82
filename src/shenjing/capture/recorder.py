"""The one way shenjing records layer outputs: hook → keys → sink.

A :class:`Recorder` observes a set of modules through :func:`shenjing.hooks.forward_hooks`
(hooks only observe, and are removed also when forward raises). Each time an observed
module returns, the floating-point tensors inside its output go to a *sink* as one
:class:`ModuleCall`, with the module's call number in the current forward and each
tensor's path into the output. What a sink keeps is its own business: :func:`capture`
keeps copies in lists, :func:`capture_dataset` streams rows to ``.npy`` files, the feature
maps keep one sample, :func:`dry_run` keeps shapes.

Naming of recorded tensors (keys), one rule for all of them
(:func:`shenjing.capture.keys.output_key`):

- a tensor output is recorded under the layer name: ``fc1``;
- a tuple/list output under ``name.i`` (``lstm.0`` = the sequence output, ``lstm.1.0`` =
  ``h_n``), a dict output under ``name.key``; non-floating tensors (indices, masks) and
  non-tensors are skipped;
- a module called k > 1 times in one forward (shared weights) under ``name#0`` …
  ``name#{k-1}``, e.g. ``block#1`` or ``lstm#1.0``.

The ``#i`` suffix needs the number of calls per forward, so a sink either waits for the
forward to end (:class:`CallLog` collects the calls and names them afterwards) or knows
the count already (the batches after the first of a dataset capture).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from shenjing.capture.keys import LayerKey, Selection, is_selected, output_key, output_path
from shenjing.hooks import HookFn, forward_hooks

T = TypeVar("T")
OutputPath = tuple[str, ...]


def flatten_output(key: str, out: Any) -> list[tuple[str, torch.Tensor]]:
    """The floating-point tensors inside a layer output, each with its key (see module doc)."""
    if isinstance(out, torch.Tensor):
        return [(key, out)] if out.is_floating_point() else []
    found: list[tuple[str, torch.Tensor]] = []
    if isinstance(out, Mapping):
        for k, v in out.items():
            found.extend(flatten_output(f"{key}.{k}", v))
    elif isinstance(out, (tuple, list)):
        for i, v in enumerate(out):
            found.extend(flatten_output(f"{key}.{i}", v))
    return found


@dataclass(frozen=True)
class ModuleCall:
    """One return of an observed module: its name, which call of the current forward it was
    (from 0), its positional inputs, and its floating-point output tensors as
    ``(path into the output, tensor)``, as the module returned them (not detached)."""

    module: str
    call: int
    args: tuple[Any, ...]
    outputs: tuple[tuple[OutputPath, torch.Tensor], ...]


Sink = Callable[[ModuleCall], None]


class Recorder:
    """Observe ``modules`` of ``model`` and hand every call's outputs to ``sink``.

    Calls are counted per module from the last :meth:`new_forward` (or from the start), so
    a module that runs twice in one forward gives calls 0 and 1.

    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> log = CallLog(["0"], lambda call: [(p, tuple(t.shape)) for p, t in call.outputs])
    >>> with Recorder(net, ["0"], log.sink).observing():
    ...     _ = net(torch.ones(3, 2))
    >>> [(out.key, out.value) for out in log.keyed()]
    [('0', (3, 2))]
    """

    def __init__(self, model: nn.Module, modules: Iterable[str], sink: Sink) -> None:
        self.model = model
        self.sink = sink
        self.calls = dict.fromkeys(modules, 0)

    def new_forward(self) -> None:
        """Start counting calls again (a new forward pass begins)."""
        for name in self.calls:
            self.calls[name] = 0

    def _hook(self, name: str) -> HookFn:
        def observe(_mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            call = self.calls[name]
            self.calls[name] = call + 1
            self.sink(ModuleCall(name, call, args, tuple(
                (output_path(name, key), t) for key, t in flatten_output(name, out))))
        return observe

    @contextlib.contextmanager
    def observing(self, also: Mapping[str, HookFn] | None = None) -> Iterator[Recorder]:
        """Hooks on while the block runs, removed when it exits (also on an exception).

        ``also`` adds plain hooks on modules not observed here (``""`` is the model
        itself), e.g. one that learns when a whole forward has finished.
        """
        hooks = {name: self._hook(name) for name in self.calls}
        hooks.update({name: fn for name, fn in (also or {}).items() if name not in hooks})
        with forward_hooks(self.model, hooks):
            yield self


@dataclass(frozen=True)
class KeyedOutput(Generic[T]):
    """One kept output with its key: what a sink kept (``value``) and where it came from."""

    key: LayerKey
    module: str
    call: int
    path: OutputPath
    value: T


class CallLog(Generic[T]):
    """The calls of each module in one forward, kept until their keys are known.

    ``keep`` turns a :class:`ModuleCall` into what to keep per output (a copy, a prepared
    tensor, a shape …); :meth:`sink` is the recorder's sink. Modules keep the order given.
    """

    def __init__(self, modules: Iterable[str],
                 keep: Callable[[ModuleCall], list[tuple[OutputPath, T]]]) -> None:
        self.calls: dict[str, list[list[tuple[OutputPath, T]]]] = {m: [] for m in modules}
        self.keep = keep

    def sink(self, call: ModuleCall) -> None:
        """Keep what ``keep`` makes of one call (a :class:`Recorder`'s sink)."""
        self.calls[call.module].append(self.keep(call))

    def clear(self) -> None:
        """Forget every call (the next forward starts)."""
        for per_call in self.calls.values():
            per_call.clear()

    def n_calls(self, module: str) -> int:
        """How many times ``module`` ran since the last :meth:`clear`."""
        return len(self.calls[module])

    def produced(self) -> dict[str, list[list[OutputPath]]]:
        """Per module and call, the paths of the tensors it returned (for
        :func:`~shenjing.capture.keys.check_filters`)."""
        return {m: [[path for path, _ in outs] for outs in per_call]
                for m, per_call in self.calls.items()}

    def keyed(self, selection: Selection | None = None) -> Iterator[KeyedOutput[T]]:
        """Every kept output under its key, module by module, call by call; with
        ``selection``, only the outputs it selects."""
        for module, per_call in self.calls.items():
            n_calls = len(per_call)
            for call, outs in enumerate(per_call):
                for path, value in outs:
                    if selection is None or is_selected(selection, module, call, n_calls, path):
                        yield KeyedOutput(output_key(module, call, n_calls, path), module,
                                          call, path, value)
