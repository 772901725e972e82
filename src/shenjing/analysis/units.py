"""What real inputs excite each unit most: streaming top-k, and the receptive field for crops.

- :func:`top_activations` runs the data through the model once, batch by batch, and keeps
  for every unit (a conv channel, a hidden unit, an output class) the ``k`` inputs with
  the largest activation, reduced over the unit's positions by ``mean`` or ``max``. Only
  one batch's activation of the layer is held at a time: each batch is reduced to
  ``(batch, units)`` and merged into ``(units, k)`` buffers of values, sample positions,
  labels and — for layers with positions (conv maps, tokens) — where the unit's map of that
  input is largest, the centre of the crop. The forward pass stops right after the layer,
  so no later layer runs. Ties rank the lower sample position first; NaN ranks last.
- :func:`receptive_field` measures, for any model, which input pixels one position of a
  layer can see: the support of the gradient of the layer's units at that position with
  respect to the input, taken over several random inputs (so a ReLU that happens to be off,
  or a max-pool that picks one pixel, does not hide part of the field), at positions away
  from the border. Two neighbouring positions per axis give the size, the stride and the
  offset (where position 0's field starts; negative with padding). A field that would reach
  past the input's border is measured on a larger random probe when the layers up to this
  one accept it (convs and pools do; the forward stops before the fixed-size classifier).
- :meth:`ReceptiveField.crop` cuts the field of one position out of an input, **clipped at
  the image border**; the part outside is NaN, so every crop of a layer has the field's
  full size and is drawn at one scale.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2))
>>> rf = receptive_field(net, "1", (1, 16, 16))
>>> rf.size, rf.stride, rf.offset
((4, 4), (2, 2), (-1, -1))
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.errors import LayerNotFoundError, ShapeMismatchError, ShenjingError, UsageError

#: how a unit's map is reduced to one number per input
REDUCES = ("mean", "max")
#: the name of the model's own output (logits) as a layer
OUTPUT = "output"
#: modules whose 3-D output is (batch, channels, length): units on axis 1, not the last
_CHANNEL_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d, nn.AvgPool1d,
                     nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.BatchNorm1d,
                     nn.InstanceNorm1d)
#: the largest probe side :func:`receptive_field` tries before it reports a clipped field
MAX_PROBE_SIDE = 512


class _StopError(Exception):
    """Raised from the hook once the layer's output is seen: nothing after it runs."""


# ---- which tensor, which axis -------------------------------------------------------------
@dataclass(frozen=True)
class UnitLayout:
    """Where the units of a layer are: the capture ``key`` (or ``'output'``), the number of
    units, the axis of the output that holds them, and one unit's map shape (``(7, 7)`` for
    a conv on 28×28 MNIST after one pool, ``(tokens,)`` for a token sequence, ``()`` for a
    linear layer)."""

    key: str
    module: str | None
    call: int | None
    path: tuple[str, ...]
    n_units: int
    unit_axis: int
    map_shape: tuple[int, ...]

    @property
    def has_positions(self) -> bool:
        return len(self.map_shape) > 0


def _unit_axis(module: nn.Module | None, ndim: int) -> int:
    if ndim <= 2:
        return 1 if ndim == 2 else 0
    if ndim == 3 and not isinstance(module, _CHANNEL_FIRST_1D):
        return 2  # (batch, tokens, features): the units are the features
    return 1


def _layout_of(key: str, module_name: str | None, module: nn.Module | None, call: int | None,
               path: tuple[str, ...], t: torch.Tensor) -> UnitLayout:
    if t.ndim == 0:
        raise ShapeMismatchError(f"layer {key!r} returned a scalar, not one value per input; "
                                 "choose a layer with a batch dimension (see `shenjing layers "
                                 "RUN`)")
    axis = _unit_axis(module, t.ndim)
    if t.ndim == 1:
        return UnitLayout(key, module_name, call, path, 1, 0, ())
    shape = tuple(int(s) for s in t.shape)
    rest = tuple(s for i, s in enumerate(shape[1:], start=1) if i != axis)
    return UnitLayout(key, module_name, call, path, shape[axis], axis, rest)


