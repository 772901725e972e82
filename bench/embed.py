"""Benchmark: separability numbers, t-SNE and UMAP, against the naive ways, in one run.

1. **Probe + kNN + CKA** for the four weighted layers of simple_cnn (conv1 25,088 wide,
   conv2 12,544, fc1 128, fc2 10) over the 10,000 MNIST test images (probe trained on 8,000,
   scored on 2,000; CKA on all 10,000): shenjing (wide layers pooled to ≤ 1,024 values,
   stated) against the naive probe (scikit-learn's LogisticRegression on raw conv1).
2. **t-SNE of 10,000 × 128** (relu1 of the trained W1 MLP if ``--run`` is given, else
   simple_cnn's relu3): shenjing's ``embed`` against openTSNE's defaults and scikit-learn's
   ``TSNE(init="pca")`` (seed 000's choice), with the 2-D kNN accuracy of each map.
3. **UMAP in a fresh process** (10,000 × 128): plain umap-learn in a new process against
   shenjing's ``embed(method="umap")`` in a *second* new process (numba cache on disk).

Writes ``bench/results/embed.md``.

    python bench/embed.py [--data DIR] [--run /tmp/cap-runs/mlp-mnist] [--skip-naive-probe]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYERS = ["conv1", "conv2", "fc1", "fc2"]


def _data(data_dir: str):
    import torch

    from shenjing.data import load_dataset

    ds = load_dataset("mnist", data_dir=data_dir, download=False, progress=False)
    x = torch.cat([ds.train.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.test.y]).numpy()
    return x, y, len(ds.train)


def _features_128(args) -> tuple:
    """(10,000 × 128 features, labels): trained W1 relu1 if a run is given."""
    import torch

    from shenjing.capture import capture_dataset

    x, y, _ = _data(args.data)
    if args.run:
        from shenjing.runs import open_run

        model, layer = open_run(args.run).model("final"), "relu1"
    else:
        from shenjing.models import build_model

        torch.manual_seed(0)
        model, layer = build_model("simple_cnn", (1, 28, 28), 10), "relu3"
    acts = capture_dataset(model, x, [layer])
    return acts[layer], y, layer


def bench_metrics(args) -> list[str]:
    import numpy as np
    import torch

    from shenjing.analysis.cka import cka_matrix
    from shenjing.analysis.separability import separability
    from shenjing.capture import capture_dataset
    from shenjing.models import build_model

    x, y, n_train = _data(args.data)
    torch.manual_seed(0)
    model = build_model("simple_cnn", (1, 28, 28), 10)
    with tempfile.TemporaryDirectory() as tmp:
        acts = capture_dataset(model, x, LAYERS, out_dir=tmp)
        t0 = time.perf_counter()
        seps = {}
        for name in LAYERS:
            a = acts[name]
            seps[name] = separability(a[:n_train], y[:n_train], a[n_train:], y[n_train:])
        t_sep = time.perf_counter() - t0
        t1 = time.perf_counter()
        cka = cka_matrix({n: acts[n] for n in LAYERS})
        t_cka = time.perf_counter() - t1
        total = time.perf_counter() - t0
        lines = ["## 1. Probe + kNN + CKA, four layers of simple_cnn (untrained), 10,000 images",
                 "",
                 "| layer | width | reduction | probe acc | kNN acc |", "|---|---|---|---|---|"]
        for name, s in seps.items():
            lines.append(f"| {name} | {s.n_features} | {s.reduction or '-'} | "
                         f"{s.probe_accuracy:.3f} | {s.knn_accuracy:.3f} |")
        lines += ["", f"shenjing: probe + kNN for 4 layers {t_sep:.1f} s, CKA 4×4 over 10,000 "
                  f"samples {t_cka:.1f} s, **total {total:.1f} s** (target ≤ 30 s).", "",
                  "CKA matrix: " + "; ".join(
                      f"{a}-{b} {cka[a, b]:.2f}" for i, a in enumerate(LAYERS)
                      for b in LAYERS[i + 1:])]
        print(f"metrics: total {total:.1f}s", file=sys.stderr)
        if not args.skip_naive_probe:
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import StandardScaler

            raw = np.asarray(acts["conv1"]).reshape(len(y), -1)
            t2 = time.perf_counter()
            sc = StandardScaler().fit(raw[:n_train])
            clf = LogisticRegression(max_iter=100).fit(sc.transform(raw[:n_train]), y[:n_train])
            acc = clf.score(sc.transform(raw[n_train:]), y[n_train:])
            t_naive = time.perf_counter() - t2
            lines += ["", f"naive: LogisticRegression on raw conv1 (25,088 features) "
                      f"{t_naive:.1f} s, accuracy {acc:.3f}; shenjing's four layers with kNN "
                      f"and CKA are **{t_naive / total:.1f}× faster** than this one probe."]
            print(f"naive conv1 probe {t_naive:.1f}s", file=sys.stderr)
    return lines


def bench_tsne(args) -> list[str]:
    import numpy as np
    import openTSNE
    import sklearn.manifold

    from shenjing.analysis.embed import embed
    from shenjing.analysis.separability import loo_knn_accuracy

    feats, y, layer = _features_128(args)
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    rows = []

    def timed(name, fn):
        t0 = time.perf_counter()
        coords = np.asarray(fn())
        dt = time.perf_counter() - t0
        acc = loo_knn_accuracy(coords, y, 5)
        rows.append((name, dt, acc))
        print(f"tsne {name}: {dt:.1f}s acc {acc:.3f}", file=sys.stderr)

    timed("shenjing embed (PCA-50, 200+400 iterations, all cores)",
          lambda: embed(feats, "tsne", random_state=0).coords)
    timed("shenjing embed, n_jobs=1",
          lambda: embed(feats, "tsne", random_state=0, n_jobs=1).coords)
    timed("openTSNE defaults", lambda: openTSNE.TSNE(random_state=0).fit(feats))
    if not args.skip_sklearn_tsne:
        timed("scikit-learn TSNE(init='pca')",
              lambda: sklearn.manifold.TSNE(random_state=0, init="pca").fit_transform(feats))
    ours = rows[0][1]
    lines = [f"## 2. t-SNE of 10,000 × 128 ({layer})", "",
             "| method | seconds | 2-D kNN acc (k=5, leave-one-out) | time / shenjing |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {t:.1f} | {a:.3f} | {t / ours:.2f}× |" for n, t, a in rows]
    return lines


UMAP_CHILD = """
import os, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
import numpy as np
x = np.load(sys.argv[2])
if sys.argv[1] == "plain":
    import umap
    umap.UMAP(random_state=0).fit_transform(x)
