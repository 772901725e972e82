"""How a ReLU net approximates a function of one variable, next to polynomial interpolation.

Seed 001 claims that an MLP fitted on 100 points of a curve generalises where Lagrange
interpolation oscillates at the edges of the range. This module measures the claim:

- :func:`polynomial_fit`: the polynomial baselines on the same training points, evaluated
  stably: ``"lagrange"`` interpolation through (a subset of) the points in the first
  barycentric form, each basis polynomial formed in log space (never the monomial
  Vandermonde system, and not the second barycentric form, which fails at these degrees),
  and ``"chebyshev"`` least squares in the Chebyshev basis
  (:meth:`numpy.polynomial.Chebyshev.fit`);
- :func:`fit_errors`: error in and out of the training range;
- :func:`relu_decomposition`: a 1-hidden-layer ReLU net ``y(x) = c + Σ v_i·relu(w_i·x + b_i)``
  split into its units, each with its kink at ``x = −b_i/w_i``;
- :func:`linear_regions`: for a ReLU net of any depth, the exact points along x where the
  activation pattern changes (a grid scan refined by bisection), with the slope and
  intercept of the net on each region.

All computations here are in float64; nets are evaluated on a float64 copy, so the
decomposition matches the net to ~1e-12 (and the float32 net to its own rounding).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.hooks import forward_hooks

METHODS = ("lagrange", "chebyshev")


# ---- polynomial baselines -------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class PolynomialFit:
    """A polynomial baseline fitted on training points; call it on x to evaluate.

    ``method`` is ``"lagrange"`` (interpolates ``x_nodes``/``y_nodes`` exactly, degree
    ``len(x_nodes) - 1``) or ``"chebyshev"`` (least-squares Chebyshev series of ``degree``
    on all training points).
    """

    method: str
    degree: int
    x_nodes: np.ndarray
    y_nodes: np.ndarray
    _evaluate: Callable[[np.ndarray], np.ndarray] = field(compare=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(self._evaluate(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    @property
    def label(self) -> str:
        """``'Lagrange (degree 99)'`` — for legends and tables."""
        return f"{self.method.capitalize()} (degree {self.degree})"

    def __repr__(self) -> str:
        return f"PolynomialFit({self.method!r}, degree={self.degree}, n_nodes={len(self.x_nodes)})"


def polynomial_fit(x: np.ndarray, y: np.ndarray, *, method: str = "lagrange",
                   degree: int | None = None) -> PolynomialFit:
    """Fit a polynomial baseline to training points ``x``, ``y`` (both ``(n,)``).

    ``degree=None`` uses the full budget of the points, ``n − 1`` (the interpolating
    polynomial). For ``"lagrange"`` a smaller degree ``d`` interpolates ``d + 1`` of the
    points, evenly spread over their index; for ``"chebyshev"`` it is the degree of the
    least-squares series.

    >>> xs = np.linspace(-1, 1, 5)
    >>> p = polynomial_fit(xs, xs**3, method="lagrange")
    >>> float(np.round(p(np.array([0.5]))[0], 12))
    0.125
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ShapeMismatchError(f"x and y must have the same length (got {x.size} and {y.size})")
    n = x.size
    if n < 2:
        raise UsageError(f"a polynomial baseline needs at least 2 points (got {n})")
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise UsageError("training x values repeat; interpolation needs distinct points")
    if method not in METHODS:
        from shenjing.errors import unknown_name

        raise unknown_name("polynomial method", method, METHODS)
    deg = n - 1 if degree is None else int(degree)
    if not 0 <= deg <= n - 1:
        raise UsageError(f"polynomial degree must be between 0 and {n - 1} for {n} points "
                         f"(got {degree})")
    if method == "lagrange":
        pick = np.unique(np.round(np.linspace(0, n - 1, deg + 1)).astype(int))
        xn, yn = x[pick], y[pick]

        def evaluate(t: np.ndarray) -> np.ndarray:
            return _lagrange_first_form(xn, yn, np.atleast_1d(t)).reshape(np.shape(t))

        return PolynomialFit("lagrange", len(xn) - 1, xn, yn, evaluate)
    import warnings

    with warnings.catch_warnings():
        # a high degree is ill-conditioned by design: the lstsq cut-off (rcond) regularises it
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        series = np.polynomial.Chebyshev.fit(x, y, deg)
    return PolynomialFit("chebyshev", deg, x, y, series)


