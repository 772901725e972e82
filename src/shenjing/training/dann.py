"""Training seed 001's DANN three ways, one epoch at a time, and the differentiable cores of
the two alignment measures (multi-kernel MMD², CORAL) that the study also reports.

The three ways, all from the same initial weights (the same seed):

- ``source_only``: cross-entropy on labelled source batches only;
- ``dann``: the seed's loss, cross-entropy on the source plus the domain classifier's
  cross-entropy on source and target batches, through the gradient-reversal layer (λ);
- ``mmd`` / ``coral``: cross-entropy plus ``align_weight`` × the MMD² or CORAL distance
  between the source and target batches' ``feature`` outputs (no domain classifier).

An epoch is one pass over the shuffled source training images in batches of
``batch_size``; each step pairs the source batch with an equally large target batch drawn
from shuffled passes over the (unlabelled) target training images. Determinism: each epoch
reseeds the shuffling and the global RNG from ``(seed, method, epoch)``, so a run resumed
after its last finished epoch continues exactly as an uninterrupted one.

The numeric cores here (:func:`mmd2_unbiased_torch`, :func:`coral_torch`) are the one
implementation: :mod:`shenjing.analysis.domain` calls them in float64 for the measured
numbers, the training calls them on batches for the penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from shenjing.errors import RunError

METHODS = ("source_only", "dann", "mmd", "coral")
ALIGN_MEASURES = ("mmd", "coral")
#: multi-kernel MMD: Gaussian kernels with bandwidths σ_med × 2^k (σ_med = the median
#: pairwise distance of the pooled sample), averaged
BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: more epochs than a DANN study trains for: a larger count is a typo
MAX_DANN_EPOCHS = 1_000
#: the penalty weight when none is given: MMD² of the median-bandwidth kernels is O(0.1) at
#: the start, CORAL's 1/(4d²)·‖C_s − C_t‖²_F is O(1e-4) at d = 128, so CORAL needs a larger
#: weight to matter next to the cross-entropy (Sun & Saenko 2016 pick it the same way)
DEFAULT_ALIGN_WEIGHT = {"mmd": 1.0, "coral": 1_000.0}


@dataclass(frozen=True)
class DannConfig:
    """Hyper-parameters of one DANN study (what run.json records under ``config``).

    >>> DannConfig().lambda_, DannConfig().lr, DannConfig().batch_size
    (0.1, 0.001, 64)
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    lambda_: float = 0.1
    align: str = "mmd"
    align_weight: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from shenjing._checks import bounded_int, choice, finite_float, positive_int, random_seed

        bounded_int("--epochs", self.epochs, low=1, high=MAX_DANN_EPOCHS, example=5)
        positive_int("--batch-size", self.batch_size, example=64)
        finite_float("--lr", self.lr, low=0.0, low_open=True, example="0.001")
        finite_float("--lambda", self.lambda_, low=0.0, example="0.1")
        choice("--align", self.align, ALIGN_MEASURES)
        if self.align_weight is not None:
            finite_float("--align-weight", self.align_weight, low=0.0, low_open=True,
                         example=DEFAULT_ALIGN_WEIGHT[self.align])
        random_seed("--seed", self.seed)

    @property
    def weight(self) -> float:
        """The alignment penalty's weight (the given one, else the measure's default)."""
        return float(self.align_weight if self.align_weight is not None
                     else DEFAULT_ALIGN_WEIGHT[self.align])

    @property
    def methods(self) -> tuple[str, str, str]:
        """The three trainings of the study, in the order they run."""
        return ("source_only", "dann", self.align)


@dataclass(frozen=True)
class EpochLosses:
    """Means over one epoch's steps (``loss_domain`` and ``domain_accuracy``: the DANN
    domain classifier on the training batches; ``penalty``: the unweighted MMD²/CORAL)."""

    loss_class: float
    loss_domain: float | None
    domain_accuracy: float | None
    penalty: float | None
    n_steps: int


