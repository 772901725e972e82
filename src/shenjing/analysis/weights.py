"""Per-layer weight statistics and histograms, and how they move across epochs.

Pure computation over state dicts (``Run.state_dict(epoch)``); no model runs, no plotting.
Layers are module names with a ``weight`` entry, as in the run's metrics.jsonl.

>>> import torch
>>> s = weight_stats({"fc.weight": torch.tensor([[3.0, -4.0], [0.0, 0.0]])})["fc"]
>>> s.norm, s.frac_near_zero
(5.0, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shenjing.errors import LayerNotFoundError, UsageError, did_you_mean


@dataclass(frozen=True)
class WeightStats:
    """Summary of one layer's weight tensor.

    ``frac_near_zero`` counts weights with ``|w| ≤ near_zero · max|w|`` (a relative
    threshold, so layers of different scale compare fairly).
    """

    layer: str
    shape: tuple[int, ...]
    n: int
    mean: float
    std: float
    norm: float
    abs_max: float
    frac_near_zero: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


def _weights(state: Mapping[str, Any], layers: Sequence[str] | None) -> dict[str, np.ndarray]:
    found = {k[: -len(".weight")]: v for k, v in state.items() if k.endswith(".weight")}
    if layers is None:
        chosen = list(found)
    else:
        chosen = list(layers)
        for name in chosen:
            if name not in found:
                raise LayerNotFoundError(
                    f"no weights for layer {name!r}.{did_you_mean(name, found)} "
                    f"Layers with weights: {', '.join(found) or 'none'}."
                )
    out = {}
    for name in chosen:
        value = found[name]
        if hasattr(value, "detach"):
            value = value.detach().to("cpu").double().numpy()
        out[name] = np.asarray(value, dtype=np.float64)
    return out


def weight_stats(state: Mapping[str, Any], layers: Sequence[str] | None = None, *,
                 near_zero: float = 0.01) -> dict[str, WeightStats]:
    """Statistics of each layer's weight (all layers with a ``weight`` by default)."""
    if not 0 <= near_zero < 1:
        raise UsageError(f"near_zero is a fraction of max|w| in [0, 1), got {near_zero}")
    out = {}
    for name, w in _weights(state, layers).items():
        flat = w.reshape(-1)
        abs_max = float(np.abs(flat).max()) if flat.size else 0.0
        out[name] = WeightStats(
            layer=name, shape=tuple(int(s) for s in w.shape), n=int(flat.size),
            mean=float(flat.mean()) if flat.size else 0.0,
            std=float(flat.std()) if flat.size else 0.0,
            norm=float(np.linalg.norm(flat)), abs_max=abs_max,
            frac_near_zero=float((np.abs(flat) <= near_zero * abs_max).mean())
            if flat.size else 0.0,
        )
    return out


@dataclass(frozen=True, repr=False)
class WeightHistory:
    """Weight statistics and histograms of each layer at several epochs.

    ``stats[layer][metric]`` is an ``(epochs,)`` array; ``counts[layer]`` is
    ``(epochs, bins)`` over the shared ``edges[layer]`` ``(bins + 1,)`` (bins chosen per
    layer), so the epochs' histograms of a layer are directly comparable.
    """

    epochs: tuple[int, ...]
    layers: tuple[str, ...]
    stats: dict[str, dict[str, np.ndarray]]
    edges: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": list(self.epochs), "layers": list(self.layers),
                "stats": {k: {m: v.tolist() for m, v in d.items()}
                          for k, d in self.stats.items()}}

    def __repr__(self) -> str:
        return f"WeightHistory(epochs={list(self.epochs)}, layers={list(self.layers)})"


STAT_NAMES = ("mean", "std", "norm", "abs_max", "frac_near_zero")


def weight_history(states: Mapping[int, Mapping[str, Any]], layers: Sequence[str] | None = None,
                   *, bins: int = 60, near_zero: float = 0.01) -> WeightHistory:
    """Statistics and shared-bin histograms of each layer for every epoch in ``states``.

    ``states`` maps epoch → state dict. The bin range of a layer spans all its epochs;
    small layers get fewer bins (``√n``, at least 10) so their histograms are not combs.
    """
    if not states:
        raise UsageError("weight_history needs at least one epoch's state dict")
    if bins < 1:
        raise UsageError(f"bins must be ≥ 1, got {bins}")
    epochs = tuple(sorted(states))
    per_epoch = {e: _weights(states[e], layers) for e in epochs}
    names = tuple(per_epoch[epochs[0]])
    stats: dict[str, dict[str, np.ndarray]] = {}
    edges: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name in names:
        rows = [weight_stats({f"{name}.weight": per_epoch[e][name]}, near_zero=near_zero)[name]
                for e in epochs]
        stats[name] = {m: np.array([getattr(r, m) for r in rows]) for m in STAT_NAMES}
        lo = min(float(per_epoch[e][name].min()) for e in epochs)
        hi = max(float(per_epoch[e][name].max()) for e in epochs)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        n_bins = min(bins, max(10, int(np.sqrt(per_epoch[epochs[0]][name].size))))
        edges[name] = np.linspace(lo, hi, n_bins + 1)
        counts[name] = np.stack([np.histogram(per_epoch[e][name], bins=edges[name])[0]
                                 for e in epochs])
    return WeightHistory(epochs=epochs, layers=names, stats=stats, edges=edges, counts=counts)
