"""Small models for the attention-capture tests, one per way of computing attention.

Each model stores the inputs of its attention modules' calls in no attribute: the tests
read them with their own hooks and recompute the expected patterns with explicit torch
arithmetic, independently of shenjing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TOKENS = 7
DIM = 16
HEADS = 4


def tokens_of(x: torch.Tensor) -> torch.Tensor:
    """``(batch, 28)`` features as ``(batch, TOKENS, 4)`` token inputs."""
    return x.reshape(x.shape[0], TOKENS, 4)


def rotate(t: torch.Tensor) -> torch.Tensor:
    """A fixed rotary-style rotation of feature pairs by position (applied to q and k)."""
    n, half = t.shape[-2], t.shape[-1] // 2
    angle = torch.arange(n, dtype=t.dtype)[:, None] * (0.3 + torch.arange(half, dtype=t.dtype))
    cos, sin = torch.cos(angle), torch.sin(angle)
    a, b = t[..., :half], t[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def padding_mask(x: torch.Tensor) -> torch.Tensor:
    """Key padding (True = padded) for inputs ``x``, from each sample's own values (so a
    sample is padded the same way in any batch): 0, 1 or 2 padded tokens at the end
    (left-aligned, as nested tensors need)."""
    n_pad = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return torch.arange(TOKENS)[None, :] >= TOKENS - n_pad[:, None]


class SDPAttention(nn.Module):
    """Attention shaped like timm's ``Attention`` and Hugging Face's: a ``qkv`` projection,
    heads, an optional mask and causal flag, an explicit ``scale``, dropout only in
    training, grouped key/value heads (``kv_heads < heads``, ``enable_gqa``) and a rotary
    step on q and k before the kernel."""

    def __init__(self, dim: int = DIM, heads: int = HEADS, *, kv_heads: int | None = None,
                 causal: bool = False, scale: float | None = None, rotary: bool = False,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * self.kv_heads * self.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.causal, self.scale, self.rotary, self.dropout = causal, scale, rotary, dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).reshape(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        if self.rotary:
            q, k = rotate(q), rotate(k)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal, scale=self.scale, enable_gqa=self.kv_heads != self.heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SDPANet(nn.Module):
    """``embed → 2 × (norm → SDPAttention → + → mlp) → head``; ``mask``: None, ``"bool"``
    (True takes part, SDPA's rule) or ``"float"`` (added), built from the input."""

    def __init__(self, *, mask: str | None = None, **attention: object) -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        self.norms = nn.ModuleList(nn.LayerNorm(DIM) for _ in range(2))
        self.attns = nn.ModuleList(SDPAttention(**attention) for _ in range(2))  # type: ignore[arg-type]
        self.mlp = nn.Sequential(nn.Linear(DIM, 32), nn.GELU(), nn.Linear(32, DIM))
        self.head = nn.Linear(DIM, 3)
        self.mask = mask

    def make_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.mask is None:
            return None
        keep = ~padding_mask(x)[:, None, None, :]  # (batch, 1, 1, keys)
        keep = keep & ~torch.eye(TOKENS, dtype=torch.bool)[None, None].roll(1, dims=-1)
        if self.mask == "bool":
            return keep
        return torch.where(keep, 0.0, -1e4) + 0.1 * torch.arange(TOKENS, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens_of(x))
        mask = self.make_mask(x)
        for norm, attn in zip(self.norms, self.attns, strict=True):
            h = h + attn(norm(h), mask)
            h = h + self.mlp(h)
        return self.head(h[:, 0])


class EncoderNet(nn.Module):
    """``embed → nn.TransformerEncoder(2 layers) → head`` with a key padding mask from the
    batch; ``batch_first`` and ``norm_first`` as given."""

    def __init__(self, *, batch_first: bool = True, norm_first: bool = False,
                 src_mask: bool = False, activation: object = "relu") -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 32, dropout=0.1, activation=activation,  # type: ignore[arg-type]
                                           batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=not norm_first)
        self.head = nn.Linear(DIM, 3)
        self.batch_first, self.src_mask = batch_first, src_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens_of(x))
        kpm = padding_mask(x)
        mask = nn.Transformer.generate_square_subsequent_mask(TOKENS) if self.src_mask else None
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.encoder(h, mask=mask, src_key_padding_mask=kpm)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h[:, 0])