else:
    from shenjing.analysis.embed import embed
    embed(x, "umap", random_state=0)
print(time.perf_counter() - t0)
"""


def bench_umap(args) -> list[str]:
    import numpy as np

    feats, _, layer = _features_128(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, np.asarray(feats, dtype=np.float32))
        env = dict(os.environ, SHENJING_CACHE=str(Path(tmp) / "cache"))
        env.pop("NUMBA_CACHE_DIR", None)

        def proc(kind: str) -> float:
            out = subprocess.run([sys.executable, "-c", UMAP_CHILD, kind, str(path)], env=env,
                                 capture_output=True, text=True, check=True)
            t = float(out.stdout.strip().splitlines()[-1])
            print(f"umap {kind}: {t:.1f}s", file=sys.stderr)
            return t

        plain = proc("plain")
        first = proc("shenjing")
        second = proc("shenjing")
    return [f"## 3. UMAP of 10,000 × 128 ({layer}), each in a fresh process "
            "(import + fit)", "",
            "| process | seconds |", "|---|---|",
            f"| plain umap-learn | {plain:.1f} |",
            f"| shenjing, first process on the machine (compiles, fills the cache) | "
            f"{first:.1f} |",
            f"| shenjing, second process | {second:.1f} |", "",
            f"Second process vs plain umap-learn: **{plain / second:.1f}× faster** "
            "(target: second process ≤ 10 s on a quiet machine)."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--run", help="trained W1 run for the t-SNE/UMAP features")
    parser.add_argument("--skip-naive-probe", action="store_true")
    parser.add_argument("--skip-sklearn-tsne", action="store_true")
    parser.add_argument("--only", choices=["metrics", "tsne", "umap"], action="append")
    parser.add_argument("--out", default=str(HERE / "results" / "embed.md"))
    args = parser.parse_args()
    parts = args.only or ["metrics", "tsne", "umap"]
    lines = ["# Embedding and separability benchmark (bench/embed.py)", "",
             f"Machine: {os.cpu_count()} CPU cores shared with other jobs (load varies: "
             f"absolute times are noisy, compare ratios within one table), Python "
             f"{platform.python_version()}.", ""]
    for part in parts:
        lines += {"metrics": bench_metrics, "tsne": bench_tsne, "umap": bench_umap}[part](args)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.only and out.exists():  # replace only the sections that ran
        text = _merge(out.read_text(encoding="utf-8"), text)
    out.write_text(text, encoding="utf-8")


def _merge(old: str, new: str) -> str:
    """``old`` with each ``## N.`` section also present in ``new`` replaced by the new one."""
    def sections(text: str) -> tuple[str, dict[str, str]]:
        head, *parts = text.split("\n## ")
        return head, {p.split(".", 1)[0]: "## " + p for p in parts}

    head, old_parts = sections(old)
    _, new_parts = sections(new)
    old_parts.update(new_parts)
    return "\n".join([head, *(old_parts[k] for k in sorted(old_parts))])


if __name__ == "__main__":
    main()
