"""The adversarial training loop of seed 001's GAN, one epoch at a time.

Each step is the seed's: the discriminator is trained on a real batch and a detached fake
batch (``−[log D(x) + log(1 − D(G(z)))]``, the generator blocked), then the generator on a
fresh fake batch with the non-saturating loss ``−log D(G(z))`` (the discriminator not
blocked, but only the generator's optimizer steps). ``1e-8`` keeps the logs finite, as in
the seed. Determinism: every epoch reseeds the shuffling generator and the global RNG (the
latent draws) from ``(seed, epoch)``, so a run resumed after its last finished epoch
continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from shenjing.errors import RunError

#: the seed's epsilon inside the logs
EPS = 1e-8
#: more epochs than a GAN study trains for: a larger count is a typo
MAX_GAN_EPOCHS = 10_000


@dataclass(frozen=True)
class GanConfig:
    """Hyper-parameters of one GAN run (what run.json records under ``config``).

    >>> GanConfig().lr, GanConfig().z_dim, GanConfig().batch_size
    (0.0002, 100, 64)
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-4
    z_dim: int = 100
    hidden: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        from shenjing._checks import bounded_int, finite_float, positive_int, random_seed

        bounded_int("--epochs", self.epochs, low=1, high=MAX_GAN_EPOCHS, example=20)
        positive_int("--batch-size", self.batch_size, example=64)
        finite_float("--lr", self.lr, low=0.0, low_open=True, example="0.0002")
        positive_int("--z-dim", self.z_dim, example=100)
        positive_int("--hidden", self.hidden, example=256)
        random_seed("--seed", self.seed)


@dataclass(frozen=True)
class EpochLosses:
    """Means over one epoch's steps: both losses, and D's output on real and fake batches
    (D(fake) as the discriminator saw it, before its own step)."""

    loss_d: float
    loss_g: float
    d_real: float
    d_fake: float
    n_steps: int


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling and latent draws."""
    return seed * 1_000_003 + epoch


def to_gan_range(x_unit: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] → [−1, 1], the range of the generator's tanh (the seed's
    ``Normalize((0.5,), (0.5,))``)."""
    return x_unit * 2.0 - 1.0


def adversarial_epoch(generator: nn.Module, discriminator: nn.Module,
                      opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                      x_real: torch.Tensor, cfg: GanConfig, epoch: int) -> EpochLosses:
    """Train both networks for one pass over ``x_real`` (images in [−1, 1]) in shuffled
    batches of ``cfg.batch_size``; return the epoch's mean losses and D outputs."""
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    device = x_real.device
    generator.train()
    discriminator.train()
    n = x_real.shape[0]
    order = torch.randperm(n, generator=gen).to(device)
    sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
    steps = 0
    for start in range(0, n, cfg.batch_size):
        real = x_real[order[start:start + cfg.batch_size]]
        b = real.shape[0]
        fake = generator(torch.randn(b, cfg.z_dim, device=device)).detach()
        d_real = discriminator(real)
        d_fake = discriminator(fake)
        loss_d = -(torch.log(d_real + EPS).mean() + torch.log(1 - d_fake + EPS).mean())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        d_on_new = discriminator(generator(torch.randn(b, cfg.z_dim, device=device)))
        loss_g = -torch.log(d_on_new + EPS).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        values = (float(loss_d.detach()), float(loss_g.detach()))
        if not all(math.isfinite(v) for v in values):
            raise RunError(f"GAN training diverged in epoch {epoch}, step {steps + 1}: "
                           f"loss_D {values[0]}, loss_G {values[1]}; lower --lr (e.g. "
                           f"--lr {cfg.lr / 10:g}) and start over with --force")
        sums["loss_d"] += values[0]
        sums["loss_g"] += values[1]
        sums["d_real"] += float(d_real.detach().mean())
        sums["d_fake"] += float(d_fake.detach().mean())
        steps += 1
    return EpochLosses(n_steps=steps, **{k: v / max(steps, 1) for k, v in sums.items()})
