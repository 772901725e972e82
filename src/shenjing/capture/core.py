"""Hook-level capture: turn a layer's output into named per-sample tensors.

Recording goes through :class:`shenjing.capture.recorder.Recorder` (and so
:func:`shenjing.hooks.forward_hooks`): hooks only observe (a layer's output is never
replaced) and are removed even when forward raises. Keys name the recorded tensors as
:mod:`shenjing.capture.recorder` describes (``fc1``, ``lstm.1.0``, ``block#1``); each key
can be given back wherever a layer is chosen, and then only that tensor is recorded
(parsing in :mod:`shenjing.capture.keys`). Shapes are batch first, as recorded.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from shenjing._device import resolve_device
from shenjing.capture.recorder import CallLog, ModuleCall, OutputPath, Recorder
from shenjing.errors import LayerNotFoundError, ShapeMismatchError, UsageError

Pool = Literal["none", "mean", "max"] | int
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``'float16'`` → ``torch.float16``; None keeps each tensor's own dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UsageError(f"--dtype {dtype!r} is not supported for capture; use one of "
                         f"{', '.join(_DTYPES)}, e.g. --dtype float16")
    return _DTYPES[dtype]


def check_pool(pool: Pool | str) -> Pool:
    """Validate a pooling option: ``'none'``, ``'mean'``, ``'max'`` or an int k ≥ 1 (k×k)."""
    if isinstance(pool, str) and pool.isdigit():
        pool = int(pool)
    if isinstance(pool, bool) or not (pool in ("none", "mean", "max") or
                                      (isinstance(pool, int) and pool >= 1)):
        raise UsageError(f"--pool {pool!r} is not a pooling option; use none, mean, max or "
                         "a whole number k ≥ 1 for adaptive average pooling to k×k, e.g. "
                         "--pool mean")
    return pool  # type: ignore[return-value]


def device_for(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to run ``model`` on: ``device`` as ``--device`` reads it (``'auto'`` →
    CUDA when available), or, for None, the device the model's parameters are on (the CPU
    for a model without parameters)."""
    if device is None:
        for p in model.parameters():
            return p.device
        return torch.device("cpu")
    return resolve_device(device)


class NoBatchDimError(UsageError):
    """A recorded tensor has no dimension the size of the batch."""


class PoolTooLargeError(UsageError):
    """``pool=k`` asks adaptive pooling to enlarge a map (k above its height or width).

    A usage error, not a resource one: such a k never makes sense for this layer (it would
    only repeat values, ``capture --pool 1000`` tried 32 GB), whatever the machine.
    """


def check_pool_fits(t: torch.Tensor, pool: Pool, key: str) -> None:
    """Refuse ``pool=k`` for a 4-D/5-D map smaller than k×k, before anything is pooled."""
    if isinstance(pool, str) or t.ndim not in (4, 5):
        return
    spatial = tuple(int(s) for s in t.shape[2:])
    if int(pool) > min(spatial):
        size = "×".join(map(str, spatial))
        raise PoolTooLargeError(
            f"pool={pool} (--pool {pool}) would enlarge {key!r}'s {size} maps to "
            f"{'×'.join([str(pool)] * len(spatial))}: adaptive pooling to k×k only shrinks "
            f"a map, so k must be at most {min(spatial)} here; use pool={min(spatial)} or "
            "smaller, or pool='mean' / 'max' (one number per channel)")


def prepare(t: torch.Tensor, *, batch_size: int | None, pool: Pool,
            dtype: torch.dtype | None, key: str = "") -> torch.Tensor:
    """One recorded tensor made per-sample: batch dimension first, pooled, cast (not copied).

    The batch dimension is the first dimension whose size equals ``batch_size`` (so an
    ``nn.LSTM``'s ``h_n`` of shape (layers, batch, hidden) becomes (batch, layers, hidden)).
    Pooling applies to 4-D and 5-D maps (batch, channels, *spatial): ``'mean'``/``'max'``
    over the spatial dimensions, or an int k for adaptive average pooling to k×k.
    """
    t = t.detach()
    if batch_size is not None and (t.ndim == 0 or t.shape[0] != batch_size):
        dims = [d for d in range(t.ndim) if t.shape[d] == batch_size]
        if not dims:
            raise NoBatchDimError(
                f"output {key!r} has shape {tuple(t.shape)}, with no dimension of the batch "
                f"size {batch_size}; it is not per-sample and cannot be captured. Choose "
                "another layer")
        t = t.movedim(dims[0], 0)
    check_pool_fits(t, pool, key)
    if pool != "none" and t.ndim in (4, 5):
        spatial = tuple(range(2, t.ndim))
        if pool == "mean":
            t = t.mean(dim=spatial)
        elif pool == "max":
            t = t.amax(dim=spatial)
        else:
            k = int(pool)
            fn = F.adaptive_avg_pool2d if t.ndim == 4 else F.adaptive_avg_pool3d
            t = fn(t, k)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t


