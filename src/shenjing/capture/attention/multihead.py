"""``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``: patterns from their weights.

torch computes these in one of three ways: ``F.multi_head_attention_forward`` (the
reference), ``torch._native_multi_head_attention`` (``MultiheadAttention``'s fast path in
eval and without grad) and ``torch._transformer_encoder_layer_fwd`` (the encoder layer's
fast path, which never calls ``self_attn`` at all, and runs on nested tensors inside
``nn.TransformerEncoder`` when a key padding mask is given). None of them returns per-head
weights when called with ``need_weights=False``. So the pattern is recomputed here from the
module's inputs and weights, with ``F.multi_head_attention_forward``'s rules: the packed
``in_proj_weight`` (or ``q/k/v_proj_weight``) and ``in_proj_bias``, ``bias_k``/``bias_v``
and ``add_zero_attn`` as extra keys, a boolean mask marking the keys to *leave out*
(True → −∞, the opposite of SDPA's), a float mask added, the key padding mask added per
sample, ``is_causal`` honoured as torch does (it replaces ``attn_mask`` only when there is
no key padding mask and no weights are asked for), and the scale ``1/√head_dim``.

The check reproduces the real output from the pattern: ``out_proj(pattern @ V)`` for a
``MultiheadAttention``; for an encoder layer the whole layer (norms, residuals, the
feed-forward block) around ``out_proj(pattern @ V)``, compared with what the layer returned.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shenjing.capture.attention.sdpa import compute_dtype, magnitude, max_error, safe_softmax
from shenjing.errors import UsageError


@dataclass(frozen=True)
class MultiheadResult:
    """One recomputed multi-head attention: ``pattern`` ``(batch, heads, queries, keys)``,
    ``output`` shaped like the module's real ``attn_output``, ``tokens`` the query states
    ``(batch, queries, embed_dim)`` and ``scale`` for the check."""

    pattern: torch.Tensor
    output: torch.Tensor
    tokens: torch.Tensor
    scale: float


def bind_call(signature: inspect.Signature, args: tuple[Any, ...],
              kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of one call of a module's ``forward``, by name, defaults filled in."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A torch-attention mask as added scores: boolean True (left out) → −∞, float as is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, -math.inf)
    return mask.to(dtype)


def _projections(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                 value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The in-projections of ``(length, batch, features)`` inputs."""
    bias = mha.in_proj_bias
    b_q, b_k, b_v = bias.chunk(3) if bias is not None else (None, None, None)
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)


def multihead_attention(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                        value: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
                        attn_mask: torch.Tensor | None = None, need_weights: bool = True,
                        is_causal: bool = False) -> MultiheadResult:
    """Recompute ``mha(query, key, value, ...)``'s per-head pattern and output.

    Inputs are as the module takes them: ``(batch, length, features)`` when
    ``mha.batch_first``, else ``(length, batch, features)``; or unbatched ``(length,
    features)``.
    """
    if query.is_nested or key.is_nested or value.is_nested:
        raise UsageError("the attention capture does not take nested-tensor inputs to a bare "
                         "nn.MultiheadAttention; pass padded tensors and a key_padding_mask")
    batched = query.dim() == 3
    if not batched:
        query, key, value = (t.unsqueeze(1) for t in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    dtype = compute_dtype(query)
    n_q, batch, embed = query.shape
    heads = mha.num_heads
    head_dim = embed // heads
    q, k, v = (t.to(dtype) for t in _projections(mha, query, key, value))

    kpm = additive_mask(key_padding_mask, dtype)
    if is_causal and kpm is None and not need_weights:
        mask: torch.Tensor | None = torch.zeros(n_q, key.shape[0], dtype=dtype,
                                                device=q.device).masked_fill(
            ~torch.ones(n_q, key.shape[0], dtype=torch.bool, device=q.device).tril(),
            -math.inf)
    else:
        mask = additive_mask(attn_mask, dtype)
    if mask is not None and mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mha.bias_k is not None and mha.bias_v is not None:
        k = torch.cat([k, mha.bias_k.to(dtype).repeat(1, batch, 1)])
        v = torch.cat([v, mha.bias_v.to(dtype).repeat(1, batch, 1)])
        mask = F.pad(mask, (0, 1)) if mask is not None else None
        kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
    q = q.reshape(n_q, batch * heads, head_dim).transpose(0, 1)
    k = k.reshape(k.shape[0], batch * heads, head_dim).transpose(0, 1)
    v = v.reshape(v.shape[0], batch * heads, head_dim).transpose(0, 1)
    if mha.add_zero_attn:
        zeros = torch.zeros(batch * heads, 1, head_dim, dtype=dtype, device=q.device)
        k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
        mask = F.pad(mask, (0, 1)) if mask is not None else None
        kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
    n_k = k.shape[1]
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(head_dim)
    scores = scores.reshape(batch, heads, n_q, n_k)
    if mask is not None:  # (1 or batch·heads, queries, keys)
        scores = scores + (mask.reshape(1, 1, n_q, n_k) if mask.shape[0] == 1
                           else mask.reshape(batch, heads, n_q, n_k))
    if kpm is not None:  # (batch, keys)
        scores = scores + kpm.reshape(batch, 1, 1, n_k)
    pattern = safe_softmax(scores)
    values = v.reshape(batch, heads, n_k, head_dim)
    out = torch.matmul(pattern, values)  # (batch, heads, queries, head_dim)
    out = out.permute(2, 0, 1, 3).reshape(n_q, batch, embed)
    out = F.linear(out, mha.out_proj.weight.to(dtype),
                   None if mha.out_proj.bias is None else mha.out_proj.bias.to(dtype))
    tokens = query.transpose(0, 1)
    if not batched:
        out = out.squeeze(1)
    elif mha.batch_first:
        out = out.transpose(0, 1)
    return MultiheadResult(pattern, out, tokens, magnitude(values))


def multihead_call(mha: nn.MultiheadAttention, signature: inspect.Signature,
                   args: tuple[Any, ...], kwargs: Mapping[str, Any],
                   real: Any) -> tuple[MultiheadResult, float]:
    """Recompute one call of ``mha`` (``forward`` its original method) and compare with
    its real output: the result and ``max |recomputed − real attn_output|``."""
    b = bind_call(signature, args, kwargs)
    result = multihead_attention(mha, b["query"], b["key"], b["value"],
                                 key_padding_mask=b.get("key_padding_mask"),
                                 attn_mask=b.get("attn_mask"),
                                 need_weights=bool(b.get("need_weights", True)),
                                 is_causal=bool(b.get("is_causal", False)))
    attn_output = real[0] if isinstance(real, (tuple, list)) else real
    return result, max_error(result.output, attn_output)


@dataclass(frozen=True)
class EncoderLayerResult:
    """One recomputed ``nn.TransformerEncoderLayer`` call: its self-attention, and
    ``max |recomputed layer output − real output|`` with the magnitude it is judged
    against."""

    attention: MultiheadResult
    error: float
    scale: float


def _layer_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, nn.LayerNorm):
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return norm(x)  # a custom norm (no hooks are ever placed inside an encoder layer)