def _pick(out: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        out = out[part] if isinstance(out, Mapping) else out[int(part)]
    return out


def _first_batch(data: Any, batch_size: int) -> Any:
    from shenjing.capture.batches import batches_of

    batches, _ = batches_of(data, batch_size)
    first = next(iter(batches), None)
    if first is None:
        raise UsageError("no inputs: the data is empty; give at least one sample")
    return first.x


def unit_layout(model: nn.Module, example: Any, layer: str) -> UnitLayout:
    """Resolve ``layer`` (any key ``shenjing layers`` lists, or ``'output'`` for the model's
    prediction) on one batch ``example`` and say where its units are.

    A key that names several tensors (``lstm``: the sequence and ``(h, c)``) is refused
    with the keys to choose from.
    """
    from shenjing.capture.core import forward_or_explain
    from shenjing.capture.layers import layer_names, resolve_keys
    from shenjing.models.outputs import select_output

    was_training = model.training
    model.eval()
    try:
        if layer == OUTPUT and OUTPUT not in layer_names(model):
            with torch.inference_mode():
                out = select_output(forward_or_explain(model, example))
            return _layout_of(OUTPUT, None, None, None, (), out)
        try:
            keys = resolve_keys(model, example, [layer])
        except ShenjingError:
            raise
        except Exception:
            # the key check runs a whole forward; a model failing after the layer can still
            # be read at a plain module name (the watched forward stops before the failure)
            if layer not in layer_names(model):
                raise
            from shenjing.capture.keys import LayerKey

            keys = [LayerKey(layer, layer)]
        if len(keys) != 1:
            raise LayerNotFoundError(
                f"layer {layer!r} has {len(keys)} outputs: {', '.join(keys)}; choose one of "
                f"them, e.g. --layer {keys[0]} (see `shenjing layers RUN`)")
        key = keys[0]
        found: list[torch.Tensor] = []
        with _Watching(model, key, found.append), torch.inference_mode(), \
                contextlib.suppress(_StopError):
            forward_or_explain(model, example)
        module = model.get_submodule(key.module)  # type: ignore[attr-defined]
        return _layout_of(str(key), key.module, module,  # type: ignore[attr-defined]
                          key.call, key.path, found[0])  # type: ignore[attr-defined]
    finally:
        model.train(was_training)


class _Watching:
    """Hooks (through the project's Recorder) that hand the tensor of ``key`` to ``take``
    and stop the forward; removed on exit, also when forward raises."""

    def __init__(self, model: nn.Module, key: Any, take: Any) -> None:
        from shenjing.capture.recorder import ModuleCall, Recorder

        want_call = key.call if key.call is not None else 0
        want_path = tuple(key.path)

        def sink(call: ModuleCall) -> None:
            if call.call != want_call:
                return
            for path, t in call.outputs:
                if tuple(path) == want_path:
                    take(t)
                    raise _StopError
        self.recorder = Recorder(model, [key.module], sink)
        self._cm: Any = None

    def new_forward(self) -> None:
        """Count the module's calls from 0 again (call it before each forward)."""
        self.recorder.new_forward()

    def __enter__(self) -> _Watching:
        self._cm = self.recorder.observing()
        self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def unit_values(activation: torch.Tensor, reduce: str, unit_axis: int
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's activation → ``(batch, units)`` reduced values (float32) and ``(batch,
    units)`` flat positions of each unit map's maximum (first on ties; None when the units
    have no positions).

    >>> a = torch.tensor([[[[1.0, 5.0], [0.0, 2.0]]]])  # 1 input, 1 channel, 2×2
    >>> v, p = unit_values(a, "mean", 1)
    >>> v.tolist(), p.tolist()
    ([[2.0]], [[1]])
    """
    if reduce not in REDUCES:
        raise UsageError(f"--reduce {reduce!r} is not a reduction; use mean or max, e.g. "
                         "--reduce max")
    t = activation.detach().float()
    if t.ndim == 1:
        return t[:, None], None
    if t.ndim == 2:
        return t, None
    maps = t.movedim(unit_axis, 1).flatten(2)  # (batch, units, positions)
    if reduce == "max":
        values, where = maps.max(dim=-1)
        return values, where
    return maps.mean(dim=-1), maps.argmax(dim=-1)


# ---- the k-best buffers -------------------------------------------------------------------
class _Best:
    """``(units, k)`` buffers of the best values so far with what goes with them; merging a
    batch keeps the order (value descending, sample position ascending)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: torch.Tensor | None = None
        self.extra: dict[str, torch.Tensor] = {}

    def merge(self, values: torch.Tensor, extra: Mapping[str, torch.Tensor]) -> None:
        """Merge one batch: ``values`` ``(units, batch)``, each extra ``(units, batch)``;
        the batch's samples come after every sample already merged."""
        if self.values is not None:
            values = torch.cat([self.values, values], dim=1)
            extra = {n: torch.cat([self.extra[n], e], dim=1) for n, e in extra.items()}
        rank = torch.nan_to_num(values, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
        # a stable sort keeps earlier samples (lower positions) first among equal values
        order = torch.sort(rank, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values = torch.gather(values, 1, order)
        self.extra = {n: torch.gather(e, 1, order) for n, e in extra.items()}

    def nbytes(self) -> int:
        tensors = [self.values, *self.extra.values()] if self.values is not None else []
        return sum(t.element_size() * t.nelement() for t in tensors if t is not None)


# ---- the result ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TopUnits:
    """The ``k`` inputs that excite each unit of a layer most.

    Arrays, one row per unit (``units`` holds the unit numbers): ``values`` ``(units, k)``
    float32, best first; ``indices`` the inputs' row positions in the data as given;
    ``positions`` ``(units, k, len(map_shape))`` where the unit's map of that input is
    largest (None without positions); ``labels`` ``(units, k)`` of the top inputs when the
    data has integer labels.
    """

    layer: str
    reduce: str
    k: int
    n_samples: int
    units: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray | None
    map_shape: tuple[int, ...]
    labels: np.ndarray | None
    unit_axis: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_units(self) -> int:
        return int(self.units.shape[0])

    def best(self) -> np.ndarray:
        """``(units,)``: the activation of each unit's best real input."""
        return self.values[:, 0]

    def row(self, unit: int) -> int:
        """The row of unit number ``unit`` in the arrays."""
        hits = np.flatnonzero(self.units == int(unit))
        if not hits.size:
            raise UsageError(f"unit {unit} is not among the units kept ({self.units.min()}–"
                             f"{self.units.max()}); compute it with units=[{unit}]")
        return int(hits[0])

    def purity(self) -> np.ndarray | None:
        """``(units,)``: how many of each unit's top-k inputs share the most common label
        (None without labels)."""
        if self.labels is None:
            return None
        return np.array([int(np.unique(r, return_counts=True)[1].max()) for r in self.labels],
                        dtype=np.int64)

    def majority(self) -> np.ndarray | None:
        """``(units,)``: the most common label among each unit's top-k (the smallest on ties)."""
        if self.labels is None:
            return None
        out = []
        for r in self.labels:
            vals, counts = np.unique(r, return_counts=True)
            out.append(int(vals[np.argmax(counts)]))
        return np.array(out, dtype=np.int64)

    def __repr__(self) -> str:
        where = f", maps {'×'.join(map(str, self.map_shape))}" if self.map_shape else ""
        return (f"TopUnits({self.layer!r}, {self.n_units} units × top {self.k} of "
                f"{self.n_samples} inputs by {self.reduce}{where})")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able numbers (per unit: values, indices, labels, purity)."""
        purity = self.purity()
        majority = self.majority()
        units = []
        for i, u in enumerate(self.units.tolist()):
            rec: dict[str, Any] = {
                "unit": int(u), "values": [float(v) for v in self.values[i]],
                "indices": [int(v) for v in self.indices[i]]}
            if self.labels is not None and purity is not None and majority is not None:
                rec["labels"] = [int(v) for v in self.labels[i]]
                rec["purity"] = int(purity[i])
                rec["majority"] = int(majority[i])
            if self.positions is not None:
                rec["positions"] = self.positions[i].tolist()
            units.append(rec)
        return {"layer": self.layer, "reduce": self.reduce, "k": self.k,
                "n_samples": self.n_samples, "map_shape": list(self.map_shape),
                "unit_axis": self.unit_axis, "units": units, **self.extra}

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write ``<path>.npz`` (the arrays) and ``<path>.json`` (:meth:`to_dict`)."""
        from shenjing import _io

        base = Path(path).with_suffix("")
        arrays: dict[str, Any] = {"units": self.units, "values": self.values,
                                  "indices": self.indices}
        if self.positions is not None:
            arrays["positions"] = self.positions
        if self.labels is not None:
            arrays["labels"] = self.labels
        return [_io.save_npz(base.with_suffix(".npz"), **arrays),
                _io.write_json(base.with_suffix(".json"), self.to_dict())]


def load_top_units(path: str | os.PathLike[str]) -> TopUnits:
    """Read what :meth:`TopUnits.save` wrote (``path`` with or without a suffix)."""
    from shenjing import _io

    base = Path(path).with_suffix("")
    rec = _io.read_json(base.with_suffix(".json"))
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    known = {"layer", "reduce", "k", "n_samples", "map_shape", "unit_axis", "units"}
    return TopUnits(layer=str(rec["layer"]), reduce=str(rec["reduce"]), k=int(rec["k"]),
                    n_samples=int(rec["n_samples"]), units=arrays["units"],
                    values=arrays["values"], indices=arrays["indices"],
                    positions=arrays.get("positions"),
                    map_shape=tuple(int(s) for s in rec["map_shape"]),
                    labels=arrays.get("labels"), unit_axis=int(rec["unit_axis"]),
                    extra={k: v for k, v in rec.items() if k not in known})


# ---- the streaming pass -------------------------------------------------------------------
def check_unit_numbers(units: Sequence[int], n_units: int, layer: str, *,
                       example: int = 16) -> list[int]:
    """``units`` as ints, each in ``0 … n_units − 1`` of ``layer``, else a one-line
    :class:`UsageError` naming the option ``--channels`` and a range that fits (the one
    check of the units and visualize views)."""
    picked = [int(u) for u in units]
    if not picked:
        raise UsageError(f"--channels names no unit; give a range, e.g. --channels "
                         f"0:{min(example, n_units)}")
    bad = [u for u in picked if not 0 <= u < n_units]
    if bad:
        raise UsageError(f"--channels {bad[0]} is out of range: layer {layer!r} has "
                         f"{n_units} units (0–{n_units - 1}); e.g. --channels "
                         f"0:{min(example, n_units)}")
    return picked


def _check_units(units: Sequence[int] | None, layout: UnitLayout) -> torch.Tensor | None:
    if units is None:
        return None
    picked = check_unit_numbers(units, layout.n_units, layout.key)
    return torch.tensor(list(dict.fromkeys(picked)), dtype=torch.long)


def _batch_tensors(model: nn.Module, layout: UnitLayout, batches: Iterator[Any]
                   ) -> Iterator[tuple[Any, torch.Tensor]]:
    """Each batch with the layer's output for it (one at a time)."""
    from shenjing.capture.core import forward_or_explain
    from shenjing.models.outputs import select_output

    if layout.module is None:
        for b in batches:
            yield b, select_output(forward_or_explain(model, b.x))
        return
    key = _Key(layout)
    found: list[torch.Tensor] = []
    with _Watching(model, key, found.append) as watch:
        for b in batches:
            found.clear()
            watch.new_forward()
            try:
                forward_or_explain(model, b.x)
            except _StopError as stop:
                # the traceback's frames hold this batch's tensors in a cycle until the
                # garbage collector runs: clear them so only one batch is ever held
                traceback.clear_frames(stop.__traceback__)
            if not found:
                raise LayerNotFoundError(f"layer {layout.key!r} did not run for a batch of "
                                         "this data; see `shenjing layers RUN`")
            yield b, found[0]


@dataclass(frozen=True)
class _Key:
    module: str
    call: int | None
    path: tuple[str, ...]

    def __init__(self, layout: UnitLayout) -> None:
        object.__setattr__(self, "module", layout.module)
        object.__setattr__(self, "call", layout.call)
        object.__setattr__(self, "path", layout.path)


def top_activations(model: nn.Module, data: Any, layer: str, *, k: int = 9,
                    reduce: str = "mean", units: Sequence[int] | None = None,
                    batch_size: int = 256, device: str | torch.device | None = None
                    ) -> TopUnits:
    """The ``k`` inputs of ``data`` that excite each unit of ``layer`` most, in one streaming
    pass (only one batch's activation of the layer is held at a time).

    ``data``: a Split, a tensor, an ``(x, y)`` pair or a DataLoader. ``layer``: any key
    ``shenjing layers`` lists, or ``'output'`` for the model's prediction (one unit per
    class). ``reduce``: ``'mean'`` or ``'max'`` over each unit's positions (a conv
    channel's map, a sequence's tokens). ``units``: the unit numbers to keep (default all).
    ``k`` larger than the number of inputs keeps them all. The model runs in ``eval()``
    under ``inference_mode`` (its mode is restored); hooks are removed also when forward
    raises.

    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.eye(2)); _ = net[0].bias.zero_()
    >>> x = torch.tensor([[0.0, 3.0], [2.0, 1.0], [1.0, 2.0]])
    >>> top = top_activations(net, x, "0", k=2)
    >>> top.indices.tolist(), top.values.tolist()
    ([[1, 2], [0, 2]], [[2.0, 1.0], [3.0, 2.0]])
    """
    from shenjing._checks import bounded_int, choice
    from shenjing.capture.batches import batches_of, to_device
    from shenjing.capture.core import device_for

    k = bounded_int("--top", k, low=1, example=9)
    reduce = choice("--reduce", reduce, REDUCES)
    batch_size = bounded_int("--batch-size", batch_size, low=1, example=256)
    dev = device_for(model, device)
    model.to(dev)
    batches, _ = batches_of(data, batch_size)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise UsageError("no inputs: the data is empty; give at least one sample")
    # the key check runs the whole model once: on one input, not a whole batch, so its
    # activations stay below the streaming pass's own
    example = first.x[:1] if isinstance(first.x, torch.Tensor) else first.x
    layout = unit_layout(model, to_device(example, dev, False), layer)
    keep = _check_units(units, layout)

    def on_device(stream: Iterator[Any]) -> Iterator[Any]:
        from shenjing.capture.batches import Batch

        for b in stream:
            yield Batch(to_device(b.x, dev, False), b.y, b.indices)

    best = _Best(k)
    n_seen = 0
    has_labels = first.y is not None and torch.as_tensor(first.y).ndim == 1 \
        and not torch.as_tensor(first.y).is_floating_point()
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            stream = on_device(_chain(first, batches))
            for b, t in _batch_tensors(model, layout, stream):
                values, where = unit_values(t, reduce, layout.unit_axis)
                n = int(values.shape[0])
                if keep is not None:
                    values = values[:, keep.to(values.device)]
                    where = None if where is None else where[:, keep.to(where.device)]
                extra = {"index": torch.arange(n_seen, n_seen + n).expand(values.shape[1], n)}
                if where is not None:
                    extra["where"] = where.T.cpu()
                if has_labels:
                    y = torch.as_tensor(b.y).long().cpu()
                    extra["label"] = y.expand(values.shape[1], n)
                best.merge(values.T.cpu(), extra)
                n_seen += n
                # the loop names would keep this batch's activation alive during the next
                # batch's forward: two batches held instead of one
                del t, values, where, extra
    finally:
        model.train(was_training)
    assert best.values is not None
    positions = None
    if "where" in best.extra and layout.map_shape:
        flat = best.extra["where"].numpy()
        positions = np.stack(np.unravel_index(flat, layout.map_shape), axis=-1).astype(np.int64)
    unit_numbers = (keep.numpy() if keep is not None
                    else np.arange(layout.n_units)).astype(np.int64)
    return TopUnits(layer=layout.key, reduce=reduce, k=int(best.values.shape[1]),
                    n_samples=n_seen, units=unit_numbers,
                    values=best.values.numpy().astype(np.float32),
                    indices=best.extra["index"].numpy().astype(np.int64),
                    positions=positions, map_shape=layout.map_shape,
                    labels=best.extra["label"].numpy().astype(np.int64)
                    if "label" in best.extra else None, unit_axis=layout.unit_axis)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# ---- receptive fields ---------------------------------------------------------------------
@dataclass(frozen=True)
class ReceptiveField:
    """The input region one position of a layer sees, per spatial axis: position ``p``
    sees input pixels ``offset + p·stride`` … ``offset + p·stride + size − 1``.

    ``probe`` is the input shape the field was measured on; ``clipped`` says the field
    reached the probe's border even on the largest probe tried (then ``size`` is a lower
    bound).
    """

    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: tuple[int, ...]
    probe: tuple[int, ...]
    clipped: bool = False

    def box(self, position: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """``((start, stop), …)`` per axis of the field of ``position``, not clipped
        (``stop`` exclusive; ``start`` may be negative)."""
        return tuple((o + int(p) * s, o + int(p) * s + n) for p, s, o, n in
                     zip(position, self.stride, self.offset, self.size, strict=True))

    def clipped_box(self, position: Sequence[int], image: Sequence[int]
                    ) -> tuple[tuple[int, int], ...]:
        """:meth:`box` clipped at the border of an image of spatial shape ``image``."""
        return tuple((max(0, a), min(int(n), b))
                     for (a, b), n in zip(self.box(position), image, strict=True))

    def crop(self, x: np.ndarray, position: Sequence[int]) -> np.ndarray:
        """The field of ``position`` cut out of one input ``x`` ``(channels, *spatial)``:
        ``(channels, *size)``, clipped at the image border with the outside set to NaN,
        so every crop has the same size and draws at one scale."""
        x = np.asarray(x, dtype=np.float32)
        spatial = x.shape[1:]
        out = np.full((x.shape[0], *self.size), np.nan, dtype=np.float32)
        box = self.box(position)
        src, dst = [slice(None)], [slice(None)]
        for (a, b), n in zip(box, spatial, strict=True):
            lo, hi = max(0, a), min(int(n), b)
            if hi <= lo:
                return out
            src.append(slice(lo, hi))
            dst.append(slice(lo - a, hi - a))
        out[tuple(dst)] = x[tuple(src)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "stride": list(self.stride),
                "offset": list(self.offset), "probe": list(self.probe),
                "clipped": self.clipped}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReceptiveField:
        return cls(tuple(int(v) for v in d["size"]), tuple(int(v) for v in d["stride"]),
                   tuple(int(v) for v in d["offset"]), tuple(int(v) for v in d["probe"]),
                   bool(d.get("clipped", False)))

    def describe(self) -> str:
        """``'8×8 px, stride 2×2, offset -3×-3'``."""
        def j(v: tuple[int, ...]) -> str:
            return "×".join(map(str, v))
        return (f"{j(self.size)} px, stride {j(self.stride)}, offset {j(self.offset)}"
                + (" (reaches past the probe's border: at least this big)"
                   if self.clipped else ""))


def _support(model: nn.Module, layout: UnitLayout, probe: torch.Tensor
             ) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """The layer's map shape on ``probe`` and, for its centre and the position before the
    centre along each axis, the input pixels (spatial mask) where the gradient of the
    units at that position is nonzero for some probe input."""
    from shenjing.capture.core import run_model

    probe = probe.clone().requires_grad_(True)
    found: list[torch.Tensor] = []
    with _Watching(model, _Key(layout), found.append), torch.enable_grad():
        with contextlib.suppress(_StopError):
            run_model(model, probe)
        if not found:
            raise LayerNotFoundError(f"layer {layout.key!r} did not run for the probe input")
        t = found[0].movedim(layout.unit_axis, 1)
        map_shape = tuple(int(v) for v in t.shape[2:])
        if len(map_shape) != probe.ndim - 2 or any(v < 2 for v in map_shape):
            raise _ProbeTooSmallError
        positions = [centre := tuple(v // 2 for v in map_shape)]
        for axis in range(len(centre)):
            p = list(centre)
            p[axis] -= 1
            positions.append(tuple(p))
        gen = torch.Generator().manual_seed(1)
        weights = torch.rand(t.shape[1], generator=gen, dtype=t.dtype).to(t.device) + 0.5
        masks = []
        for pos in positions:
            # random positive weights per unit: a sum cancelling exactly is a coincidence
            index: tuple[Any, ...] = (slice(None), slice(None), *pos)
            value = (t[index] * weights).sum()
            (grad,) = torch.autograd.grad(value, probe, retain_graph=True)
            masks.append((grad.abs().sum(dim=(0, 1)) > 0).cpu().numpy())
    return map_shape, masks


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int] | None:
    other = tuple(i for i in range(mask.ndim) if i != axis)
    hits = np.flatnonzero(mask.any(axis=other) if other else mask)
    if not hits.size:
        return None
    return int(hits[0]), int(hits[-1])


def receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int], *,
                    n_probe: int = 16, seed: int = 0,
                    device: str | torch.device | None = None) -> ReceptiveField:
    """Measure the receptive field of ``layer``'s positions on inputs shaped
    ``input_shape`` = ``(channels, *spatial)`` (see the module docstring for how).

    Raises :class:`~shenjing.errors.NotApplicableError` for a layer whose units have no
    spatial positions matching the input (a linear layer sees the whole input).
    """
    from shenjing.capture.core import device_for
    from shenjing.errors import NotApplicableError

    shape = tuple(int(s) for s in input_shape)
    dev = device_for(model, device)
    gen = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        def probe_of(spatial: tuple[int, ...]) -> torch.Tensor:
            return torch.randn((n_probe, shape[0], *spatial), generator=gen).to(dev)

        layout = unit_layout(model, probe_of(shape[1:])[:2], layer)
        spatial_in = shape[1:]
        if layout.module is None or len(layout.map_shape) != len(spatial_in) \
                or layout.unit_axis != 1:
            raise NotApplicableError(
                f"layer {layer!r} has no spatial positions over the {'×'.join(map(str, shape))}"
                f" input (its units' maps are {layout.map_shape or 'single values'}): each "
                "unit sees the whole input")
        spatial = spatial_in
        best: ReceptiveField | None = None
        while True:
            try:
                rf = _measure(model, layout, probe_of(spatial), spatial)
            except _ProbeTooSmallError:
                rf = None
            except (RuntimeError, UsageError):
                if best is None:
                    raise
                break  # the layers do not accept a larger probe: keep the last field
            if rf is not None:
                best = rf
                if not rf.clipped:
                    break
            if max(spatial) * 2 > MAX_PROBE_SIDE:
                break
            spatial = tuple(2 * s for s in spatial)
        if best is None:
            raise NotApplicableError(f"layer {layer!r}: its maps are too small to measure a "
                                     "receptive field away from the border")
        return best
    finally:
        model.train(was_training)


class _ProbeTooSmallError(Exception):
    """The layer's map is too small on this probe to hold two positions per axis."""


def _measure(model: nn.Module, layout: UnitLayout, probe: torch.Tensor,
             spatial: tuple[int, ...]) -> ReceptiveField:
    map_shape, masks = _support(model, layout, probe)
    centre = tuple(v // 2 for v in map_shape)
    size, stride, offset = [], [], []
    clipped = False
    for axis, n in enumerate(spatial):
        here = _extent(masks[0], axis)
        before = _extent(masks[1 + axis], axis)
        if here is None or before is None:
            raise ShapeMismatchError(f"layer {layout.key!r}: no input pixel changes its units "
                                     "(the gradient is zero everywhere), so no receptive "
                                     "field can be measured")
        clipped = clipped or here[0] == 0 or here[1] == n - 1 or before[0] == 0
        size.append(here[1] - here[0] + 1)
        stride.append(here[0] - before[0])
        offset.append(here[0] - centre[axis] * (here[0] - before[0]))
    return ReceptiveField(tuple(size), tuple(stride), tuple(offset),
                          tuple(int(s) for s in probe.shape[1:]), clipped)


__all__ = ["OUTPUT", "REDUCES", "ReceptiveField", "TopUnits", "UnitLayout",
           "load_top_units", "receptive_field", "top_activations", "unit_layout",
           "unit_values"]
