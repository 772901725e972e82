"""Recompute every landscape of some runs with this code and the engine settings they record.

    .venv/bin/python scripts/replay_landscapes.py FOLDER [--work DIR]

``FOLDER`` is a run folder or a folder of runs (e.g. ``runs/demo``). The automatic engine
*measures* which evaluation path, batch size, thread count and memory layout is fastest, so
two runs of the same command can pick different settings and their losses then differ in the
last bits (a float reduction in another order). To compare code and not timing, each run
folder is copied to ``DIR``, every point of every ``landscapes/*.npz`` is marked not done
(the file keeps the engine settings it was computed with), and the landscape stage that
wrote the file is run again on the copy with the options read from the file: the stage
resumes, so every point is recomputed by this code with the recorded settings. Loss and
accuracy must then equal the stored ones bit for bit; every difference is printed.

Exit status 0 when every landscape is reproduced exactly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _steps(axis: np.ndarray, anchors: tuple[float, ...]) -> int:
    """The ``steps`` that gave ``axis`` (an anchor not on the even grid adds one value)."""
    from shenjing.analysis.landscape import make_axis

    for steps in (len(axis), len(axis) - 1, len(axis) - 2):
        if steps >= 2 and np.array_equal(make_axis(axis[0], axis[-1], steps, anchors), axis):
            return steps
    raise ValueError(f"no step count gives the stored axis {axis[0]}…{axis[-1]}")


def _common(meta: dict[str, Any]) -> dict[str, Any]:
    prov = meta.get("provenance", {})
    samples = prov.get("samples", "all")
    return {"samples": None if samples == "all" else int(samples),
            "sample_seed": int(prov.get("sample_seed", 0)), "split": prov.get("split", "test"),
            "dtype": meta.get("engine", {}).get("dtype", "float32"),
            "precision": meta.get("precision", {}).get("mode", "exact")
            if isinstance(meta.get("precision"), dict) else "exact",
            "device": "cpu", "figures": False, "progress": False}


def _replay(run_path: Path, file: Path) -> Any:
    """Run the stage that wrote ``file`` again, with the options it records."""
    from shenjing.analysis.landscape import load_landscape
    from shenjing.runs import open_run
    from shenjing.stages import landscape as stage

    ls = load_landscape(file)
    meta, run = ls.meta, open_run(run_path)
    epochs = meta.get("provenance", {}).get("epochs", {})
    common = _common(meta)
    if ls.kind == "line":
        if epochs.get("start_run"):
            raise ValueError("a line from another run is not replayed")
        return stage.landscape_line(run, start=int(epochs["start"]), end=int(epochs["end"]),
                                    steps=_steps(ls.axes[0], (0.0, 1.0)),
                                    range_=(float(ls.axes[0][0]), float(ls.axes[0][-1])),
                                    **common)
    if ls.kind == "trajectory":
        return stage.landscape_trajectory(run, steps=_steps(ls.axes[0], (0.0,)), **common)
    d = meta.get("directions", {})
    return stage.landscape_plane(run, epoch=int(epochs["center"]),
                                 steps=_steps(ls.axes[0], (0.0,)),
                                 range_=(float(ls.axes[0][0]), float(ls.axes[0][-1])),
                                 norm=str(d.get("norm", "filter")), seed=int(d.get("seed", 0)),
                                 include_1d=d.get("ignore") != "biasbn",
                                 bn="recompute" if "re-estimated" in meta.get("bn_policy", "")
                                 else "eval", **common)


def _forget_points(file: Path) -> None:
    """Mark every point of a landscape file not done; its settings and engine stay."""
    with np.load(file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["done"] = np.zeros_like(arrays["done"])
    for key in ("loss", "accuracy"):
        arrays[key] = np.full_like(arrays[key], np.nan)
    np.savez_compressed(file, **arrays)


def replay_folder(folder: Path, work: Path) -> list[str]:
    """Every difference between the stored landscapes under ``folder`` and their replay."""
    from shenjing.analysis.landscape import load_landscape

    found: list[str] = []
    runs = sorted({p.parent.parent for p in folder.rglob("landscapes/*.npz")})
    for run_path in runs:
        copy = work / run_path.name
        shutil.copytree(run_path, copy)
        files = sorted(f for f in (copy / "landscapes").glob("*.npz")
                       if not f.name.endswith(".directions.npz")
                       and not f.name.startswith("hessian-")
                       and not f.name.endswith(".progress.npz"))
        for file in files:
            stored = load_landscape(run_path / "landscapes" / file.name)
            _forget_points(file)
            where = f"{run_path.name}/landscapes/{file.name}"
            try:
                _replay(copy, file)
            except Exception as exc:  # one file's trouble is reported, the rest go on
                found.append(f"{where}: not replayed ({type(exc).__name__}: {exc})")
                continue
            again = load_landscape(file)
            if again.meta.get("engine", {}).get("path") != stored.meta["engine"]["path"]:
                found.append(f"{where}: replayed with another engine")
            for key in ("loss", "accuracy"):
                a, b = getattr(stored, key), getattr(again, key)
                if not np.array_equal(a, b, equal_nan=True):
                    diff = float(np.nanmax(np.abs(a - b)))
                    found.append(f"{where}[{key}]: {int(np.sum(a != b))} values differ, "
                                 f"largest |difference| {diff:.3g}")
            print(f"{where}: {stored.n_done} points, engine {stored.meta['engine']['path']}, "
                  + ("identical" if not any(f.startswith(where) for f in found)
                     else "DIFFERS"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--work", type=Path, default=None,
                        help="where the copies go [a temporary folder, deleted after]")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        found = replay_folder(args.folder.resolve(), work)
    for line in found:
        print(line)
    print(f"{len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
