"""How a landscape's directions are kept on disk: as a recipe where they can be remade
bit for bit, as float32 vectors only where they cannot.

Why: a direction is one number per parameter. Kept as vectors, a plane around a ResNet-18
(11.7 M parameters) cost 3 × 47 MB (two directions and the centre), a line 2 × 47 MB, and
one ``inspect`` wrote 200 MB of them. Yet most can be remade exactly from what the run
already holds:

``seed`` (random directions)
    ``torch.randn`` on a CPU generator with the recorded seed, normalized against the
    centre's weights (the checkpoint the plane is drawn around): the same float32 numbers
    on any device, for the same torch build. The file keeps the seed, the normalization
    and 1-D policy, the parameter layout, and SHA-256 hashes of the centre and of the
    vectors, so a regenerated set is checked, never trusted blindly.
``end points`` (a line θ₀ → θ*)
    the direction is θ* − θ₀ of two checkpoints; the file keeps both hashes.
``vectors`` (anything else: the trajectory's PCA directions, directions a user passed)
    float32 ``(k, n_params)``; when the directions were computed in float64 (PCA), the
    error of that rounding is in ``meta["storage_error"]`` (max relative error vs float64,
    ≤ 2⁻²⁴ ≈ 6e-8). The float32 vectors stored are exactly the ones that were evaluated.

Before saving a recipe, :func:`save_directions` regenerates the directions from it and
compares hashes; if they differ the vectors are stored instead, so a file always gives back
the directions its surface was computed with.

The file (``<landscape stem>.directions.npz``) holds ``meta`` (JSON: ``format`` 2,
``stored_as``, ``sha256``, ``center_sha256``, ``layout``, ``info``, …) and, only for
``vectors``, the array ``vectors``. Files of format 1 (``vectors``, ``layout``, ``info``,
``center`` arrays, written before) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing import _io
from shenjing.analysis.landscape.directions import (
    Directions,
    ParamLayout,
    line_direction,
    random_directions,
)
from shenjing.errors import CheckpointError, UsageError

FORMAT = 2
Weights = nn.Module | Mapping[str, torch.Tensor] | torch.Tensor
"""A point in parameter space: a model, a state dict, or a flat ``(n_params,)`` vector."""


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """sha256 over the CPU bytes of the given tensors (provenance of weights and data)."""
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().to("cpu").contiguous()
        h.update(str(arr.dtype).encode())
        h.update(arr.numpy().tobytes() if arr.dtype != torch.bfloat16 else
                 arr.float().numpy().tobytes())
    return h.hexdigest()


def directions_path(path: str | os.PathLike[str]) -> Path:
    """Where a landscape file's directions are kept: ``<stem>.directions.npz`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".directions.npz")


def _tensors(point: Weights, layout: ParamLayout) -> dict[str, torch.Tensor]:
    if isinstance(point, nn.Module):
        return {n: p.detach() for n, p in point.named_parameters()}
    if isinstance(point, torch.Tensor):
        if point.numel() != layout.size:
            raise UsageError(f"a flat vector of {point.numel()} values was given for "
                             f"{layout.size} parameters")
        return layout.split(point.detach().reshape(-1))
    return dict(point)


def _flat_sha256(point: Weights, layout: ParamLayout) -> str:
    """The hash a landscape records for its centre: float32 bytes in layout order."""
    return tensor_sha256(layout.flatten(_tensors(point, layout), device="cpu",
                                        dtype=torch.float32))


def _regenerate(meta: Mapping[str, Any], layout: ParamLayout, center: Weights | None,
                start: Weights | None) -> Directions:
    """Directions remade from a recipe (no hash check here)."""
    info = dict(meta.get("info") or {})
    if meta["stored_as"] == "seed":
        assert center is not None
        dirs = random_directions(_tensors(center, layout), int(info["k"]),
                                 seed=int(info["seed"]), norm=info["norm"],
                                 ignore_1d=info.get("ignore") == "biasbn", layout=layout)
        return Directions(dirs.vectors.to("cpu"), layout, info)
    assert center is not None and start is not None
    _, dirs = line_direction(_tensors(start, layout), _tensors(center, layout), layout=layout)
    return Directions(dirs.vectors.to("cpu"), layout, info)


def _recipe(directions: Directions, start: Weights | None) -> str | None:
    kind = directions.info.get("kind")
    if kind == "random" and {"seed", "norm", "k"} <= set(directions.info):
        return "seed"
    if kind == "line" and start is not None:
        return "end points"
    return None


