"""Kernels that autograd and ``torch.vmap`` can see through, for the few ops whose fast ones
cannot: attention, and cuDNN's recurrent layers.

Why: PyTorch computes ``scaled_dot_product_attention`` with fused kernels (flash attention
on CPU and CUDA, memory-efficient attention on CUDA) that have a first derivative but no
second one, and no ``vmap`` batching rule. A Hessian-vector product needs the second one
(``RuntimeError: derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward
is not implemented`` on an ``nn.TransformerEncoder``); the landscape engine's vmap path
needs the batching rule (else PyTorch loops over the points one by one, with a warning).
The *math* backend writes attention as matrix products and a softmax, which have both.
``nn.TransformerEncoderLayer``'s inference fast path (one fused op) is turned off alike,
so attention goes through ``scaled_dot_product_attention`` where the backend choice holds.
cuDNN's LSTM/GRU kernels have no double backward (and no backward in eval mode), so on
CUDA they are switched off for models that contain recurrent layers.

Which API: ``torch.nn.attention.sdpa_kernel`` (torch ≥ 2.3); on torch 2.2 the older
``torch.backends.cuda.sdp_kernel`` flags, which also steer the CPU kernels; if neither is
there, attention runs as it would (and a Hessian of a transformer may fail with PyTorch's
own error).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn


def math_attention_backend() -> str:
    """Which API :func:`differentiable_kernels` uses here: ``sdpa_kernel`` (torch ≥ 2.3),
    ``sdp_kernel`` (torch 2.2) or ``none``."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: F401
    except ImportError:
        return "sdp_kernel" if hasattr(torch.backends.cuda, "sdp_kernel") else "none"
    return "sdpa_kernel"


@contextlib.contextmanager
def _math_attention() -> Iterator[None]:
    backend = math_attention_backend()
    if backend == "sdpa_kernel":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            yield
    elif backend == "sdp_kernel":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated from torch 2.3 on
            ctx = torch.backends.cuda.sdp_kernel(enable_flash=False, enable_math=True,
                                                 enable_mem_efficient=False)
        with ctx:
            yield
    else:
        yield


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def has_recurrent_layers(model: nn.Module) -> bool:
    """Whether ``model`` contains an ``nn.RNN``/``nn.LSTM``/``nn.GRU``."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextlib.contextmanager
def differentiable_kernels(model: nn.Module | None = None,
                           device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with attention on the math backend, the transformer fast path off,
    and (on CUDA, for models with recurrent layers) cuDNN off; restore everything after.

    Every Hessian-vector product, and the landscape engine's vmap path, runs inside it.

    >>> layer = nn.TransformerEncoderLayer(4, 2, 8, batch_first=True).eval()
    >>> x = torch.randn(3, 5, 4)
    >>> params = list(layer.parameters())
    >>> with differentiable_kernels(layer):
    ...     g = torch.autograd.grad(layer(x).square().sum(), params, create_graph=True)
    ...     hv = torch.autograd.grad(sum(gi.sum() for gi in g), params, allow_unused=True)
    >>> len(hv) == len(params)
    True
    """
    dev = torch.device(device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_math_attention())
        stack.enter_context(_no_mha_fastpath())
        if dev.type == "cuda" and model is not None and has_recurrent_layers(model):
            stack.enter_context(torch.backends.cudnn.flags(enabled=False))
        yield
