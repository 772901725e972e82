"""Benchmark: a landscape grid on this machine's engine and on Ray with 1 and 2 workers.

The same 31×31 filter-normalized plane of ``simple_cnn`` (421,642 parameters, seeded
weights: the cost of a point does not depend on their values) on the first 2,000 images
of the MNIST test set (``--data``), computed:

1. by the local engine with one torch thread (the settings each Ray worker runs), and with
   two (what one process gets on this 2-core machine);
2. on a local Ray instance (``ray.init(num_cpus=2)``, started once before the timings) with
   1 and with 2 workers, one CPU and one torch thread each, the tile size chosen by
   shenjing (about a second of compute per tile), the engine settings fixed to the ones the
   local one-thread engine chose, so the surfaces must be equal bit for bit;
3. on Ray with 2 workers at several tile sizes, to show where the per-tile overhead (Ray's
   calls, transfers, the driver's writes; the time workers were not computing) falls
   below 5 % of a tile's compute.

4. for docs/scale.md's estimate, the cost of one point of a CIFAR-sized ResNet-56 (He et
   al. 2016: three stages of nine basic blocks, 16/32/64 channels, 0.85 M parameters) on
   ``--resnet-samples`` random 3×32×32 inputs, with the local engine, one thread.

Prints the machine, the times (medians of ``--rounds``), the speed-ups, the scaling
efficiency (speed-up over the 1-worker run / workers) and the overhead per tile, and writes
``bench/results/ray_landscape.md``.

    python bench/ray_landscape.py [--data ../shared/data/mnist] [--n 2000] [--steps 31]
                                  [--rounds 1] [--tiles 8,32,auto] [--resnet-samples 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _timing import median_time  # noqa: E402


def resnet56() -> Any:
    """The CIFAR ResNet-56 of He et al. (2016), §4.2: 3×3 conv, three stages of nine basic
    blocks (16, 32, 64 channels; stride 2 between stages, 1×1 projection shortcuts),
    global average pooling, a linear layer to 10 classes."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential() if stride == 1 and c_in == c_out else \
                nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                              nn.BatchNorm2d(c_out))

        def forward(self, x: Any) -> Any:
            out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (out + self.shortcut(x)).relu()

    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                               nn.ReLU()]
    c_in = 16
    for c_out, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(9):
            layers.append(Block(c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tiles", default="8,32,auto")
    parser.add_argument("--resnet-samples", type=int, default=500)
    parser.add_argument("--out", default=str(HERE / "results" / "ray_landscape.md"))
    args = parser.parse_args(argv)

    import numpy as np
    import ray
    import torch

    import shenjing
    from shenjing import _io
    from shenjing.analysis.landscape import plane
    from shenjing.backend import Backend
    from shenjing.data import load_dataset
    from shenjing.models import build_model

    torch.manual_seed(0)
    test = load_dataset("mnist", data_dir=args.data).test
    x, y = test.x[: args.n].float(), test.y[: args.n]
    model = build_model("simple_cnn", tuple(x.shape[1:]), 10).eval()
    grid = dict(loss="cross_entropy", steps=args.steps, range_=(-1.0, 1.0), device="cpu")
    points = args.steps ** 2
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU(s) visible, torch "
               f"{torch.__version__}, ray {ray.__version__}, Python "
               f"{platform.python_version()}, shenjing {shenjing.__version__}")
    print(machine)
    print(f"simple_cnn ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{len(x)} MNIST test images, {args.steps}×{args.steps} = {points} points, "
          f"rounds {args.rounds}")
    lines = ["# Ray landscape benchmark", "", f"Machine: {machine}", "",
             f"simple_cnn (seeded weights), {len(x)} MNIST test images, "
             f"{args.steps}×{args.steps} filter-normalized plane ({points} points); medians "
             f"of {args.rounds} round(s); Ray's start is not in the times.", ""]

    t_local1, local1 = median_time(lambda: plane(model, x, y, threads=1, **grid), args.rounds)
    engine = local1.meta["engine"]
    fixed = dict(engine=engine["path"], batch_size=engine["batch_size"], threads=1)
    print(f"local engine, 1 thread: {t_local1:.1f} s ({engine['path']}, batch "
          f"{engine['batch_size']}; {1e3 * t_local1 / points:.1f} ms/point)")
    t_local2, _ = median_time(lambda: plane(model, x, y, threads=2, **grid), args.rounds)
    print(f"local engine, 2 threads: {t_local2:.1f} s")

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    t_init = time.perf_counter() - t0
    print(f"ray.init (local instance, 2 CPUs): {t_init:.1f} s")
    results: dict[str, Any] = {}
    try:
        for workers in (1, 2):
            t, ls = median_time(lambda w=workers: plane(   # type: ignore[misc]
                model, x, y, backend=Backend("ray", workers=w), **{**grid, **fixed}),
                args.rounds)
            results[f"ray{workers}"] = (t, ls)
            rec = ls.meta["backend"]
            same = bool(np.array_equal(ls.loss, local1.loss))
            print(f"ray, {workers} worker(s): {t:.1f} s; {rec['n_tiles']} tiles of "
                  f"{rec['tile_points']} points; overhead {rec['overhead_per_tile_s'] * 1e3:.1f}"
                  f" ms/tile = {100 * rec['overhead_share']:.1f} % of compute; equal to local "
                  f"bit for bit: {same}")
        sweep = []
        for tile in args.tiles.split(","):
            size = None if tile == "auto" else int(tile)
            t, ls = median_time(lambda s=size: plane(  # type: ignore[misc]
                model, x, y, backend=Backend("ray", workers=2, tile=s), **{**grid, **fixed}),
                1)
            rec = ls.meta["backend"]
            compute = rec["compute_s"] / max(rec["n_tiles"], 1)
            sweep.append((tile, rec["tile_points"], rec["n_tiles"], compute,
                          rec["overhead_per_tile_s"], rec["overhead_share"], t))
            print(f"tile {tile}: {rec['tile_points']} points, {rec['n_tiles']} tiles, "
                  f"{compute * 1e3:.0f} ms compute/tile, overhead "
                  f"{rec['overhead_per_tile_s'] * 1e3:.1f} ms/tile = "
                  f"{100 * rec['overhead_share']:.1f} %, {t:.1f} s")
    finally:
        ray.shutdown()

    t1, ls1 = results["ray1"]
    t2, ls2 = results["ray2"]
    identical = bool(np.array_equal(ls1.loss, local1.loss)) and \
        bool(np.array_equal(ls2.loss, local1.loss))
    efficiency = (t1 / t2) / 2
    vs_local = (t_local1 / t2) / 2
    summary = (f"2 workers vs 1 worker: speed-up {t1 / t2:.2f}×, scaling efficiency "
               f"{efficiency:.2f} (goal ≥ 0.8); vs the local 1-thread engine {t_local1 / t2:.2f}× "
               f"(efficiency {vs_local:.2f}); vs the local 2-thread engine "
               f"{t_local2 / t2:.2f}×")
    print(summary)
    lines += ["| run | time (s) | ratio to local 1 thread |", "|---|---|---|",
              f"| local engine, 1 thread ({engine['path']}, batch {engine['batch_size']}) | "
              f"{t_local1:.1f} | 1.00 |",
              f"| local engine, 2 threads | {t_local2:.1f} | {t_local1 / t_local2:.2f} |",
              f"| Ray, 1 worker × 1 thread | {t1:.1f} | {t_local1 / t1:.2f} |",
              f"| Ray, 2 workers × 1 thread | {t2:.1f} | {t_local1 / t2:.2f} |", "",
              f"- {summary}.",
              f"- Ray's start (`ray.init`, local instance): {t_init:.1f} s, once per command.",
              f"- The Ray surfaces equal the local 1-thread engine's bit for bit: {identical}.",
              "", "Tile size at 2 workers (overhead = time workers were not computing, per tile):",
              "", "| --tile | points/tile | tiles | compute/tile (ms) | overhead/tile (ms) | "
              "overhead share | time (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {tile} | {pts} | {n} | {c * 1e3:.0f} | {o * 1e3:.1f} | {100 * s:.1f} % | "
              f"{t:.1f} |" for tile, pts, n, c, o, s, t in sweep]
    if args.resnet_samples:
        net = resnet56()
        xr = torch.randn(args.resnet_samples, 3, 32, 32)
        yr = torch.randint(0, 10, (args.resnet_samples,))
        ls = plane(net, xr, yr, loss="cross_entropy", steps=2, range_=(-1.0, 1.0),
                   device="cpu", threads=1, engine="loop")
        per_point = ls.meta["seconds"] / 4
        params = sum(p.numel() for p in net.parameters())
        per_10k = per_point * 10_000 / args.resnet_samples
        resnet_line = (f"ResNet-56 ({params:,} parameters): {1e3 * per_point:.0f} ms per point "
                       f"on {args.resnet_samples} CIFAR-sized inputs, one thread (loop path) "
                       f"→ {per_10k:.1f} s per point on 10,000 inputs")
        print(resnet_line)
        lines += ["", f"- {resnet_line}."]
    _io.write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
