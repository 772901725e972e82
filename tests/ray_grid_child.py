"""A tiny landscape problem shared by the Ray tests, and a driver a test kills mid-grid.

``python tests/ray_grid_child.py FD ADDRESS PATH`` joins the Ray cluster at ADDRESS,
computes the plane of :func:`tiny_problem` into PATH on it, and once the first tile is in
the file writes one line to the file descriptor FD and blocks, to be killed there
(:mod:`kill_at_signal`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn

#: the engine settings both backends use when a test compares them bit for bit
EXACT = {"engine": "loop", "batch_size": 64, "threads": 1, "device": "cpu"}


def tiny_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small classifier and 256 samples, the same in every process."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 4))
    x = torch.randn(256, 6, generator=gen)
    y = torch.randint(0, 4, (256,), generator=gen)
    return net, x, y


def plane_kwargs(**extra: Any) -> dict[str, Any]:
    return {"loss": "cross_entropy", "steps": 11, "range_": (-1.0, 1.0), **EXACT, **extra}


def main() -> None:
    fd, address, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import ray

    from shenjing.analysis.landscape import load_landscape, plane
    from shenjing.backend import Backend

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    net, x, y = tiny_problem()

    def progress(done: int, total: int) -> None:
        if done and os.path.exists(path) and load_landscape(path).n_done:
            os.write(fd, f"{load_landscape(path).n_done}\n".encode())
            sys.stdin.read()  # blocks: the parent kills this process here

    plane(net, x, y, path=path, progress=progress,
          backend=Backend("ray", workers=2, tile=8), **plane_kwargs())


if __name__ == "__main__":
    main()
