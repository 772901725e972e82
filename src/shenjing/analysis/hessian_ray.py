"""Sharpness across training on a Ray cluster: one task per checkpoint.

λ_max at every epoch is a Lanczos run per checkpoint, each independent of the others, so
each is one Ray task. The driver puts the model, the samples and each checkpoint's weights
into the object store once; a task rebuilds that epoch's model, runs
:func:`~shenjing.analysis.hessian.lanczos_top` exactly as the local loop does (same seed,
tolerance, samples) and returns its finished piece, which the driver writes into the
stage's :class:`~shenjing.analysis.landscape.resume.ResumeFile` as it arrives. The local
loop that follows then finds every epoch done and reads the values from there, so what is
written next is the local code's own; a killed driver's rerun submits only the epochs whose
piece is not in the file, and a task whose worker died is retried by Ray.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.landscape.resume import ResumeFile
from shenjing.backend import Backend

MAX_RETRIES = 3
"""Retries of a task whose worker process died."""


def epoch_top_piece(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, *, loss: str, tol: float, seed: int, device: str,
                    name: str, key: str, threads: int | None = None) -> dict[str, Any]:
    """λ_max of ``model`` with ``state`` loaded: the finished Lanczos piece the local loop
    would have saved under ``name``/``key``, with the seconds it took and where."""
    import os

    from shenjing.analysis.hessian import HessianOperator, lanczos_top

    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    net = copy.deepcopy(model)
    net.load_state_dict(state)
    op = HessianOperator(net, x, y, loss=loss, device=device)
    memory = ResumeFile(None, key)
    lanczos_top(op, op.dim, 1, tol=tol, seed=seed, resume=memory, name=name, key=key)
    piece = memory.get(name, key)
    assert piece is not None and piece.get("done")
    return {"piece": piece, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def epoch_tops_on_ray(model: nn.Module, states: Mapping[int, Mapping[str, torch.Tensor]],
                      keys: Mapping[int, str], x: torch.Tensor, y: torch.Tensor, *,
                      loss: str, tol: float, seed: int, backend: Backend,
                      resume: ResumeFile, note: Callable[[str], None] | None = None
                      ) -> dict[str, Any]:
    """Fill ``resume`` with the finished λ_max piece of every epoch in ``states`` not yet
    there (piece ``"epoch <e> top"`` under ``keys[e]``, as the local loop names them),
    one Ray task per epoch. Returns what ran where: ``{"tasks": [...], "reused": [...]}``.
    """
    import ray

    todo = [e for e in states if resume.get(f"epoch {e} top", keys[e]) is None]
    record: dict[str, Any] = {"name": "ray", "reused": sorted(set(states) - set(todo)),
                              "tasks": []}
    if not todo:
        return record
    device = "cuda" if backend.num_gpus > 0 else "cpu"
    threads = None if backend.num_gpus > 0 else max(1, int(backend.num_cpus))
    cpu = torch.device("cpu")
    model_ref = ray.put(copy.deepcopy(model).to(cpu))
    x_ref, y_ref = ray.put(x.detach().to(cpu)), ray.put(y.detach().to(cpu))
    remote: Any = ray.remote
    task = remote(epoch_top_piece).options(num_cpus=backend.num_cpus,
                                           num_gpus=backend.num_gpus, max_retries=MAX_RETRIES)
    pending = {}
    for e in todo:
        state_ref = ray.put({k: v.detach().to(cpu) for k, v in states[e].items()})
        ref = task.remote(model_ref, state_ref, x_ref, y_ref, loss=loss, tol=tol, seed=seed,
                          device=device, name=f"epoch {e} top", key=keys[e], threads=threads)
        pending[ref] = e
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        e = pending.pop(ready[0])
        out = ray.get(ready[0])
        resume.put(f"epoch {e} top", out["piece"], key=keys[e], final=True)
        record["tasks"].append({"epoch": e, "seconds": round(out["seconds"], 4),
                                "pid": out["pid"],
                                "top_eigenvalue": float(np.asarray(out["piece"]["values"])[0])})
        if note is not None:
            note(f"λ_max at epoch {e} (ray)")
    return record


__all__ = ["epoch_top_piece", "epoch_tops_on_ray"]