class MHANet(nn.Module):
    """A bare ``nn.MultiheadAttention`` called with ``need_weights=False``: self-attention
    with a key padding mask and a boolean attn_mask, then cross-attention (other key and
    value widths, ``bias_k``/``bias_v``, ``add_zero_attn``) onto a memory of 5 tokens."""

    def __init__(self, *, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        self.self_attn = nn.MultiheadAttention(DIM, HEADS, batch_first=batch_first)
        self.cross = nn.MultiheadAttention(DIM, 2, kdim=6, vdim=5, add_bias_kv=True,
                                           add_zero_attn=True, batch_first=batch_first)
        self.memory = nn.Linear(4, 6)
        self.values = nn.Linear(4, 5)
        self.head = nn.Linear(DIM, 3)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens_of(x))
        mem = tokens_of(x)[:, :5]
        k, v = self.memory(mem), self.values(mem)
        if not self.batch_first:
            h, k, v = h.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        causal = torch.ones(TOKENS, TOKENS, dtype=torch.bool).triu(1)
        h = h + self.self_attn(h, h, h, key_padding_mask=padding_mask(x),
                               attn_mask=causal, need_weights=False)[0]
        h = h + self.cross(h, k, v, need_weights=False)[0]
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h[:, 0])


class FuseError(RuntimeError):
    """The error :class:`Fused` raises midway through a forward."""


class _FuseInEncoder(nn.Module):
    """An encoder layer's ``dropout1``: burns :class:`Fused`'s fuse when it is set there
    (the real forward calls it; the capture's recomputation does not)."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if Fused.where == "inside_encoder":
            Fused.burn()
        return t


def _relu(t: torch.Tensor) -> torch.Tensor:
    """ReLU that torch does not recognise as one, so the encoder layer takes its slow path
    (which calls ``dropout1``)."""
    return F.relu(t)


class Fused(nn.Module):
    """Every kind of attention in one model, with a fuse: while :attr:`fuse` is set, that
    many more forwards succeed and the next one raises — after the first attention
    (``where="after_first"``) or inside a ``TransformerEncoderLayer``'s forward, where the
    capture has popped its function mode (``where="inside_encoder"``). Class attributes,
    so copies raise too."""

    fuse: int | None = None
    where: str = "after_first"

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        self.sdpa = SDPAttention()
        layer = nn.TransformerEncoderLayer(DIM, HEADS, 32, dropout=0.0, batch_first=True,
                                           activation=_relu)
        layer.dropout1 = _FuseInEncoder()  # type: ignore[assignment]
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.attend = nn.Softmax(dim=-1)
        self.head = nn.Linear(DIM, 3)

    @staticmethod
    def burn() -> None:
        if Fused.fuse is not None:
            if Fused.fuse == 0:
                raise FuseError("boom midway through forward")
            Fused.fuse -= 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens_of(x))
        h = h + self.sdpa(h)
        if Fused.where == "after_first":
            Fused.burn()
        h = self.encoder(h, src_key_padding_mask=padding_mask(x))
        h = h + self.mha(h, h, h, need_weights=False)[0]
        b, n, _ = h.shape
        q = h.reshape(b, n, HEADS, DIM // HEADS).transpose(1, 2)
        scores = torch.matmul(q, q.transpose(-1, -2)) / math.sqrt(DIM // HEADS)
        h = h + torch.matmul(self.attend(scores), q).transpose(1, 2).reshape(b, n, DIM)
        return self.head(h[:, 0])


class NoAttention(nn.Module):
    """An MLP: nothing to capture."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)))


class TwoShapes(nn.Module):
    """Self-attention over 7 tokens, then over the first 5: two pattern shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, DIM)
        self.first = SDPAttention()
        self.second = SDPAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens_of(x))
        h = h + self.first(h)
        return self.second(h[:, :5]).mean(dim=1)


def inputs(n: int = 10, seed: int = 0) -> torch.Tensor:
    """``n`` samples of 28 features."""
    return torch.randn(n, 28, generator=torch.Generator().manual_seed(seed))
