"""Benchmark: a 2-D loss surface evaluated several ways, checked to agree, in ONE run.

    .venv/bin/python bench/landscape.py [--samples 2000] [--grid 51] [--rounds 3]
                                        [--chunk 0] [--round-seconds 8]
                                        [--models mlp,simple_cnn] [--compile] [--full]

Methods, all on the same points of the same 51×51 grid with the same directions:

(a)  naive loop as seed 002 / the reference implementation: set every parameter tensor,
     forward the samples in batches of 128;
(a1) the same with one unchunked batch;
(b)  the ``loss-landscapes`` library (3.0.6) where it is installed: its ``Loss`` metric per
     point (one unchunked batch) on our points for the agreement check, and its own
     ``random_plane`` timed on a 3×3 grid;
(c)  shenjing: ``choose_engine`` (measured choice, recorded; on CPU it also times
     ``torch.compile`` when the grid is long) + ``Evaluator``; and each of its paths forced
     (loop, linear and chain where they apply, vmap over 7 points) for reference.

Times are medians over ``rounds`` interleaved rounds (each round every method evaluates the
same points: as many as the naive loop does in ``--round-seconds``, so fast methods are
timed in steady state, as on a real grid); ms per point; the full-grid time is extrapolated
(× grid²). The bare forward pass at its best batch size and layout (compiled too, when
shenjing compiles) gives the lower bound per point.
Results go to bench/results/landscape.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape import (
    EngineConfig,
    Evaluator,
    choose_engine,
    find_first_layer,
    flat_params,
    make_axis,
    random_directions,
)
from shenjing.data import load_dataset
from shenjing.models import build_model

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def naive_loop(model: nn.Module, dirs: torch.Tensor, x, y, points, batch: int | None):
    """Seed 002 / reference way: write each parameter tensor, forward in batches."""
    net = copy.deepcopy(model).eval()
    params = list(net.parameters())
    base = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]
    d1 = [t.view_as(p) for t, p in zip(dirs[0].split(sizes), params, strict=True)]
    d2 = [t.view_as(p) for t, p in zip(dirs[1].split(sizes), params, strict=True)]
    out = []
    bs = batch or len(x)
    with torch.no_grad():
        for a, b in points:
            for p, w, u, v in zip(params, base, d1, d2, strict=True):
                p.data = w + a * u + b * v
            total = 0.0
            for i in range(0, len(x), bs):
                total += float(nn.functional.cross_entropy(net(x[i:i + bs]), y[i:i + bs],
                                                           reduction="sum"))
            out.append(total / len(x))
    return np.array(out)


def ll_metric(model: nn.Module, dirs: torch.Tensor, x, y, points):
    """loss-landscapes' per-point evaluation (its Loss metric, one unchunked batch)."""
    from loss_landscapes.metrics import Loss
    from loss_landscapes.model_interface.model_wrapper import wrap_model

    net = copy.deepcopy(model).eval()
    wrapper = wrap_model(net)
    mp = wrapper.get_module_parameters()
    base = [p.detach().clone() for p in mp.parameters]
    sizes = [p.numel() for p in base]
    d1 = [t.view_as(p) for t, p in zip(dirs[0].split(sizes), base, strict=True)]
    d2 = [t.view_as(p) for t, p in zip(dirs[1].split(sizes), base, strict=True)]
    metric = Loss(nn.CrossEntropyLoss(), x, y)
    out = []
    with torch.no_grad():
        for a, b in points:
            for p, w, u, v in zip(mp.parameters, base, d1, d2, strict=True):
                p.copy_(w + a * u + b * v)
            out.append(metric(wrapper))
    return np.array(out)


def ll_random_plane_ms(model: nn.Module, x, y, steps: int = 3) -> float:
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    metric = Loss(nn.CrossEntropyLoss(), x, y)
    t0 = time.perf_counter()
    with torch.no_grad():
        loss_landscapes.random_plane(copy.deepcopy(model).eval(), metric, distance=1,
                                     steps=steps, normalization="filter")
    return (time.perf_counter() - t0) * 1e3 / steps ** 2


def forward_bound(model: nn.Module, x, compiled: bool = False) -> tuple[float, str]:
    """Fastest full pass over x (ms) over batch sizes and memory layouts (and, with
    ``compiled``, under ``torch.compile``)."""
    best, label = math.inf, ""
    net = copy.deepcopy(model).eval()
    with torch.inference_mode():
        for cl in ([False, True] if x.ndim == 4 else [False]):
            n2 = net.to(memory_format=torch.channels_last) if cl else net
            fwd = torch.compile(n2) if compiled else n2
            xc = x.contiguous(memory_format=torch.channels_last) if cl else x
            for bs in (128, 256, 512, len(x)):
                for i in range(0, len(x), bs):  # warm-up (and compile for each shape)
                    fwd(xc[i:i + bs])
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(0, len(x), bs):
                        fwd(xc[i:i + bs])
                    times.append(time.perf_counter() - t0)
                t = statistics.median(times) * 1e3
                if t < best:
                    best, label = t, (f"bs={bs}{' channels_last' if cl else ''}"
                                      f"{' compiled' if compiled else ''}")
    return best, label


