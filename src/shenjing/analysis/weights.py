"""Statistics and histograms of every parameter group, and how they move across epochs.

Pure computation over state dicts (``Run.state_dict(epoch)``); no model runs, no plotting.
A "layer" is a parameter group as in the run's metrics.jsonl (see
:mod:`shenjing.training.stats`): ``fc1`` = fc1.weight, ``fc1.bias``, ``lstm`` = its
``weight_ih_l0`` + ``weight_hh_l0``, ``cls_token`` … A group of several tensors is their
values concatenated. The groups come from the Recorder's listing (``groups=``); for runs
recorded before that listing existed they are inferred from the checkpoint
(:func:`infer_groups`).

>>> import torch
>>> s = weight_stats({"fc.weight": torch.tensor([[3.0, -4.0], [0.0, 0.0]])})["fc"]
>>> s.norm, s.frac_near_zero
(5.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shenjing.analysis.dynamics import Coverage
from shenjing.errors import CheckpointError, LayerNotFoundError, UsageError, did_you_mean
from shenjing.training.stats import group_name, is_bias_group

Groups = Mapping[str, Sequence[str]]
#: buffers BatchNorm keeps in its state dict: statistics, not parameters
BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class WeightStats:
    """Summary of one parameter group's values.

    ``shape`` is the tensor's shape for a one-tensor group, ``(n,)`` for several tensors
    concatenated; ``params`` names the tensors. ``frac_near_zero`` counts values with
    ``|w| ≤ near_zero · max|w|`` (a relative threshold, so layers of different scale compare
    fairly).
    """

    layer: str
    shape: tuple[int, ...]
    n: int
    mean: float
    std: float
    norm: float
    abs_max: float
    frac_near_zero: float
    params: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["params"] = list(self.params)
        return out


def _is_float(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return False
    if hasattr(value, "is_floating_point"):
        return bool(value.is_floating_point())
    return bool(np.issubdtype(np.dtype(dtype), np.floating))


def infer_groups(state: Mapping[str, Any]) -> dict[str, list[str]]:
    """Parameter groups of a checkpoint whose run does not list them.

    Every floating-point tensor except BatchNorm's running statistics counts as a
    parameter, grouped by :func:`shenjing.training.stats.group_name`, in the checkpoint's
    key order. A buffer a model registers itself (a fixed positional encoding) cannot be
    told from a parameter in a checkpoint and is counted too.
    """
    out: dict[str, list[str]] = {}
    for key, value in state.items():
        if key.rpartition(".")[2] in BATCHNORM_BUFFERS or not _is_float(value):
            continue
        out.setdefault(group_name(key), []).append(key)
    return out


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    return np.asarray(value, dtype=np.float64)


def _group_values(state: Mapping[str, Any], layers: Sequence[str] | None,
                  groups: Groups | None) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Each chosen group's values (one tensor as is, several concatenated) and tensor names."""
    found = {k: list(v) for k, v in groups.items()} if groups else infer_groups(state)
    chosen = list(found) if layers is None else list(layers)
    for name in chosen:
        if name not in found:
            shown = ", ".join(list(found)[:30]) + (" …" if len(found) > 30 else "")
            raise LayerNotFoundError(
                f"no parameters for {name!r}.{did_you_mean(name, list(found))} "
                f"Parameter groups: {shown or 'none'}.")
    out = {}
    for name in chosen:
        params = tuple(found[name])
        missing = [p for p in params if p not in state]
        if missing:
            raise CheckpointError(f"the checkpoint has no {', '.join(missing)} (group "
                                  f"{name!r}); it does not match the run's recorded model")
        arrays = [_as_array(state[p]) for p in params]
        value = arrays[0] if len(arrays) == 1 else np.concatenate([a.ravel() for a in arrays])
        out[name] = (value, params)
    return out


def _stats(name: str, w: np.ndarray, params: tuple[str, ...], near_zero: float) -> WeightStats:
    flat = w.reshape(-1)
    abs_max = float(np.abs(flat).max()) if flat.size else 0.0
    return WeightStats(
        layer=name, shape=tuple(int(s) for s in w.shape), n=int(flat.size),
        mean=float(flat.mean()) if flat.size else 0.0,
        std=float(flat.std()) if flat.size else 0.0,
        norm=float(np.linalg.norm(flat)), abs_max=abs_max,
        frac_near_zero=float((np.abs(flat) <= near_zero * abs_max).mean())
        if flat.size else 0.0, params=params)


