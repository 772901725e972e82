"""The model randomization test (Adebayo et al., "Sanity checks for saliency maps",
NeurIPS 2018): if a method explains the model, its maps must change when the model's
learned weights are destroyed.

Cascading randomization: the layers with parameters are re-initialised from the top
(output) down, cumulatively, in forward-execution order — stage k has the last k layers
re-initialised (``reset_parameters()``, which for a norm layer is its fresh state, seeded).
At each stage the maps are recomputed for the same inputs and the same target classes, and
compared per sample with the trained model's maps by Spearman's rank correlation and SSIM,
both on **absolute values** (as in the paper's main figures), SSIM on maps scaled to [0, 1]
by their maximum. A map that became constant (a CAM all zero) has no ranking: its Spearman
is NaN, and it counts as decorrelated (0) in the verdict.

Verdict: a method **passes** when, with every layer re-initialised, its maps decorrelate
from the trained ones in rank *or* in structure: the mean Spearman correlation over samples
is below :data:`THRESHOLD`, or the mean SSIM is. Both are reported, and when only SSIM
fell the verdict says that the rank order still follows the input (methods that multiply
by the input, Integrated Gradients from a zero baseline, keep its support: Adebayo et al.
saw the same for Gradient ⊙ Input). A method whose maps do not change (an edge detector on
the input) keeps both near 1 and fails, and the verdict says so.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing._checks import random_seed

from ._model import eval_mode
from .methods import AttributionFn, attribute
from .ssim import spearman, ssim

#: the largest mean Spearman (|maps|) with every layer re-initialised that still passes
THRESHOLD = 0.5


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite values (NaN when none is)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


@dataclass(frozen=True)
class RandomizationResult:
    """Per stage (``stages[k]``: the layer re-initialised at stage k, top-down, all above it
    re-initialised too) and sample: ``spearman`` and ``ssim`` ``(stages, N)`` between the
    trained maps ``original`` ``(N, H, W)`` and ``randomized`` ``(stages, N, H, W)``."""

    method: str
    stages: tuple[str, ...]
    spearman: np.ndarray
    ssim: np.ndarray
    original: np.ndarray
    randomized: np.ndarray
    threshold: float = THRESHOLD
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def final_spearman(self) -> float:
        """Mean Spearman over samples with every layer re-initialised (NaN counted as 0)."""
        return float(np.mean(np.nan_to_num(self.spearman[-1], nan=0.0)))

    @property
    def final_ssim(self) -> float:
        return float(np.mean(self.ssim[-1]))

    @property
    def rank_decorrelated(self) -> bool:
        return self.final_spearman < self.threshold

    @property
    def structure_decorrelated(self) -> bool:
        return self.final_ssim < self.threshold

    @property
    def passed(self) -> bool:
        return self.rank_decorrelated or self.structure_decorrelated

    @property
    def outcome(self) -> str:
        """``pass`` (rank order and structure both decorrelated), ``partial`` (one of them:
        the maps keep something of the input, not of the model) or ``fail`` (neither)."""
        if self.rank_decorrelated and self.structure_decorrelated:
            return "pass"
        return "partial" if self.passed else "fail"

    @property
    def verdict(self) -> str:
        numbers = (f"with all {len(self.stages)} layers re-initialised, mean Spearman |map| "
                   f"{self.final_spearman:.2f}, SSIM {self.final_ssim:.2f} (threshold "
                   f"{self.threshold})")
        if self.rank_decorrelated and self.structure_decorrelated:
            why = "its maps decorrelate from the trained model's"
        elif self.passed:
            why = ("its maps change in structure, but their rank order still follows the "
                   "input" if self.structure_decorrelated else
                   "its maps change in rank order, but keep their local structure")
        else:
            why = ("its maps barely change when the weights are destroyed, so they do not "
                   "explain the model")
        word = {"pass": "passed", "partial": "passed in part", "fail": "FAILED"}[self.outcome]
        return f"{self.method}: randomization test {word} — {numbers}: {why}"

    def stage_lines(self) -> list[str]:
        """One line per stage: the layer re-initialised down to, mean Spearman and SSIM."""
        lines = []
        for name, sp, ss in zip(self.stages, self.spearman, self.ssim, strict=True):
            rho = float(np.nanmean(sp)) if np.isfinite(sp).any() else float("nan")
            lines.append(f"  down to {name:<20} Spearman {rho:+.2f}  SSIM {np.mean(ss):+.2f}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "stages": list(self.stages),
                "spearman_mean": [_nanmean(s) for s in self.spearman],
                "ssim_mean": [float(np.mean(s)) for s in self.ssim],
                "spearman": self.spearman.tolist(), "ssim": self.ssim.tolist(),
                "absolute_values": True, "threshold": self.threshold,
                "final_spearman": self.final_spearman, "final_ssim": self.final_ssim,
                "passed": self.passed, "outcome": self.outcome,
                "rank_decorrelated": self.rank_decorrelated,
                "structure_decorrelated": self.structure_decorrelated,
                "verdict": self.verdict, "seed": self.seed,
                "options": dict(self.options)}


def parameter_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules holding parameters of their own, in forward-execution order
    (one forward on one sample); modules that never ran come last, in definition order."""
    own = {id(m): n for n, m in model.named_modules()
           if n and any(True for _ in m.parameters(recurse=False))}
    order: list[str] = []
    handles = []

    def seen(mod: nn.Module, _a: tuple[Any, ...], _o: Any) -> None:
        name = own.get(id(mod))
        if name is not None and name not in order:
            order.append(name)

    try:
        for m in model.modules():
            if id(m) in own:
                handles.append(m.register_forward_hook(seen))
        with eval_mode(model), torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in own.values() if n not in order]


def _reinit(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            p.normal_(0.0, 0.02)


def _absolute_unit(maps: np.ndarray) -> np.ndarray:
    a = np.abs(maps.astype(np.float64))
    top = a.reshape(len(a), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(a, top, out=np.zeros_like(a), where=top > 0)


def randomization_test(model: nn.Module, x: Any, *, method: str | AttributionFn,
                       targets: Sequence[int] | Any, seed: int = 0,
                       layers: Sequence[str] | None = None, **options: Any
                       ) -> RandomizationResult:
    """Cascading model randomization of ``method`` on inputs ``x`` for the classes
    ``targets`` (one per input: the same classes at every stage). ``layers`` (default: all
    with parameters) are re-initialised from the last to the first; ``options`` go to
    :func:`attribute`. The model itself is never changed (a copy is randomized)."""
    seed = random_seed("seed", seed)
    x = torch.as_tensor(x).float()
    targets = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
    trained = attribute(model, x, method=method, target=targets, seed=seed, **options)
    order = list(layers) if layers is not None else parameter_layers(model, x)
    work = copy.deepcopy(model)
    base = _absolute_unit(trained.maps)
    names, sps, sss, rand = [], [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in reversed(order):
            _reinit(work.get_submodule(name))
            m = attribute(work, x, method=method, target=targets, seed=seed, **options).maps
            cur = _absolute_unit(m)
            names.append(name)
            sps.append(spearman(base, cur))
            sss.append(ssim(base, cur, data_range=1.0))
            rand.append(m)
    return RandomizationResult(
        method=trained.method, stages=tuple(names), spearman=np.array(sps),
        ssim=np.array(sss), original=trained.maps, randomized=np.array(rand, dtype=np.float32),
        seed=seed, options={k: v for k, v in trained.options.items()})
