"""Benchmark: top-k Hessian eigenvalues by Lanczos vs power iteration with deflation.

    .venv/bin/python bench/hessian.py [--run RUN] [--k 5] [--samples 1000] [--tol 1e-3]

Without ``--run`` it trains seed 000's ``mlp`` (784-128-10) for 2 epochs on the 8k MNIST
split into a temporary folder. Both methods use the same Hessian-vector product operator
(same model, samples, loss), the same stopping tolerance (relative 1e-3: PyHessian's), and
seed; we count HVPs (the cost that matters on any device), time them, and compare the
eigenvalues. Power iteration's own stopping rule leaves it ~1 % off when neighbouring
eigenvalues are close, so the script also tightens its tolerance until it agrees with
Lanczos within 0.3 % and counts the HVPs that takes (the comparison at equal accuracy).
Results go to bench/results/hessian.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shenjing.analysis.hessian import HessianOperator, lanczos_top, power_iteration_top
from shenjing.runs import Run
from shenjing.stages._inputs import run_loss

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "hessian.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        run = Run(args.run)
    else:
        from shenjing.training import train

        run = train("mlp", "mnist", data_dir=MNIST, epochs=2, progress=False,
                    run=Path(tempfile.mkdtemp()) / "mlp")
    test = run.data.test.subset(args.samples, seed=0)
    model = run.model("final")
    op = HessianOperator(model, test.x, test.y, loss=run_loss(run))
    rows = []
    results = {}
    for name, fn in (("Lanczos (full re-orthogonalisation)", lanczos_top),
                     ("power iteration + deflation (PyHessian)", power_iteration_top)):
        op.n_hvp = 0
        t0 = time.perf_counter()
        res = fn(op, op.dim, args.k, tol=args.tol, seed=args.seed)
        secs = time.perf_counter() - t0
        results[name] = res
        rows.append((name, res.n_hvp, secs, res.values, res.converged))
        print(f"{name}: {res.n_hvp} HVPs, {secs:.1f}s, {np.round(res.values, 5)}")
    lz, pw = results.values()
    # power iteration with deflation can return the eigenvalues out of order: sort both
    lz_v, pw_v = np.sort(lz.values)[::-1], np.sort(pw.values)[::-1]
    rel = np.abs(lz_v - pw_v) / np.abs(pw_v)
    # reference: Lanczos run to a 100x tighter tolerance
    op.n_hvp = 0
    tight = lanczos_top(op, op.dim, args.k, tol=args.tol / 100, seed=args.seed + 1,
                        max_iter=300)
    ref = np.sort(tight.values)[::-1]
    rel_l = np.abs(lz_v - ref) / np.abs(ref)
    rel_p = np.abs(pw_v - ref) / np.abs(ref)
    # matched accuracy: tighten power iteration's tolerance until all k of its eigenvalues
    # agree with Lanczos's (tolerance args.tol) within 0.3 %, and count its HVPs then
    matched = []
    for ptol in (args.tol, args.tol / 3, args.tol / 10, args.tol / 30, args.tol / 100):
        op.n_hvp = 0
        pw_t = power_iteration_top(op, op.dim, args.k, tol=ptol, seed=args.seed, max_iter=1000)
        gap = float(np.max(np.abs(np.sort(pw_t.values)[::-1] - lz_v) / np.abs(lz_v)))
        matched.append((ptol, pw_t.n_hvp, gap))
        print(f"power iteration tol {ptol:g}: {pw_t.n_hvp} HVPs, max gap to Lanczos {gap:.2%}")
        if gap <= 0.003:
            break
    name = run.manifest["model"].get("name")
    lines = [
        "# Hessian benchmark (bench/hessian.py)\n",
        f"Machine: {platform.machine()}, {args.threads} torch thread(s), shared 2-core CPU "
        f"(quote ratios); torch {torch.__version__}. Model `{name}` from run "
        f"`{run.path.name}` ({op.dim:,} parameters), {len(test)} MNIST test samples, "
        f"loss {run_loss(run)}, top-{args.k}, tolerance {args.tol:g}, seed {args.seed}.\n",
        "| method | HVPs | seconds | eigenvalues | converged |",
        "|---|---:|---:|---|---|",
    ]
    for nm, n, secs, vals, conv in rows:
        lines.append(f"| {nm} | {n} | {secs:.1f} | {', '.join(f'{v:.5g}' for v in vals)} "
                     f"| {conv} |")
    lines += [
        "",
        f"- HVPs: Lanczos {lz.n_hvp} vs power+deflation {pw.n_hvp}: "
        f"**{pw.n_hvp / lz.n_hvp:.1f}× fewer** (target ≥ 3×).",
        f"- Relative difference between the two methods' (sorted) eigenvalues: "
        f"{', '.join(f'{v:.2%}' for v in rel)}; max **{rel.max():.2%}** (target ≤ 0.3 %).",
        f"- Against a tight reference (Lanczos at tolerance {args.tol / 100:g}, other seed, "
        f"{tight.n_hvp} HVPs: {', '.join(f'{v:.5g}' for v in ref)}): relative errors "
        f"Lanczos {', '.join(f'{v:.1e}' for v in rel_l)}; power+deflation "
        f"{', '.join(f'{v:.1e}' for v in rel_p)}. Any gap between the two methods is "
        "power iteration's own error: its stopping rule (Rayleigh quotient change < tol) "
        "stops early when neighbouring eigenvalues are close.",
        "- Matched accuracy: power iteration's tolerance tightened until its eigenvalues agree "
        "with Lanczos's within 0.3 %: "
        + "; ".join(f"tol {t:g}: {n} HVPs, max gap {g:.2%}" for t, n, g in matched) + ". "
        + (f"Agreement within 0.3 % costs power iteration {matched[-1][1]} HVPs against "
           f"Lanczos's {lz.n_hvp}: **{matched[-1][1] / lz.n_hvp:.1f}× fewer** for Lanczos "
           "at equal accuracy (target: at most a third, same eigenvalues within 0.3 %)."
           if matched[-1][2] <= 0.003 else
           "Power iteration did not reach 0.3 % agreement at any tolerance tried."),
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
