"""Sharpness from Hessian-vector products: top eigenvalues, trace, spectral density.

Everything here touches the Hessian only through ``H·v`` (double back-propagation), so it
works for any model size. Methods (cf. PyHessian, Yao et al. 2020):

- :func:`lanczos_top` — top-k eigenvalues by the Lanczos iteration with full
  re-orthogonalisation, stopping when every wanted Ritz pair's residual is small: far fewer
  products than power iteration with deflation (:func:`power_iteration_top`, kept as the
  reference and for the benchmark).
- :func:`hutchinson_trace` — trace as the mean of zᵀHz over Rademacher z, with a standard
  error and a Student-t 95 % confidence interval.
- :func:`slq_density` — eigenvalue density by stochastic Lanczos quadrature.

Each of them resumes: given a :class:`~shenjing.analysis.landscape.resume.ResumeFile`
(``resume=``), it saves its state as it goes (the Lanczos coefficients and basis, the
Hutchinson samples and generator state, the finished SLQ runs) and, run again after a kill
with the same file, continues from it. The loops are deterministic given that state, so a
resumed result equals an uninterrupted one bit for bit (same device and torch build), with
the same count of Hessian-vector products.

:class:`HessianOperator` builds ``H·v`` for a model, samples and loss, for all parameters
or only those of one layer (a diagonal block of the Hessian). The model is never modified:
the operator works on a private copy in ``eval()`` mode (dropout off, BatchNorm statistics
as stored). Every forward and backward pass of the operator runs under
:func:`~shenjing.analysis.landscape.kernels.differentiable_kernels`: fused attention kernels
(flash attention) have no second derivative, so transformers use the math backend here.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.kernels import differentiable_kernels
from shenjing.analysis.landscape.resume import ResumeFile
from shenjing.errors import LayerNotFoundError, NotApplicableError, UsageError, did_you_mean
from shenjing.training.losses import loss_function

MatVec = Callable[[torch.Tensor], torch.Tensor]
_NO_SECOND_DERIVATIVE = re.compile(r"derivative for (\S+) is not implemented")


class HessianOperator:
    """``H·v`` of the mean loss over ``(x, y)`` w.r.t. the chosen parameters.

    ``layer`` restricts the parameters to one module's own weights (its Hessian block).
    ``n_hvp`` counts the products computed, so algorithms can be compared by cost.
    Works for any model whose forward is twice differentiable; attention and recurrent
    layers are run on kernels that are (see :meth:`_kernels`).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                 layer: str | None = None, batch_size: int = 512,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
                 ) -> None:
        self.device = torch.device(device)
        net = copy.deepcopy(model).to(self.device, dtype).eval()
        if layer is not None:
            names = [n for n, m in net.named_modules()
                     if any(True for _ in m.parameters(recurse=False))]
            if layer not in names:
                raise LayerNotFoundError(f"no layer {layer!r} with parameters in "
                                         f"{type(model).__name__}.{did_you_mean(layer, names)} "
                                         f"Layers with parameters: {', '.join(names)}")
            chosen = set(id(p) for p in net.get_submodule(layer).parameters(recurse=False))
        else:
            chosen = set(id(p) for p in net.parameters())
        self.names = [n for n, p in net.named_parameters() if id(p) in chosen]
        self.params = [p for p in net.parameters() if id(p) in chosen]
        for p in net.parameters():
            p.requires_grad_(id(p) in chosen)
        self.net = net
        self.layer = layer
        self.dim = int(sum(p.numel() for p in self.params))
        self.dtype = dtype
        self.x = x.to(self.device, dtype)
        self.y = y.to(self.device)
        if self.y.is_floating_point():
            self.y = self.y.to(dtype)
        self.n = int(x.shape[0])
        if self.n == 0:
            raise UsageError("no samples to compute the Hessian on")
        self.batch_size = int(batch_size)
        self.loss_sum = loss_function(loss, "sum")
        self.n_hvp = 0

    def _unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(v[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        """The one context every pass of this operator runs in: double-backward-capable
        kernels (math attention, no transformer fast path, no cuDNN RNNs on CUDA)."""
        return differentiable_kernels(self.net, self.device)

    def loss_and_grad(self) -> tuple[float, torch.Tensor]:
        """Mean loss and its gradient (flat) at the model's weights."""
        with self._kernels():
            return self._loss_and_grad()

    def _loss_and_grad(self) -> tuple[float, torch.Tensor]:
        total = 0.0
        grads = [torch.zeros_like(p) for p in self.params]
        for i in range(0, self.n, self.batch_size):
            loss = self.loss_sum(self.net(self.x[i:i + self.batch_size]),
                                 self.y[i:i + self.batch_size]) / self.n
            g = torch.autograd.grad(loss, self.params)
            total += float(loss.detach())
            for acc, gi in zip(grads, g, strict=True):
                acc += gi
        return total, torch.cat([g.reshape(-1) for g in grads])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H·v`` for a flat ``(dim,)`` vector (one counted product).

        Raises :class:`~shenjing.errors.NotApplicableError` naming the operation if the
        model's forward uses one that PyTorch cannot differentiate twice.
        """
        with self._kernels():
            try:
                return self._matvec(v)
            except RuntimeError as exc:
                match = _NO_SECOND_DERIVATIVE.search(str(exc))
                if match is None:
                    raise
                raise NotApplicableError(
                    f"the Hessian needs second derivatives of every operation in "
                    f"{type(self.net).__name__}'s forward, and PyTorch {torch.__version__} has "
                    f"none for {match.group(1)} (its backward is not differentiable). "
                    "Attention is already run on the math backend for this; for other "
                    "fused kernels use a plain implementation of the layer") from None

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        vs = self._unflatten(v.to(self.device, self.dtype))
        out = [torch.zeros_like(p) for p in self.params]
        for i in range(0, self.n, self.batch_size):
            loss = self.loss_sum(self.net(self.x[i:i + self.batch_size]),
                                 self.y[i:i + self.batch_size]) / self.n
            g = torch.autograd.grad(loss, self.params, create_graph=True)
            dot = torch.stack([(gi * vi).sum() for gi, vi in zip(g, vs, strict=True)]).sum()
            hv = torch.autograd.grad(dot, self.params, allow_unused=True)
            for acc, h in zip(out, hv, strict=True):
                if h is not None:
                    acc += h.detach()
        self.n_hvp += 1
        return torch.cat([h.reshape(-1) for h in out])

    __call__ = matvec


@dataclass(frozen=True)
class Eigenpairs:
    """Eigenvalues (descending) with optional eigenvectors ``(k, dim)`` and the HVP cost."""

    values: np.ndarray
    n_hvp: int
    method: str
    converged: bool
    vectors: torch.Tensor | None = field(default=None, repr=False)
    history: list[list[float]] = field(default_factory=list, repr=False)


def _rand_unit(dim: int, gen: torch.Generator, device: torch.device,
               dtype: torch.dtype) -> torch.Tensor:
    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device, dtype)
    return v / v.norm()


def _device_dtype(matvec: MatVec, dim: int) -> tuple[torch.device, torch.dtype]:
    if isinstance(matvec, HessianOperator):
        return matvec.device, matvec.dtype
    return torch.device("cpu"), torch.float64


@dataclass
class _LanczosState:
    """Where a Lanczos run stands after a whole step: coefficients and basis so far."""

    alphas: list[float]
    betas: list[float]
    basis: list[torch.Tensor]

    def to_arrays(self) -> dict[str, Any]:
        return {"alphas": np.array(self.alphas, dtype=np.float64),
                "betas": np.array(self.betas, dtype=np.float64),
                "basis": torch.stack(self.basis).cpu().numpy()}

    @classmethod
    def from_arrays(cls, state: dict[str, Any], device: torch.device) -> _LanczosState:
        basis = torch.from_numpy(np.ascontiguousarray(state["basis"])).to(device)
        return cls([float(a) for a in state["alphas"]], [float(b) for b in state["betas"]],
                   list(basis.unbind(0)))


def _lanczos_steps(matvec: MatVec, v0: torch.Tensor, m: int,
                   stop: Callable[[np.ndarray, np.ndarray, float], bool] | None = None, *,
                   start: _LanczosState | None = None,
                   on_step: Callable[[_LanczosState], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Run up to ``m`` Lanczos steps from ``v0``; return alphas, betas and the basis.

    ``start`` continues a run from a state saved by ``on_step`` (called after every whole
    step that is followed by another): the same products in the same order as without the
    interruption.
    """
    if start is not None:
        basis, alphas, betas = list(start.basis), list(start.alphas), list(start.betas)
    else:
        basis, alphas, betas = [v0 / v0.norm()], [], []
    for j in range(len(alphas), m):
        w = matvec(basis[j])
        alpha = float(torch.dot(w.double(), basis[j].double()))
        alphas.append(alpha)
        w = w - alpha * basis[j]
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        V = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalisation, twice is enough
            w = w - V.T @ (V @ w)
        beta = float(w.norm())
        if stop is not None and stop(np.array(alphas), np.array(betas), beta):
            break
        if beta < 1e-10 * max(1.0, abs(alpha)) or j == m - 1:
            break
        betas.append(beta)
        basis.append(w / beta)
        if on_step is not None:
            on_step(_LanczosState(alphas, betas, basis))
    return np.array(alphas), np.array(betas[:len(alphas) - 1]), torch.stack(basis[:len(alphas)])


def _tridiag(alphas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    T = np.diag(alphas)
    if len(betas):
        T += np.diag(betas, 1) + np.diag(betas, -1)
    return T


def lanczos_top(matvec: MatVec, dim: int, k: int = 1, *, tol: float = 1e-3,
                max_iter: int = 100, seed: int = 0, which: str = "LA",
                return_vectors: bool = False, resume: ResumeFile | None = None,
                name: str = "top", key: str | None = None) -> Eigenpairs:
    """Top-``k`` eigenvalues of a symmetric operator by Lanczos (full re-orthogonalisation).

    Stops when each of the ``k`` wanted Ritz values has residual ``|β·s_last| ≤ tol·|θ|``
    (the Ritz pair is then an eigenpair of a matrix within that relative distance).
    ``which='LA'``: largest algebraic; ``'LM'``: largest magnitude.
    ``resume``: save the run as piece ``name`` of that file (under ``key``) and continue a
    saved one (module docs); not used with ``return_vectors``.
    """
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if which not in ("LA", "LM"):
        raise UsageError(f"which must be 'LA' or 'LM', got {which!r}")
    k = min(k, dim)
    if return_vectors:
        resume = None  # the eigenvectors are not kept in the file
    saved = resume.get(name, key) if resume is not None else None
    if saved is not None and saved.get("done"):
        return Eigenpairs(values=np.asarray(saved["values"]), n_hvp=int(saved["calls"]),
                          method="lanczos", converged=bool(saved["converged"]),
                          history=np.asarray(saved["history"]).tolist())
    device, dtype = _device_dtype(matvec, dim)
    gen = torch.Generator().manual_seed(int(seed))
    v0 = _rand_unit(dim, gen, device, dtype)
    start = None if saved is None else _LanczosState.from_arrays(saved, device)
    calls = [0 if saved is None else int(saved["calls"])]
    history: list[list[float]] = [] if saved is None else np.asarray(
        saved["history"]).reshape(-1, k).tolist()

    def counted(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return matvec(v)

    def save_step(step: _LanczosState) -> None:
        assert resume is not None
        resume.put(name, {**step.to_arrays(), "calls": calls[0],
                          "history": np.array(history, dtype=np.float64).reshape(-1, k)},
                   key=key)

    state: dict[str, Any] = {"converged": False}

    def pick(evals: np.ndarray) -> np.ndarray:
        key = evals if which == "LA" else np.abs(evals)
        return np.argsort(key)[::-1][:k]

    def stop(alphas: np.ndarray, betas: np.ndarray, beta: float) -> bool:
        if len(alphas) < k:
            return False
        evals, evecs = np.linalg.eigh(_tridiag(alphas, betas))
        idx = pick(evals)
        history.append(evals[idx].tolist())
        resid = np.abs(beta * evecs[-1, idx])
        ok = bool(np.all(resid <= tol * np.maximum(np.abs(evals[idx]), 1e-12)))
        state["converged"] = ok
        return ok

    alphas, betas, basis = _lanczos_steps(counted, v0, min(max_iter, dim), stop, start=start,
                                          on_step=save_step if resume is not None else None)
    if len(alphas) == dim:
        state["converged"] = True
    evals, evecs = np.linalg.eigh(_tridiag(alphas, betas))
    idx = pick(evals)
    vectors = None
    if return_vectors:
        s = torch.as_tensor(evecs[:, idx].T, dtype=basis.dtype, device=basis.device)
        vectors = s @ basis
    if resume is not None:
        resume.put(name, {"done": True, "values": evals[idx], "calls": calls[0],
                          "converged": bool(state["converged"]),
                          "history": np.array(history, dtype=np.float64).reshape(-1, k)},
                   key=key, final=True)
    return Eigenpairs(values=evals[idx], n_hvp=int(calls[0]), method="lanczos",
                      converged=bool(state["converged"]), vectors=vectors, history=history)


def power_iteration_top(matvec: MatVec, dim: int, k: int = 1, *, tol: float = 1e-3,
                        max_iter: int = 100, seed: int = 0) -> Eigenpairs:
    """Top-``k`` eigenvalues by power iteration with deflation (PyHessian's method).

    Each eigenvalue: iterate ``v ← H v / ‖H v‖`` keeping ``v`` orthogonal to those found,
    until the Rayleigh quotient changes by less than ``tol`` (relative).
    """
    device, dtype = _device_dtype(matvec, dim)
    gen = torch.Generator().manual_seed(int(seed))
    found: list[torch.Tensor] = []
    values: list[float] = []
    calls = 0
    converged = True
    for _ in range(min(k, dim)):
        v = _rand_unit(dim, gen, device, dtype)
        eig: float | None = None
        ok = False
        for _ in range(max_iter):
            for u in found:
                v = v - torch.dot(u, v) * u
            v = v / v.norm()
            hv = matvec(v)
            calls += 1
            new = float(torch.dot(hv.double(), v.double()))
            v = hv / (hv.norm() + 1e-30)
            if eig is not None and abs(eig - new) / (abs(eig) + 1e-6) < tol:
                eig = new
                ok = True
                break
            eig = new
        converged &= ok
        found.append(v)
        values.append(float(eig if eig is not None else math.nan))
    return Eigenpairs(values=np.array(values), n_hvp=calls, method="power+deflation",
                      converged=converged, vectors=torch.stack(found))


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson trace estimate with its standard error and 95 % confidence interval."""

    mean: float
    stderr: float
    ci95: tuple[float, float]
    n_samples: int
    samples: np.ndarray = field(repr=False)


def hutchinson_trace(matvec: MatVec, dim: int, *, n_samples: int = 100, seed: int = 0,
                     resume: ResumeFile | None = None, name: str = "trace",
                     key: str | None = None) -> TraceEstimate:
    """tr(H) ≈ mean of zᵀHz over ``n_samples`` Rademacher vectors, with a 95 % CI.

    The interval is mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (Student t; the samples are i.i.d.).
    ``resume``: keep the samples so far and the generator's state as piece ``name``, and
    continue saved ones (module docs).
    """
    if n_samples < 2:
        raise UsageError(f"n_samples must be at least 2 for a confidence interval, "
                         f"got {n_samples}")
    from scipy import stats

    device, dtype = _device_dtype(matvec, dim)
    gen = torch.Generator().manual_seed(int(seed))
    vals = np.empty(n_samples)
    saved = resume.get(name, key) if resume is not None else None
    first = 0
    if saved is not None and len(saved["vals"]) <= n_samples:
        first = len(saved["vals"])
        vals[:first] = saved["vals"]
        gen.set_state(torch.from_numpy(np.ascontiguousarray(saved["rng"])))
    for i in range(first, n_samples):
        z = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(device, dtype)
        vals[i] = float(torch.dot(matvec(z).double(), z.double()))
        if resume is not None:
            resume.put(name, {"vals": vals[:i + 1].copy(), "rng": gen.get_state().numpy()},
                       key=key, final=i == n_samples - 1)
    mean = float(vals.mean())
    se = float(vals.std(ddof=1) / math.sqrt(n_samples))
    half = float(stats.t.ppf(0.975, n_samples - 1)) * se
    return TraceEstimate(mean, se, (mean - half, mean + half), n_samples, vals)


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ eigenvalue density: quadrature ``nodes``/``weights`` ``(n_runs, m)`` and a
    smoothed ``density`` on ``grid`` (integrates to 1)."""

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_hvp: int


def slq_density(matvec: MatVec, dim: int, *, n_runs: int = 3, n_steps: int = 40,
                n_grid: int = 400, sigma: float | None = None, seed: int = 0,
                resume: ResumeFile | None = None, name: str = "density",
                key: str | None = None) -> SpectralDensity:
    """Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Each run starts Lanczos from a Rademacher vector; the eigenvalues of its tridiagonal
    matrix are quadrature nodes weighted by the squared first components of its
    eigenvectors. The density is the average of Gaussians of width ``sigma`` (default 1 %
    of the spectrum's span) on those nodes. ``resume``: keep the finished runs, the
    generator's state and the current run's Lanczos state as piece ``name`` (module docs).
    """
    device, dtype = _device_dtype(matvec, dim)
    gen = torch.Generator().manual_seed(int(seed))
    nodes: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    calls = [0]
    m = min(n_steps, dim)
    saved = resume.get(name, key) if resume is not None else None
    current: _LanczosState | None = None
    if saved is not None:
        nodes = list(np.asarray(saved["nodes"]).reshape(-1, m))
        weights = list(np.asarray(saved["weights"]).reshape(-1, m))
        calls[0] = int(saved["calls"])
        gen.set_state(torch.from_numpy(np.ascontiguousarray(saved["rng"])))
        if "basis" in saved:
            current = _LanczosState.from_arrays(saved, device)

    def counted(v: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return matvec(v)

    def save(rng: np.ndarray, step: _LanczosState | None = None, final: bool = False) -> None:
        if resume is None:
            return
        state = {"nodes": np.array(nodes, dtype=np.float64).reshape(-1, m),
                 "weights": np.array(weights, dtype=np.float64).reshape(-1, m),
                 "calls": calls[0], "rng": rng}
        resume.put(name, {**state, **(step.to_arrays() if step is not None else {})},
                   key=key, final=final)

    for _ in range(len(nodes), n_runs):
        rng_before = gen.get_state().numpy()  # a resumed run draws its vector again

        def save_step(step: _LanczosState, rng: np.ndarray = rng_before) -> None:
            save(rng, step)

        z = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).to(device, dtype)
        alphas, betas, _ = _lanczos_steps(counted, z, m, start=current,
                                          on_step=save_step if resume is not None else None)
        current = None
        evals, evecs = np.linalg.eigh(_tridiag(alphas, betas))
        pad = m - len(evals)
        nodes.append(np.pad(evals, (0, pad), constant_values=np.nan))
        weights.append(np.pad(evecs[0, :] ** 2, (0, pad)))
        save(gen.get_state().numpy(), final=True)
    node_arr, weight_arr = np.array(nodes), np.array(weights)
    finite = node_arr[np.isfinite(node_arr)]
    lo, hi = float(finite.min()), float(finite.max())
    span = max(hi - lo, 1e-12)
    sigma = float(sigma) if sigma is not None else 0.01 * span
    grid = np.linspace(lo - 5 * sigma - 0.02 * span, hi + 5 * sigma + 0.02 * span, n_grid)
    dens = np.zeros_like(grid)
    for nd, wt in zip(node_arr, weight_arr, strict=True):
        ok = np.isfinite(nd)
        dens += (wt[ok, None] * np.exp(-0.5 * ((grid[None, :] - nd[ok, None]) / sigma) ** 2)
                 ).sum(axis=0) / (sigma * math.sqrt(2 * math.pi))
    dens /= n_runs
    area = float(np.sum((dens[1:] + dens[:-1]) * np.diff(grid)) / 2)  # trapezoid rule
    if area > 0:
        dens /= area
    return SpectralDensity(node_arr, weight_arr, grid, dens, sigma, calls[0])


def layers_with_parameters(model: nn.Module) -> list[str]:
    """Names of modules that own parameters directly (the per-layer Hessian blocks)."""
    return [n for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))]


@dataclass(frozen=True)
class SharpnessReport:
    """Top eigenvalues, trace and density for a model (and per layer)."""

    top: Eigenpairs
    trace: TraceEstimate | None
    density: SpectralDensity | None
    per_layer: dict[str, dict[str, Any]]
    loss: float
    n_params: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_params": self.n_params, "loss": self.loss,
            "top_eigenvalues": self.top.values.tolist(), "top_method": self.top.method,
            "top_n_hvp": self.top.n_hvp, "top_converged": self.top.converged,
            "per_layer": self.per_layer}
        if self.trace is not None:
            out["trace"] = {"mean": self.trace.mean, "stderr": self.trace.stderr,
                            "ci95": list(self.trace.ci95), "n_samples": self.trace.n_samples}
        if self.density is not None:
            out["density"] = {"n_runs": int(self.density.nodes.shape[0]),
                              "n_steps": int(self.density.nodes.shape[1]),
                              "sigma": self.density.sigma, "n_hvp": self.density.n_hvp}
        return out

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None) -> list[Path]:
        """Write ``<path>.json`` (:meth:`to_json` with the ``extra`` fields, e.g. the epoch
        and samples) and ``<path>.npz`` (``eigenvalues``, then ``arrays``, then
        ``trace_samples`` and the density's ``density_grid``, ``density``, ``slq_nodes``,
        ``slq_weights`` where computed), atomically; :func:`load_sharpness` reads them back.
        """
        from shenjing import _io

        base = Path(path).with_suffix("")
        summary = {**self.to_json(), **dict(extra or {})}
        data: dict[str, Any] = {"eigenvalues": self.top.values, **dict(arrays or {})}
        if self.trace is not None:
            data["trace_samples"] = self.trace.samples
        if self.density is not None:
            data.update(density_grid=self.density.grid, density=self.density.density,
                        slq_nodes=self.density.nodes, slq_weights=self.density.weights)
        return [_io.write_json(base.with_suffix(".json"), summary),
                _io.save_npz(base.with_suffix(".npz"), **data)]


