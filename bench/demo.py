"""Benchmark: where ``shenjing demo`` spends its time, stage by stage.

Runs ``shenjing demo --force`` ``--repeats`` times, each in a fresh process and a fresh
folder, and prints the median seconds of every stage (from the demo's own per-stage lines),
the median total, the CPU time used (user + system of the demo process and its children, so
a demo that keeps both cores busy shows more than 100 %), and the machine's load before and
after. Writes ``bench/results/demo.md``. The README's demo time is this script's median.

    python bench/demo.py [--repeats 3] [--data digits] [-- extra demo options]

Our CPUs are shared and noisy: compare medians, and read the load columns.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_STAGE = re.compile(r"^([\w:.-]+): ([0-9.]+) s\b")
_TOTAL = re.compile(r"done in ([0-9.]+) s")
TOTAL = "TOTAL (the demo's own clock)"
CPU = "CPU % of one core"


def run_once(data: str, extra: list[str]) -> dict[str, float]:
    """One demo in a fresh process and folder: seconds per stage, total, wall, CPU."""
    with tempfile.TemporaryDirectory(prefix="sj-demo-bench-") as folder:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "shenjing", "demo", "--out", folder, "--data", data,
             "--force", *extra], capture_output=True, text=True,
            env={**os.environ, "COLUMNS": "200"})
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    text = proc.stdout + proc.stderr
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _STAGE.match(line.strip())
        if m:
            out[m.group(1)] = float(m.group(2))
    total = _TOTAL.search(text)
    out[TOTAL] = float(total.group(1)) if total else float("nan")
    out["wall incl. start-up"] = wall
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out[CPU] = 100.0 * cpu / wall
    out["load before"] = load
    out["load after"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "demo.md")
    parser.add_argument("extra", nargs="*", help="further `shenjing demo` options")
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        runs.append(run_once(args.data, args.extra))
        print(f"run {i + 1}/{args.repeats}: demo {runs[-1][TOTAL]:.1f} s, CPU "
              f"{runs[-1][CPU]:.0f} %", file=sys.stderr)
    keys = list(dict.fromkeys(k for r in runs for k in r))
    rows = [(k, statistics.median(r[k] for r in runs if k in r),
             min(r[k] for r in runs if k in r), max(r[k] for r in runs if k in r))
            for k in keys]
    lines = [f"# `shenjing demo --data {args.data}`: time per stage (bench/demo.py)", "",
             f"Median of {len(runs)} runs, each a fresh process and folder (`--force`). "
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), Python "
             f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             "", "| stage | median | min | max |", "|---|---|---|---|"]
    for key, med, lo, hi in rows:
        unit = "" if key.startswith(("CPU", "load")) else " s"
        lines.append(f"| {key} | {med:.1f}{unit} | {lo:.1f}{unit} | {hi:.1f}{unit} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
