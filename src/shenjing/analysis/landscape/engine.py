"""The evaluation engine: loss (and accuracy) at many points θ* + Σ aₖ·dₖ, exactly and fast.

Five paths compute the same numbers, one class each in :mod:`.paths` (``loop``, ``linear``,
``chain``, ``vmap``, ``linear-vmap``). This module chooses between them:
:func:`choose_engine` times the applicable ones on the actual model, samples and device and
returns the fastest as an :class:`~shenjing.analysis.landscape.config.EngineConfig` with the
measurements, so a run records why a path was used; :class:`Evaluator` runs the path a
config names. The user's model is never touched: every path works on a deep copy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.config import (
    PATHS,
    EngineConfig,
    intra_op_threads,
    torch_dtype,
    validate_config,
)
from shenjing.analysis.landscape.paths import (
    PATH_TYPES,
    Batch,
    ChainPath,
    EvaluationPath,
    LinearPath,
    find_first_layer,
)
from shenjing.errors import UsageError


class Evaluator:
    """Evaluates loss/accuracy at points ``center + coeffs @ directions`` over fixed samples.

    ``center``: flat ``(n_params,)``; ``directions``: ``(k, n_params)``; ``x``/``y`` the
    samples (moved to the device once). ``loss`` is a name (``cross_entropy``, ``nll``,
    ``mse``). ``config.path`` names the path (:data:`PATHS`); batch size, layout, compile and
    chunk left open take fixed defaults (:meth:`EngineConfig.with_fixed_defaults`).
    ``bn='recompute'`` re-estimates BatchNorm statistics at every point from ``bn_data``
    (loop path only). Call :meth:`evaluate` with ``coeffs`` ``(n_points, k)``.
    """

    def __init__(self, model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                 x: torch.Tensor, y: torch.Tensor, *, loss: str, classification: bool,
                 config: EngineConfig, bn_data: torch.Tensor | None = None) -> None:
        if config.path == "auto":
            raise UsageError("an Evaluator runs one path: name it in the config, or let "
                             "choose_engine measure which is fastest")
        if config.path not in PATHS:
            raise UsageError(f"unknown evaluation path {config.path!r}; choose one of "
                             f"{', '.join(PATHS)} or auto")
        device = validate_config(config)
        if config.bn == "recompute" and bn_data is None:
            raise UsageError("bn='recompute' needs bn_data: training inputs to re-estimate "
                             "BatchNorm statistics from")
        self.config = replace(config.with_fixed_defaults(), device=str(device))
        self.path: EvaluationPath = PATH_TYPES[config.path](
            model, center, directions, x, y, loss=loss, classification=classification,
            config=self.config, bn_data=bn_data)

    def evaluate(self, coeffs: np.ndarray | Sequence[Sequence[float]],
                 callback: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss and accuracy at each point: two ``(n_points,)`` float64 arrays.

        ``coeffs`` is ``(n_points, k)``. ``callback(n)`` is called after each ``n`` points.
        Non-finite losses are returned as they are (the caller records them).
        """
        return self.path.evaluate(coeffs, callback)


def nothing_to_compute(device: str, bn: str) -> EngineConfig:
    """The config recorded for a landscape whose every point was already on disk."""
    return EngineConfig(path="none", device=device, bn=bn,
                        reason="every point was already computed").with_fixed_defaults()


