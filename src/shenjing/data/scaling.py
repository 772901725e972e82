"""How raw pixel counts become the float inputs a model sees: ``normalize`` for image data.

A model is only as good as the scaling it was trained with: a net trained on pixels in
[0, 1] scores lower when shown standardised pixels, so the scaling is an explicit choice,
recorded in the data spec (``normalize``) and rebuilt from it:

- ``"standard"``: ``(x / max_value − mean) / std`` with the dataset's published pixel mean
  and std (MNIST 0.1307 / 0.3081, as in PyTorch's MNIST example);
- ``"unit"``: ``x / max_value``, in [0, 1] (``max_value`` is 255 for 8-bit pixels, 16 for
  scikit-learn's digits, whose pixels are counts 0..16);
- ``"none"``: the raw counts as float32 (0..255, or 0..16 for digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from shenjing.errors import UsageError

Normalize = Literal["standard", "unit", "none"]
NORMALIZE_CHOICES: tuple[str, ...] = ("standard", "unit", "none")


@dataclass(frozen=True)
class PixelScale:
    """What a dataset's raw pixel values mean: their maximum, and (for ``"standard"``) the
    mean and std of its training images after dividing by that maximum."""

    max_value: float
    mean: float | None = None
    std: float | None = None


def check_normalize(value: str, *, allowed: tuple[str, ...] = NORMALIZE_CHOICES,
                    what: str = "this dataset") -> str:
    """``value`` if it is one of ``allowed``; otherwise a :class:`UsageError` naming them."""
    if value not in allowed:
        extra = ""
        if value in NORMALIZE_CHOICES:
            extra = f" ({value!r} is not available for {what})"
        raise UsageError(f"normalize={value!r} (--normalize) is not one of "
                         f"{', '.join(allowed)}{extra}; pass e.g. --normalize {allowed[0]}")
    return value


def scale_pixels(raw: np.ndarray, mode: str, scale: PixelScale) -> np.ndarray:
    """Raw pixel counts (any shape, integer or float) → float32 scaled as ``mode`` says.

    The arithmetic is float32 throughout (divide, then subtract and divide), so
    ``"standard"`` gives exactly the tensors shenjing gave before ``normalize`` existed.
    """
    check_normalize(mode)
    x = raw.astype(np.float32)
    if mode == "none":
        return x
    x = x / np.float32(scale.max_value)
    if mode == "unit":
        return x
    if scale.mean is None or scale.std is None:
        raise UsageError("normalize='standard' needs the dataset's pixel mean and std, and "
                         "none is known for these images; use --normalize unit or none")
    return (x - scale.mean) / scale.std


def pixel_range(mode: str, scale: PixelScale) -> tuple[float, float]:
    """The values black (0) and white (``max_value``) pixels take under ``mode``."""
    if mode == "none":
        return 0.0, float(scale.max_value)
    if mode == "unit":
        return 0.0, 1.0
    assert scale.mean is not None and scale.std is not None
    return (0.0 - scale.mean) / scale.std, (1.0 - scale.mean) / scale.std


def describe(mode: str, scale: PixelScale) -> str:
    """The scaling as a formula, for the spec's ``pixels`` entry (shown in the report)."""
    top = f"{scale.max_value:g}"
    if mode == "none":
        return f"raw values 0..{top} as float32"
    if mode == "unit":
        return f"x / {top}, in [0, 1]"
    return f"standardised: (x / {top} − {scale.mean}) / {scale.std}"


def spec_entries(mode: str, scale: PixelScale) -> dict[str, object]:
    """What a data spec records about the scaling: ``normalize``, the formula as ``pixels``,
    and for ``"standard"`` the ``mean`` and ``std`` used (descriptions: a reload takes the
    constants from the dataset, not from the spec)."""
    entries: dict[str, object] = {"normalize": mode, "pixels": describe(mode, scale)}
    if mode == "standard":
        entries.update(mean=scale.mean, std=scale.std)
    return entries


def note(mode: str, scale: PixelScale) -> str:
    """One sentence for the dataset's notes."""
    return f"pixels {describe(mode, scale)} (normalize={mode!r})"


__all__ = ["NORMALIZE_CHOICES", "Normalize", "PixelScale", "check_normalize", "describe",
           "note", "pixel_range", "scale_pixels", "spec_entries"]
