"""``F.scaled_dot_product_attention``: the pattern recomputed from the kernel's own arguments.

The fused kernel never materialises ``softmax(QKᵀ·scale + mask)``; this module computes it
beside the kernel from exactly the tensors the kernel received (so after any rotary or
scaling step the model applied), with the kernel's rules: ``scale`` defaults to
``1/√head_dim``; a boolean ``attn_mask`` marks the keys that *take part* (False → −∞), a
float one is added; ``is_causal`` keeps key ``j ≤`` query ``i`` (top-left aligned);
``enable_gqa`` repeats each key head for its group of query heads. A query whose keys are
all masked gets a row of zeros, as the kernel's output is zero there.

The work of one layer (scores, pattern, the check's difference) goes into buffers of a
:class:`Workspace` that the next layer of the same shape reuses: fresh large tensors on
every call cost page faults that, on small models, took longer than the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

#: the parameters of ``F.scaled_dot_product_attention``, in order
SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
                   "enable_gqa")
_DEFAULTS: dict[str, Any] = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False,
                             "scale": None, "enable_gqa": False}


def sdpa_functions() -> set[Any]:
    """``F.scaled_dot_product_attention`` as a function mode receives it: the builtin, and
    the public name in case another tool rewrapped it (torchlens does)."""
    import torch.nn.functional as F

    return {torch._C._nn.scaled_dot_product_attention, F.scaled_dot_product_attention}


class Workspace:
    """Reusable buffers by role: :meth:`get` returns the same memory while the shape,
    dtype and device stay the same. A tensor from it is valid until the next ``get`` of
    its role."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
        buf = self._buffers.get(role)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype \
                or buf.device != device:
            buf = self._buffers[role] = torch.empty(shape, dtype=dtype, device=device)
        return buf

    def clear(self) -> None:
        self._buffers.clear()


