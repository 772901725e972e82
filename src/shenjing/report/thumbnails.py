"""Input images for the embedding maps' hover thumbnails — read only when that runs no code
and reads nothing outside the run folder.

A run folder is data: the report reloads the run's dataset only when it is a built-in dataset
or a plain data file (.npz, .npy, an image folder) that lies inside the run folder — the
report is a page that gets shared, so a run.json naming ``/home/you/private.npz`` must not
put its images into it. A dataset made by code (a data factory), a data file outside the
run, one the run cannot reload, or inputs that are not images get no thumbnails, and the
caption says why. (``inspect`` hands the report the data it has just loaded, so its first
report has thumbnails for any data.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shenjing.errors import ShenjingError, UntrustedCodeError
from shenjing.report.run_files import files_inside_run
from shenjing.runs import Run

TILE = 28  # thumbnail side in the sprite sheet, pixels


@dataclass(frozen=True)
class ThumbnailInputs:
    """The test split's inputs and their sample ids, or why there are none to show."""

    x: Any  # (n, channels, height, width) or (n, height, width) tensor, or None
    position_of: dict[int, int]  # sample id in the source files → row of ``x``
    missing: str = ""  # why there are no thumbnails ("" when there are)


def data_is_code(run: Run) -> bool:
    """Whether reloading the run's data would run code named by the run folder."""
    flag = getattr(run, "data_is_code", None)
    if isinstance(flag, bool):
        return flag
    return run.manifest.get("data", {}).get("name") == "factory"


#: the spec keys that name files, per user-data kind (see shenjing.data.custom)
_DATA_FILES = {"npz": ("path",), "npy": ("x", "y"), "image-folder": ("path",)}


def data_outside_run(run: Run) -> str:
    """Why reloading the run's data would read files outside the run folder, or ""."""
    spec = run.manifest.get("data", {}) or {}
    keys = _DATA_FILES.get(str(spec.get("name")))
    if keys is None:
        return ""  # a built-in dataset: its own files (digits is embedded)
    named = [str(spec[k]) for k in keys if isinstance(spec.get(k), str) and spec[k]]
    if len(named) != len(keys):
        return "the run's data spec names no file"
    problem = files_inside_run(run, named)
    return (f"the report reads only files inside the run folder, and the run's data is not "
            f"there ({problem})") if problem else ""


def _is_image(x: Any) -> bool:
    shape = tuple(getattr(x, "shape", ()))[1:]
    return (len(shape) == 2 and min(shape) >= 4) or (
        len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) >= 4)


def thumbnail_inputs(run: Run) -> ThumbnailInputs:
    """The inputs of the run's test split, when they can be read without running code."""
    # data already in memory (inspect attaches it) is used as it is: no code runs
    loaded = run.data if run.data_loaded else None
    if loaded is None:
        if data_is_code(run):
            return ThumbnailInputs(None, {}, "the run's data is made by code (a data factory), "
                                        "which the report does not run")
        outside = data_outside_run(run)
        if outside:
            return ThumbnailInputs(None, {}, outside)
        try:
            loaded = run.data
        except UntrustedCodeError:
            return ThumbnailInputs(None, {}, "reading the run's data would run code it names, "
                                        "which the report does not run")
        except (ShenjingError, OSError, ValueError) as exc:
            return ThumbnailInputs(None, {}, f"the run's data could not be reloaded ({exc})")
    split = loaded.test
    if not _is_image(split.x):
        return ThumbnailInputs(None, {}, "the inputs are not images")
    return ThumbnailInputs(split.x, {int(v): i for i, v in enumerate(split.indices.tolist())})


def sprite_png(inputs: ThumbnailInputs, ids: tuple[int, ...]) -> tuple[bytes, int] | None:
    """One PNG sheet of the inputs with sample ids ``ids`` (in that order) and its number of
    columns; None when any of them is not in the test split (so no image would be wrong)."""
    from shenjing.plot.interactive import make_sprite

    if inputs.x is None:
        return None
    positions = [inputs.position_of.get(i, -1) for i in ids]
    if not positions or min(positions) < 0:
        return None
    return make_sprite(np.asarray(inputs.x[positions]), tile=TILE)
