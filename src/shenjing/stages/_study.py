"""What the trained studies (``gan``, ``dann``) share about their run folder: one check of
``--resume`` / ``--force`` against what the folder holds, made before any data is loaded;
one check that a resumed run was started with the same settings; the layer table; and how
``shenjing demo --full`` reuses a finished study.

Unlike the views, which read a run someone trained, these stages train the run they write,
so they own its whole life: create, resume, extend or start over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing import _io
from shenjing.errors import RunError, UsageError
from shenjing.runs import LAYER_TABLE, Run, check_removable, check_run_folder


def refuse_resume_with_force(resume: bool, force: bool) -> None:
    """``--resume`` and ``--force`` together are refused: one continues, one deletes."""
    if resume and force:
        raise UsageError("--resume and --force contradict each other: --resume continues the "
                         "run, --force deletes it and starts over; pass one")


def check_study_folder(path: Path, *, resume: bool, force: bool,
                       check_resumable: Callable[[Run], None]) -> bool:
    """Whether ``path`` already holds a run, after refusing what cannot go on (reads only):
    an existing run without ``resume`` or ``force``; with ``resume``, a run
    ``check_resumable`` refuses; with ``force``, a folder :func:`check_removable` refuses;
    a new ``path`` that is a file or another tool's folder (:func:`check_run_folder`)."""
    if (path / "run.json").exists():
        if not (resume or force):
            raise RunError(f"{path} already holds a run; pass --resume to continue it or "
                           "--force to start over")
        old = Run(path)  # a foreign or newer run.json is refused here
        if resume:
            check_resumable(old)
        else:
            check_removable(path)
        return True
    check_run_folder(path)
    return False


def check_same_settings(run: Run, *, model: str, what: str, asked: Mapping[str, Any],
                        keys: Iterable[str]) -> None:
    """Refuse to resume ``run`` unless its model is ``model`` (a ``what`` run) and its
    recorded config agrees with ``asked`` on ``keys`` (a key the run lacks is not
    compared: older runs)."""
    theirs = run.manifest.get("model", {}).get("name")
    if theirs != model:
        raise RunError(f"{run.path} is not a {what} run (its model is {theirs!r}); choose "
                       "another --run folder")
    was = run.manifest.get("config", {})
    diff = [k for k in keys if k in was and was[k] != asked[k]]
    if diff:
        shown = ", ".join(f"{k}: run has {was[k]!r}, asked {asked[k]!r}" for k in diff)
        raise RunError(f"cannot resume {run.path} with different settings ({shown}); use the "
                       "same options, or --force to start over")


def write_layer_table(run: Run, model: nn.Module, example: torch.Tensor) -> None:
    """``RUN/layers.json``: the layers of the run's model, traced on ``example`` (a batch
    of two), so the report shows them without rebuilding the model."""
    from shenjing.capture.layers import list_layers

    dev = next(model.parameters()).device
    _io.write_json(run.path / LAYER_TABLE, list_layers(model, example[:2].to(dev)).to_dict())


def demo_study_record(path: Path, *, stage: str, epochs: int, force: bool,
                      train: Callable[..., object]) -> dict[str, Any]:
    """The demo's study in ``path``: reused when its ``stage`` is done at ``epochs`` with
    its report, else trained by ``train(path, epochs=…, resume=…, force=…)`` (resuming a
    killed or shorter run); returns the stage's record."""
    run_json = path / "run.json"
    record = (Run(path).stage(stage) if not force and run_json.is_file()
              and (path / "report.html").is_file() else {})
    if not (record.get("status") == "done" and record.get("epochs") == epochs):
        train(path, epochs=epochs, resume=run_json.is_file() and not force,
              force=force and run_json.is_file())
    return dict(Run(path).stage(stage))


__all__ = ["check_same_settings", "check_study_folder", "demo_study_record",
           "refuse_resume_with_force", "write_layer_table"]
