"""A user's transformer for the landscape and hessian stage tests (importable as a factory:
``tests/stages/landscape_models.py:RowViT``)."""

from __future__ import annotations

import torch
from torch import nn


class RowViT(nn.Module):
    """Image rows as tokens, a CLS token and position embedding, ``nn.TransformerEncoder``
    (batch_first, dropout 0.1: off in eval mode, as the Hessian and landscapes need), head."""

    def __init__(self, n_classes: int = 10, width: int = 8, height: int = 8,
                 dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(width, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, height + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=2 * dim,
                                           dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.squeeze(1))  # (N, height, dim)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])
