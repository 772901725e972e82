"""How each layer of a net on 2-D points moves them: a warped grid, and separability per layer.

Seed 001: "linear layers rotate, stretch and shift; activations bend space, until the
classes become linearly separable". For a net on ``(N, 2)`` inputs, :func:`warp_layers`
sends a regular grid of lines and the data points through the net and records every
layer's output (pre-activation for linear layers, post-activation for activation layers).
A layer wider than 2 is shown through a PCA fitted on the data points at that layer (the
explained variance is kept, so the figure can state what fraction it shows; the grid is
projected with the same PCA). At every layer a linear probe (standardised features,
logistic regression, fitted on the train points and scored on the test points) measures
how linearly separable the classes are *in the full layer space*, not in the projection.

:func:`decision_map` evaluates the class probabilities on a dense mesh in input space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.errors import ShapeMismatchError, UsageError

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh,
                nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.SELU, nn.CELU)
_SKIPPED = (nn.Flatten, nn.Identity, nn.Dropout)
N_PER_LINE = 101
"""Points per grid line: enough for a line to bend smoothly where a layer folds it."""


def check_points_2d(x: Any, what: str = "data") -> np.ndarray:
    """``x`` as a float64 ``(N, 2)`` array, or :class:`ShapeMismatchError` saying what to use."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ShapeMismatchError(
            f"warp needs 2-D points, an (N, 2) array; {what} has shape {tuple(arr.shape)}. "
            "Use moons, spirals or your own (N, 2) data")
    if arr.shape[0] == 0:
        raise ShapeMismatchError(f"warp needs at least one point; {what} is empty")
    return arr.astype(np.float64)


def layer_sequence(model: nn.Module) -> list[tuple[str, str]]:
    """``[(name, kind), …]``: the leaf layers worth showing, in definition order.

    ``kind`` is ``"linear"`` (pre-activation), ``"activation"`` (post-activation),
    ``"output"`` (the last linear layer) or ``"other"``; Flatten, Identity and Dropout are
    skipped (they do not move points in eval mode).
    """
    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    out: list[tuple[str, str]] = []
    for name, mod in leaves:
        if isinstance(mod, _SKIPPED):
            continue
        kind = ("linear" if isinstance(mod, nn.Linear) else
                "activation" if isinstance(mod, _ACTIVATIONS) else "other")
        out.append((name, kind))
    for i in range(len(out) - 1, -1, -1):
        if out[i][1] == "linear":
            out[i] = (out[i][0], "output")
            break
    return out


def make_grid(bounds: tuple[tuple[float, float], tuple[float, float]], *, n_lines: int = 17,
              n_per_line: int = N_PER_LINE) -> np.ndarray:
    """A grid of lines over ``bounds`` = ``((xmin, xmax), (ymin, ymax))``.

    Returns ``(2, n_lines, n_per_line, 2)``: ``[0]`` the horizontal lines (constant y),
    ``[1]`` the vertical lines (constant x), each sampled at ``n_per_line`` points so it
    can bend when warped.
    """
    if n_lines < 2 or n_per_line < 2:
        raise UsageError(f"a grid needs ≥ 2 lines and ≥ 2 points per line (got {n_lines}, "
                         f"{n_per_line})")
    (x0, x1), (y0, y1) = bounds
    across = np.linspace(0.0, 1.0, n_per_line)
    levels = np.linspace(0.0, 1.0, n_lines)
    grid = np.empty((2, n_lines, n_per_line, 2))
    grid[0, :, :, 0] = x0 + across[None, :] * (x1 - x0)
    grid[0, :, :, 1] = (y0 + levels * (y1 - y0))[:, None]
    grid[1, :, :, 0] = (x0 + levels * (x1 - x0))[:, None]
    grid[1, :, :, 1] = y0 + across[None, :] * (y1 - y0)
    return grid


Bounds = tuple[tuple[float, float], tuple[float, float]]