def load_sharpness(path: str | os.PathLike[str]) -> tuple[SharpnessReport, dict[str, Any]]:
    """The report :meth:`SharpnessReport.save` wrote at ``path`` (``.json`` or ``.npz``, or
    the stem), and the whole JSON summary (with its extra fields)."""
    import json

    base = Path(path).with_suffix("")
    summary = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    top = Eigenpairs(values=arrays["eigenvalues"], n_hvp=int(summary["top_n_hvp"]),
                     method=str(summary["top_method"]),
                     converged=bool(summary["top_converged"]))
    trace = None
    if "trace" in summary:
        t = summary["trace"]
        trace = TraceEstimate(float(t["mean"]), float(t["stderr"]),
                              (float(t["ci95"][0]), float(t["ci95"][1])), int(t["n_samples"]),
                              arrays["trace_samples"])
    density = None
    if "density" in summary:
        d = summary["density"]
        density = SpectralDensity(arrays["slq_nodes"], arrays["slq_weights"],
                                  arrays["density_grid"], arrays["density"],
                                  float(d["sigma"]), int(d["n_hvp"]))
    report = SharpnessReport(top=top, trace=trace, density=density,
                             per_layer=dict(summary.get("per_layer", {})),
                             loss=float(summary["loss"]), n_params=int(summary["n_params"]))
    return report, summary


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str,
              top_k: int = 5, trace: bool = True, density: bool = False,
              layers: Sequence[str] | None = (), trace_samples: int = 50,
              density_runs: int = 3, density_steps: int = 40, tol: float = 1e-3,
              seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 512,
              dtype: torch.dtype = torch.float32,
              progress: Callable[[str], None] | None = None,
              resume: ResumeFile | None = None) -> SharpnessReport:
    """Top-k eigenvalues (Lanczos), Hutchinson trace and SLQ density of the loss Hessian.

    ``layers``: module names for per-layer blocks (top eigenvalue and trace of each);
    ``None`` means every layer with parameters, ``()`` none. ``resume``: a file keyed by
    these settings (the caller's job: :func:`hessian_settings_key`); every loop saves its
    progress there and continues what a killed run saved (module docs).
    """
    op = HessianOperator(model, x, y, loss=loss, batch_size=batch_size, device=device,
                         dtype=dtype)
    loss_value, _ = op.loss_and_grad()
    if progress:
        progress("top eigenvalues")
    top = lanczos_top(op, op.dim, top_k, tol=tol, seed=seed, resume=resume, name="top")
    tr = None
    if trace:
        if progress:
            progress("trace")
        tr = hutchinson_trace(op, op.dim, n_samples=trace_samples, seed=seed, resume=resume,
                              name="trace")
    dens = None
    if density:
        if progress:
            progress("density")
        dens = slq_density(op, op.dim, n_runs=density_runs, n_steps=density_steps, seed=seed,
                           resume=resume, name="density")
    per_layer: dict[str, dict[str, Any]] = {}
    names = layers_with_parameters(model) if layers is None else list(layers)
    for name in names:
        if progress:
            progress(f"layer {name}")
        lop = HessianOperator(model, x, y, loss=loss, layer=name, batch_size=batch_size,
                              device=device, dtype=dtype)
        ltop = lanczos_top(lop, lop.dim, 1, tol=tol, seed=seed, resume=resume,
                           name=f"layer {name} top")
        entry: dict[str, Any] = {"n_params": lop.dim, "top_eigenvalue": float(ltop.values[0]),
                                 "n_hvp": ltop.n_hvp}
        if trace:
            lt = hutchinson_trace(lop, lop.dim, n_samples=max(2, trace_samples // 2),
                                  seed=seed, resume=resume, name=f"layer {name} trace")
            entry["trace"] = {"mean": lt.mean, "stderr": lt.stderr, "ci95": list(lt.ci95),
                              "n_samples": lt.n_samples}
        per_layer[name] = entry
    return SharpnessReport(top, tr, dens, per_layer, loss_value, op.dim)


def hessian_settings_key(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **settings: Any
                         ) -> str:
    """The key of a Hessian's resume file: the weights and buffers, the samples, every
    setting that changes the numbers (``settings``), and the torch build (its kernels)."""
    from shenjing.analysis.landscape.resume import settings_key
    from shenjing.analysis.landscape.storage import tensor_sha256

    state = model.state_dict()
    return settings_key(weights=tensor_sha256(*[state[k] for k in sorted(state)]),
                        data=tensor_sha256(x, y), torch=torch.__version__, **settings)


def lanczos_bytes(dim: int, itemsize: int, steps: int) -> int:
    """Bytes of a Lanczos run of ``steps`` over ``dim`` parameters: the basis and the
    stacked copy re-orthogonalisation makes of it at every step."""
    return 2 * (int(steps) + 1) * int(dim) * int(itemsize)


def check_hessian_memory(dim: int, *, itemsize: int = 4, max_iter: int = 100,
                         density_steps: int = 0) -> None:
    """Refuse a Hessian whose Lanczos basis (up to ``max_iter`` vectors of ``dim``
    parameters, kept for full re-orthogonalisation) would not fit in memory."""
    from shenjing.capture.activations import format_bytes
    from shenjing.capture.dataset import memory_budget
    from shenjing.errors import ResourceError

    steps = min(max(max_iter, density_steps), dim)
    need = lanczos_bytes(dim, itemsize, steps)
    budget = memory_budget()
    if need > budget:
        raise ResourceError(
            f"the Hessian's Lanczos basis of up to {steps} vectors of {dim:,} parameters needs "
            f"about {format_bytes(need)} of memory but only {format_bytes(budget)} is allowed "
            "(half the memory available now); no hessian option reduces it: per-layer blocks "
            "(shenjing.analysis.hessian.sharpness(..., layers=[...])) are smaller, or use a "
            "machine with more memory")


def top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                   tol: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                   batch_size: int = 512) -> Eigenpairs:
    """The largest Hessian eigenvalue of the loss at the model's weights (Lanczos)."""
    op = HessianOperator(model, x, y, loss=loss, batch_size=batch_size, device=device)
    return lanczos_top(op, op.dim, 1, tol=tol, seed=seed)
