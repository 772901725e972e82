"""Directions in parameter space: random (filter-normalized), lines, trajectory PCA.

All directions are flat vectors over a model's parameters in ``named_parameters()``
order (buffers such as BatchNorm running statistics are never perturbed). A
:class:`ParamLayout` says which slice of the flat vector is which tensor.

Why filter normalization (Li et al., NeurIPS 2018): a ReLU net computes the same
function when one layer is scaled by ``c`` and the next by ``1/c``, so a raw Gaussian
step means different things on differently scaled nets. Rescaling each direction
filter (a conv output channel or a linear output row) to the norm of the matching
filter of θ* makes a surface invariant to that rescaling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shenjing.errors import CheckpointError, UsageError

Norm = Literal["filter", "layer", "none"]
NORMS: tuple[str, ...] = ("filter", "layer", "none")
_EPS = 1e-10


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and flat offsets of a model's parameters (``named_parameters`` order)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        """The layout of ``model``'s parameters."""
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) if s else 1 for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.concatenate([[0], np.cumsum(self.numels)[:-1]]))

    @property
    def size(self) -> int:
        """Total number of parameters."""
        return int(sum(self.numels))

    def slices(self) -> dict[str, slice]:
        """``name -> slice`` into a flat vector."""
        return {n: slice(o, o + k)
                for n, o, k in zip(self.names, self.offsets, self.numels, strict=True)}

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat ``(n_params,)`` vector shaped like each parameter."""
        return {n: flat[s].view(shape)
                for (n, s), shape in zip(self.slices().items(), self.shapes, strict=True)}

    def flatten(self, tensors: Mapping[str, torch.Tensor], *,
                device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        """Concatenate ``tensors[name]`` for every parameter, checking names and shapes.

        Raises :class:`CheckpointError` naming each missing or mis-shaped parameter (two
        checkpoints of different architectures cannot share one line).
        """
        missing = [n for n in self.names if n not in tensors]
        wrong = [f"{n} {tuple(tensors[n].shape)} vs {s}"
                 for n, s in zip(self.names, self.shapes, strict=True)
                 if n in tensors and tuple(tensors[n].shape) != s]
        if missing or wrong:
            parts = []
            if missing:
                parts.append(f"missing parameters: {', '.join(missing[:10])}")
            if wrong:
                parts.append(f"mismatched shapes: {'; '.join(wrong[:10])}")
            raise CheckpointError("parameters do not match the model's architecture ("
                                  + "; ".join(parts) + "); both ends of a line must be "
                                  "checkpoints of the same architecture")
        return torch.cat([tensors[n].detach().reshape(-1).to(device=device, dtype=dtype)
                          for n in self.names])

    def one_d_mask(self) -> torch.Tensor:
        """Boolean flat mask of the entries that belong to 1-D tensors (biases, norm γ/β)."""
        parts = [torch.full((k,), len(s) <= 1)
                 for s, k in zip(self.shapes, self.numels, strict=True)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParamLayout:
        return cls(tuple(data["names"]), tuple(tuple(s) for s in data["shapes"]))


def flat_params(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one detached flat vector (a copy), on the model's device."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


@dataclass(frozen=True, repr=False)
class Directions:
    """``k`` directions as a ``(k, n_params)`` tensor, plus how they were made.

    ``info`` is JSON-able provenance: ``kind`` (random, line, pca), ``seed``, ``norm``,
    ``ignore`` (the policy for 1-D tensors), and for PCA the explained variance.
    """

    vectors: torch.Tensor
    layout: ParamLayout
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.vectors.shape[0])

    def sha256(self) -> str:
        """A hash of the vectors' float32 bytes (identifies a surface's directions)."""
        arr = self.vectors.detach().to("cpu", torch.float32).contiguous().numpy()
        return hashlib.sha256(arr.tobytes()).hexdigest()

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Directions:
        return Directions(self.vectors.to(device=device, dtype=dtype), self.layout, self.info)

    def __repr__(self) -> str:
        return (f"Directions(k={self.k}, n_params={self.vectors.shape[1]}, "
                f"kind={self.info.get('kind')}, norm={self.info.get('norm')})")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise UsageError(f"unknown normalization {norm!r}; choose one of {', '.join(NORMS)} "
                         "('filter' is Li et al.'s, the default)")


def normalize_direction(direction: torch.Tensor, weights: torch.Tensor,
                        norm: Norm = "filter") -> torch.Tensor:
    """Rescale one parameter's direction tensor like its weights (returns a new tensor).

    ``filter``: each slice along dim 0 (a conv output channel, a linear output row) gets
    the norm of the matching slice of ``weights``; a 1-D tensor counts as one filter.
    ``layer``: the whole tensor gets the norm of ``weights``. ``none``: unchanged.
    """
    _check_norm(norm)
    if norm == "none":
        return direction.clone()
    if norm == "layer" or direction.ndim <= 1:
        return direction * (weights.norm() / (direction.norm() + _EPS))
    d = direction.reshape(direction.shape[0], -1)
    w = weights.reshape(weights.shape[0], -1)
    scale = w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + _EPS)
    return (d * scale).reshape(direction.shape)


def _center_and_layout(center: nn.Module | Mapping[str, torch.Tensor],
                       layout: ParamLayout | None) -> tuple[ParamLayout, dict[str, torch.Tensor]]:
    if isinstance(center, nn.Module):
        return ParamLayout.of(center), {n: p.detach() for n, p in center.named_parameters()}
    if layout is None:
        raise UsageError("pass layout= when the centre is a state dict, not a model")
    return layout, dict(center)


def random_directions(center: nn.Module | Mapping[str, torch.Tensor], k: int = 2, *,
                      seed: int = 0, norm: Norm = "filter", ignore_1d: bool = True,
                      layout: ParamLayout | None = None) -> Directions:
    """``k`` Gaussian directions around ``center`` (a model, or a state dict + ``layout``).

    Drawn with a CPU ``torch.Generator`` seeded by ``seed`` (the same numbers on every
    device), normalized per ``norm``, then moved to the centre's device. With
    ``ignore_1d`` (default) the entries of 1-D tensors (biases, BatchNorm γ/β) are zero:
    they stay at θ*; otherwise each 1-D tensor is normalized as a single filter.

    >>> net = nn.Linear(3, 2)
    >>> d = random_directions(net, 2, seed=0)
    >>> d.vectors.shape
    torch.Size([2, 8])
    """
    _check_norm(norm)
    if k < 1:
        raise UsageError(f"need at least one direction, got k={k}")
    layout, tensors = _center_and_layout(center, layout)
    gen = torch.Generator().manual_seed(int(seed))
    device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
    vectors = []
    for _ in range(k):
        parts = []
        for name, shape in zip(layout.names, layout.shapes, strict=True):
            w = tensors[name].detach().to("cpu", torch.float64)
            d = torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.float64)
            if len(shape) <= 1 and ignore_1d:
                d = torch.zeros(shape, dtype=torch.float64)
            else:
                d = normalize_direction(d, w, norm)
            parts.append(d.reshape(-1))
        vectors.append(torch.cat(parts).to(torch.float32))
    info = {"kind": "random", "seed": int(seed), "norm": norm, "k": k,
            "distribution": "standard normal (torch.randn, CPU generator)",
            "ignore": "biasbn" if ignore_1d else "none",
            "one_d_policy": ("1-D tensors (biases, norm-layer scales/shifts) held at θ* "
                             "(direction zero)") if ignore_1d else
                            ("1-D tensors perturbed, each normalized as one filter"),
            "buffers": "never perturbed (BatchNorm running statistics stay at θ*)"}
    return Directions(torch.stack(vectors).to(device), layout, info)


def line_direction(start: nn.Module | Mapping[str, torch.Tensor],
                   end: nn.Module | Mapping[str, torch.Tensor], *,
                   layout: ParamLayout | None = None) -> tuple[torch.Tensor, Directions]:
    """The line θ(α) = (1−α)·start + α·end as a centre (``end``) and one direction.

    Returns ``(center, directions)`` with ``center`` = flat ``end`` and the direction
    ``end − start``, so the point at coefficient ``α − 1`` is θ(α): α = 1 is ``end``
    exactly, α = 0 is ``start`` up to one float rounding.
    Raises :class:`CheckpointError` naming the parameters if the two do not match.
    """
    if isinstance(end, nn.Module):
        layout = ParamLayout.of(end)
    if layout is None:
        raise UsageError("pass layout= when both ends are state dicts")
    end_t = end if not isinstance(end, nn.Module) else dict(end.named_parameters())
    start_t = start if not isinstance(start, nn.Module) else dict(start.named_parameters())
    extra = sorted(set(start_t) - set(layout.names) - _buffer_names(start_t))
    b = layout.flatten(end_t, dtype=torch.float64)
    try:
        a = layout.flatten(start_t, device=b.device, dtype=torch.float64)
    except CheckpointError as exc:
        msg = str(exc)
        if extra:
            msg += f"; the start has parameters the end lacks: {', '.join(extra[:10])}"
        raise CheckpointError(msg) from None
    direction = (b - a).to(torch.float32)
    info = {"kind": "line", "norm": "none", "k": 1, "ignore": "none",
            "one_d_policy": "all parameters interpolated (biases and norm layers too)",
            "buffers": "taken from the end point (θ*)"}
    return b.to(torch.float32), Directions(direction[None], layout, info)


def _buffer_names(tensors: Mapping[str, torch.Tensor]) -> set[str]:
    return {n for n in tensors if n.endswith(("running_mean", "running_var",
                                              "num_batches_tracked"))}


@dataclass(frozen=True, repr=False)
class TrajectoryPCA:
    """The two main PCA directions of a training trajectory and its projection.

    ``coords`` is ``(n_epochs, 2)``: each checkpoint minus θ* projected on the (orthonormal)
    directions; ``explained`` the variance ratio of each component; ``residual`` the
    fraction of each point's squared distance from θ* not captured by the plane.
    """

    directions: Directions
    coords: np.ndarray
    epochs: tuple[int, ...]
    explained: np.ndarray
    residual: np.ndarray

    def __repr__(self) -> str:
        ev = ", ".join(f"{v:.1%}" for v in self.explained)
        return f"TrajectoryPCA(epochs={list(self.epochs)}, explained=[{ev}])"


def trajectory_pca(checkpoints: Sequence[Mapping[str, torch.Tensor]], epochs: Sequence[int],
                   layout: ParamLayout, *, center_index: int = -1,
                   ignore_1d: bool = False) -> TrajectoryPCA:
    """PCA of the checkpoints' offsets from θ* (``checkpoints[center_index]``), Li et al. §7.

    The offset matrix ``(n_epochs, n_params)`` is centred (as scikit-learn's PCA does) and
    its two leading right singular vectors, found from the small Gram matrix, are the
    directions. Every checkpoint (including θ* at the origin) is projected on them.
    """
    if len(checkpoints) < 3:
        raise UsageError(f"a trajectory plane needs at least 3 checkpoints, got "
                         f"{len(checkpoints)}; train with more epochs")
    flats = torch.stack([layout.flatten(c, dtype=torch.float64) for c in checkpoints])
    center = flats[center_index]
    offsets = flats - center
    if ignore_1d:
        offsets[:, layout.one_d_mask().to(offsets.device)] = 0.0
    centred = offsets - offsets.mean(dim=0, keepdim=True)
    gram = centred @ centred.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    comps = []
    for i in range(2):
        v = centred.T @ evecs[:, i]
        comps.append(v / (v.norm() + _EPS))
    u = torch.stack(comps)
    coords = (offsets @ u.T).cpu().numpy()
    dist2 = (offsets * offsets).sum(dim=1).cpu().numpy()
    captured = (coords ** 2).sum(axis=1)
    residual = np.where(dist2 > 0, 1.0 - captured / np.maximum(dist2, 1e-300), 0.0)
    total = float(evals.sum())
    explained = (evals[:2] / total).cpu().numpy() if total > 0 else np.zeros(2)
    info = {"kind": "pca", "norm": "none", "k": 2, "epochs": list(map(int, epochs)),
            "explained_variance_ratio": explained.tolist(),
            "ignore": "biasbn" if ignore_1d else "none",
            "one_d_policy": ("1-D tensors held at θ*" if ignore_1d else
                             "all parameters included in the PCA"),
            "buffers": "taken from θ*"}
    u32 = u.to(torch.float32)
    # the float32 directions are what is evaluated and stored: say how far from float64
    info["float32_error"] = float32_error(u, u32)
    dirs = Directions(u32, layout, info)
    return TrajectoryPCA(dirs, coords, tuple(map(int, epochs)), explained, residual)


def float32_error(exact: torch.Tensor, stored: torch.Tensor) -> dict[str, float]:
    """How far ``stored`` (float32) is from ``exact`` (float64): the largest relative error of
    one entry (over entries ≠ 0) and the relative error of each row's norm-2 difference."""
    exact = exact.detach().to("cpu", torch.float64)
    diff = (stored.detach().to("cpu", torch.float64) - exact).abs()
    nonzero = exact != 0
    elementwise = float((diff[nonzero] / exact.abs()[nonzero]).max()) if nonzero.any() else 0.0
    rows = exact.reshape(exact.shape[0], -1) if exact.ndim > 1 else exact[None]
    drows = diff.reshape(rows.shape)
    normwise = float((drows.norm(dim=1) / rows.norm(dim=1).clamp_min(1e-300)).max())
    return {"max_rel_error_vs_float64": elementwise, "max_rel_norm_error_vs_float64": normwise}
