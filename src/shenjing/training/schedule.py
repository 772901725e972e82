"""Learning-rate schedules, as a pure function of the step: a resumed run continues on the
same curve as an uninterrupted one, with nothing to save but the step count."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")
#: the share of all steps that ``cosine`` spends warming up linearly from lr / warm-up steps
WARMUP_FRACTION = 0.1


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The multiple of the base learning rate for 0-based ``step`` of ``total_steps``.

    ``cosine``: a linear warm-up over the first :data:`WARMUP_FRACTION` of the steps, then
    half a cosine down to zero at the last step (the usual recipe for vision transformers,
    which diverge or stall at a constant rate from the first step).

    >>> [round(lr_factor("cosine", s, 100), 3) for s in (0, 9, 10, 50, 99)]
    [0.1, 1.0, 1.0, 0.579, 0.0]
    >>> lr_factor("constant", 7, 10)
    1.0
    """
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    warmup = math.ceil(WARMUP_FRACTION * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = total_steps - warmup
    if decay_steps <= 1:
        return 1.0
    progress = min(1.0, (step - warmup) / (decay_steps - 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