def _batch_size_of(args: tuple[Any, ...]) -> int | None:
    for a in args:
        if isinstance(a, torch.Tensor) and a.ndim > 0:
            return int(a.shape[0])
        if isinstance(a, (tuple, list)):
            found = _batch_size_of(tuple(a))
            if found is not None:
                return found
        if isinstance(a, Mapping):
            found = _batch_size_of(tuple(a.values()))
            if found is not None:
                return found
    return None


def run_model(model: nn.Module, x: Any) -> Any:
    """Call ``model`` on one batch: a tensor, a tuple of positional inputs, or a dict of kwargs."""
    if isinstance(x, Mapping):
        return model(**x)
    if isinstance(x, tuple):
        return model(*x)
    return model(x)


def expected_input(model: nn.Module) -> str:
    """What the model's first weighted layer takes, in words (for shape-mismatch errors)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            return (f"its first weighted layer {name!r} (Linear) takes {mod.in_features} "
                    f"features per sample, e.g. input shape (N, {mod.in_features})")
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}[type(mod)]
            return (f"its first weighted layer {name!r} ({type(mod).__name__}) takes "
                    f"{mod.in_channels} channels, input shape (N, {mod.in_channels}, {dims})")
        if isinstance(mod, (nn.RNNBase,)):
            return (f"its first weighted layer {name!r} ({type(mod).__name__}) takes "
                    f"{mod.input_size} features per step")
        if isinstance(mod, nn.Embedding):
            return f"its first layer {name!r} (Embedding) takes integer token ids"
    return "see the model's forward()"


def shape_of(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(shape_of(v) for v in x) + ")"
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {shape_of(v)}" for k, v in x.items()) + "}"
    return type(x).__name__


def forward_or_explain(model: nn.Module, x: Any) -> Any:
    """Run one batch; a shape error from torch becomes a :class:`ShapeMismatchError`."""
    try:
        return run_model(model, x)
    except RuntimeError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        markers = ("shape", "size", "dimension", "expected", "mat1", "channels")
        if any(m in text for m in markers):
            raise ShapeMismatchError(
                f"data of shape {shape_of(x)} does not fit {type(model).__name__}: "
                f"{expected_input(model)}; received {shape_of(x)} (torch: {text})"
            ) from None
        raise


@dataclass(frozen=True)
class DryOutput:
    """One tensor a module returned in a dry run, under the key capture records it by.

    ``shape`` is batch first (as captured) when ``per_sample``; else the raw shape (the
    tensor has no dimension of the batch size and cannot be captured). ``order`` counts the
    outputs in the order the modules finished; ``value`` is a batch-first copy (if asked).
    """

    key: str
    module: str
    call: int
    path: tuple[str, ...]
    shape: tuple[int, ...]
    per_sample: bool
    order: int
    value: torch.Tensor | None = None


@dataclass(frozen=True)
class DryRun:
    """What one batch through the model showed: calls per module and every output.

    ``inputs[name]`` is the first tensor argument of the last call of each module named in
    ``inputs_of`` (e.g. the features a classifier reads), copied when it was called.
    """

    batch_size: int | None
    calls: dict[str, int]
    outputs: list[DryOutput]
    inputs: dict[str, torch.Tensor]

    def of(self, module: str) -> list[DryOutput]:
        """The outputs of one module, in the order recorded."""
        return [o for o in self.outputs if o.module == module]


def dry_run(model: nn.Module, example: Any, names: Iterable[str] | None = None, *,
            values: bool = False, inputs_of: Iterable[str] = ()) -> DryRun:
    """Run ``example`` (one batch) through ``model`` with every module in ``names`` observed.

    The model runs in ``eval()`` under ``inference_mode`` (restored afterwards); hooks go
    through :func:`shenjing.hooks.forward_hooks`, so none is left, also if forward raises.
    ``values=True`` keeps a batch-first copy of every output (taken at once, so an in-place
    op later in forward cannot change it).
    """
    if names is None:
        names = [n for n, _ in model.named_modules() if n]
    names = list(dict.fromkeys([*names, *inputs_of]))
    want_input = set(inputs_of)
    batch = _batch_size_of((example,))
    inputs: dict[str, torch.Tensor] = {}
    counter = itertools.count()  # the order in which outputs were returned

    def keep(call: ModuleCall) -> list[tuple[OutputPath, tuple[torch.Tensor, int]]]:
        if call.module in want_input:
            first = next((a for a in call.args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                inputs[call.module] = first.detach().clone()
        return [(path, (t.detach().clone() if values else t.detach(), next(counter)))
                for path, t in call.outputs]

    log = CallLog(names, keep)
    was_training = model.training
    model.eval()
    try:
        with Recorder(model, names, log.sink).observing(), torch.inference_mode():
            forward_or_explain(model, example)
    finally:
        model.train(was_training)
    outputs = []
    for out in log.keyed():
        t, order = out.value
        try:
            v = prepare(t, batch_size=batch, pool="none", dtype=None, key=out.key)
            per_sample = True
        except NoBatchDimError:
            v, per_sample = t, False
        outputs.append(DryOutput(
            key=out.key, module=out.module, call=out.call, path=out.path,
            shape=tuple(v.shape), per_sample=per_sample, order=order,
            value=v if values and per_sample else None))
    outputs.sort(key=lambda o: o.order)
    return DryRun(batch_size=batch, calls={n: log.n_calls(n) for n in names},
                  outputs=outputs, inputs=inputs)


class Captured(Mapping[str, torch.Tensor]):
    """What :func:`capture` recorded: key → tensor of shape (samples, *features), on the CPU.

    Values recorded over several forward calls are concatenated along the sample axis on
    first access. ``layers`` maps each key to the layer that produced it.
    """

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}
        self._joined: dict[str, torch.Tensor] = {}
        self.layers: dict[str, str] = {}

    def _add(self, key: str, layer: str, t: torch.Tensor) -> None:
        self._parts.setdefault(key, []).append(t)
        self._joined.pop(key, None)
        self.layers[key] = layer

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._parts:
            from shenjing.errors import did_you_mean

            raise LayerNotFoundError(
                f"nothing recorded under {key!r}.{did_you_mean(key, self._parts)} "
                f"Recorded: {', '.join(self._parts) or 'nothing (did forward run?)'}")
        if key not in self._joined:
            parts = self._parts[key]
            self._joined[key] = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self._joined[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(self[k].shape)}" for k in self._parts)
        return f"Captured({inner})"


@contextlib.contextmanager
def capture(model: nn.Module, layers: Any, *, pool: Pool | str = "none",
            dtype: str | torch.dtype | None = None) -> Iterator[Captured]:
    """Record the outputs of ``layers`` during every forward call inside the block.

    ``layers`` takes names, globs (``"fc?"``), module types, or output keys exactly as
    ``shenjing layers`` prints them (``lstm.1.0``, ``block#1``; see
    :func:`~shenjing.capture.layers.resolve_keys`). Outputs are detached, copied to the CPU
    and stored per call; the model's own outputs are untouched. Hooks are removed when the
    block exits, also on an exception.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    >>> with capture(net, ["1"]) as acts:
    ...     _ = net(torch.ones(4, 3))
    >>> acts["1"].shape
    torch.Size([4, 2])
    """
    from shenjing.capture.keys import check_filters
    from shenjing.capture.layers import select_layers

    names, _, selection = select_layers(model, layers)
    pool = check_pool(pool)
    torch_dtype = resolve_dtype(dtype)
    result = Captured()
    # copies of the outputs of the forward in progress: keyed at the root hook, once the
    # number of calls per forward (and so the ``#i`` suffix) is known
    log = CallLog(names, lambda call: [(path, t.detach().clone()) for path, t in call.outputs])
    recorder = Recorder(model, names, log.sink)

    def flush(batch_size: int | None) -> None:
        check_filters(selection, log.produced(), type(model).__name__)
        for out in log.keyed(selection):
            t = prepare(out.value, batch_size=batch_size, pool=pool, dtype=torch_dtype,
                        key=out.key)
            result._add(out.key, out.module, t.to("cpu"))
        log.clear()
        recorder.new_forward()

    def root_done(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        flush(_batch_size_of(args))

    with recorder.observing(also={"": root_done}):
        yield result
    flush(None)  # calls of submodules made directly, outside a root forward