def _lagrange_first_form(xn: np.ndarray, yn: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``Σ_j y_j·ℓ_j(t)`` with ``ℓ_j(t) = Π_{k≠j} (t − x_k)/(x_j − x_k)`` (``t`` ``(m,)``).

    The first (modified Lagrange) barycentric form, which is backward stable everywhere
    (Higham 2004). The second ("true") form — SciPy's ``BarycentricInterpolator`` — is not
    usable here: with 100 equispaced nodes its denominator cancels near the edges and it
    returns ~1e8 where the interpolant (checked at 80 digits with mpmath) is ~1e18, and is
    wrong beyond the nodes. Each ``ℓ_j`` is a product of up to ~100 factors, so it is formed
    from sums of logs and signs (no overflow); at a node the node's value is returned.
    """
    diff_nodes = xn[:, None] - xn[None, :]
    np.fill_diagonal(diff_nodes, 1.0)
    log_w = -np.log(np.abs(diff_nodes)).sum(axis=1)                       # (n,)
    sign_w = np.prod(np.sign(diff_nodes), axis=1)
    dt = t[:, None] - xn[None, :]                                           # (m, n)
    dt_safe = np.where(dt == 0, 1.0, dt)
    log_l = np.log(np.abs(dt_safe)).sum(axis=1, keepdims=True)              # (m, 1)
    sign_l = np.prod(np.sign(dt_safe), axis=1, keepdims=True)
    log_basis = log_l + log_w[None, :] - np.log(np.abs(dt_safe))
    basis = sign_l * sign_w[None, :] * np.sign(dt_safe) * np.exp(log_basis)
    with np.errstate(over="ignore", invalid="ignore"):
        out = basis @ yn
    at_node = dt == 0
    hit = at_node.any(axis=1)
    out[hit] = yn[np.argmax(at_node[hit], axis=1)]
    return out


# ---- errors -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FitErrors:
    """Error of one approximation against the true function, inside and outside the range.

    RMSE and maximum absolute error over the evaluation points with x inside
    ``train_range`` (interpolation) and outside it (extrapolation); ``nan`` where a part has
    no points.
    """

    rmse_in: float
    max_in: float
    rmse_out: float
    max_out: float
    n_in: int
    n_out: int

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-safe dict (non-finite numbers become None)."""
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def in_range_mask(x: np.ndarray, train_range: tuple[float, float]) -> np.ndarray:
    """Boolean mask of the x inside the closed training range."""
    lo, hi = train_range
    x = np.asarray(x, dtype=np.float64)
    return (x >= lo) & (x <= hi)


def fit_errors(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
               train_range: tuple[float, float]) -> FitErrors:
    """RMSE and max error of ``y_pred`` vs ``y_true`` (all ``(n,)``) in and out of range.

    >>> e = fit_errors(np.array([0., 2.]), np.array([0., 0.]), np.array([1., 3.]), (0, 1))
    >>> (e.rmse_in, e.rmse_out)
    (1.0, 3.0)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    err = np.abs(np.asarray(y_pred, dtype=np.float64).ravel()
                 - np.asarray(y_true, dtype=np.float64).ravel())
    if err.shape != x.shape:
        raise ShapeMismatchError(f"x, y_true and y_pred must have the same length "
                                 f"(got {x.size} and {err.size})")
    inside = in_range_mask(x, train_range)

    def stats(part: np.ndarray) -> tuple[float, float]:
        if part.size == 0:
            return float("nan"), float("nan")
        with np.errstate(over="ignore"):
            return float(np.sqrt(np.mean(part**2))), float(np.max(part))

    rin, min_ = stats(err[inside])
    rout, mout = stats(err[~inside])
    return FitErrors(rin, min_, rout, mout, int(inside.sum()), int((~inside).sum()))


# ---- evaluating a net on a line ------------------------------------------------------------
def _float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()


def predict_1d(model: nn.Module, x: np.ndarray, *, dtype: torch.dtype = torch.float32
               ) -> np.ndarray:
    """The net's scalar output at each x: ``(n,)`` → ``(n,)`` (inference mode, CPU copy).

    ``dtype=torch.float64`` evaluates a float64 copy (for exact comparisons).
    """
    net = _float64_copy(model) if dtype == torch.float64 else model
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1), dtype=dtype,
                         device=device)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            out = net(xt)
    finally:
        net.train(was_training)
    if out.ndim != 2 or out.shape[1] != 1:
        raise ShapeMismatchError(f"the net must map x of shape (n, 1) to y of shape (n, 1); "
                                 f"it returned {tuple(out.shape)}")
    return out[:, 0].double().cpu().numpy()


# ---- the decomposition of a 1-hidden-layer ReLU net -----------------------------------------
@dataclass(frozen=True, repr=False)
class ReLUDecomposition:
    """``y(x) = c + Σ_i v_i·relu(w_i·x + b_i)``: a 1-hidden-layer ReLU net, unit by unit.

    ``w``, ``b``, ``v`` are ``(hidden,)`` float64 arrays (input weight, bias, output weight
    of each unit); ``c`` the output bias; ``layers`` the names of the two linear layers.
    """

    w: np.ndarray
    b: np.ndarray
    v: np.ndarray
    c: float
    layers: tuple[str, str] = ("fc1", "fc2")

    @property
    def n_units(self) -> int:
        return int(self.w.size)

    @property
    def kinks(self) -> np.ndarray:
        """``(hidden,)``: where each unit switches on or off, ``−b_i/w_i`` (nan if w_i = 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.w != 0, -self.b / np.where(self.w != 0, self.w, 1.0), np.nan)

    def pieces(self, x: np.ndarray) -> np.ndarray:
        """``(n, hidden)``: each unit's contribution ``v_i·relu(w_i·x + b_i)`` at each x."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        return self.v * np.maximum(x * self.w + self.b, 0.0)

    def output(self, x: np.ndarray) -> np.ndarray:
        """``(n,)``: the sum of the pieces plus ``c`` — the net's output."""
        return self.c + self.pieces(x).sum(axis=1)

    def partial_sums(self, x: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
        """``(hidden + 1, n)``: ``c``, then ``c`` plus the first 1, 2, … pieces in ``order``.

        The default order is by kink position (units without a kink last), so the rows
        show the fit being built from left to right; the last row is :meth:`output`.
        """
        pieces = self.pieces(x)
        order = self.kink_order() if order is None else np.asarray(order)
        cum = np.cumsum(pieces[:, order], axis=1).T
        return np.vstack([np.full(pieces.shape[0], self.c), self.c + cum])

    def kink_order(self) -> np.ndarray:
        """Unit indices sorted by kink position (nan kinks last)."""
        k = self.kinks
        return np.argsort(np.where(np.isnan(k), np.inf, k), kind="stable")

    def active(self, x: np.ndarray) -> np.ndarray:
        """``(hidden,)`` bool: units whose pre-activation is positive somewhere on ``x``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        return ((x * self.w + self.b) > 0).any(axis=0)

    def __repr__(self) -> str:
        return f"ReLUDecomposition(n_units={self.n_units}, layers={self.layers})"


def _linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def relu_decomposition(model: nn.Module, *, check_points: np.ndarray | None = None,
                       atol: float = 1e-8) -> ReLUDecomposition:
    """Split a 1-hidden-layer ReLU net ``Linear(1, h) → ReLU → Linear(h, 1)`` into its units.

    The split is verified: the decomposition must reproduce a float64 copy of the net at
    ``check_points`` (default: 257 points over the kinks' span) to ``atol`` (relative to the
    output's scale), else :class:`UsageError` says the net is not of that form.

    >>> net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> relu_decomposition(net).n_units
    3
    """
    linears = _linear_layers(model)
    if len(linears) != 2:
        raise UsageError(f"the ReLU decomposition needs a net with one hidden layer (two linear "
                         f"layers); this one has {len(linears)} "
                         f"({', '.join(n for n, _ in linears) or 'none'}). For deeper nets use "
                         "linear_regions()")
    (n1, l1), (n2, l2) = linears
    if l1.in_features != 1 or l2.out_features != 1 or l2.in_features != l1.out_features:
        raise ShapeMismatchError("the ReLU decomposition needs Linear(1, h) → ReLU → "
                                 f"Linear(h, 1); got {n1}: {l1.in_features}→{l1.out_features}, "
                                 f"{n2}: {l2.in_features}→{l2.out_features}")
    with torch.no_grad():
        w = l1.weight.detach().double().cpu().numpy()[:, 0]
        b = (l1.bias.detach().double().cpu().numpy() if l1.bias is not None
             else np.zeros_like(w))
        v = l2.weight.detach().double().cpu().numpy()[0]
        c = float(l2.bias.detach().double().cpu()[0]) if l2.bias is not None else 0.0
    dec = ReLUDecomposition(w, b, v, c, (n1, n2))
    if check_points is None:
        k = dec.kinks[np.isfinite(dec.kinks)]
        lo, hi = (float(k.min()), float(k.max())) if k.size else (-1.0, 1.0)
        pad = max(1.0, 0.1 * (hi - lo))
        check_points = np.linspace(lo - pad, hi + pad, 257)
    want = predict_1d(model, check_points, dtype=torch.float64)
    got = dec.output(check_points)
    scale = max(1.0, float(np.max(np.abs(want))))
    if not np.allclose(got, want, rtol=0, atol=atol * scale):
        raise UsageError("this net is not c + Σ v·relu(w·x + b): its output differs from the "
                         f"decomposition by up to {np.max(np.abs(got - want)):.3g} (is the "
                         "activation a ReLU, applied between the two linear layers?)")
    return dec


# ---- linear regions along x for nets of any depth ------------------------------------------
@dataclass(frozen=True, repr=False)
class LinearRegions:
    """Where a ReLU net's activation pattern changes along ``x ∈ [lo, hi]``.

    ``boundaries`` ``(k,)`` sorted; ``edges`` ``(k + 2,)`` = ``[lo, *boundaries, hi]``;
    ``slopes``/``intercepts`` ``(k + 1,)``: the net is ``slope·x + intercept`` on each region;
    ``patterns`` ``(k + 1, units)`` bool: which ReLU units are on in each region (units of all
    ReLU layers side by side, in ``units_per_layer`` order).
    """

    boundaries: np.ndarray
    edges: np.ndarray
    slopes: np.ndarray
    intercepts: np.ndarray
    patterns: np.ndarray
    units_per_layer: dict[str, int]

    @property
    def n_regions(self) -> int:
        return int(self.slopes.size)

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        """The piecewise-linear function the regions describe, at ``x`` ``(n,)``."""
        x = np.asarray(x, dtype=np.float64)
        idx = np.clip(np.searchsorted(self.boundaries, x, side="right"), 0, self.n_regions - 1)
        return self.slopes[idx] * x + self.intercepts[idx]

    def __repr__(self) -> str:
        return (f"LinearRegions(n_regions={self.n_regions}, range=({self.edges[0]:.3g}, "
                f"{self.edges[-1]:.3g}), units={sum(self.units_per_layer.values())})")


def _relu_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]


def _patterns(net: nn.Module, names: list[str], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Activation pattern ``(n, units)`` bool and output ``(n,)`` of ``net`` at x (float64)."""
    seen: dict[str, torch.Tensor] = {}

    def make(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            seen[name] = (args[0] > 0).reshape(args[0].shape[0], -1)
        return hook

    xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1))
    with torch.inference_mode(), forward_hooks(net, {n: make(n) for n in names}):
        out = net(xt)
    if not names:
        pattern = np.zeros((xt.shape[0], 0), dtype=bool)
    else:
        pattern = torch.cat([seen[n] for n in names], dim=1).numpy()
    return pattern, out.reshape(out.shape[0], -1)[:, 0].numpy()


def linear_regions(model: nn.Module, lo: float, hi: float, *, n_grid: int = 4001,
                   tol: float = 1e-10) -> LinearRegions:
    """The linear regions of a scalar ReLU net of one input along ``[lo, hi]``.

    A grid of ``n_grid`` points finds the cells where the pattern of active ReLU units
    changes; each change is then located by bisection to ``tol`` (relative to the range),
    repeatedly, so two changes inside one grid cell are both found. Works on a float64
    copy of the model; activation modules must be ``nn.ReLU``.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> linear_regions(net, -5, 5).n_regions >= 1
    True
    """
    if not hi > lo:
        raise UsageError(f"range must have lo < hi (got {lo}, {hi})")
    net = _float64_copy(model)
    names = _relu_names(net)
    xs = np.linspace(lo, hi, max(int(n_grid), 3))
    pat, _ = _patterns(net, names, xs)
    changed = np.flatnonzero((pat[1:] != pat[:-1]).any(axis=1))
    left, right = xs[changed], xs[changed + 1]
    p_left, p_right = pat[changed], pat[changed + 1]
    eps = tol * (hi - lo)
    found: list[np.ndarray] = []
    for _ in range(64):  # each round finds the first change in every open cell
        if left.size == 0:
            break
        a, b = left.copy(), right.copy()
        while np.max(b - a) > eps:
            mid = 0.5 * (a + b)
            same = (_patterns(net, names, mid)[0] == p_left).all(axis=1)
            a = np.where(same, mid, a)
            b = np.where(same, b, mid)
        found.append(0.5 * (a + b))
        p_b = _patterns(net, names, b)[0]
        more = (p_b != p_right).any(axis=1)  # another change between b and the cell's end
        left, right, p_left, p_right = b[more], right[more], p_b[more], p_right[more]
    boundaries = np.sort(np.concatenate(found)) if found else np.zeros(0)
    edges = np.concatenate([[lo], boundaries, [hi]])
    width = np.diff(edges)
    x1 = edges[:-1] + 0.25 * width
    x2 = edges[:-1] + 0.75 * width
    pats, y1 = _patterns(net, names, x1)
    _, y2 = _patterns(net, names, x2)
    slopes = (y2 - y1) / np.where(x2 > x1, x2 - x1, 1.0)
    intercepts = y1 - slopes * x1
    units = {n: int(_patterns_width(net, n)) for n in names}
    return LinearRegions(boundaries, edges, slopes, intercepts, pats, units)


def _patterns_width(net: nn.Module, name: str) -> int:
    seen: dict[str, int] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        seen["n"] = int(np.prod(args[0].shape[1:]))

    with torch.inference_mode(), forward_hooks(net, {name: hook}):
        net(torch.zeros(1, 1, dtype=torch.float64))
    return seen["n"]
