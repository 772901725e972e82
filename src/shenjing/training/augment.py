"""Training-time augmentation of image batches, drawn from the epoch's own generator so that
the same seed gives the same run (and a resumed run the same epochs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) moved by its own random whole-pixel offset in
    [-shift, shift] along both axes. What moves in repeats the edge pixels, so the
    background stays the background whatever the pixel scaling (zero would be the data's
    mean for standardised MNIST, a grey frame).

    The offsets come from ``generator`` (on the CPU), one pair per image.

    >>> x = torch.arange(9.).reshape(1, 1, 3, 3)
    >>> random_shift(x, 0, torch.Generator()).equal(x)
    True
    """
    if shift <= 0:
        return x
    n, _, height, width = x.shape
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator)
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    out = torch.empty_like(x)
    # one slice per distinct offset: at most (2·shift + 1)² copies, never one per image
    keys = (offsets[0] * (2 * shift + 1) + offsets[1]).to(x.device)
    for key in torch.unique(keys).tolist():
        dy, dx = divmod(int(key), 2 * shift + 1)
        rows = keys == key
        out[rows] = padded[rows, :, dy:dy + height, dx:dx + width]
    return out
