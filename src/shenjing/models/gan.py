"""Seed 001's GAN: a two-layer MLP generator and discriminator.

The seed writes them for MNIST (``image_dim = 28 * 28``): generator
``z (100) → Linear 256 → ReLU → Linear 784 → tanh``, discriminator
``784 → Linear 256 → LeakyReLU(0.2) → Linear 1 → sigmoid``. Here the image size is a
parameter, so the same two networks learn scikit-learn's 8×8 digits (64 pixels) without
upsampling them: the generator's last layer is sized to the data's images, and it returns
them shaped like the data, ``(batch, channels, height, width)``, in [−1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: the seed's sizes: latent dimension and hidden width of both networks
Z_DIM = 100
HIDDEN = 256


class Generator(nn.Module):
    """``z (batch, z_dim)`` → images ``(batch, *image_shape)`` in [−1, 1] (tanh).

    >>> Generator((1, 8, 8))(torch.zeros(2, 100)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, image_shape: Sequence[int], z_dim: int = Z_DIM,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.z_dim = int(z_dim)
        self.net = nn.Sequential(
            nn.Linear(self.z_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class Discriminator(nn.Module):
    """Images ``(batch, *image_shape)`` → the probability each is real ``(batch, 1)``.

    >>> p = Discriminator((1, 8, 8))(torch.zeros(3, 1, 8, 8))
    >>> p.shape, bool(((p > 0) & (p < 1)).all())
    (torch.Size([3, 1]), True)
    """

    def __init__(self, image_shape: Sequence[int], hidden: int = HIDDEN) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(self.image_shape), hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