def weight_stats(state: Mapping[str, Any], layers: Sequence[str] | None = None, *,
                 near_zero: float = 0.01, groups: Groups | None = None
                 ) -> dict[str, WeightStats]:
    """Statistics of each parameter group (all of them by default).

    ``groups`` maps group → parameter names (a run's recorded listing); without it the
    groups are inferred from ``state`` (:func:`infer_groups`).
    """
    if not 0 <= near_zero < 1:
        raise UsageError(f"near_zero is a fraction of max|w| in [0, 1), got {near_zero}")
    return {name: _stats(name, w, params, near_zero)
            for name, (w, params) in _group_values(state, layers, groups).items()}


def coverage_from_state(state: Mapping[str, Any], tracked: Sequence[str], *,
                        n_total: int | None = None) -> Coverage:
    """How many of a checkpoint's parameters the tensors ``tracked`` cover.

    ``n_total`` defaults to the parameters :func:`infer_groups` finds in ``state`` (pass the
    model's own count when known, e.g. from ``RUN/layers.json``).
    """
    params = [p for names in infer_groups(state).values() for p in names]
    sizes = {p: int(np.prod(tuple(state[p].shape))) for p in params}
    chosen = set(tracked)
    n_tracked = sum(size for p, size in sizes.items() if p in chosen)
    total = sum(sizes.values()) if n_total is None else int(n_total)
    return Coverage(n_tracked, total, tuple(p for p in params if p not in chosen))


@dataclass(frozen=True, repr=False)
class WeightHistory:
    """Weight statistics and histograms of each parameter group at several epochs.

    ``stats[layer][metric]`` is an ``(epochs,)`` array; ``counts[layer]`` is
    ``(epochs, bins)`` over the shared ``edges[layer]`` ``(bins + 1,)`` (bins chosen per
    layer), so the epochs' histograms of a layer are directly comparable. ``params[layer]``
    names the group's tensors.
    """

    epochs: tuple[int, ...]
    layers: tuple[str, ...]
    stats: dict[str, dict[str, np.ndarray]]
    edges: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def is_bias(self, layer: str) -> bool:
        """Whether ``layer`` is a group of biases only."""
        return is_bias_group(layer, self.params.get(layer, ()))

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "layers": list(self.layers),
                "params": {k: list(v) for k, v in self.params.items()},
                "stats": {k: {m: v.tolist() for m, v in d.items()}
                          for k, d in self.stats.items()}}

    def __repr__(self) -> str:
        return f"WeightHistory(epochs={list(self.epochs)}, layers={list(self.layers)})"


STAT_NAMES = ("mean", "std", "norm", "abs_max", "frac_near_zero")


def weight_history(states: Mapping[int, Mapping[str, Any]], layers: Sequence[str] | None = None,
                   *, bins: int = 60, near_zero: float = 0.01,
                   groups: Groups | None = None) -> WeightHistory:
    """Statistics and shared-bin histograms of each parameter group for every epoch in
    ``states``.

    ``states`` maps epoch → state dict; ``groups`` as in :func:`weight_stats`. The bin range
    of a layer spans all its epochs; small layers get fewer bins (``√n``, at least 10) so
    their histograms are not combs.
    """
    if not states:
        raise UsageError("weight_history needs at least one epoch's state dict")
    if bins < 1:
        raise UsageError(f"bins must be ≥ 1, got {bins}")
    if not 0 <= near_zero < 1:
        raise UsageError(f"near_zero is a fraction of max|w| in [0, 1), got {near_zero}")
    epochs = tuple(sorted(states))
    if groups is None:  # infer once, from the first epoch, so every epoch has the same groups
        groups = infer_groups(states[epochs[0]])
    values = {e: _group_values(states[e], layers, groups) for e in epochs}
    per_epoch = {e: {k: v for k, (v, _) in values[e].items()} for e in epochs}
    names = tuple(per_epoch[epochs[0]])
    params = {name: values[epochs[0]][name][1] for name in names}
    stats: dict[str, dict[str, np.ndarray]] = {}
    edges: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name in names:
        rows = [_stats(name, per_epoch[e][name], params[name], near_zero) for e in epochs]
        stats[name] = {m: np.array([getattr(r, m) for r in rows]) for m in STAT_NAMES}
        lo = min(float(per_epoch[e][name].min()) for e in epochs)
        hi = max(float(per_epoch[e][name].max()) for e in epochs)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        n_bins = min(bins, max(10, int(np.sqrt(per_epoch[epochs[0]][name].size))))
        edges[name] = np.linspace(lo, hi, n_bins + 1)
        counts[name] = np.stack([np.histogram(per_epoch[e][name], bins=edges[name])[0]
                                 for e in epochs])
    return WeightHistory(epochs=epochs, layers=names, stats=stats, edges=edges, counts=counts,
                         params=params)
