"""Export a run to one TensorBoard log folder, from the run's files alone.

    shenjing export runs/mlp --tensorboard tb/mlp      # then: tensorboard --logdir tb

What goes in (step = epoch, epoch 0 = the untrained net):

- scalars ``curves/<key>`` for every number of a metrics line (``train_loss``,
  ``test_accuracy``, ``lr`` …), ``dead_units/<relu>`` and ``dynamics/<stat>/<group>`` for the
  per-layer dynamics (``weight_norm``, ``update_ratio``, ``dist_from_init``,
  ``cos_to_init``, ``grad_norm``; see docs/run-format.md); an empty (null) value is left out;
- histograms ``weights/<tensor>`` of every checkpoint's tensors, one per epoch;
- the embedding projector: ``embed --projector`` already wrote
  ``RUN/embeddings/projector/`` (projector_config.pbtxt, TSVs, sprite); it is copied into the
  log folder, where TensorBoard's Projector tab reads it.

The model is never built and no user code runs. The folder is written beside its target and
renamed into place, so a failed export leaves no half log; a folder that holds anything
but an earlier export (``shenjing-export.json`` lists what it wrote) is refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shenjing import _io
from shenjing._optional import require
from shenjing.errors import UsageError
from shenjing.runs import Run

#: the file that marks a folder as written by this export (and lists what it holds)
MARKER = "shenjing-export.json"
#: the per-layer numbers of a metrics line (docs/run-format.md)
LAYER_STATS = ("weight_norm", "update_ratio", "dist_from_init", "cos_to_init", "grad_norm")
#: top-level numbers of a metrics line that are not curves
_NOT_CURVES = {"epoch", "steps", "layers", "dead_units", "params", "nonfinite"}


@dataclass
class TensorBoardExport:
    """What :func:`export_tensorboard` wrote: counts per kind, the projector, the folder."""

    logdir: Path
    n_scalars: int = 0
    n_histograms: int = 0
    epochs: list[int] = field(default_factory=list)
    projector: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [f"TensorBoard log: {self.logdir}  (open with: tensorboard --logdir "
                 f"{self.logdir})",
                 f"  {self.n_scalars} scalar values (curves, dead units, per-layer dynamics) "
                 f"over epochs {self.epochs[0]}–{self.epochs[-1]}" if self.epochs else
                 "  no metrics",
                 f"  {self.n_histograms} weight histograms (one per tensor and checkpoint)"]
        if self.projector:
            lines.append(f"  projector: {len(self.projector)} files "
                         f"({', '.join(self.projector)})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_logdir(run: Run, logdir: str | os.PathLike[str]) -> Path:
    """``logdir`` as a folder the export may (re)write, or one error saying why not."""
    path = Path(logdir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--tensorboard {str(logdir)!r} is a file; pass a folder for the "
                         "TensorBoard log (it is created)")
    resolved, run_dir = path.resolve(), run.path.resolve()
    if resolved == run_dir or run_dir in resolved.parents:
        raise UsageError(f"--tensorboard {str(logdir)!r} is inside the run {run.path}; choose a "
                         "folder outside the run (e.g. tb/<run name>)")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise UsageError(f"--tensorboard {str(logdir)!r} exists and holds files that are not a "
                         "shenjing export; choose a new or empty folder")
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def scalar_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the export writes, by tag: ``[(epoch, value), …]`` from metrics lines.

    >>> scalar_series([{"epoch": 1, "test_loss": 0.5, "layers": {"fc1": {"grad_norm": 2.0}},
    ...                 "dead_units": {"relu1": 0.25}}])
    {'curves/test_loss': [(1, 0.5)], 'dead_units/relu1': [(1, 0.25)], \
'dynamics/grad_norm/fc1': [(1, 2.0)]}
    """
    series: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, epoch: int, value: Any) -> None:
        if _finite(value):
            series.setdefault(tag, []).append((epoch, float(value)))

    for record in records:
        epoch = int(record["epoch"])
        for key, value in sorted(record.items()):
            if key not in _NOT_CURVES:
                add(f"curves/{key}", epoch, value)
        for relu, frac in sorted((record.get("dead_units") or {}).items()):
            add(f"dead_units/{relu}", epoch, frac)
        for group, stats in (record.get("layers") or {}).items():
            for stat in LAYER_STATS:
                add(f"dynamics/{stat}/{group}", epoch, (stats or {}).get(stat))
    return dict(sorted(series.items()))


def export_tensorboard(run: Run, logdir: str | os.PathLike[str], *,
                       histograms: bool = True) -> TensorBoardExport:
    """Write ``run``'s curves, per-layer dynamics, weight histograms and projector files
    into the TensorBoard log folder ``logdir`` (see the module docstring)."""
    target = check_logdir(run, logdir)
    records = run.metrics()
    if not records:
        raise UsageError(f"{run.path} has no metrics.jsonl lines to export; train the run "
                         "first (shenjing train, or a Recorder)")
    tb = require("torch.utils.tensorboard", extra="tensorboard",
                 purpose="shenjing export --tensorboard")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent))
    result = TensorBoardExport(logdir=target, epochs=[int(r["epoch"]) for r in records])
    try:
        writer = tb.SummaryWriter(log_dir=str(scratch), flush_secs=3600)
        try:
            for tag, points in scalar_series(records).items():
                for epoch, value in points:
                    writer.add_scalar(tag, value, global_step=epoch)
                    result.n_scalars += 1
            if histograms:
                for epoch in run.epochs:
                    for name, tensor in run.state_dict(epoch).items():
                        if tensor.numel() and tensor.is_floating_point():
                            writer.add_histogram(f"weights/{name}", tensor.float(),
                                                 global_step=epoch)
                            result.n_histograms += 1
        finally:
            writer.close()
        projector = run.path / "embeddings" / "projector"
        if (projector / "projector_config.pbtxt").is_file():
            for src in sorted(projector.iterdir()):
                if src.is_file():
                    shutil.copyfile(src, scratch / src.name)
                    result.projector.append(src.name)
        else:
            result.notes.append("no projector files in the run; write them with "
                                f"`shenjing embed {run.path} --projector`, then export again")
        written = sorted(p.name for p in scratch.iterdir())
        _io.write_json(scratch / MARKER, {"run": str(run.path.resolve()), "files": written,
                                          "n_scalars": result.n_scalars,
                                          "n_histograms": result.n_histograms})
        _replace(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return result


def _replace(scratch: Path, target: Path) -> None:
    """Put the finished log folder at ``target``: renamed there if new or empty, else the
    earlier export's files (listed in its marker) removed and the new ones moved in."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(scratch, target)
        return
    try:
        old = json.loads((target / MARKER).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        old = []
    for name in old:
        if isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
            (target / name).unlink(missing_ok=True)
    for src in scratch.iterdir():
        os.replace(src, target / src.name)
    scratch.rmdir()