def _feed_forward(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> torch.Tensor:
    hidden = layer.activation(F.linear(x, layer.linear1.weight, layer.linear1.bias))
    return F.linear(hidden, layer.linear2.weight, layer.linear2.bias)


def encoder_layer_call(layer: nn.TransformerEncoderLayer, signature: inspect.Signature,
                       args: tuple[Any, ...], kwargs: Mapping[str, Any], real: torch.Tensor,
                       full_length: int | None) -> EncoderLayerResult:
    """Recompute one call of an encoder layer from its input and weights.

    ``full_length`` is the sequence length of the enclosing ``nn.TransformerEncoder``'s
    input: a nested-tensor input (its fast path with a key padding mask) is padded back to
    it. The positions a nested tensor leaves out get pattern rows of zeros (the layer never
    computed them) and are not compared.
    """
    b = bind_call(signature, args, kwargs)
    src, src_mask, kpm = b["src"], b.get("src_mask"), b.get("src_key_padding_mask")
    is_causal = bool(b.get("is_causal", False))
    valid: torch.Tensor | None = None
    if src.is_nested:
        lengths = [int(t.shape[0]) for t in src.unbind()]
        total = max([full_length or 0, *lengths])
        src = src.to_padded_tensor(0.0, (len(lengths), total, src.size(-1)))
        real = real.to_padded_tensor(0.0, tuple(src.shape))
        valid = torch.arange(total, device=src.device)[None, :] < torch.tensor(
            lengths, device=src.device)[:, None]  # (batch, length)
        kpm = ~valid  # torch's nested path needs batch_first, so this is (batch, length)
    x = src
    h = _layer_norm(layer.norm1, x) if layer.norm_first else x
    att = multihead_attention(layer.self_attn, h, h, h, key_padding_mask=kpm,
                              attn_mask=src_mask, need_weights=False, is_causal=is_causal)
    sa = att.output.to(x.dtype)
    if layer.norm_first:
        x = x + sa
        x = x + _feed_forward(layer, _layer_norm(layer.norm2, x))
    else:
        x = _layer_norm(layer.norm1, x + sa)
        x = _layer_norm(layer.norm2, x + _feed_forward(layer, x))
    if valid is not None:
        keep = valid[:, :, None]
        x, real = x * keep, real * keep
        att = MultiheadResult(att.pattern * valid[:, None, :, None], att.output, att.tokens,
                              att.scale)
    return EncoderLayerResult(att, max_error(x, real), magnitude(real))
