"""Memory a landscape job needs, estimated before anything is allocated, and the refusal.

Why: ``landscape --steps 100000`` died with ``_ArrayMemoryError … 74.5 GiB`` after it had
built the model and written its stage as running. The grid's arrays (loss, accuracy,
done-mask, coordinates, the copies made while filling, merging with an earlier file and
saving) grow with the number of points; the engine's copies of the weights with the number
of parameters; the trajectory's PCA with checkpoints × parameters. Each is estimated here
from the options alone (or the model's parameter count) and compared with
:func:`shenjing.capture.dataset.memory_budget` (half the memory available now). Above it,
one :class:`~shenjing.errors.ResourceError` names the size, the budget and the option that
reduces it (exit 1); nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from shenjing.capture import dataset as _memory
from shenjing.capture.activations import format_bytes
from shenjing.errors import ResourceError

BYTES_PER_POINT = 256
"""Peak bytes per grid point (measured with tracemalloc: 90 B while a 1001×1001 plane is
filled and saved, 216 B while it is merged with the file an earlier run left; the rest is
headroom for the figures and the VTK text)."""

_MATCH_TOL = 1e-9  # as :func:`shenjing.analysis.landscape.grid.make_axis`


def axis_length(lo: float, hi: float, steps: int, anchors: Sequence[float] = (0.0,)) -> int:
    """The number of values :func:`~shenjing.analysis.landscape.grid.make_axis` returns,
    computed without building the axis (``steps`` may be 10¹²).

    >>> axis_length(-1, 1, 21), axis_length(-1, 1, 20), axis_length(-0.5, 1.5, 51, (0, 1))
    (21, 21, 53)
    """
    steps = int(steps)
    span = hi - lo
    extra = 0
    for a in anchors:
        if not lo <= a <= hi:
            continue
        t = (a - lo) / span * (steps - 1)
        nearest = min(max(round(t), 0), steps - 1)
        if abs(nearest - t) > _MATCH_TOL * (steps - 1):
            extra += 1
    return steps + extra


def grid_bytes(n_points: int) -> int:
    """Peak bytes of a grid of ``n_points`` (see :data:`BYTES_PER_POINT`)."""
    return int(n_points) * BYTES_PER_POINT


def _budget_text(budget: int) -> str:
    return f"only {format_bytes(budget)} is allowed (half the memory available now)"


def check_grid(shape: Sequence[int], *, kind: str, option: str = "steps") -> None:
    """Refuse a grid of ``shape`` (points per axis) whose arrays would not fit in memory.

    ``kind`` names it in the message (``line``, ``plane``, ``trajectory plane``);
    ``option`` is how the caller spells the steps option (``--steps``, ``--plane-steps``).
    """
    n_points = math.prod(int(s) for s in shape)
    need = grid_bytes(n_points)
    budget = _memory.memory_budget()
    if need <= budget:
        return
    fits = budget // BYTES_PER_POINT
    if len(shape) == 1:
        what = f"a {kind} of {n_points:,} points"
        suggest = max(2, fits - 2)  # make_axis may insert α = 0 and 1
    else:
        what = f"a {'×'.join(map(str, shape))} {kind} ({n_points:,} points)"
        side = math.isqrt(max(fits, 0)) - 1  # an anchor may add a point per axis
        suggest = max(2, side - (1 - side % 2))  # odd: 0 on the grid, no point added
    example = f"{option} {suggest}" if option.startswith("-") else f"{option}={suggest}"
    raise ResourceError(
        f"{what} needs about {format_bytes(need)} of memory ({BYTES_PER_POINT} bytes per "
        f"point) but {_budget_text(budget)}; reduce {option}, e.g. {example}")


def engine_bytes(n_params: int, k: int, itemsize: int, data_bytes: int = 0) -> int:
    """Bytes the evaluation engine holds besides the model: per evaluator a private copy
    of the net, the centre, the directions, the working point and the transposed
    directions (2k + 3 vectors of ``n_params``); two evaluators overlap while the paths are
    timed; plus the flat centre and two copies of the samples."""
    return (2 * (2 * k + 3) + 1) * int(n_params) * int(itemsize) + 2 * int(data_bytes)


def check_engine(n_params: int, k: int, *, itemsize: int = 4, data_bytes: int = 0,
                 device: str = "cpu") -> None:
    """Refuse a landscape whose weight copies would not fit in memory (RAM for the CPU;
    the GPU's free memory for CUDA)."""
    need = engine_bytes(n_params, k, itemsize, data_bytes)
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget, where = int(free), f"the {format_bytes(free)} free on {device}"
    else:
        budget = _memory.memory_budget()
        where = _budget_text(budget)
    if need > budget:
        hints = (["--dtype float32 (half of float64)"] if itemsize == 8 else []) + \
            (["fewer --samples"] if 2 * data_bytes > need / 2 else []) + \
            ["a device with more memory"]
        raise ResourceError(
            f"evaluating {k} direction(s) of a model with {n_params:,} parameters needs about "
            f"{format_bytes(need)} of memory for copies of its weights ({2 * (2 * k + 3) + 1} "
            f"vectors of {itemsize} bytes per parameter, and the samples) but {where}; use "
            + ", ".join(hints))


def trajectory_bytes(n_checkpoints: int, n_params: int) -> int:
    """Bytes of the trajectory's PCA: every checkpoint as float32 state, then as float64
    flat vectors, their offsets from θ* and the centred offsets."""
    return int(n_checkpoints) * int(n_params) * (4 + 8 + 8 + 8)


def check_trajectory(n_checkpoints: int, n_params: int) -> None:
    """Refuse a trajectory plane whose PCA would not fit in memory."""
    need = trajectory_bytes(n_checkpoints, n_params)
    budget = _memory.memory_budget()
    if need > budget:
        raise ResourceError(
            f"the trajectory plane's PCA of {n_checkpoints} checkpoints × {n_params:,} "
            f"parameters needs about {format_bytes(need)} of memory but {_budget_text(budget)}"
            "; no option of `landscape trajectory` reduces it: use `landscape plane` (two random "
            "directions) instead, or a machine with more memory")


__all__ = ["BYTES_PER_POINT", "axis_length", "check_engine", "check_grid", "check_trajectory",
           "engine_bytes", "grid_bytes", "trajectory_bytes"]
