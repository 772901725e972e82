"""Animated GIFs across epochs, written with Pillow (atomically).

Frames are matplotlib Figures rendered to RGB at a fixed dpi (no tight bbox, so every
frame of same-sized figures has the same size); frames of different sizes are padded
with white to the largest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.errors import UsageError


def figure_to_array(fig: Any, *, dpi: int = 100) -> np.ndarray:
    """Render a Figure to an ``(height, width, 3)`` uint8 RGB array."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _pad(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    out = []
    for f in frames:
        canvas = np.full((h, w, 3), 255, dtype=np.uint8)
        canvas[: f.shape[0], : f.shape[1]] = f
        out.append(canvas)
    return out


def save_gif(frames: Sequence[Any], path: str | os.PathLike[str], *, duration_ms: int = 700,
             loop: int = 0, dpi: int = 100) -> Path:
    """Write ``frames`` (Figures or ``(H, W, 3)`` uint8 arrays) as an animated GIF.

    Returns the path. ``duration_ms`` is each frame's display time; ``loop=0`` repeats
    forever. The file appears only when complete.
    """
    from PIL import Image

    if not frames:
        raise UsageError("a GIF needs at least one frame")
    if duration_ms < 1:
        raise UsageError(f"duration_ms must be ≥ 1, got {duration_ms}")
    arrays = [f if isinstance(f, np.ndarray) else figure_to_array(f, dpi=dpi) for f in frames]
    images = [Image.fromarray(a.astype(np.uint8), mode="RGB") for a in _pad(arrays)]
    path = Path(path)
    with _io.atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=loop, optimize=False, disposal=1)
    return path


def read_gif(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The frames of a GIF as RGB arrays (for tests and the report)."""
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]