def save_directions(path: str | os.PathLike[str], directions: Directions,
                    center: Weights | None = None, *, start: Weights | None = None) -> Path:
    """Write ``directions`` as a recipe if they can be remade from it, else as float32.

    ``center``: the point they belong to (a plane's θ*, a line's end θ*); ``start``: a
    line's start θ₀. Without them the vectors are stored.
    """
    layout = directions.layout
    meta: dict[str, Any] = {
        "format": FORMAT, "sha256": directions.sha256(), "layout": layout.to_json(),
        "info": directions.info, "n_params": layout.size, "k": directions.k,
        "torch": torch.__version__}
    recipe = _recipe(directions, start) if center is not None else None
    if center is not None:
        meta["center_sha256"] = _flat_sha256(center, layout)
    if recipe is not None:
        meta["stored_as"] = recipe
        if start is not None:
            meta["start_sha256"] = _flat_sha256(start, layout)
        if _regenerate(meta, layout, center, start).sha256() == directions.sha256():
            return _io.save_npz(path, meta=meta)
        meta["recipe_refused"] = (f"regenerating the directions from their {recipe} gave "
                                  "other numbers; stored as vectors")
    meta["stored_as"] = "vectors"
    meta["vectors_dtype"] = "float32"
    err = directions.info.get("float32_error")
    meta["storage_error"] = err if err is not None else {
        "max_rel_error_vs_float64": 0.0,
        "note": "the directions were float32 already: stored exactly as evaluated"}
    return _io.save_npz(path, meta=meta,
                        vectors=directions.vectors.detach().to("cpu", torch.float32).numpy())


def read_directions_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON part of a directions file (format 1 files: layout, info, ``stored_as``
    ``vectors`` and the vectors' hash), without regenerating anything."""
    with np.load(path, allow_pickle=False) as z:
        if "meta" in z.files:
            return dict(json.loads(str(z["meta"])))
        vectors = torch.from_numpy(z["vectors"].copy())
        layout = ParamLayout.from_json(json.loads(str(z["layout"])))
        info = json.loads(str(z["info"]))
        return {"format": 1, "stored_as": "vectors", "layout": layout.to_json(), "info": info,
                "sha256": Directions(vectors, layout, info).sha256(),
                "vectors_dtype": str(z["vectors"].dtype)}


def stored_directions_sha256(path: str | os.PathLike[str]) -> str | None:
    """The hash of the directions kept at ``path`` (None if there is no readable file)."""
    try:
        return str(read_directions_meta(path)["sha256"])
    except (OSError, ValueError, KeyError):
        return None


def load_directions(path: str | os.PathLike[str], *, center: Weights | None = None,
                    start: Weights | None = None
                    ) -> tuple[Directions, np.ndarray | None]:
    """Read directions written by :func:`save_directions`, regenerating a recipe.

    Returns ``(directions, center)``; ``center`` is the flat centre for files of format 1,
    which stored it, else None (the centre is the run's checkpoint). A ``seed`` file needs
    ``center`` (the weights the plane was drawn around), an ``end points`` file ``center``
    (the end) and ``start``; both are checked against the hashes recorded, and the
    regenerated vectors against theirs (:class:`CheckpointError` if either differs).
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        if "meta" not in z.files:  # format 1: vectors (and the centre) as arrays
            layout = ParamLayout.from_json(json.loads(str(z["layout"])))
            info = json.loads(str(z["info"]))
            old_center = z["center"] if "center" in z.files else None
            return Directions(torch.from_numpy(z["vectors"].copy()), layout, info), old_center
        meta = json.loads(str(z["meta"]))
        vectors = z["vectors"].copy() if "vectors" in z.files else None
    layout = ParamLayout.from_json(meta["layout"])
    info = dict(meta.get("info") or {})
    if meta["stored_as"] == "vectors":
        assert vectors is not None
        return Directions(torch.from_numpy(vectors), layout, info), None
    needs = {"center": center} | ({"start": start} if meta["stored_as"] == "end points"
                                  else {})
    missing = [k for k, v in needs.items() if v is None]
    if missing:
        what = ("the weights the plane was drawn around (its centre θ*)"
                if meta["stored_as"] == "seed" else "the line's end (center=) and start "
                "(start=) weights")
        raise UsageError(f"the directions in {path.name} are stored as their "
                         f"{meta['stored_as']} ({_describe(info)}): pass "
                         f"{' and '.join(f'{k}=' for k in missing)} — {what}; "
                         "from a run, use shenjing.stages.landscape.landscape_directions")
    for key, point in needs.items():
        want = meta.get(f"{key}_sha256")
        got = _flat_sha256(point, layout)  # type: ignore[arg-type]
        if want is not None and got != want:
            raise CheckpointError(
                f"the {key} weights given are not the ones the directions in {path.name} "
                f"were made from (SHA-256 {got[:12]}… vs {want[:12]}… recorded); pass the "
                "checkpoint the landscape names in its provenance")
    dirs = _regenerate(meta, layout, center, start)
    if dirs.sha256() != meta["sha256"]:
        raise CheckpointError(
            f"regenerating the directions in {path.name} from their {meta['stored_as']} gave "
            f"other numbers than the ones stored (torch {torch.__version__} here, "
            f"{meta.get('torch', '?')} when saved)")
    return dirs, None


def _describe(info: Mapping[str, Any]) -> str:
    if info.get("kind") == "random":
        return (f"seed {info.get('seed')}, {info.get('norm')}-normalized, "
                f"1-D tensors {'fixed' if info.get('ignore') == 'biasbn' else 'perturbed'}")
    return str(info.get("kind", "?"))
