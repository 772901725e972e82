"""Seed 001's Vision Transformer, sized by the input: a 4×4 grid of patches.

Patches become tokens (a strided convolution ``patch_embed``), a learnable CLS token is put
in front, a learnable position embedding is added, and pre-norm encoder blocks
(``blocks.<i>.norm1 → attn → + → norm2 → mlp → +``) follow; the class is read from the CLS
token after the final ``norm`` by ``head``. A 28×28 image is cut into 7×7 patches and an 8×8
digit into 2×2 patches, so both make 16 patch tokens (17 with CLS).

Attention calls :func:`torch.nn.functional.scaled_dot_product_attention` (the fused kernel a
modern ViT uses), so its pattern is never materialised by the forward pass itself; the
attention view recomputes it from the tensors that fed the kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from shenjing.errors import ShapeMismatchError

#: patch tokens per side: the image is cut into a GRID × GRID grid of square patches
GRID = 4


class SelfAttention(nn.Module):
    """Multi-head self-attention: one ``qkv`` projection, fused attention, ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ShapeMismatchError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """A pre-norm encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small ViT over a ``GRID``×``GRID`` grid of patches with a CLS token.

    >>> model = ViT(1, 28, 28, 10)
    >>> model.patch, model(torch.zeros(2, 1, 28, 28)).shape
    (7, torch.Size([2, 10]))
    """

    def __init__(self, in_channels: int, height: int, width: int, n_classes: int, *,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_dim: int = 128) -> None:
        super().__init__()
        if height != width or height % GRID:
            raise ShapeMismatchError(
                f"model 'vit' cuts a square image into a {GRID}×{GRID} grid of patches, so "
                f"its side must be a multiple of {GRID}; got {height}×{width} (28×28 and 8×8 "
                "work)")
        self.patch = height // GRID
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=self.patch,
                                     stride=self.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, 0])


def build_vit(input_shape: Sequence[int], n_outputs: int, **sizes: int) -> nn.Module:
    """The zoo's ``vit`` for ``input_shape`` ``(channels, height, width)``."""
    if len(input_shape) != 3:
        raise ShapeMismatchError(f"model 'vit' takes images shaped (channels, height, width), "
                                 f"got input shape {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    return ViT(c, h, w, n_outputs, **{k: int(v) for k, v in sizes.items()})
