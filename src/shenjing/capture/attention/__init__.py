"""Attention patterns of any model, also where a fused kernel never materialises them.

For every attention layer, the per-head pattern ``softmax(Q Kᵀ · scale + mask)`` for the
chosen inputs, as one array ``(samples, layers, heads, queries, keys)``:

- :func:`find_attention_layers` (model, example batch) → the :class:`AttentionLayer` s one
  forward pass shows (``[]`` for a model without attention);
- :func:`capture_attention` (model, inputs, …) → :class:`AttentionCapture`, in memory or
  streamed to a ``.npy`` file, batch by batch, its size reported and checked first;
- :meth:`AttentionCapture.save` / :func:`load_attention_capture`: one ``.npz``.

How each kind is seen (nothing the model computes is changed; every pattern is
recomputed *beside* the real computation, from the tensors that fed it):

``sdpa``
    A :class:`torch.overrides.TorchFunctionMode`, active only during the capture's own
    forward passes, sees every call of ``F.scaled_dot_product_attention`` however the
    model imported it (the zoo ``vit``, timm, Hugging Face's ``sdpa`` attention). The
    call runs unchanged; its own arguments — ``query`` and ``key`` after any rotary or
    scaling step, ``attn_mask`` (boolean: True takes part; float: added), ``is_causal``,
    ``scale`` (default ``1/√head_dim``), ``enable_gqa`` (key heads repeated per group) —
    give the pattern (:mod:`.sdpa`). The layer is the innermost module running at that
    moment (``blocks.0.attn``, ``vit.layers.0.attention``), known from forward pre-hooks
    and hooks that keep the module stack. Check: ``pattern @ V`` against the
    kernel's output.
``multihead``
    ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (also inside
    ``nn.TransformerEncoder``). In eval without gradients torch runs them through fused
    kernels (``torch._native_multi_head_attention``; ``torch._transformer_encoder_layer_fwd``,
    which never calls ``self_attn`` and, in an encoder given a key padding mask, runs on
    nested tensors), and refuses those fast paths when a function mode is active or any
    module of the layer has a hook. So these modules get no hook: their ``forward`` is
    wrapped on the instance for the duration, the mode is popped while they run (they take
    the path they take without the capture), and the wrapper recomputes q and k from
    ``in_proj_weight``/``in_proj_bias`` (or ``q/k/v_proj_weight``), the heads, the masks
    (boolean True leaves a key out; key padding mask per sample; ``bias_k``,
    ``add_zero_attn``) and ``is_causal`` as ``F.multi_head_attention_forward`` does
    (:mod:`.multihead`). An encoder layer is named by its ``self_attn``
    (``layers.0.self_attn``). Check: ``out_proj(pattern @ V)`` against the module's
    output; for an encoder layer, the whole layer recomputed around it (norms, residuals,
    feed-forward) against the layer's output. On nested tensors the padded positions are
    not computed by torch: their pattern rows are 0 and they are not compared.
``softmax``
    Attention written out (vit-pytorch's ``Attention``: ``self.attend = nn.Softmax(-1)``,
    then ``torch.matmul(attn, v)``; eager Hugging Face / timm): a softmax over the last
    axis of a ≥ 3-D tensor whose output (itself, as dropout in eval returns it) is the left
    operand of ``matmul``/``@``/``bmm``/``einsum`` is a pattern; V is the right operand
    (:mod:`.softmax`). The layer is the module running the product (``transformer.
    layers.0.0``). Check: ``pattern @ V`` against the product the model computed.

The first forward (two samples) finds the layers with hooks on every module and the mode
on throughout; the capture's own batches then hook only the attention modules it found and
switch the mode on only while one of them runs (:mod:`.observer`), so the rest of the
model runs as without the capture. A module that computes attention more than once per
forward gives layers ``name#0``,
``name#1`` (the capture keys' rule). The check's tolerance is relative: 1e-5 × max(1,
max |V|) for float32 (× the layer output's magnitude where a whole encoder layer was
recomputed), looser for half precision (5e-3, bfloat16 3e-2); every layer's largest error
is kept in :attr:`AttentionCapture.check_error`. Rows sum to 1 (a query with every key
masked has a row of zeros, as the kernels give zero output there). Dropout inside the
kernel (``dropout_p > 0`` in eval) cannot be reproduced and fails the check.

Token features for probes, per layer: the first token (``cls_tokens``) and the mean of the
other tokens (``mean_tokens``) of the states *entering* the layer's attention: for
``sdpa`` and ``softmax`` the first tensor argument of the attention module (the zoo vit's
``blocks.i.attn`` gets ``norm1(x)``; vit-pytorch's ``Attention`` gets the residual stream
and normalises it itself; Hugging Face's ``ViTAttention`` gets ``layernorm_before``'s
output); for ``multihead`` the query input (for an encoder layer ``norm1(x)`` with
``norm_first``, else ``x``). The mean includes padded positions. They are None when a
layer's input is not ``(batch, tokens, dim)`` or the layers' widths differ.

Not seen: attention inside ``torch.compile``'d or scripted code, inside a function that
itself dispatches through ``__torch_function__`` (such as calling
``F.multi_head_attention_forward`` directly), or an explicit softmax whose output is
copied (``.to`` another dtype, dropout in training) before the product.
"""

from shenjing.capture.attention.find import find_attention_layers
from shenjing.capture.attention.result import (
    AttentionCapture,
    AttentionLayer,
    AttentionPlan,
    load_attention_capture,
)
from shenjing.capture.attention.stream import capture_attention

__all__ = ["AttentionCapture", "AttentionLayer", "AttentionPlan", "capture_attention",
           "find_attention_layers", "load_attention_capture"]