# ---- the numeric cores -------------------------------------------------------------------------
def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a_i − b_j‖²`` for rows of ``a`` (m, d) and ``b`` (n, d), clamped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def median_bandwidths(pooled_sq: torch.Tensor,
                      factors: tuple[float, ...] = BANDWIDTH_FACTORS) -> torch.Tensor:
    """σ_med × factors, σ_med the median distance between distinct rows (from the pooled
    sample's squared-distance matrix); 1 × factors when every row is the same point."""
    n = pooled_sq.shape[0]
    upper = pooled_sq[torch.triu_indices(n, n, 1, device=pooled_sq.device).unbind()]
    if upper.numel():
        ordered = upper.detach().sort().values
        k = ordered.numel()  # the median of an even count is the mean of the middle two
        med = (ordered[(k - 1) // 2].sqrt() + ordered[k // 2].sqrt()) / 2
    else:
        med = pooled_sq.new_tensor(1.0)
    if not bool(med > 0):
        med = pooled_sq.new_tensor(1.0)
    return med * pooled_sq.new_tensor(factors)


def mean_gaussian_kernel(sq: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The mean of Gaussian kernels ``exp(−d² / (2σ²))`` over ``sigmas``."""
    return torch.exp(-sq[None] / (2.0 * sigmas[:, None, None] ** 2)).mean(0)


def mmd2_from_kernel(k: torch.Tensor, m: int) -> torch.Tensor:
    """Unbiased MMD² from the pooled kernel matrix ``k`` ((m + n), (m + n)), first ``m``
    rows the first sample (Gretton et al. 2012, eq. 3: diagonals left out)."""
    n = k.shape[0] - m
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2.0 * kxy.mean()


def mmd2_unbiased_torch(x: torch.Tensor, y: torch.Tensor,
                        sigmas: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased multi-kernel MMD² between samples ``x`` (m, d) and ``y`` (n, d), and the
    bandwidths used (``sigmas`` None: :func:`median_bandwidths` of the pooled sample)."""
    pooled = torch.cat([x, y])
    sq = squared_distances(pooled, pooled)
    if sigmas is None:
        sigmas = median_bandwidths(sq)
    return mmd2_from_kernel(mean_gaussian_kernel(sq, sigmas), x.shape[0]), sigmas


def coral_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CORAL distance ``‖C_x − C_y‖²_F / (4 d²)`` between the samples' covariance matrices
    (unbiased, n − 1), as in Deep CORAL (Sun & Saenko 2016)."""
    d = x.shape[1]

    def cov(z: torch.Tensor) -> torch.Tensor:
        c = z - z.mean(0, keepdim=True)
        return c.T @ c / (z.shape[0] - 1)

    return ((cov(x) - cov(y)) ** 2).sum() / (4.0 * d * d)


# ---- one epoch ----------------------------------------------------------------------------------
def epoch_seed(seed: int, method: str, epoch: int) -> int:
    """The seed of ``method``'s epoch ``epoch``: shuffling, target draws, dropout-free RNG."""
    return seed * 1_000_003 + METHODS.index(method) * 10_007 + epoch


def _target_order(n_target: int, n_needed: int, gen: torch.Generator) -> torch.Tensor:
    passes = math.ceil(n_needed / n_target)
    return torch.cat([torch.randperm(n_target, generator=gen) for _ in range(passes)])


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, method: str,
                xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, cfg: DannConfig,
                epoch: int) -> EpochLosses:
    """Train ``model`` (a :class:`~shenjing.models.dann.DANN`) one epoch the ``method``
    way on source images ``xs`` with labels ``ys`` and unlabelled target images ``xt``."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, method, epoch))
    torch.manual_seed(epoch_seed(cfg.seed, method, epoch))
    device = xs.device
    model.train()
    n = xs.shape[0]
    order = torch.randperm(n, generator=gen).to(device)
    t_order = _target_order(xt.shape[0], n, gen).to(device)
    sums = {"loss_class": 0.0, "loss_domain": 0.0, "domain_accuracy": 0.0, "penalty": 0.0}
    steps = 0
    for start in range(0, n, cfg.batch_size):
        pick = order[start:start + cfg.batch_size]
        x_s, y_s = xs[pick], ys[pick]
        x_t = xt[t_order[start:start + len(pick)]]
        if method == "source_only":
            logits, _, _ = model(x_s, lambda_=0.0)
            loss_class = F.cross_entropy(logits, y_s)
            loss = loss_class
        else:
            x = torch.cat([x_s, x_t])
            logits, domain_logits, f = model(x, lambda_=cfg.lambda_)
            loss_class = F.cross_entropy(logits[:len(x_s)], y_s)
            if method == "dann":
                domains = torch.cat([torch.zeros(len(x_s)), torch.ones(len(x_t))]).long()
                domains = domains.to(device)
                loss_domain = F.cross_entropy(domain_logits, domains)
                loss = loss_class + loss_domain
                sums["loss_domain"] += float(loss_domain.detach())
                sums["domain_accuracy"] += float(
                    (domain_logits.detach().argmax(1) == domains).float().mean())
            else:
                f_s, f_t = f[:len(x_s)], f[len(x_s):]
                penalty = (mmd2_unbiased_torch(f_s, f_t)[0] if method == "mmd"
                           else coral_torch(f_s, f_t))
                loss = loss_class + cfg.weight * penalty
                sums["penalty"] += float(penalty.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RunError(f"DANN training ({method}) diverged in epoch {epoch}, step "
                           f"{steps + 1}: loss {value}; lower --lr or --align-weight and "
                           "start over with --force")
        sums["loss_class"] += float(loss_class.detach())
        steps += 1
    mean = {k: v / max(steps, 1) for k, v in sums.items()}
    return EpochLosses(
        loss_class=mean["loss_class"],
        loss_domain=mean["loss_domain"] if method == "dann" else None,
        domain_accuracy=mean["domain_accuracy"] if method == "dann" else None,
        penalty=mean["penalty"] if method in ALIGN_MEASURES else None, n_steps=steps)


__all__ = [
    "ALIGN_MEASURES",
    "BANDWIDTH_FACTORS",
    "DEFAULT_ALIGN_WEIGHT",
    "METHODS",
    "DannConfig",
    "EpochLosses",
    "coral_torch",
    "epoch_seed",
    "mean_gaussian_kernel",
    "median_bandwidths",
    "mmd2_from_kernel",
    "mmd2_unbiased_torch",
    "squared_distances",
    "train_epoch",
]