def data_bounds(x: np.ndarray, margin: float = 0.1) -> Bounds:
    """The box around ``(N, 2)`` points, widened by ``margin`` of its size on each side."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-9)
    return ((float(lo[0] - pad[0]), float(hi[0] + pad[0])),
            (float(lo[1] - pad[1]), float(hi[1] + pad[1])))


def layer_outputs(model: nn.Module, x: np.ndarray, layers: Sequence[str], *,
                  batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` for points ``x`` ``(N, 2)``: name → ``(N, features)`` float64.

    Uses :func:`shenjing.capture.capture` (hooks always removed) in inference mode, with
    the model in eval mode on its own device.
    """
    from shenjing.capture import capture

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    xt = torch.as_tensor(x, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), capture(model, list(layers)) as acts:
            for start in range(0, xt.shape[0], batch_size):
                model(xt[start:start + batch_size].to(device))
    finally:
        model.train(was_training)
    return {name: acts[name].reshape(xt.shape[0], -1).double().numpy() for name in layers}


@dataclass(frozen=True)
class Projection:
    """How a layer's features became 2-D: ``method`` is ``identity``, ``pad`` (1 feature:
    y = 0) or ``pca``; ``components`` ``(2, features)`` and ``mean`` ``(features,)`` for PCA,
    ``explained_variance_ratio`` ``(2,)`` (of the data at that layer)."""

    method: str
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    explained_variance_ratio: np.ndarray | None = None

    def apply(self, feats: np.ndarray) -> np.ndarray:
        """``(n, features)`` → ``(n, 2)``."""
        if self.method == "identity":
            return feats[:, :2].copy()
        if self.method == "pad":
            return np.column_stack([feats[:, 0], np.zeros(len(feats))])
        assert self.components is not None and self.mean is not None
        return (feats - self.mean) @ self.components.T

    @property
    def label(self) -> str:
        if self.method == "pca" and self.explained_variance_ratio is not None:
            return f"PCA, {100 * float(self.explained_variance_ratio.sum()):.0f}% of variance"
        return {"identity": "2-D", "pad": "1-D (y = 0)"}.get(self.method, self.method)