def _vmap_chunk(device: torch.device, n_params: int, n_samples: int, batch: int,
                activation_floats: int) -> int:
    """Grid points per vmap chunk: what fits in a quarter of free GPU memory (8 on CPU)."""
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    per_point = 4 * (n_params + activation_floats * min(batch, n_samples))
    return int(max(1, min(256, (free // 4) // max(per_point, 1))))


def _widest(net: nn.Module) -> int:
    return max((m.out_features for m in net.modules() if isinstance(m, nn.Linear)), default=1)


def _chain_chunk(device: torch.device, net: nn.Module, n_samples: int) -> int:
    """Grid points per chunk on the chain path: 8 on CPU (measured best with one thread),
    on CUDA what fits in a quarter of free memory."""
    if device.type != "cuda":
        return 8
    free, _ = torch.cuda.mem_get_info(device)
    per_point = 4 * 4 * _widest(net) * min(n_samples, 8192)  # a few activations per point
    return int(max(1, min(1024, (free // 4) // per_point)))


def _chain_block(device: torch.device, net: nn.Module, n_samples: int, chunk: int,
                 dtype: torch.dtype) -> int:
    """Samples per block on the chain path. On CPU the chunk's widest activation should
    stay in a core's L2 cache (~1 MiB: 256 samples for 8 points × 128 units in float32,
    measured 20 % faster than all 2,000 at once); on CUDA all samples (up to 8,192)."""
    if device.type == "cuda":
        return min(n_samples, 8192)
    block = (2**20) // max(1, chunk * _widest(net) * dtype.itemsize)
    return int(min(n_samples, max(64, block)))


def _fastest_forward(net: nn.Module, xd: torch.Tensor, *, batch_size: int | None,
                     channels_last: bool | None, threads: int | None, small: bool,
                     measurements: dict[str, float]) -> tuple[int, bool, int | None]:
    """The batch size, memory layout and thread count of the fastest forward pass of
    ``net`` over ``xd``, among those not given; each timing goes into ``measurements``."""
    meas, dev, n = measurements, xd.device, int(xd.shape[0])
    cands_bs = [batch_size] if batch_size else sorted({min(n, b) for b in (128, 512, n)})
    cands_cl = [channels_last] if channels_last is not None else (
        [False, True] if xd.ndim == 4 else [False])
    # a shared CPU can make every multi-threaded op wait for a descheduled thread:
    # measure one thread against the current count
    cands_th: list[int | None] = [threads]
    if not threads and dev.type == "cpu":
        cands_th = list(sorted({torch.get_num_threads(), 1}))
    if small:
        cands_bs, cands_cl, cands_th = [min(n, 256)], [False], [threads]
    best = (math.inf, cands_bs[0], cands_cl[0], threads)
    with torch.inference_mode():
        for th in cands_th:
            for cl in cands_cl:
                netc = net.to(memory_format=torch.channels_last) if cl else net  # type: ignore[call-overload]
                # time on at most 1,024 samples: the ranking is what matters
                xs = xd[:min(n, 1024)]
                xc = xs.contiguous(memory_format=torch.channels_last) if cl else xs
                m = len(xc)
                for bs in cands_bs:
                    with intra_op_threads(th):
                        t = _time(lambda netc=netc, xc=xc, bs=bs, m=m:  # type: ignore[misc]
                                  [netc(xc[i:i + bs]) for i in range(0, m, bs)])
                    meas[f"forward bs={bs}{' channels_last' if cl else ''} "
                         f"threads={th}"] = t * 1e3
                    if t < best[0]:
                        best = (t, bs, cl, th)
    return best[1], best[2], best[3]


def _candidate_paths(net: nn.Module, batch: Batch, config: EngineConfig,
                     device: torch.device) -> list[str]:
    """The paths worth timing: the one given, else the loop and every path that applies
    here (the vmap paths on CUDA only: on CPU batched weights are grouped convolutions,
    measured slower)."""
    if config.path != "auto":
        return [config.path]
    candidates = ["loop"]
    if config.bn != "eval":
        return candidates
    if config.precision != "exact":
        return candidates + (["vmap"] if device.type == "cuda" else [])  # forward-pass paths
    linear_applies = LinearPath.applies(net, batch) is None
    if linear_applies:
        candidates.append("linear")
        if ChainPath.applies(net, batch) is None:
            candidates.append("chain")
    if device.type == "cuda":
        candidates += ["vmap"] + (["linear-vmap"] if linear_applies else [])
    return candidates


def choose_engine(model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                  x: torch.Tensor, y: torch.Tensor, *, loss: str, classification: bool,
                  config: EngineConfig | None = None, n_points: int = 0,
                  probe_points: int = 2, bn_data: torch.Tensor | None = None
                  ) -> EngineConfig:
    """Pick the fastest exact way to evaluate this model here, by timing the candidates.

    First the forward pass alone is timed for a few batch sizes (and ``channels_last`` for
    image inputs); then each applicable path is timed on ``probe_points`` grid points with
    the best of those. ``compile=None`` (auto) also times ``torch.compile`` on the CPU loop
    path when the grid would take long enough for compiling to pay
    (:data:`COMPILE_WORTH_S`). Anything passed explicitly is used as given. The returned
    config carries the measurements (ms per point) and the reason for the choice. The
    chunk (points per evaluation call) is always sized here, for the path chosen.
    ``bn_data`` are the inputs that ``bn='recompute'`` re-estimates BatchNorm statistics from
    (the timed evaluations need them too).
    """
    config = EngineConfig() if config is None else config
    dev = validate_config(config)
    path, bn, dtype, precision = config.path, config.bn, config.dtype, config.precision
    batch_size, channels_last = config.batch_size, config.channels_last
    compile, threads = config.compile, config.threads
    dt = torch_dtype(dtype)
    n = int(x.shape[0])
    threads_given = threads is not None
    meas: dict[str, float] = {}
    net = copy.deepcopy(model).to(dev, dt).eval()
    xd = x.to(dev, dt)
    small = n_points and n_points <= 4
    if batch_size is None or (channels_last is None and x.ndim == 4):
        batch_size, channels_last, threads = _fastest_forward(
            net, xd, batch_size=batch_size, channels_last=channels_last, threads=threads,
            small=bool(small), measurements=meas)
    channels_last = bool(channels_last)
    bs = int(batch_size)
    candidates = _candidate_paths(net, Batch(xd, y, loss), config, dev)
    first, _ = find_first_layer(net, xd)
    act = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
    chunk_for = {"loop": 1, "linear": 32, "linear-vmap": 32,
                 "chain": _chain_chunk(dev, net, n),
                 "vmap": _vmap_chunk(dev, center.numel(), n, bs, 64 * max(act, 1))}
    compile_args: dict[str, Any] = dict(model=model, center=center, directions=directions, x=x, y=y,
                        loss=loss, classification=classification, n_points=n_points,
                        probe_points=probe_points, bn_data=bn_data)
    if len(candidates) == 1 or small:
        config = EngineConfig(path=candidates[0], batch_size=bs, channels_last=channels_last,
                              compile=bool(compile), dtype=dtype, device=str(dev),
                              threads=threads, chunk=chunk_for[candidates[0]], bn=bn,
                              precision=precision, measurements=meas,
                              reason="given" if path != "auto" else "only applicable path")
        if compile is None and not small:
            config = _compile_if_it_pays(config, None, **compile_args)
        return _pin_threads(config)
    timings: dict[tuple[str, int, int | None], float] = {}
    for cand in candidates:
        # the chain path evaluates a chunk of points at once: time it on one full chunk
        n_probe = max(probe_points, chunk_for[cand]) if cand == "chain" else probe_points
        probe = _probe_points(n_probe, directions.shape[0])
        # the linear path does little per sample once its first-layer outputs are cached:
        # one batch of everything may pay (tried for a Linear first layer, whose cache is
        # small; a conv's outputs would not fit)
        first_is_linear = first is not None and first.kind == "linear"
        sizes = [bs, n] if cand in ("linear", "linear-vmap") and first_is_linear \
            and bs < n <= 8192 else [bs]
        thread_counts: list[int | None] = [threads]
        if cand == "chain":
            sizes = [_chain_block(dev, net, n, chunk_for[cand], dt)]
            # its small batched products can lose more to a second thread than they gain
            # (measured 0.44 vs 0.16 ms/point on our 2 cores), whatever the forward preferred
            if dev.type == "cpu" and not threads_given and threads != 1:
                thread_counts.append(1)
        for b in sizes:
            for th in thread_counts:
                cfg = EngineConfig(path=cand, batch_size=b, channels_last=channels_last,
                                   compile=bool(compile), dtype=dtype, device=str(dev),
                                   threads=th, chunk=min(chunk_for[cand], n_probe), bn=bn,
                                   precision=precision)
                ev = Evaluator(model, center, directions, x, y, loss=loss,
                               classification=classification, config=cfg, bn_data=bn_data)
                ev.evaluate(probe[:1])  # warm-up (and the linear path's cache)
                t = _time(lambda ev=ev, probe=probe: ev.evaluate(probe),  # type: ignore[misc]
                          repeat=2) / n_probe
                timings[(cand, b, th)] = t
                label = f" threads={th}" if len(thread_counts) > 1 else ""
                meas[f"path {cand} bs={b}{label} (ms/point)"] = t * 1e3
    winner, wbs, wth = min(timings, key=lambda k: timings[k])
    reason = "fastest measured: " + ", ".join(
        f"{k} (batch {b}{f', {th} threads' if th != threads else ''}) {v * 1e3:.1f} ms/point"
        for (k, b, th), v in sorted(timings.items(), key=lambda kv: str(kv[0])))
    config = EngineConfig(path=winner, batch_size=wbs, channels_last=channels_last,
                          compile=bool(compile), dtype=dtype, device=str(dev),
                          chunk=chunk_for[winner], threads=wth, bn=bn,
                          precision=precision, measurements=meas, reason=reason)
    if compile is None:
        config = _compile_if_it_pays(config, timings[(winner, wbs, wth)], **compile_args)
    return _pin_threads(config)


def _pin_threads(config: EngineConfig) -> EngineConfig:
    """A CPU config names the thread count it runs with (None would mean "whatever the
    process has", and a resume in another process could then sum in another order)."""
    if config.threads is None and torch.device(config.device).type == "cpu":
        return replace(config, threads=torch.get_num_threads())
    return config


COMPILE_WORTH_S = 60.0
"""Eager seconds a grid must be expected to take before ``torch.compile`` is tried (compiling
a small CNN took 4–8 s on our 2-core CPU and saved ~30 % per point)."""


def _compile_if_it_pays(config: EngineConfig, eager_s_per_point: float | None, *,
                        model: nn.Module, center: torch.Tensor, directions: torch.Tensor,
                        x: torch.Tensor, y: torch.Tensor, loss: str, classification: bool,
                        n_points: int, probe_points: int,
                        bn_data: torch.Tensor | None = None) -> EngineConfig:
    """``torch.compile`` is tried for the CPU loop path when the grid would take at least
    :data:`COMPILE_WORTH_S` eager seconds (the eager loop is timed here if it was not)."""
    if config.path != "loop" or config.compile or torch.device(config.device).type != "cpu" \
            or not n_points:
        return config
    probe = _probe_points(probe_points, directions.shape[0])
    if eager_s_per_point is None:
        ev = Evaluator(model, center, directions, x, y, loss=loss,
                       classification=classification, config=config, bn_data=bn_data)
        eager_s_per_point = _time(lambda: ev.evaluate(probe), repeat=1) / probe_points
    if eager_s_per_point * n_points < COMPILE_WORTH_S:
        return config
    return _try_compile(config, model, center, directions, x, y, loss=loss,
                        classification=classification, eager_s_per_point=eager_s_per_point,
                        probe_points=probe_points, bn_data=bn_data)


def _try_compile(config: EngineConfig, model: nn.Module, center: torch.Tensor,
                 directions: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                 classification: bool, eager_s_per_point: float,
                 probe_points: int, bn_data: torch.Tensor | None = None) -> EngineConfig:
    """Time the loop path under ``torch.compile``; use it if it is faster per point.

    For image inputs both memory layouts are tried: compiled code can prefer another layout
    than eager (measured here at 2 threads: channels_last 84 ms vs 117 ms per 2,000 images
    compiled, while eager preferred NCHW). Compiling happens once per process and layout (a
    later copy of the same model reuses it), so warm-ups are recorded but not charged
    against the grid. A failure (no C++ compiler, an unsupported model) is recorded and the
    eager config kept.
    """
    meas = dict(config.measurements)
    probe = _probe_points(probe_points, directions.shape[0])
    layouts = [bool(config.channels_last)] + ([not config.channels_last] if x.ndim == 4 else [])
    best: tuple[float, bool] | None = None
    for channels_last in layouts:
        trial = replace(config, compile=True, channels_last=channels_last, measurements={})
        label = " channels_last" if channels_last else ""
        try:
            t0 = time.perf_counter()
            ev = Evaluator(model, center, directions, x, y, loss=loss,
                           classification=classification, config=trial, bn_data=bn_data)
            ev.evaluate(probe[:1])
            meas[f"torch.compile{label} warm-up (s)"] = time.perf_counter() - t0
            t = _time(lambda ev=ev: ev.evaluate(probe), repeat=2) / probe_points  # type: ignore[misc]
        except Exception as exc:  # compiling is an optimisation: never fatal here
            meas["torch.compile failed"] = math.nan
            return replace(config, measurements=meas,
                           reason=f"{config.reason}; torch.compile failed "
                                  f"({type(exc).__name__}), eager kept")
        meas[f"path loop + torch.compile{label} (ms/point)"] = t * 1e3
        if best is None or t < best[0]:
            best = (t, channels_last)
    assert best is not None
    t, channels_last = best
    note = (f"loop + torch.compile{' channels_last' if channels_last else ''} "
            f"{t * 1e3:.1f} ms/point")
    if t < eager_s_per_point:
        return replace(config, compile=True, channels_last=channels_last, measurements=meas,
                       reason=f"{config.reason}, {note} (chosen)")
    return replace(config, measurements=meas, reason=f"{config.reason}, {note} (not faster)")


def _probe_points(n: int, k: int) -> np.ndarray:
    """``n`` timing points with ``k`` coordinates spread over [-0.5, 0.5]."""
    return np.linspace(-0.5, 0.5, n * k).reshape(n, k)


def _time(fn: Callable[[], Any], repeat: int = 2) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call (seconds)."""
    fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
