"""Benchmark: capturing all four weighted layers of simple_cnn over 10,000 MNIST images.

Compares, in one run and each in a fresh process (so peak memory is its own):

- ``bare``: the forward pass alone (inference_mode, batch 256): the floor;
- ``naive``: forward hooks appending outputs to lists, then ``torch.cat`` (the common way);
- ``shenjing-disk``: ``capture_dataset(..., out_dir=...)`` streaming to ``.npy``;
- ``shenjing-memory``: ``capture_dataset`` into preallocated arrays;
- ``torchlens-disk``: ``torchlens.extract_dataset(output_dir=...)``, where it imports (set
  ``TORCHLENS_PATH`` to a folder holding it, e.g. from ``pip install --target``).

Prints medians, ratios to ``bare`` and peak anonymous RSS (RssAnon, polled every 5 ms), checks
shenjing's values are bit-identical to a direct forward, and writes
``bench/results/capture.md``.

    python bench/capture.py [--data /work/shared/data/mnist] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
# the same four layers in torchlens' op labels (its module-name lookup is ambiguous for fc2)
TL_LAYERS = ["conv2d_1_1", "conv2d_2_4", "linear_1_8", "linear_2_10"]
BATCH = 256
HERE = Path(__file__).resolve().parent


def _rss_anon() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Polls RssAnon in a thread; ``peak`` is the highest value seen."""

    def __init__(self) -> None:
        self.peak = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon())
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon())


def _setup(data_dir: str):
    import torch

    from shenjing.data import load_dataset
    from shenjing.models import build_model

    torch.manual_seed(0)
    ds = load_dataset("mnist", data_dir=data_dir, download=False, progress=False)
    x = torch.cat([ds.train.x, ds.test.x])  # all 10,000 images of the IDX test file
    model = build_model("simple_cnn", (1, 28, 28), 10).eval()
    return model, x


def child(variant: str, data_dir: str) -> dict:
    import numpy as np
    import torch

    model, x = _setup(data_dir)
    torch.set_grad_enabled(False)
    out_dir = Path(tempfile.mkdtemp(prefix="cap-bench-"))
    base = _rss_anon()
    result: dict = {"variant": variant}
    try:
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            if variant == "bare":
                with torch.inference_mode():
                    for i in range(0, len(x), BATCH):
                        model(x[i:i + BATCH])
            elif variant == "naive":
                store: dict[str, list] = {n: [] for n in LAYERS}
                handles = [model.get_submodule(n).register_forward_hook(
                    lambda m, a, o, n=n: store[n].append(o.detach())) for n in LAYERS]
                with torch.inference_mode():
                    for i in range(0, len(x), BATCH):
                        model(x[i:i + BATCH])
                acts = {n: torch.cat(v).numpy() for n, v in store.items()}
                for h in handles:
                    h.remove()
                del store
            elif variant.startswith("shenjing"):
                from shenjing.capture import capture_dataset

                acts = capture_dataset(model, x, LAYERS, batch_size=BATCH,
                                       out_dir=out_dir if variant == "shenjing-disk" else None,
                                       max_memory=8 * 1024**3)
            elif variant == "torchlens-disk":
                import torchlens

                torchlens.extract_dataset(model, x, TL_LAYERS, batch_size=BATCH,
                                          output_dir=out_dir / "tl", progress=False)
            seconds = time.perf_counter() - t0
        result.update(seconds=seconds, peak_anon=peak.peak, base_anon=base)
        if variant.startswith("shenjing"):
            # bit-identical to a direct forward of the same batches (first and last batch)
            with torch.inference_mode():
                for start in (0, (len(x) - 1) // BATCH * BATCH):
                    xb = x[start:start + BATCH]
                    c1 = model.conv1(xb)
                    c2 = model.conv2(model.pool1(model.relu1(c1)))
                    f1 = model.fc1(model.flatten(model.pool2(model.relu2(c2))))
                    f2 = model.fc2(model.relu3(f1))
                    for name, ref in zip(LAYERS, (c1, c2, f1, f2), strict=True):
                        got = np.asarray(acts[name][start:start + BATCH])
                        if not np.array_equal(got, ref.numpy()):
                            result["identical"] = False
                            break
                    else:
                        continue
                    break
                else:
                    result["identical"] = True
            result["bytes"] = int(sum(np.asarray(a).nbytes for a in acts.values()))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results" / "capture.md"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data)))
        return

    env = dict(os.environ)
    variants = ["bare", "naive", "shenjing-disk", "shenjing-memory"]
    tl_path = os.environ.get("TORCHLENS_PATH")
    if tl_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tl_path, env.get("PYTHONPATH")]))
    probe = subprocess.run([sys.executable, "-c", "import torchlens"], env=env,
                           capture_output=True)
    if probe.returncode == 0:
        variants.append("torchlens-disk")
    else:
        print("torchlens does not import here: skipped (set TORCHLENS_PATH)", file=sys.stderr)

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            proc = subprocess.run([sys.executable, __file__, "--child", v, "--data", args.data],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{v} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                runs[v].append({"error": proc.stderr.strip().splitlines()[-1]})
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[v].append(res)
            print(f"[{rep + 1}/{args.repeats}] {v:<16} {res['seconds']:.2f} s, "
                  f"peak anon {res['peak_anon'] / 1024**3:.2f} GiB", file=sys.stderr)

    def med(v: str, key: str) -> float | None:
        vals = [r[key] for r in runs[v] if key in r]
        return statistics.median(vals) if vals else None

    bare = med("bare", "seconds")
    rows = []
    for v in variants:
        s = med(v, "seconds")
        if s is None:
            rows.append((v, "failed", "", "", "", ""))
            continue
        peak = med(v, "peak_anon")
        base = med(v, "base_anon")
        ident = {r.get("identical") for r in runs[v]} - {None}
        rows.append((v, f"{s:.2f}", f"{s / bare:.2f}×",
                     f"{peak / 1024**3:.2f}", f"{(peak - base) / 1024**3:.2f}",
                     ("yes" if ident == {True} else "NO") if ident else ""))
    ours = med("shenjing-disk", "seconds")
    tl = med("torchlens-disk", "seconds") if "torchlens-disk" in runs else None
    naive = med("naive", "seconds")
    nbytes = next((r["bytes"] for r in runs["shenjing-disk"] if "bytes" in r), 0)
    lines = [
        "# Capture benchmark (bench/capture.py)",
        "",
        f"simple_cnn (untrained, seed 0), layers {', '.join(LAYERS)} over 10,000 MNIST test "
        f"images, batch {BATCH}: {nbytes / 1e9:.2f} GB float32 captured. Median of "
        f"{args.repeats} runs, each variant in a fresh process.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        "shared with other jobs (absolute times are noisy; compare ratios), Python "
        f"{platform.python_version()}.",
        "",
        "| variant | seconds | × bare forward | peak anon RSS GiB | above start GiB | "
        "bit-identical |",
        "|---|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
        f"- shenjing to disk / bare forward: **{ours / bare:.2f}×** (target ≤ 2.5×)",
        f"- naive list + torch.cat / shenjing to disk: **{naive / ours:.2f}×**",
    ]
    if tl:
        lines.append(f"- torchlens to disk / shenjing to disk: **{tl / ours:.2f}×** "
                     "(target ≥ 3×)")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
