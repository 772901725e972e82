"""Benchmark: attribution on 500 MNIST test images, shenjing's batched runs against plain
per-image loops.

Model: the run ``/tmp/lead/cnn-mnist`` (simple_cnn trained 5 epochs on MNIST), its final
epoch, on the first ``--n`` images of the run's own MNIST test split (the data it was
trained on, read from ``--data``), one torch thread, ``OMP_WAIT_POLICY=PASSIVE``.

1. Integrated Gradients, 50 steps, zero baseline, the predicted class:
   ``shenjing.analysis.attribute.attribute(model, x, method="integrated_gradients")``
   (batched over inputs × steps) against a loop calling Captum's ``IntegratedGradients``
   once per image with its defaults (``n_steps=50``, Gauss–Legendre, zero baseline). The
   ratio of the median times and the largest absolute difference of the raw attributions
   (must be ≤ 1e-5).
2. Deletion / insertion at 20 fractions (21 points) for the IG maps:
   ``deletion_insertion`` (samples × fractions batched) against a plain per-image,
   per-fraction loop written here (pixels sorted by the map, most attributed first, stable;
   the first ``round(j·H·W/20)`` set to the baseline for deletion, or kept over the
   baseline for insertion; one forward each). Ratio and largest difference of the curves.
3. Top-k examples: ``bench/_topk_memory.py``'s ``run_topk_benchmark(mnist_dir)`` (helper
   B's), when that file exists.

Each variant runs ``--rounds`` times after an untimed warm-up on 8 images; medians
reported. Prints the machine and the ratios
and writes ``bench/results/attribution.md``.

    python bench/attribution.py [--run /tmp/lead/cnn-mnist] [--data ../shared/data/mnist]
                                [--n 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _timing import median_time  # noqa: E402


def captum_loop(model: Any, x: Any, targets: Any) -> Any:
    """The plain way: Captum's IntegratedGradients, one image at a time, defaults."""
    import torch
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    return torch.cat([ig.attribute(x[i:i + 1], target=int(targets[i]), n_steps=50).detach()
                      for i in range(len(x))])


def deletion_loop(model: Any, x: Any, maps: Any, targets: Any, fractions: int = 20) -> Any:
    """Deletion and insertion curves image by image, fraction by fraction (zero
    baseline)."""
    import numpy as np
    import torch

    n, _c, h, w = x.shape
    counts = [round(j * h * w / fractions) for j in range(fractions + 1)]
    dele = np.zeros((n, len(counts)))
    ins = np.zeros((n, len(counts)))
    base = torch.zeros_like(x[0])
    with torch.no_grad():
        for i in range(n):
            order = torch.sort(-torch.as_tensor(maps[i]).reshape(-1), stable=True).indices
            for j, k in enumerate(counts):
                mask = torch.zeros(h * w, dtype=torch.bool)
                mask[order[:k]] = True
                mask = mask.reshape(1, h, w)
                for out, img in ((dele, torch.where(mask, base, x[i])),
                                 (ins, torch.where(mask, x[i], base))):
                    p = torch.softmax(model(img[None]), dim=1)[0, int(targets[i])]
                    out[i, j] = float(p)
    return dele, ins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="/tmp/lead/cnn-mnist")
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "attribution.md"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import shenjing
    from shenjing import _io
    from shenjing.analysis.attribute import attribute, deletion_insertion
    from shenjing.runs import open_run

    torch.set_num_threads(1)
    run = open_run(args.run)
    model = run.model("final")
    test = run.data.test
    x = test.x[: args.n].float()
    with torch.no_grad():
        targets = model(x).argmax(1)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU(s) visible, torch "
               f"{torch.__version__}, 1 thread, Python {platform.python_version()}, shenjing "
               f"{shenjing.__version__}")
    print(machine)
    print(f"run {args.run} (epoch {run.resolve_epoch('final')}), {len(x)} test images "
          f"{tuple(x.shape[1:])}, rounds {args.rounds}")

    # warm-up, untimed: Captum's import and first-call costs
    attribute(model, x[:8], method="integrated_gradients", target=targets[:8], steps=50)
    captum_loop(model, x[:8], targets[:8])
    t_ours, maps = median_time(lambda: attribute(model, x, method="integrated_gradients",
                                            target=targets, steps=50), args.rounds)
    t_loop, ref = median_time(lambda: captum_loop(model, x, targets), args.rounds)
    diff = float((torch.as_tensor(maps.raw) - ref).abs().max())
    ig_line = (f"IG 50 steps: shenjing {t_ours:.2f} s, Captum per-image loop {t_loop:.2f} s → "
               f"loop / shenjing = {t_loop / t_ours:.2f}; max |difference| {diff:.2e} "
               f"({'≤' if diff <= 1e-5 else '>'} 1e-5)")
    print(ig_line)

    t_di, di = median_time(lambda: deletion_insertion(model, x, maps.maps, targets=targets,
                                                 fractions=20), args.rounds)
    t_dl, (dl, il) = median_time(lambda: deletion_loop(model, x, maps.maps, targets),
                            max(1, args.rounds // 3))
    d_diff = float(max(np.abs(di.deletion - dl).max(), np.abs(di.insertion - il).max()))
    di_line = (f"deletion/insertion, 20 fractions: shenjing {t_di:.2f} s (with the random "
               f"order's curves too), per-image loop {t_dl:.2f} s (without them) → "
               f"loop / shenjing = {t_dl / t_di:.2f}; max |difference| {d_diff:.2e}; mean "
               f"deletion AUC "
               f"{float(np.mean(di.deletion_auc)):.3f} (random "
               f"{float(np.mean(di.deletion_auc_random)):.3f}), insertion "
               f"{float(np.mean(di.insertion_auc)):.3f} (random "
               f"{float(np.mean(di.insertion_auc_random)):.3f})")
    print(di_line)
    comp = maps.completeness
    comp_line = comp.text() if comp is not None else "completeness: none"
    print(comp_line)

    lines = ["# Attribution benchmark", "", f"Machine: {machine}", "",
             f"Run `{args.run}`, {len(x)} MNIST test images, medians of {args.rounds} "
             "rounds (the per-image deletion loop: "
             f"{max(1, args.rounds // 3)}).", "", f"- {ig_line}", f"- IG {comp_line}",
             f"- {di_line}"]
    topk = HERE / "_topk_memory.py"
    if topk.exists():
        sys.path.insert(0, str(HERE))
        from _topk_memory import run_topk_benchmark  # type: ignore[import-not-found]

        result = run_topk_benchmark(args.data)
        print(f"top-k: {result}")
        lines.append(f"- top-k examples: {result}")
    else:
        lines.append("- top-k examples: bench/_topk_memory.py not present; not run")
    _io.write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
