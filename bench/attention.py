"""Benchmark: attention capture of all layers and heads for 2,000 MNIST test images.

Two models (untrained, seed 0; the speed does not depend on the weights):

- ``zoo-vit``: ``build_model("vit", (1, 28, 28), 10)``: 7×7 patches → 17 tokens, 4 blocks ×
  4 heads, dim 64, attention through ``F.scaled_dot_product_attention`` (fused);
- ``hf-vit``: Hugging Face ``ViTForImageClassification`` built offline (image 28, patch 7,
  hidden 64, 4 layers, 4 heads, intermediate 128), its default ``sdpa`` attention.

Variants (one torch thread, ``OMP_WAIT_POLICY=PASSIVE``, batches of ``--batch``):

- ``bare``: the forward pass alone (no_grad): the floor;
- ``shenjing``: ``capture_attention(model, x, batch_size=...)`` into memory;
- ``shenjing-disk``: the same streamed to a ``.npy`` file (``out=``);
- ``naive``: the usual way of getting the patterns. hf-vit: the same weights with
  ``attn_implementation="eager"`` and ``output_attentions=True``, collected in lists and
  concatenated; zoo-vit: the same weights with ``F.scaled_dot_product_attention`` replaced
  by an explicit ``softmax(QKᵀ/√d)V`` that appends each pattern to a list;
- ``torchlens``: ``torchlens.extract_dataset`` of the softmax operations (where it imports:
  ``TORCHLENS_PATH`` names a folder holding it, e.g. ``pip install --no-deps --target DIR
  torchlens graphviz``). torchlens logs the outputs of operations, and a fused kernel's
  pattern is no operation's output: on either model as built it sees only
  ``scaled_dot_product_attention``'s result. So it runs on the naive variant's explicit
  models. It also rewraps torch's functions for the rest of its process, so it is timed
  in a process of its own (against that process's own bare forward).

Time: the shared cores make one process's timings drift by ±30 % from minute to minute, so
each model's variants run in one process, in turn, ``--rounds`` times after a warm-up
round; each round's ratio to the bare forward just before it is taken, and the median of
those ratios reported (with the median seconds). Each timing is the whole job: the probe,
allocation and copies included. Memory: each variant once more in a fresh process set up
the same way (imports, model, data, a warm-up batch): its peak resident set during the job
(VmHWM, reset just before it), and that peak less the bare forward's (what the variant's
job itself holds at its peak). Checks,
outside the timing: the model's outputs during a capture are bit-identical to plain
forwards, the pattern @ V check passed, and the patterns' distance to the naive variant's
(the explicit reference). Prints the ratios and writes ``bench/results/attention.md``.

    python bench/attention.py [--data /work/shared/data/mnist] [--rounds 7] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODELS = ("zoo-vit", "hf-vit")
VARIANTS = ("bare", "shenjing", "shenjing-disk", "naive", "torchlens")
LAYERS = 4


def _status(key: str) -> int:
    """A ``/proc/self/status`` size in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---- the models -------------------------------------------------------------------------
def _build(name: str) -> Any:
    import torch

    torch.manual_seed(0)
    if name == "zoo-vit":
        from shenjing.models import build_model

        return build_model("vit", (1, 28, 28), 10).eval()
    from transformers import ViTConfig, ViTForImageClassification

    sizes: dict[str, Any] = {"image_size": 28, "patch_size": 7, "num_channels": 1,
                             "hidden_size": 64, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "intermediate_size": 128,
                             "num_labels": 10}
    config = ViTConfig(**sizes)
    return ViTForImageClassification(config).eval()


