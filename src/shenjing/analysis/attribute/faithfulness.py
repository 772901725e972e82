"""Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018): does the map rank
the pixels the model's decision rests on first?

Deletion replaces the most-attributed pixels first (all channels of a pixel at once) by the
baseline and follows the target class's probability as the removed fraction grows; a
faithful map makes it fall fast (small area under the curve). Insertion starts from the
baseline and puts the most-attributed pixels back first; a faithful map makes it rise
fast (large area). Both are compared with a random pixel order (seeded), the same for
every method. Pixel ranks come from the display map's values (signed maps: most positive
first); ties keep pixel order. All samples × fractions are evaluated in batches, under
``torch.no_grad()``; the area is the trapezoid rule over fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing._checks import bounded_int, random_seed
from shenjing.errors import ShapeMismatchError

from ._model import check_targets, class_outputs, eval_mode, model_device
from .methods import resolve_baseline


@dataclass(frozen=True)
class DeletionInsertion:
    """Target-class probabilities ``(N, F)`` at ``fractions`` ``(F,)`` of pixels removed
    (deletion) or inserted (insertion), in the map's order and in a random one, and the
    area under each curve ``(N,)``."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_random: np.ndarray
    insertion_random: np.ndarray
    targets: np.ndarray
    baseline: str
    seed: int

    @staticmethod
    def _auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
        return np.trapezoid(curves, fractions, axis=-1)

    @property
    def deletion_auc(self) -> np.ndarray:
        return self._auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> np.ndarray:
        return self._auc(self.insertion, self.fractions)

    @property
    def deletion_auc_random(self) -> np.ndarray:
        return self._auc(self.deletion_random, self.fractions)

    @property
    def insertion_auc_random(self) -> np.ndarray:
        return self._auc(self.insertion_random, self.fractions)

    def lines(self) -> list[str]:
        """``deletion AUC 0.12 (random 0.41) — lower is better`` and the insertion line."""
        return [f"deletion AUC {self.deletion_auc.mean():.3f} (random order "
                f"{self.deletion_auc_random.mean():.3f}) — lower is better",
                f"insertion AUC {self.insertion_auc.mean():.3f} (random order "
                f"{self.insertion_auc_random.mean():.3f}) — higher is better"]

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(), "baseline": self.baseline,
                "seed": self.seed,
                "deletion_auc": float(self.deletion_auc.mean()),
                "insertion_auc": float(self.insertion_auc.mean()),
                "deletion_auc_random": float(self.deletion_auc_random.mean()),
                "insertion_auc_random": float(self.insertion_auc_random.mean()),
                "deletion_auc_per_sample": self.deletion_auc.tolist(),
                "insertion_auc_per_sample": self.insertion_auc.tolist(),
                "deletion": self.deletion.mean(0).tolist(),
                "insertion": self.insertion.mean(0).tolist(),
                "deletion_random": self.deletion_random.mean(0).tolist(),
                "insertion_random": self.insertion_random.mean(0).tolist(),
                "lines": self.lines()}


def _curves(model: nn.Module, x: torch.Tensor, b: torch.Tensor, order: torch.Tensor,
            counts: list[int], targets: torch.Tensor, batch_size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion probabilities ``(N, F)`` for pixel ``order`` ``(N, H·W)``."""
    n, _c, h, w = x.shape
    # rank[i, p] = position of pixel p in sample i's order
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    k = torch.tensor(counts, device=x.device)
    out = {}
    for kind in ("deletion", "insertion"):
        probs = torch.empty(n * len(counts), device=x.device)
        rows = [(i, j) for i in range(n) for j in range(len(counts))]
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            ii = torch.tensor([r[0] for r in part], device=x.device)
            jj = torch.tensor([r[1] for r in part], device=x.device)
            top = (rank[ii] < k[jj].unsqueeze(1)).reshape(-1, 1, h, w)  # first k pixels
            if kind == "deletion":
                imgs = torch.where(top, b[ii], x[ii])
            else:
                imgs = torch.where(top, x[ii], b[ii])
            p = torch.softmax(class_outputs(model, imgs, len(imgs)), dim=1)
            probs[start:start + len(part)] = p[torch.arange(len(part)), targets[ii]]
        out[kind] = probs.reshape(n, len(counts)).cpu().numpy().astype(np.float64)
    return out["deletion"], out["insertion"]


def deletion_insertion(model: nn.Module, x: Any, maps: Any, *, targets: Any,
                       fractions: int = 20, baseline: str | torch.Tensor = "zeros",
                       data_mean: Any = None, batch_size: int = 256, seed: int = 0
                       ) -> DeletionInsertion:
    """Deletion/insertion curves of ``maps`` ``(N, H, W)`` on inputs ``x`` ``(N, C, H, W)``
    for classes ``targets``, at ``fractions + 1`` evenly spaced fractions 0 … 1 of the
    pixels; removed pixels take the ``baseline`` (``'zeros'``, ``'mean'`` with
    ``data_mean``, or a tensor); the random order is drawn from ``seed``."""
    fractions = bounded_int("fractions", fractions, low=1, example=20)
    batch_size = bounded_int("batch_size", batch_size, low=1, example=256)
    seed = random_seed("seed", seed)
    dev = model_device(model)
    x = torch.as_tensor(x).float().to(dev)
    m = torch.as_tensor(np.asarray(maps)).float().to(dev)
    if x.ndim != 4 or m.shape != (x.shape[0], x.shape[2], x.shape[3]):
        raise ShapeMismatchError(f"maps shaped {tuple(m.shape)} do not fit inputs shaped "
                                 f"{tuple(x.shape)}: give one (height, width) map per input")
    b, kind = resolve_baseline(baseline, x, data_mean)
    n, _c, h, w = x.shape
    t = torch.as_tensor(np.asarray(targets)).long().reshape(-1).to(dev)
    if len(t) != n:
        raise ShapeMismatchError(f"{len(t)} targets for {n} inputs; give one class per input")
    counts = [round(j * h * w / fractions) for j in range(fractions + 1)]
    # stable sort: most attributed first, ties in pixel order
    order = torch.sort(-m.reshape(n, -1), dim=1, stable=True).indices
    gen = np.random.default_rng(seed)
    rnd = torch.as_tensor(np.stack([gen.permutation(h * w) for _ in range(n)])).to(dev)
    with eval_mode(model), torch.no_grad():
        check_targets(t.cpu(), class_outputs(model, x[:1], 1).shape[1])
        dele, ins = _curves(model, x, b, order, counts, t, batch_size)
        dele_r, ins_r = _curves(model, x, b, rnd, counts, t, batch_size)
    return DeletionInsertion(
        fractions=np.array(counts, dtype=np.float64) / (h * w), deletion=dele,
        insertion=ins, deletion_random=dele_r, insertion_random=ins_r,
        targets=t.cpu().numpy(), baseline=kind, seed=seed)
