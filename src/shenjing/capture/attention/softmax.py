"""Attention computed explicitly: a softmax whose output is multiplied with V.

vit-pytorch's ``Attention`` (``self.attend = nn.Softmax(dim=-1)``, then
``torch.matmul(attn, v)``), timm's and Hugging Face's eager attention and most hand-written
transformers materialise the pattern themselves. A softmax over the last axis of a tensor
of 3 or more dimensions is remembered (by identity: dropout in eval and ``.to()`` to the
same dtype return the very tensor); when it is then the *left* operand of ``matmul``,
``@``, ``bmm`` or a two-operand ``einsum``, that is an attention: the pattern is the
softmax's output, V the right operand, and the check recomputes ``pattern @ V`` against
the product the model computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from shenjing.capture.attention.sdpa import compute_dtype


def softmax_functions() -> set[Any]:
    """The functions whose output may be an attention pattern, as a function mode receives
    them: the public names and the builtins behind them (another tool may have rewrapped
    the public names, as torchlens does)."""
    return {F.softmax, torch.softmax, torch.Tensor.softmax,
            torch._C._VariableFunctions.softmax, torch._C.TensorBase.softmax}


def product_functions() -> set[Any]:
    """The functions that may multiply a pattern with V (see :func:`softmax_functions`)."""
    return {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm, torch.einsum, torch._C._VariableFunctions.matmul,
            torch._C._VariableFunctions.bmm, torch._C.TensorBase.matmul,
            torch._C.TensorBase.__matmul__, torch._C.TensorBase.bmm}


def softmax_dim(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """The ``dim`` of a softmax call (None when not given)."""
    if len(args) > 1 and isinstance(args[1], int):
        return args[1]
    dim = kwargs.get("dim")
    return dim if isinstance(dim, int) else None


def is_candidate(out: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
    """Whether a softmax's output could be an attention pattern: over the last axis of a
    tensor of ≥ 3 dimensions (batch, [heads,] queries, keys)."""
    if not isinstance(out, torch.Tensor) or out.dim() < 3 or not out.is_floating_point():
        return False
    dim = softmax_dim(args, kwargs)
    return dim is not None and dim % out.dim() == out.dim() - 1


def operands(func: Any, args: tuple[Any, ...]) -> tuple[Any, Any, str | None]:
    """``(left, right, einsum equation or None)`` of a product call."""
    if getattr(func, "__name__", "") == "einsum":
        if len(args) == 2 and isinstance(args[1], (list, tuple)):
            ops = list(args[1])
        else:
            ops = list(args[1:])
        if len(ops) != 2:
            return None, None, None
        return ops[0], ops[1], str(args[0])
    if len(args) < 2:
        return None, None, None
    return args[0], args[1], None


def product(pattern: torch.Tensor, value: torch.Tensor, equation: str | None) -> torch.Tensor:
    """``pattern @ V`` the way the model multiplied them, in :func:`compute_dtype`."""
    dtype = compute_dtype(pattern)
    p, v = pattern.to(dtype), value.to(dtype)
    if equation is not None:
        return torch.einsum(equation, p, v)
    return torch.matmul(p, v)