def fit_projection(feats: np.ndarray, *, random_state: int = 0) -> Projection:
    """The 2-D view of a layer: itself if it has 2 features, else PCA on ``feats``."""
    d = feats.shape[1]
    if d == 2:
        return Projection("identity")
    if d == 1:
        return Projection("pad")
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, svd_solver="full", random_state=random_state).fit(feats)
    return Projection("pca", pca.components_.copy(), pca.mean_.copy(),
                      pca.explained_variance_ratio_.copy())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, c: float = 10.0) -> tuple[float, float]:
    """Train and test accuracy of a logistic-regression probe on standardised features.

    Constant features (dead units) are harmless: the scaler leaves them at zero.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise UsageError("a linear probe needs at least two classes in the train points")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    probe.fit(train_x, train_y)
    return float(probe.score(train_x, train_y)), float(probe.score(test_x, test_y))


@dataclass(frozen=True, repr=False)
class WarpLayer:
    """One layer's view: data ``(N, 2)`` and grid ``(2, lines, points, 2)`` in 2-D, the
    projection used, the layer width, and the linear-probe accuracies."""

    name: str
    kind: str
    n_features: int
    data_2d: np.ndarray
    grid_2d: np.ndarray
    projection: Projection
    probe_train_accuracy: float
    probe_test_accuracy: float

    def __repr__(self) -> str:
        return (f"WarpLayer({self.name!r}, {self.kind}, features={self.n_features}, "
                f"probe={self.probe_test_accuracy:.3f})")


@dataclass(frozen=True, repr=False)
class Warp:
    """Every layer's view of the grid and the data (``layers[0]`` is the input).

    ``labels`` ``(N,)`` int; ``is_test`` ``(N,)`` bool (which points the probes were scored
    on); ``grid`` the input grid ``(2, lines, points, 2)``.
    """

    layers: list[WarpLayer]
    labels: np.ndarray
    is_test: np.ndarray
    grid: np.ndarray

    def probe_table(self) -> list[dict[str, Any]]:
        """One row per layer: name, kind, features, projection, probe train/test accuracy."""
        return [{"layer": w.name, "kind": w.kind, "features": w.n_features,
                 "projection": w.projection.method,
                 "explained_variance": (None if w.projection.explained_variance_ratio is None
                                        else [float(v) for v in
                                              w.projection.explained_variance_ratio]),
                 "probe_train_accuracy": w.probe_train_accuracy,
                 "probe_test_accuracy": w.probe_test_accuracy} for w in self.layers]

    def __getitem__(self, name: str) -> WarpLayer:
        for w in self.layers:
            if w.name == name:
                return w
        from shenjing.errors import LayerNotFoundError, did_you_mean

        names = [w.name for w in self.layers]
        raise LayerNotFoundError(f"no layer {name!r} in this warp.{did_you_mean(name, names)} "
                                 f"Layers: {', '.join(names)}")

    def __repr__(self) -> str:
        probes = ", ".join(f"{w.name}={w.probe_test_accuracy:.2f}" for w in self.layers)
        return f"Warp(n_points={len(self.labels)}, probes: {probes})"


def warp_layers(model: nn.Module, train_x: Any, train_y: Any, test_x: Any, test_y: Any, *,
                layers: Sequence[str] | None = None, n_lines: int = 17,
                n_per_line: int = N_PER_LINE,
                bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
                random_state: int = 0) -> Warp:
    """Send a grid and the data through ``model`` and view every layer in 2-D.

    ``train_x``/``test_x`` are ``(N, 2)`` points, ``train_y``/``test_y`` ``(N,)`` labels;
    ``layers`` defaults to :func:`layer_sequence` (every linear and activation layer).
    The grid covers ``bounds`` (default: the data's box plus 10%).
    """
    xtr = check_points_2d(train_x, "the train points")
    xte = check_points_2d(test_x, "the test points")
    ytr = np.asarray(train_y).astype(np.int64).ravel()
    yte = np.asarray(test_y).astype(np.int64).ravel()
    if ytr.size != len(xtr) or yte.size != len(xte):
        raise ShapeMismatchError(f"labels and points disagree in length: {len(xtr)} train "
                                 f"points, {ytr.size} labels; {len(xte)} test points, "
                                 f"{yte.size} labels")
    first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if first is not None and first.in_features != 2:
        raise ShapeMismatchError(f"warp needs a net on 2-D inputs; its first linear layer "
                                 f"takes {first.in_features} features")
    seq = layer_sequence(model)
    kinds = dict(seq)
    if layers is None:
        names = [n for n, _ in seq]
    else:
        from shenjing.capture import resolve_layers

        names = resolve_layers(model, list(layers))
    points = np.concatenate([xtr, xte])
    grid = make_grid(bounds or data_bounds(points), n_lines=n_lines, n_per_line=n_per_line)
    flat_grid = grid.reshape(-1, 2)
    outs = layer_outputs(model, np.concatenate([points, flat_grid]), names)
    n = len(points)
    views = [_view("input", "input", points, flat_grid, grid.shape, len(xtr), ytr, yte,
                   random_state)]
    for name in names:
        feats = outs[name]
        views.append(_view(name, kinds.get(name, "other"), feats[:n], feats[n:], grid.shape,
                           len(xtr), ytr, yte, random_state))
    is_test = np.zeros(n, dtype=bool)
    is_test[len(xtr):] = True
    return Warp(views, np.concatenate([ytr, yte]), is_test, grid)


def _view(name: str, kind: str, data: np.ndarray, grid_feats: np.ndarray,
          grid_shape: tuple[int, ...], n_train: int, ytr: np.ndarray, yte: np.ndarray,
          random_state: int) -> WarpLayer:
    proj = fit_projection(data, random_state=random_state)
    tr_acc, te_acc = linear_probe(data[:n_train], ytr, data[n_train:], yte)
    return WarpLayer(name, kind, int(data.shape[1]), proj.apply(data),
                     proj.apply(grid_feats).reshape(grid_shape), proj, tr_acc, te_acc)


def layer_widths(model: nn.Module, layers: Sequence[str] | None = None) -> list[int]:
    """Features of each layer the study shows (:func:`layer_sequence` or ``layers``), from
    one forward of two points; the sizes :func:`warp_bytes` needs."""
    if layers is None:
        names = [n for n, _ in layer_sequence(model)]
    else:
        from shenjing.capture import resolve_layers

        names = resolve_layers(model, list(layers))
    if not names:
        return []
    outs = layer_outputs(model, np.zeros((2, 2)), names)
    return [int(outs[n].shape[1]) for n in names]


def warp_bytes(widths: Sequence[int], n_points: int, *, n_lines: int,
               n_per_line: int = N_PER_LINE, resolution: int = 200,
               n_classes: int = 2) -> int:
    """Peak bytes of the warp study: the grid (2 × ``n_lines`` × ``n_per_line`` points)
    and the ``n_points`` data points through every layer of ``widths`` features.

    Per point and feature: the float32 output as captured, joined, and as float64 (16 B),
    all layers at once; the widest layer's centred copy for its PCA; per layer the 2-D data
    and grid, twice more while the ``.npz`` is packed; one line artist per grid line and
    panel in the figure; the decision map's ``resolution²`` probabilities.
    """
    n = int(n_points) + 2 * int(n_lines) * int(n_per_line)
    views = len(widths) + 1  # the input is a panel too
    outputs = n * 16 * sum(widths)
    centred = n * 8 * max(widths, default=2)
    two_d = 3 * views * n * 16
    artists = views * 2 * int(n_lines) * (4096 + int(n_per_line) * 16)
    decision = int(resolution) ** 2 * (16 + 24 * max(2, int(n_classes)))
    return outputs + centred + two_d + artists + decision


def check_warp_memory(widths: Sequence[int], n_points: int, *, n_lines: int,
                      resolution: int = 200, n_classes: int = 2) -> None:
    """Refuse a warp study that would not fit in memory (before anything is trained or
    written), naming the bytes and the ``--lines`` that fit."""
    from shenjing.capture.activations import format_bytes
    from shenjing.capture.dataset import memory_budget
    from shenjing.errors import ResourceError

    def need(lines: int) -> int:
        return warp_bytes(widths, n_points, n_lines=lines, resolution=resolution,
                          n_classes=n_classes)

    total, budget = need(n_lines), memory_budget()
    if total <= budget:
        return
    per_line = need(1) - need(0)
    fits = (budget - need(0)) // per_line if per_line else 0
    advice = (f"reduce --lines, e.g. --lines {fits}" if fits >= 2 else
              "even 2 lines do not fit: use a narrower net (--hidden) or fewer points")
    raise ResourceError(
        f"warp with --lines {n_lines} sends {2 * n_lines * N_PER_LINE:,} grid points and "
        f"{n_points:,} data points through {len(widths)} layers "
        f"({', '.join(map(str, widths))} features): about {format_bytes(total)} of memory, but "
        f"only {format_bytes(budget)} is allowed (half the memory available now); {advice}")


@dataclass(frozen=True, repr=False)
class DecisionMap:
    """Class probabilities on a mesh: ``xs`` ``(nx,)``, ``ys`` ``(ny,)``, ``proba``
    ``(ny, nx, classes)``; ``predicted`` ``(ny, nx)`` the argmax."""

    xs: np.ndarray
    ys: np.ndarray
    proba: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(axis=-1)

    def __repr__(self) -> str:
        ny, nx, c = self.proba.shape
        return f"DecisionMap({nx}×{ny}, classes={c})"


def decision_map(model: nn.Module, bounds: tuple[tuple[float, float], tuple[float, float]], *,
                 resolution: int = 200) -> DecisionMap:
    """Softmax of the net's outputs on a ``resolution × resolution`` mesh over ``bounds``.

    A net with one output is read as a logit for class 1 (sigmoid).
    """
    (x0, x1), (y0, y1) = bounds
    xs = np.linspace(x0, x1, resolution)
    ys = np.linspace(y0, y1, resolution)
    xx, yy = np.meshgrid(xs, ys)
    pts = np.column_stack([xx.ravel(), yy.ravel()])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(torch.as_tensor(pts, dtype=dtype, device=device)).double().cpu()
    finally:
        model.train(was_training)
    if logits.ndim != 2:
        raise ShapeMismatchError(f"the net returned shape {tuple(logits.shape)}; expected "
                                 "(points, classes)")
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits)
        proba = torch.cat([1 - p1, p1], dim=1)
    elif bool((logits <= 0).all()) and torch.allclose(logits.exp().sum(1),
                                                      torch.ones(len(logits), dtype=torch.float64),
                                                      atol=1e-4):
        proba = logits.exp()  # the net already returns log-probabilities (log_softmax)
    else:
        proba = torch.softmax(logits, dim=1)
    return DecisionMap(xs, ys, proba.numpy().reshape(resolution, resolution, -1))