def points_per_round(model: nn.Module, dirs: torch.Tensor, x, y, args) -> int:
    """``--chunk``, or (0) as many points as the naive loop evaluates in
    ``--round-seconds``: enough for steady-state timings of the fast methods."""
    if args.chunk:
        return args.chunk
    naive_loop(model, dirs, x, y, np.zeros((1, 2)), 128)
    t0 = time.perf_counter()
    naive_loop(model, dirs, x, y, np.zeros((2, 2)), 128)
    per_point = (time.perf_counter() - t0) / 2
    return int(min(args.grid ** 2, max(2, args.round_seconds / per_point)))


def bench_model(name: str, x, y, args, lines: list[str]) -> None:
    torch.manual_seed(0)
    model = build_model(name, tuple(x.shape[1:]), 10).eval()
    dirs = random_directions(model, 2, seed=0).vectors
    center = flat_params(model)
    axis = make_axis(-1, 1, args.grid)
    rng = np.random.default_rng(0)
    per_round = points_per_round(model, dirs, x, y, args)
    n_pts = args.rounds * per_round
    pts = np.stack([rng.choice(axis, n_pts), rng.choice(axis, n_pts)], axis=1)
    pts[0] = 0.0
    t0 = time.perf_counter()
    cfg = choose_engine(model, center, dirs, x, y, loss="cross_entropy",
                        classification=True, config=EngineConfig(device="cpu"),
                        n_points=args.grid ** 2)
    choose_s = time.perf_counter() - t0
    auto_label = f"{cfg.path}{' + torch.compile' if cfg.compile else ''}"
    print(f"[{name}] chose {auto_label} batch {cfg.batch_size} channels_last "
          f"{cfg.channels_last} in {choose_s:.1f}s: {cfg.reason}")

    def shenjing_eval(config):
        ev = Evaluator(model, center, dirs, x, y, loss="cross_entropy", classification=True,
                       config=config)
        return lambda p: ev.evaluate(p)[0]

    bound_ms0, bound_label = forward_bound(model, x)
    if cfg.compile or args.compile:
        # the bound for a compiled evaluation is the compiled forward pass
        bound_c, label_c = forward_bound(model, x, compiled=True)
        if bound_c < bound_ms0:
            bound_ms0, bound_label = bound_c, label_c
    bound_bs = int(bound_label.split("=")[1].split()[0])
    bound_cl = "channels_last" in bound_label
    bare = copy.deepcopy(model).eval()
    xb_bound = x
    if bound_cl:
        bare = bare.to(memory_format=torch.channels_last)
        xb_bound = x.contiguous(memory_format=torch.channels_last)
    if "compiled" in bound_label:
        bare = torch.compile(bare)

    def bare_forward(p):
        # the lower bound: one forward pass over the samples per point, nothing else
        with torch.inference_mode():
            for _ in range(len(p)):
                for i in range(0, len(x), bound_bs):
                    bare(xb_bound[i:i + bound_bs])
        return np.full(len(p), np.nan)

    methods = {
        "(a) naive loop, batches of 128": lambda p: naive_loop(model, dirs, x, y, p, 128),
    }
    if args.full:
        methods["(a1) naive loop, one batch"] = lambda p: naive_loop(model, dirs, x, y, p,
                                                                     None)
    try:
        import loss_landscapes  # noqa: F401

        methods["(b) loss-landscapes Loss metric"] = lambda p: ll_metric(model, dirs, x, y, p)
        have_ll = True
    except ImportError:
        have_ll = False
    methods[f"(c) shenjing auto → {auto_label}"] = shenjing_eval(cfg)
    base = dict(batch_size=cfg.batch_size, channels_last=cfg.channels_last, device="cpu")
    methods["(c) shenjing loop"] = shenjing_eval(EngineConfig(path="loop", **base))
    if find_first_layer(model, x)[0] is not None:
        methods["(c) shenjing linear"] = shenjing_eval(EngineConfig(path="linear", chunk=32,
                                                                    **base))
    if cfg.path != "chain" and "chain" in cfg.reason:
        methods["(c) shenjing chain"] = shenjing_eval(EngineConfig(path="chain", chunk=8,
                                                                   batch_size=len(x),
                                                                   device="cpu"))
    if args.full and find_first_layer(model, x)[0] is not None:
        methods["(c) shenjing linear-vmap"] = shenjing_eval(
            EngineConfig(path="linear-vmap", chunk=32, batch_size=len(x), device="cpu"))
    methods["(c) shenjing vmap (7 points/chunk)"] = shenjing_eval(
        EngineConfig(path="vmap", chunk=7, batch_size=cfg.batch_size, device="cpu"))
    if args.compile and not cfg.compile:
        t0 = time.perf_counter()
        comp = shenjing_eval(EngineConfig(path="loop", compile=True, **base))
        comp(pts[:1])
        print(f"[{name}] torch.compile warm-up {time.perf_counter() - t0:.1f}s")
        methods["(c) shenjing loop + torch.compile"] = comp
    methods[f"bare forward pass ({bound_label}) = lower bound"] = bare_forward
    times: dict[str, list[float]] = {m: [] for m in methods}
    values: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for fn in methods.values():  # warm-up
        fn(pts[:1])
    for r in range(args.rounds):
        chunk = pts[r * per_round:(r + 1) * per_round]
        for m, fn in methods.items():
            t0 = time.perf_counter()
            values[m].append(np.asarray(fn(chunk)))
            times[m].append((time.perf_counter() - t0) * 1e3 / len(chunk))
    ref = np.concatenate(values["(a) naive loop, batches of 128"])
    bound_ms = statistics.median(times[f"bare forward pass ({bound_label}) = lower bound"])
    ll_plane = ll_random_plane_ms(model, x, y) if have_ll else float("nan")
    shen = statistics.median(times[f"(c) shenjing auto → {auto_label}"])
    naive = statistics.median(times["(a) naive loop, batches of 128"])
    lines.append(f"\n### `{name}` ({sum(p.numel() for p in model.parameters()):,} parameters),"
                 f" {len(x)} MNIST test samples, {args.grid}×{args.grid} grid\n")
    lines.append(f"{per_round} points per method per round, {args.rounds} rounds.\n")
    layout = f", channels_last={cfg.channels_last}" if x.ndim == 4 else ""
    lines.append(f"shenjing's measured choice: **{auto_label}**, batch {cfg.batch_size}"
                 f"{layout} ({cfg.reason}; measuring took "
                 f"{choose_s:.1f} s)\n")
    lines.append("| method | ms / point (median) | full grid (s, extrapolated) | "
                 "naive(a) ÷ method | max rel. diff vs (a) |")
    lines.append("|---|---:|---:|---:|---:|")
    for m in methods:
        med = statistics.median(times[m])
        got = np.concatenate(values[m])
        diff = "—" if np.isnan(got).all() else \
            f"{float(np.max(np.abs(got - ref) / np.abs(ref))):.1e}"
        lines.append(f"| {m} | {med:.2f} | {med * args.grid ** 2 / 1e3:.1f} | "
                     f"{naive / med:.2f}× | {diff} |")
    if have_ll:
        lines.append(f"| (b) loss-landscapes `random_plane` (own U[0,1) directions, 3×3) | "
                     f"{ll_plane:.2f} | {ll_plane * args.grid ** 2 / 1e3:.1f} | "
                     f"{naive / ll_plane:.2f}× | n/a (other directions) |")
    lines.append("")
    lines.append(f"- shenjing vs (a): **{naive / shen:.1f}×** faster; "
                 + (f"vs (b) loss-landscapes metric: **"
                    f"{statistics.median(times['(b) loss-landscapes Loss metric']) / shen:.1f}×**; "
                    if have_ll else "")
                 + f"shenjing ÷ forward bound: **{shen / bound_ms:.2f}**")
    print("\n".join(lines[-(len(methods) + 8):]))
    print(f"[{name}] forward bound measured alone before the rounds: {bound_ms0:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--grid", type=int, default=51)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=0,
                    help="points per method per round [0: what the naive loop does in "
                         "--round-seconds]")
    ap.add_argument("--round-seconds", type=float, default=8.0)
    ap.add_argument("--models", default="mlp,simple_cnn")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--full", action="store_true",
                    help="also time the one-batch naive loop and linear-vmap")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every method (1: steadier on a shared CPU)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "landscape.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist", data_dir=MNIST, progress=False)
    test = data.test.subset(args.samples, seed=0)
    x, y = test.x, test.y
    try:
        import loss_landscapes

        ll_version = getattr(loss_landscapes, "__version__", "3.0.6")
    except ImportError:
        ll_version = "not installed"
    lines = ["# Landscape benchmark (bench/landscape.py)\n",
             f"Machine: {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch threads, shared 2-core CPU (absolute times "
             "vary with its load: "
             f"quote the ratios, not the absolute times); torch {torch.__version__}; "
             f"loss-landscapes {ll_version}. Run: `.venv/bin/python bench/landscape.py "
             f"--samples {args.samples} --grid {args.grid} --rounds {args.rounds} "
             f"--chunk {args.chunk} --round-seconds {args.round_seconds:g} "
             f"--models {args.models} --threads {args.threads}"
             f"{' --compile' if args.compile else ''}`.\n",
             "Each round every method evaluates the same grid points "
             "(interleaved); medians over rounds. All methods use the same filter-normalized "
             "directions; 'max rel. diff' compares their losses at the same points.\n"]
    for name in args.models.split(","):
        bench_model(name.strip(), x, y, args, lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
