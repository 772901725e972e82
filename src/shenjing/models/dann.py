"""Seed 001's DANN: a feature extractor, a label classifier, and a domain classifier behind a
gradient-reversal layer.

The seed's sizes: feature extractor ``784 → Linear 256 → ReLU → Linear 128 → ReLU``, label
classifier ``128 → Linear 100 → ReLU → Linear 10``, domain classifier ``128 → Linear 100 →
ReLU → Linear 2`` (source / target). The gradient-reversal layer is the identity going
forward and multiplies the gradient by ``−λ`` going back (Ganin & Lempitsky 2015), so one
backward pass trains the domain classifier to tell the domains apart and the feature
extractor to make them indistinguishable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.autograd import Function

#: the seed's sizes
HIDDEN = 256
FEATURE_DIM = 128
HEAD_HIDDEN = 100
#: the feature layers the study measures: name → (index after which the Sequential's output
#: is taken, width)
FEATURE_LAYERS: dict[str, int] = {"hidden": 2, "feature": 4}


class GradientReversal(Function):
    """Identity forward; ``grad ↦ −λ · grad`` backward (no gradient for λ)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad_output, None


def reverse_gradient(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    """``x`` unchanged, with its gradient multiplied by ``−lambda_`` on the way back.

    >>> x = torch.ones(3, requires_grad=True)
    >>> reverse_gradient(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5, -0.5]
    """
    out: torch.Tensor = GradientReversal.apply(x, lambda_)
    return out


class DANN(nn.Module):
    """Images ``(batch, *image_shape)`` → ``(class logits (batch, n_classes), domain logits
    (batch, 2), features (batch, feature_dim))``.

    >>> net = DANN((1, 28, 28))
    >>> [tuple(t.shape) for t in net(torch.zeros(2, 1, 28, 28))]
    [(2, 10), (2, 2), (2, 128)]
    """

    def __init__(self, image_shape: Sequence[int], n_classes: int = 10,
                 hidden: int = HIDDEN, feature_dim: int = FEATURE_DIM,
                 head_hidden: int = HEAD_HIDDEN) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.feature = nn.Sequential(
            nn.Linear(math.prod(self.image_shape), hidden), nn.ReLU(),
            nn.Linear(hidden, feature_dim), nn.ReLU())
        self.class_classifier = nn.Sequential(
            nn.Linear(feature_dim, head_hidden), nn.ReLU(), nn.Linear(head_hidden, n_classes))
        self.domain_classifier = nn.Sequential(
            nn.Linear(feature_dim, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 2))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The outputs of the feature layers (:data:`FEATURE_LAYERS`), computed by running
        the extractor's modules in order (no hooks)."""
        h = x.flatten(1)
        out: dict[str, torch.Tensor] = {}
        wanted = {i: name for name, i in FEATURE_LAYERS.items()}
        for i, module in enumerate(self.feature, start=1):
            h = module(h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def forward(self, x: torch.Tensor, lambda_: float = 0.1
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.feature(x.flatten(1))
        return self.class_classifier(f), self.domain_classifier(reverse_gradient(f, lambda_)), f


__all__ = ["DANN", "FEATURE_LAYERS", "GradientReversal", "reverse_gradient"]