def _explicit(name: str, record: list[Any]) -> Any:
    """The same weights computing attention explicitly: hf-vit in ``eager``; zoo-vit with
    each block's fused kernel replaced (on these instances only) by softmax(QKᵀ/√d)V that
    appends its pattern to ``record`` while ``record`` is not None."""
    import torch

    model = _build(name)
    if name == "hf-vit":
        model.set_attn_implementation("eager")
        return model

    def explicit(attn: Any, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.heads, d // attn.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        pattern = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // attn.heads), dim=-1)
        record.append(pattern)
        return attn.proj((pattern @ v).transpose(1, 2).reshape(b, n, d))

    for block in model.blocks:
        block.attn.forward = types.MethodType(explicit, block.attn)
    return model


def _logits(out: Any) -> Any:
    return getattr(out, "logits", out)


# ---- the variants -------------------------------------------------------------------------
class Jobs:
    """Each variant's whole job on ``x`` for one model (models built once)."""

    def __init__(self, name: str, x: Any, batch: int, variants: list[str]) -> None:
        self.name, self.x, self.batch = name, x, batch
        self.model = _build(name)
        self.record: list[Any] = []
        self.explicit: Any = _explicit(name, self.record) if {"naive", "torchlens"} & set(
            variants) else None
        self.folder = Path(tempfile.mkdtemp(prefix="att-bench-"))
        self.labels: list[str] | None = None

    def run(self, variant: str) -> Any:
        return getattr(self, variant.replace("-", "_"))()

    def bare(self) -> None:
        import torch

        with torch.no_grad():
            for i in range(0, len(self.x), self.batch):
                self.model(self.x[i:i + self.batch])

    def shenjing(self, out: Path | None = None) -> Any:
        from shenjing.capture.attention import capture_attention

        return capture_attention(self.model, self.x, batch_size=self.batch, out=out)

    def shenjing_disk(self) -> Any:
        att = self.shenjing(self.folder / "attention.npy")
        del att
        (self.folder / "attention.npy").unlink()

    def naive(self) -> Any:
        import torch

        lists: list[list[torch.Tensor]] = [[] for _ in range(LAYERS)]
        with torch.no_grad():
            for i in range(0, len(self.x), self.batch):
                out = self.explicit(self.x[i:i + self.batch], output_attentions=True) \
                    if self.name == "hf-vit" else self.explicit(self.x[i:i + self.batch])
                found = out.attentions if self.name == "hf-vit" else self.record
                for j, a in enumerate(found):
                    lists[j].append(a)
                self.record.clear()
        return torch.stack([torch.cat(chunks) for chunks in lists], dim=1).numpy()

    def torchlens(self) -> Any:
        import numpy as np
        import torchlens as tl

        labels = [label for label in tl.trace(self.explicit, self.x[:2]).layer_labels
                  if label.startswith("softmax")]
        out = tl.extract_dataset(self.explicit, self.x, labels, batch_size=self.batch,
                                 progress=False)
        self.record.clear()
        return np.stack([out[label].numpy() for label in labels], axis=1)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _data(data_dir: str) -> Any:
    import torch

    from shenjing.data import load_dataset

    torch.set_num_threads(1)
    ds = load_dataset("mnist", data_dir=data_dir, download=False, progress=False)
    return ds.test.x[:2000].contiguous()


def time_child(name: str, data_dir: str, batch: int, rounds: int,
               variants: list[str]) -> dict[str, Any]:
    """All variants of one model in turn, ``rounds`` times; per-round ratios to bare."""
    jobs = Jobs(name, _data(data_dir), batch, variants)
    try:
        for v in variants:  # warm-up round
            jobs.run(v)
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(rounds):
            for v in variants:
                t0, c0 = time.perf_counter(), time.process_time()
                jobs.run(v)
                seconds[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
        result: dict[str, Any] = {
            "seconds": seconds, "cpu": cpu,
            "ratio": {v: [t / b for t, b in zip(seconds[v], seconds["bare"], strict=True)]
                      for v in variants},
            "cpu_ratio": {v: [t / b for t, b in zip(cpu[v], cpu["bare"], strict=True)]
                          for v in variants}}
        if "shenjing" in variants:
            result["checks"] = _checks(jobs)
    finally:
        jobs.close()
    return result


def memory_child(name: str, variant: str, data_dir: str, batch: int) -> dict[str, Any]:
    """One variant's job in this fresh process: its peak memory."""
    jobs = Jobs(name, _data(data_dir), batch, [variant])
    try:
        jobs.x, full = jobs.x[:batch], jobs.x
        jobs.run(variant)  # warm-up on one batch
        jobs.x = full
        _reset_peak()
        kept = jobs.run(variant)  # the result stays alive while the peak is read
        peak = max(_status("VmHWM"), _status("VmRSS"))
        del kept
        return {"peak": peak,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    finally:
        jobs.close()


def _checks(jobs: Jobs) -> dict[str, Any]:
    """Outside the timing: outputs during a capture equal plain forwards bit for bit; the
    patterns against the naive (explicit) computation."""
    import numpy as np
    import torch

    from shenjing.hooks import forward_hooks

    att = jobs.shenjing()
    x, batch = jobs.x[:2 * jobs.batch], jobs.batch
    seen: list[torch.Tensor] = []
    with forward_hooks(jobs.model, {"": lambda _m, _a, o: seen.append(_logits(o).clone())}):
        from shenjing.capture.attention import capture_attention

        capture_attention(jobs.model, x, batch_size=batch)
    with torch.no_grad():
        plain = [_logits(jobs.model(x[i:i + batch])) for i in range(0, len(x), batch)]
    identical = len(seen) == len(plain) + 1 and all(
        torch.equal(a, b) for a, b in zip(seen[1:], plain, strict=True))
    result: dict[str, Any] = {
        "identical": identical, "passed": bool(att.passed),
        "check_error": max(att.check_error.values()), "tolerance": att.tolerance,
        "shape": list(att.patterns.shape), "bytes": int(att.patterns.nbytes)}
    if jobs.explicit is not None:
        result["vs_naive"] = float(np.abs(np.asarray(att.patterns) - jobs.naive()).max())
    return result


# ---- the driver ---------------------------------------------------------------------------
def _torchlens_problem(env: dict[str, str]) -> str | None:
    """None when torchlens imports and traces here, else why not (one line)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import torch, torchlens as tl; "
         "tl.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))"],
        env=env, capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {probe.returncode}"


def _run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(name: str, variants: list[str], timing: dict[str, Any],
           memory: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
    seconds, checks = timing["seconds"], timing["checks"]
    wall, cpu = timing["ratio"], timing["cpu_ratio"]

    def ratio(v: str, kind: dict[str, list[float]]) -> float:
        return statistics.median(kind[v])

    shape = tuple(checks["shape"])
    lines = [f"### {name}: patterns {shape} float32, {checks['bytes'] / 2**20:.1f} MiB", "",
             "| variant | median s | × bare (median of paired rounds) | × bare, CPU time "
             "| peak RSS MiB | above the bare forward's MiB |",
             "|---|---:|---:|---:|---:|---:|"]
    floor = memory.get("bare", {}).get("peak", float("nan"))
    for v in variants:
        peak = memory.get(v, {}).get("peak", float("nan"))
        lines.append(f"| {v} | {statistics.median(seconds[v]):.3f} | "
                     f"{ratio(v, wall):.2f}× | {ratio(v, cpu):.2f}× | "
                     f"{peak / 2**20:.0f} | {(peak - floor) / 2**20:+.0f} |")
    vs = checks.get("vs_naive")
    lines += ["", f"Checks: outputs during the capture bit-identical to plain forwards: "
              f"**{'yes' if checks['identical'] else 'NO'}**; pattern @ V check "
              f"{'passed' if checks['passed'] else 'FAILED'} (largest error "
              f"{checks['check_error']:.1e}, tolerance {checks['tolerance']:.0e} × max(1, "
              f"max |V|)); largest difference to the naive patterns "
              f"{'n/a' if vs is None else f'{vs:.1e}'}.", ""]
    naive = ratio("naive", wall) / ratio("shenjing", wall) if "naive" in wall else None
    tl = ratio("torchlens", wall) / ratio("shenjing", wall) if "torchlens" in wall else None
    disk = f"; to disk {ratio('shenjing-disk', wall):.2f}×" if "shenjing-disk" in wall else ""
    summary = (f"- {name}: capture ÷ bare forward **{ratio('shenjing', wall):.2f}×** "
               f"({ratio('shenjing', cpu):.2f}× in CPU time{disk}; goal ≤ 1.5×)"
               + (f"; naive ÷ capture {naive:.2f}×" if naive else "")
               + (f"; torchlens ÷ capture {tl:.1f}×" if tl else ""))
    return lines, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results" / "attention.md"))
    args = parser.parse_args()
    variants = args.variants.split(",")
    if args.child:
        kind, name, *rest = args.child
        result = time_child(name, args.data, args.batch, args.rounds, variants) \
            if kind == "time" else memory_child(name, rest[0], args.data, args.batch)
        print(json.dumps(result))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    tl_path = os.environ.get("TORCHLENS_PATH")
    if tl_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tl_path, env.get("PYTHONPATH")]))
    tl_problem = _torchlens_problem(env) if "torchlens" in variants else None
    if tl_problem is not None:
        variants.remove("torchlens")
        print(f"torchlens does not run here ({tl_problem}): skipped", file=sys.stderr)
    common = ["--data", args.data, "--batch", str(args.batch), "--rounds", str(args.rounds)]
    sections, summary = [], []
    ours = [v for v in variants if v != "torchlens"]
    for name in args.models.split(","):
        timing = _run_child(["--child", "time", name, *common, "--variants", ",".join(ours)],
                            env)
        if "torchlens" in variants:  # its own process: it rewrites torch's functions
            alone = _run_child(["--child", "time", name, *common, "--variants",
                                "bare,torchlens"], env)
            for kind in ("seconds", "cpu", "ratio", "cpu_ratio"):
                timing[kind]["torchlens"] = alone[kind]["torchlens"]
        memory = {v: _run_child(["--child", "memory", name, v, *common, "--variants", v], env)
                  for v in variants}
        print(f"{name}: " + ", ".join(
            f"{v} {statistics.median(timing['seconds'][v]):.3f} s" for v in variants),
            file=sys.stderr)
        lines, line = _table(name, variants, timing, memory)
        sections += lines
        summary.append(line)
    if tl_problem:
        summary.append(f"- torchlens: not run ({tl_problem}).")

    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if "torchlens" in variants:
        versions += ", torchlens " + subprocess.run(
            [sys.executable, "-c", "import torchlens; print(torchlens.__version__)"],
            env=env, capture_output=True, text=True).stdout.strip()
    command = " ".join(["python", "bench/attention.py", *sys.argv[1:]])
    text = "\n".join([
        "## Attention capture benchmark (bench/attention.py)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        "sessions (absolute times drift: compare the ratios), 1 torch thread, "
        f"`OMP_WAIT_POLICY=PASSIVE`; Python {platform.python_version()}, {versions}.", "",
        f"Command: `{command}`" + (" with `TORCHLENS_PATH` set" if tl_path else "") + ".", "",
        f"All layers and heads of 2,000 MNIST test images, batches of {args.batch}. Time: "
        f"each model's variants in one process, in turn, {args.rounds} rounds after a "
        "warm-up; the ratio is the median over rounds of each variant's time over the bare "
        "forward's in the same round (whole jobs: probe, allocation, copies). Memory: each "
        "variant once more in a fresh process set up the same way, its peak resident set "
        "during the job (VmHWM reset just before it), and that less the bare forward's.", "",
        *sections, "Ratios:", "", *summary, ""])
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
