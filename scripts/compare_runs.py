"""Compare the numbers in two run folders (or two folders of runs) and print every difference.

    .venv/bin/python scripts/compare_runs.py BEFORE AFTER [--show 20]

Used to prove that a change of code left behaviour unchanged: run the same commands with
the old and the new code into two folders, then compare them. Every file in either folder
is matched by its relative path:

- arrays (``.npz``, ``.npy``, ``.safetensors``, ``.pt`` read with ``weights_only=True``)
  must have the same keys, dtypes, shapes and values, bit for bit (NaN equal to NaN);
- ``.json`` / ``.jsonl`` (and JSON strings stored inside ``.npz`` files) must hold the same
  values, numbers compared exactly; keys that record *when* or *how fast* something ran
  (``created``, ``updated``, timings, measured engine timings, the report page's size) are
  left out, and the folder names themselves are replaced by ``<ROOT>`` so two folders can be
  compared. A landscape's engine settings are *measured* (the fastest path, batch, threads
  and layout here and now): where two files record other settings, that is said, and their
  losses may differ in the last bits — ``scripts/replay_landscapes.py`` then recomputes each
  landscape with the settings it records, to compare the code and not the timing;
- other text files (``.vtk``, ``.csv``) must be equal after the same folder-name
  replacement; figures, pages and animations (``.png``, ``.svg``, ``.gif``, ``.html``) and
  logs are compared by presence only (they embed renderer versions and timings).

Exit status 0 when nothing differs, 1 otherwise; the last line says how many files and
values were compared.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PRESENCE_ONLY = {".png", ".svg", ".gif", ".html", ".log", ".lock", ".tmp"}
ARRAY_FILES = {".npz", ".npy", ".safetensors", ".pt"}
JSON_FILES = {".json", ".jsonl"}
#: keys whose values say when or how fast something ran, not what it computed
VOLATILE_KEYS = {"created", "updated", "started", "finished", "seconds", "elapsed",
                 "elapsed_s", "duration", "duration_s", "wall_s", "time", "timings",
                 "measurements", "reason_measured", "eta", "pid", "host", "hostname"}


#: values under these paths (ends of a dotted path) are volatile too
VOLATILE_PATHS = (".stages.report.bytes", ".engine.reason")


def _volatile(key: str, where: str = "") -> bool:
    return (key in VOLATILE_KEYS or key.endswith(("_seconds", "_time", "_ms", "_per_point"))
            or f"{where}.{key}".endswith(VOLATILE_PATHS))


@dataclass
class Report:
    """What was compared and every difference found."""

    root_a: Path
    root_b: Path
    differences: list[str] = field(default_factory=list)
    n_files: int = 0
    n_values: int = 0

    def differ(self, where: str, what: str) -> None:
        self.differences.append(f"{where}: {what}")


def _normalise(text: str, report: Report, side: str) -> str:
    root = report.root_a if side == "a" else report.root_b
    return text.replace(str(root.resolve()), "<ROOT>").replace(str(root), "<ROOT>")


def _as_json(value: Any) -> Any | None:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return None
    return None


def compare_values(a: Any, b: Any, where: str, report: Report) -> None:
    """Compare two JSON-like values; numbers exactly, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if _volatile(str(key), where):
                continue
            if key not in a or key not in b:
                report.differ(f"{where}.{key}", "only in " + ("before" if key in a else "after"))
                continue
            compare_values(a[key], b[key], f"{where}.{key}", report)
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            report.differ(where, f"length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            compare_values(x, y, f"{where}[{i}]", report)
        return
    report.n_values += 1
    if isinstance(a, str) and isinstance(b, str):
        ja, jb = _as_json(a), _as_json(b)
        if ja is not None and jb is not None:
            compare_values(ja, jb, where, report)
            return
        a, b = _normalise(a, report, "a"), _normalise(b, report, "b")
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    if type(a) is not type(b) or a != b:
        report.differ(where, f"{a!r} != {b!r}")


def compare_arrays(a: np.ndarray, b: np.ndarray, where: str, report: Report) -> None:
    """Same dtype, shape and values bit for bit (NaN equal to NaN); JSON strings by value."""
    report.n_values += int(a.size)
    if a.dtype.kind in "US" and b.dtype.kind in "US" and a.shape == b.shape == ():
        compare_values(str(a), str(b), where, report)
        return
    if a.dtype != b.dtype or a.shape != b.shape:
        report.differ(where, f"{a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}")
        return
    if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
        if a.dtype.kind in "fc":
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            finite = diff[np.isfinite(diff)]
            worst = float(finite.max()) if finite.size else float("nan")
            n = int(np.count_nonzero(~np.isclose(a, b, rtol=0, atol=0, equal_nan=True)))
            report.differ(where, f"{n} of {a.size} values differ, largest |difference| "
                                 f"{worst:.3g}")
        else:
            report.differ(where, f"{int(np.count_nonzero(a != b))} of {a.size} values differ")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    suffix = path.suffix
    if suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    return dict(_flatten_tensors(obj, ""))


def _flatten_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj.detach().cpu().numpy()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten_tensors(v, f"{prefix}[{i}]")
    else:
        yield prefix, np.asarray(obj)


def _json_lines(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [json.loads(text)]


def compare_file(rel: str, a: Path, b: Path, report: Report) -> None:
    """Compare one file present in both folders, by its kind."""
    suffix = a.suffix
    if suffix in PRESENCE_ONLY:
        return
    report.n_files += 1
    if suffix in ARRAY_FILES:
        xa, xb = _arrays(a), _arrays(b)
        for key in sorted(set(xa) | set(xb)):
            if key not in xa or key not in xb:
                report.differ(f"{rel}[{key}]", "only in " + ("before" if key in xa else "after"))
            else:
                compare_arrays(xa[key], xb[key], f"{rel}[{key}]" if key else rel, report)
    elif suffix in JSON_FILES:
        compare_values(_json_lines(a), _json_lines(b), rel, report)
    else:
        ta = _normalise(a.read_text(encoding="utf-8", errors="replace"), report, "a")
        tb = _normalise(b.read_text(encoding="utf-8", errors="replace"), report, "b")
        report.n_values += 1
        if ta != tb:
            report.differ(rel, "text differs")


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def compare_folders(before: Path, after: Path) -> Report:
    """Every difference between the two folders' files (see the module docstring)."""
    report = Report(before, after)
    fa, fb = _files(before), _files(after)
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fa or rel not in fb:
            report.differ(rel, "file only in " + ("before" if rel in fa else "after"))
            continue
        compare_file(rel, fa[rel], fb[rel], report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--show", type=int, default=50, help="differences to print at most")
    args = parser.parse_args(argv)
    for folder in (args.before, args.after):
        if not folder.is_dir():
            parser.error(f"{folder} is not a folder")
    report = compare_folders(args.before, args.after)
    for line in report.differences[:args.show]:
        print(line)
    if len(report.differences) > args.show:
        print(f"… and {len(report.differences) - args.show} more")
    print(f"{len(report.differences)} differences in {report.n_files} files "
          f"({report.n_values:,} values compared; figures and pages by presence only)")
    return 1 if report.differences else 0


if __name__ == "__main__":
    sys.exit(main())
