"""Benchmark: bytes a landscape's directions take on disk, before (format 1: float32 vectors
and the centre) and now (format 2: a seed or two end points where they can be remade bit
for bit; float32 vectors only for PCA directions), for a model of about 1 M parameters.

    .venv/bin/python bench/landscape_storage.py [--hidden 1024,256] [--out FILE]

For each kind (plane: 2 random filter-normalized directions; line θ₀ → θ*; trajectory: 2
PCA directions of 5 checkpoints) it writes both formats with shenjing's own atomic npz
writer, prints the sizes and their ratio, the time to regenerate the directions from the
format-2 file, and checks the regenerated vectors equal the originals (``torch.equal``).
Results go to bench/results/landscape_storage.md.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from shenjing import _io
from shenjing.analysis.landscape import (
    ParamLayout,
    flat_params,
    line_direction,
    load_directions,
    random_directions,
    read_directions_meta,
    save_directions,
    trajectory_pca,
)


def mlp(hidden: list[int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    sizes = [784, *hidden, 10]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def format1(path: Path, dirs, center: torch.Tensor) -> int:
    """What ``save_directions`` wrote before this change: vectors + layout + info + centre."""
    _io.save_npz(path, vectors=dirs.vectors.numpy(), layout=dirs.layout.to_json(),
                 info=dirs.info, center=center.numpy())
    return path.stat().st_size


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _ratio(r: float) -> str:
    return f"{r:,.0f}×" if r >= 10 else f"{r:.1f}×"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="1024,256")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                         "landscape_storage.md"))
    args = ap.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    start, end = mlp(hidden, 0), mlp(hidden, 1)
    layout = ParamLayout.of(end)
    n = layout.size
    gen = torch.Generator().manual_seed(2)
    walk = flat_params(start)
    states = []
    for _ in range(5):
        walk = walk + 0.01 * torch.randn(n, generator=gen)
        states.append(layout.split(walk.clone()))
    pca = trajectory_pca(states, list(range(5)), layout)
    center_t = flat_params(end)
    line_center, line_dirs = line_direction(start, end)
    cases = {
        "plane (2 random directions)": (random_directions(end, 2, seed=0), center_t, None,
                                        {"center": end}),
        "line θ₀ → θ*": (line_dirs, line_center, start, {"center": end, "start": start}),
        "trajectory (2 PCA directions)": (pca.directions, layout.flatten(states[-1]), None, {}),
    }
    rows = [f"# Directions on disk, {n:,} parameters (MLP 784-{'-'.join(map(str, hidden))}-10)",
            "", f"torch {torch.__version__}, {platform.processor() or platform.machine()}", "",
            "| kind | before (format 1) | now (format 2) | stored as | ratio | regenerate |"
            " equal |", "|---|---:|---:|---|---:|---:|---|"]
    total_before = total_now = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (dirs, center, line_start, load_kw)) in enumerate(cases.items()):
            before = format1(Path(tmp) / f"old{i}.npz", dirs, center)
            path = save_directions(Path(tmp) / f"new{i}.directions.npz", dirs, center,
                                   start=line_start)
            now = path.stat().st_size
            t0 = time.perf_counter()
            back, _ = load_directions(path, **load_kw)
            seconds = time.perf_counter() - t0
            equal = torch.equal(back.vectors, dirs.vectors.cpu())
            meta = read_directions_meta(path)
            err = meta.get("storage_error", {}).get("max_rel_error_vs_float64")
            stored = meta["stored_as"] + (f" (max rel. error {err:.1e} vs float64)"
                                          if err else "")
            rows.append(f"| {label} | {_size(before)} | {_size(now)} | {stored} | "
                        f"{_ratio(before / now)} | {seconds:.2f} s | {equal} |")
            total_before += before
            total_now += now
    rows += ["", f"All three: {total_before / 1e6:.2f} MB before, {total_now / 1e6:.2f} MB now "
             f"({total_before / total_now:.1f}× smaller)."]
    text = "\n".join(rows) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _io.write_text(args.out, text)


if __name__ == "__main__":
    main()
