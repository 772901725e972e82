"""Export features to the TensorBoard Embedding Projector's file format.

Written into one folder (open it with ``tensorboard --logdir FOLDER``, tab "Projector", or
load the TSV files at projector.tensorflow.org)::

    projector_config.pbtxt     one ``embeddings { … }`` block per tensor
    <name>.tsv                 (samples, features) tab-separated floats, no header
    metadata.tsv               header ``index\\tlabel\\tclass`` then one row per sample
    sprite.png                 the input images tiled in a square grid (optional)

No TensorFlow or TensorBoard is needed to write these files.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.errors import UsageError

MAX_SPRITE_PX = 8192  # TensorBoard's limit on the sprite's side


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "tensor"


def sprite_image(images: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """Tile images (samples, channels, h, w) or (samples, h, w) in [0, 1] into a uint8 grid.

    Returns the sprite (H, W) or (H, W, 3) and the single-image size (h, w).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else np.moveaxis(x[:, :3], 1, -1)
    if x.ndim not in (3, 4):
        raise UsageError(f"sprite images must be (samples, [channels,] h, w), got {x.shape}")
    n, h, w = x.shape[:3]
    side = math.ceil(math.sqrt(n))
    if side * max(h, w) > MAX_SPRITE_PX:
        raise UsageError(f"{n} images of {h}×{w} make a sprite wider than {MAX_SPRITE_PX} px; "
                         "export fewer samples")
    lo, hi = float(x.min()), float(x.max())
    scaled = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    grid = np.ones((side * h, side * w, *x.shape[3:]), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, side)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = scaled[i]
    return (grid * 255).round().astype(np.uint8), (h, w)


def export_projector(folder: str | os.PathLike[str], tensors: Mapping[str, Any], *,
                     labels: Any = None, indices: Any = None,
                     classes: Sequence[str] | None = None, images: Any = None) -> Path:
    """Write ``tensors`` (name → (samples, features)) in the Projector format into ``folder``.

    >>> import numpy as np, tempfile
    >>> out = export_projector(tempfile.mkdtemp(), {"fc1": np.eye(3)}, labels=[0, 1, 1])
    >>> sorted(p.name for p in out.iterdir())
    ['fc1.tsv', 'metadata.tsv', 'projector_config.pbtxt']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not tensors:
        raise UsageError("export_projector needs at least one tensor")
    n = None
    for name, t in tensors.items():
        rows = np.shape(t)[0]
        if n is not None and rows != n:
            raise UsageError(f"all tensors must hold the same samples: {name!r} has {rows}, "
                             f"others {n}")
        n = rows
    assert n is not None
    idx = np.arange(n) if indices is None else np.asarray(indices)
    lab = None if labels is None else np.asarray(labels)
    lines = ["index\tlabel\tclass"]
    for i in range(n):
        label = "" if lab is None else str(int(lab[i]) if lab.ndim == 1 else lab[i].tolist())
        cls = (classes[int(lab[i])] if lab is not None and classes and lab.ndim == 1
               and 0 <= int(lab[i]) < len(classes) else label)
        lines.append(f"{int(idx[i])}\t{label}\t{cls}")
    _io.write_text(folder / "metadata.tsv", "\n".join(lines) + "\n")
    sprite_block = ""
    if images is not None:
        from PIL import Image

        grid, (h, w) = sprite_image(images)
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        _io.write_bytes(folder / "sprite.png", buf.getvalue())
        sprite_block = (f'  sprite {{\n    image_path: "sprite.png"\n'
                        f"    single_image_dim: {w}\n    single_image_dim: {h}\n  }}\n")
    config = []
    for name, t in tensors.items():
        x = np.asarray(t, dtype=np.float32).reshape(n, -1)
        text = io.StringIO()
        np.savetxt(text, x, delimiter="\t", fmt="%.6g")
        fname = f"{_safe(name)}.tsv"
        _io.write_text(folder / fname, text.getvalue())
        config.append(f'embeddings {{\n  tensor_name: "{name}"\n  tensor_path: "{fname}"\n'
                      f'  metadata_path: "metadata.tsv"\n{sprite_block}}}\n')
    _io.write_text(folder / "projector_config.pbtxt", "".join(config))
    return folder