def bind_sdpa(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of one ``scaled_dot_product_attention`` call, by name."""
    bound = dict(_DEFAULTS)
    bound.update(zip(SDPA_PARAMETERS, args, strict=False))
    bound.update(kwargs)
    return bound


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the pattern is recomputed in: float32 for half types, else ``t``'s own."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def safe_softmax(scores: torch.Tensor, *, dim: int = -1, masked: bool = True,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over ``dim``; a slice that is all −∞ gives zeros (not NaN).

    ``masked=False`` says no score is −∞ (no mask was applied), which skips the search;
    ``out`` receives the result when given.
    """
    pattern = torch.softmax(scores, dim=dim) if out is None else \
        torch.softmax(scores, dim=dim, out=out)
    if masked:
        empty = torch.isneginf(scores).all(dim=dim, keepdim=True)
        if bool(empty.any()):
            pattern.masked_fill_(empty, 0.0)
    return pattern


def _mergeable(t: torch.Tensor) -> bool:
    """Whether ``t``'s leading axes (all but the last two) merge into one without a copy."""
    sizes, strides = t.shape, t.stride()
    return all(strides[i] == strides[i + 1] * sizes[i + 1] or sizes[i + 1] == 1
               for i in range(t.dim() - 3))


def _as_batches(t: torch.Tensor, role: str | None = None,
                workspace: Workspace | None = None) -> torch.Tensor:
    """``(..., n, d)`` as ``(batch, n, d)``: a view where the layout allows, else a copy
    (into the ``workspace``'s buffer for ``role`` when given)."""
    shape = (-1, t.shape[-2], t.shape[-1])
    if _mergeable(t) or workspace is None or role is None:
        return t.reshape(shape)
    n = t.numel() // max(1, t.shape[-2] * t.shape[-1])
    buf = workspace.get(role, (n, t.shape[-2], t.shape[-1]), t.dtype, t.device)
    buf.view(t.shape).copy_(t)
    return buf


def _keys_first(mask: torch.Tensor) -> torch.Tensor:
    """A mask broadcastable to ``(..., queries, keys)``, for ``(..., keys, queries)``."""
    return mask.unsqueeze(-1) if mask.dim() == 1 else mask.transpose(-1, -2)


def attention_pattern(query: torch.Tensor, key: torch.Tensor, *,
                      attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                      scale: float | None = None, enable_gqa: bool = False,
                      workspace: Workspace | None = None) -> torch.Tensor:
    """``softmax(Q Kᵀ · scale + mask)`` with ``scaled_dot_product_attention``'s rules.

    ``query``: ``(..., heads, queries, head_dim)``; ``key``: ``(..., kv_heads, keys,
    head_dim)``. Returns ``(..., heads, queries, keys)`` in :func:`compute_dtype` (in the
    ``workspace``'s buffer when one is given).

    The scores are laid out keys first, ``K Qᵀ``, and normalised over the keys axis there:
    torch's softmax is about twice as fast across rows as along short rows, and a ViT's
    rows are short (17 keys). The result is a transposed view of that buffer.
    """
    dtype = compute_dtype(query)
    q, k = query.to(dtype), key.to(dtype)
    if enable_gqa and q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    n_q, n_k = q.shape[-2], k.shape[-2]
    if q.shape[:-2] == k.shape[:-2]:  # the usual case: one batched product, in a buffer
        q3, k3 = _as_batches(q, "query", workspace), _as_batches(k, "key", workspace)
        buf = None if workspace is None else \
            workspace.get("scores", (q3.shape[0], n_k, n_q), dtype, q.device)
        scores = torch.bmm(k3, q3.transpose(1, 2), out=buf) if buf is not None else \
            torch.bmm(k3, q3.transpose(1, 2))
        scores = scores.mul_(factor).reshape(*q.shape[:-2], n_k, n_q)
    else:  # broadcast batch or head axes
        scores = torch.matmul(k, q.transpose(-2, -1)).mul_(factor)
    if is_causal:  # top-left aligned: no query ever has all its keys masked
        later = torch.ones(n_k, n_q, dtype=torch.bool, device=scores.device).tril(-1)
        scores.masked_fill_(later, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~_keys_first(attn_mask), -math.inf)
        else:
            scores = scores + _keys_first(attn_mask.to(dtype))
    out = None if workspace is None else \
        workspace.get("pattern", tuple(scores.shape), dtype, scores.device)
    return safe_softmax(scores, dim=-2, masked=attn_mask is not None,
                        out=out).transpose(-1, -2)


def sdpa_check(bound: Mapping[str, Any], real: torch.Tensor,
               workspace: Workspace | None = None) -> tuple[torch.Tensor, float, float]:
    """The pattern of one kernel call (:func:`bind_sdpa`'s arguments), ``max |pattern @ V
    − real|`` and the magnitude of V it is judged against."""
    query, key, value = bound["query"], bound["key"], bound["value"]
    pattern = attention_pattern(query, key, attn_mask=bound["attn_mask"],
                                is_causal=bool(bound["is_causal"]), scale=bound["scale"],
                                enable_gqa=bool(bound["enable_gqa"]), workspace=workspace)
    v = value.to(pattern.dtype)
    if bound["enable_gqa"] and v.dim() >= 3 and v.shape[-3] != pattern.shape[-3]:
        v = v.repeat_interleave(pattern.shape[-3] // v.shape[-3], dim=-3)
    return pattern, product_error(pattern, v, real, workspace), magnitude(v)


def product_error(pattern: torch.Tensor, value: torch.Tensor, real: torch.Tensor,
                  workspace: Workspace | None = None) -> float:
    """``max |pattern @ value − real|``, in one fused multiply-subtract where the shapes
    allow (NaN where the product's shape is not the real output's: the check fails)."""
    try:
        lead = torch.broadcast_shapes(pattern.shape[:-2], value.shape[:-2])
    except RuntimeError:
        return math.nan
    shape = (*lead, pattern.shape[-2], value.shape[-1])
    if tuple(real.shape) != shape or pattern.shape[-1] != value.shape[-2]:
        return math.nan
    if real.numel() == 0:
        return 0.0
    if pattern.shape[:-2] == value.shape[:-2]:
        p3, v3 = _as_batches(pattern), _as_batches(value, "value", workspace)
        if workspace is None:
            diff = torch.baddbmm(_as_batches(real.detach().to(pattern.dtype)), p3, v3,
                                 alpha=-1.0)
        else:  # real − pattern @ V, in place in a copy of the real output
            diff = workspace.get("difference", (p3.shape[0], *shape[-2:]), pattern.dtype,
                                 pattern.device)
            diff.view(shape).copy_(real.detach())
            diff.baddbmm_(p3, v3, alpha=-1.0)
    else:
        diff = torch.matmul(pattern, value) - real.detach().to(pattern.dtype)
    return float(diff.abs_().max())


def magnitude(t: torch.Tensor) -> float:
    """``max(1, max |t|)``: what an absolute error of a combination of ``t``'s rows is
    judged against."""
    if t.numel() == 0:
        return 1.0
    low, high = torch.aminmax(t.detach())
    return max(1.0, -float(low), float(high))


def max_error(recomputed: torch.Tensor, real: torch.Tensor) -> float:
    """``max |recomputed − real|`` (NaN where the shapes differ: the check fails)."""
    if tuple(recomputed.shape) != tuple(real.shape):
        return math.nan
    if real.numel() == 0:
        return 0.0
    diff = recomputed.detach() - real.detach().to(recomputed.dtype)
    return float(diff.abs_().max())
