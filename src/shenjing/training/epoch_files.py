"""What a training loop of its own (the GAN's, the DANN's) keeps per epoch, in one place.

Both adversarial studies train outside :mod:`shenjing.training.trainer` and resume the same
way: each epoch ends with its weights (safetensors) and its optimizers' state, the state of
only the last two epochs kept, and a history line written last (a line means the epoch is
complete). These helpers write and read those files safely: the optimizer state is a
``torch.save`` zip read back with ``weights_only=True`` only, and a diverged network is
refused before anything of its epoch is written.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from shenjing import _io
from shenjing.errors import CheckpointError, RunError

STATE_FILE = re.compile(r"^state-(\d{3,})\.pt$")
"""An epoch's optimizer-state file: ``state-NNN.pt``."""

_FIX = "delete it to resume from the epoch before, or start over with --force"


def state_path(folder: Path, epoch: int) -> Path:
    return folder / f"state-{epoch:03d}.pt"


def check_finite(parameters: Iterable[tuple[str, torch.Tensor]], *, what: str,
                 epoch: int) -> None:
    """Refuse an epoch whose parameters hold NaN or inf (nothing of it is written)."""
    for name, p in parameters:
        if not bool(torch.isfinite(p.detach()).all()):
            raise RunError(f"{what} diverged in epoch {epoch}: parameter {name!r} holds NaN "
                           "or inf; lower --lr and start over with --force")


def save_state(folder: Path, epoch: int, state: Mapping[str, Any]) -> Path:
    """``folder/state-NNN.pt`` atomically; states older than the epoch before are removed."""
    target = state_path(folder, epoch)
    with _io.atomic_path(target) as tmp:
        torch.save({"epoch": epoch, **state}, tmp)
    for old in folder.iterdir():
        found = STATE_FILE.match(old.name)
        if found and int(found[1]) < epoch - 1:
            old.unlink(missing_ok=True)
    return target


def load_state(path: Path, *, keys: Iterable[str], what: str) -> dict[str, Any]:
    """An optimizer-state file, read with ``weights_only=True`` (anything else refused,
    nothing runs); it must hold ``keys``."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not the zip archive torch.save writes; {_FIX}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: refused as optimizer state ({type(exc).__name__}); "
                              f"{_FIX}") from None
    if not isinstance(state, dict) or not set(keys) <= set(state):
        raise CheckpointError(f"{path}: not the {what} optimizer state shenjing saves; {_FIX}")
    return state


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors checkpoint, or one error saying how to go on."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint "
                              f"({type(exc).__name__}); {_FIX}") from None


def keep_history(path: Path, records: list[dict[str, Any]], kept: list[dict[str, Any]]
                 ) -> None:
    """Rewrite the history file with ``kept`` when lines were dropped (a resumed epoch)."""
    if len(kept) != len(records):
        _io.write_text(path, "".join(_io.jsonl_line(r) for r in kept))


__all__ = ["STATE_FILE", "check_finite", "keep_history", "load_state", "load_weights",
           "save_state", "state_path"]
