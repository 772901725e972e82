"""Claim: top-k examples for every channel of conv1 and conv2 over the 10,000 MNIST test
images take peak memory ≤ one batch's activations plus the k-best buffers.

Each measurement runs in a fresh subprocess: data and model are loaded, one warm-up batch
runs, the peak resident size is reset (``/proc/self/clear_refs`` ← 5), then the work runs
and the peak above the resident size at the reset is read from ``/proc/self/status``
(VmHWM − VmRSS). The budget is computed from the shapes: the float32 outputs of every layer
up to the chosen one for one batch (the forward holds them), plus the ``(units, k + batch)``
merge buffers (value, index, crop position, label: 4 arrays of 8 bytes at most). The naive
way (capture every activation of the layer, then ``torch.topk``) is measured the same way.

    python bench/_topk_memory.py [MNIST_DIR] [RUN]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RUN = "/tmp/lead/cnn-mnist"
MNIST = "/work/shared/data/mnist"
K = 9
BATCH = 256


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(mode: str, layer: str, mnist_dir: str, run_dir: str) -> dict[str, Any]:
    """One measurement (runs in the subprocess)."""
    import torch

    import shenjing
    from shenjing.analysis.units import top_activations, unit_values
    from shenjing.runs import open_run

    torch.set_num_threads(2)
    # the folder holds the t10k files only, split 8,000/2,000: together the 10,000 images
    ds = shenjing.load_dataset("mnist", data_dir=mnist_dir, progress=False)
    x = torch.cat([ds.train.x, ds.test.x])
    data = (x, torch.cat([ds.train.y, ds.test.y]))
    model = open_run(run_dir).model("final")
    shapes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _a, o: shapes.append(o.numel()))
             for name, m in model.named_modules() if name]
    with torch.no_grad():
        model(x[:1])  # one sample: the shapes, without warming the allocator with a batch
    for h in hooks:
        h.remove()
    names = [n for n, _ in model.named_modules() if n]
    forward_bytes = 4 * BATCH * sum(shapes[:names.index(layer) + 1])
    # two inputs: loads the lazily imported modules (a few MB of code) before the reset,
    # without warming the allocator with a batch's worth of memory
    top_activations(model, x[:2], layer, k=1)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    t0 = time.perf_counter()
    if mode == "forward":
        # one plain batch through the layers up to ``layer`` (simple_cnn's modules run in
        # the order they are defined): what holding one batch's activations costs here
        with torch.inference_mode():
            h = x[:BATCH]
            for name in names[:names.index(layer) + 1]:
                h = model.get_submodule(name)(h)
        n_units = int(h.shape[1])
        del h
    elif mode == "stream":
        top = top_activations(model, data, layer, k=K, batch_size=BATCH)
        n_units = top.n_units
    else:
        acts: list[torch.Tensor] = []
        h = model.get_submodule(layer).register_forward_hook(
            lambda _m, _a, o: acts.append(o.detach().clone()))
        with torch.inference_mode():
            for i in range(0, len(x), BATCH):
                model(x[i:i + BATCH])
        h.remove()
        full = torch.cat(acts)
        del acts
        values, _ = unit_values(full, "mean", 1)
        torch.topk(values.T, K, dim=1)
        n_units = int(full.shape[1])
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM") - base
    buffers = 4 * 8 * n_units * (K + BATCH)
    return {"mode": mode, "layer": layer, "n": len(x), "seconds": round(seconds, 2),
            "peak_bytes": peak, "budget_bytes": forward_bytes + buffers,
            "forward_bytes": forward_bytes, "buffer_bytes": buffers}


def run_topk_benchmark(mnist_dir: str = MNIST, run_dir: str = RUN) -> dict[str, Any]:
    """Peak memory and time of streaming top-k vs capture-all for conv1 and conv2."""
    rows = []
    for layer in ("conv1", "conv2"):
        got = {}
        for mode in ("forward", "stream", "naive"):
            out = subprocess.run([sys.executable, __file__, "--child", mode, layer, mnist_dir,
                                  run_dir], capture_output=True, text=True, check=True)
            got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        # the measured budget: one plain batch forward's peak plus the k-best buffers
        for r in got.values():
            r["measured_budget_bytes"] = got["forward"]["peak_bytes"] + r["buffer_bytes"]
        rows += list(got.values())
    within = all(r["peak_bytes"] <= r["measured_budget_bytes"] for r in rows
                 if r["mode"] == "stream")
    return {"rows": rows, "k": K, "batch_size": BATCH, "stream_within_budget": within}


def _mb(b: int) -> str:
    return f"{b / 2**20:8.1f} MB"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(*sys.argv[2:6])))
        sys.exit(0)
    result = run_topk_benchmark(*(sys.argv[1:3] or [MNIST, RUN]))
    print(f"top-{result['k']} per channel over MNIST test, batch {result['batch_size']}")
    print(f"{'layer':6} {'mode':7} {'n':>6} {'time':>7} {'peak':>11} {'shapes':>11} "
          f"{'measured':>11}")
    for r in result["rows"]:
        print(f"{r['layer']:6} {r['mode']:7} {r['n']:6d} {r['seconds']:6.2f}s "
              f"{_mb(r['peak_bytes'])} {_mb(r['budget_bytes'])} "
              f"{_mb(r['measured_budget_bytes'])}")
    print("shapes = one batch's layer outputs up to the layer + k-best merge buffers (from "
          "the shapes);\nmeasured = the peak of one plain batch forward to the layer + the "
          "buffers")
    print("streaming peak within the measured budget:", result["stream_within_budget"])
