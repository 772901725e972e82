"""Attention capture (``shenjing.capture.attention``) on every kind of attention.

For each kind the captured pattern is compared with an explicit computation written here
(from the module's inputs, recorded with this test's own hooks, and its weights), rows
must sum to 1, the pattern @ V check must pass and be recorded, and the model's outputs
with the capture must equal those without it, bit for bit.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/capture: attention_models
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from attention_models import (
    DIM,
    HEADS,
    TOKENS,
    EncoderNet,
    MHANet,
    NoAttention,
    SDPANet,
    TwoShapes,
    inputs,
    padding_mask,
    rotate,
    tokens_of,
)
from torch import nn

from shenjing.capture.attention import (
    AttentionCapture,
    capture_attention,
    find_attention_layers,
    load_attention_capture,
)
from shenjing.errors import (
    LayerNotFoundError,
    NotApplicableError,
    ResourceError,
    ShapeMismatchError,
    UsageError,
)
from shenjing.hooks import count_hooks, forward_hooks, forward_pre_hooks

TOL = 1e-5
pytestmark = [  # torch's own notes on its encoder paths, not about the capture
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning"),
]


# ---- helpers -----------------------------------------------------------------------------
def _nothing_left(model: nn.Module) -> None:
    assert count_hooks(model) == 0
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert torch._C._len_torch_function_stack() == 0


def _inputs_of(model: nn.Module, names: list[str], x: torch.Tensor,
               grad: bool = False) -> tuple[dict[str, list[Any]], torch.Tensor]:
    """Run ``model`` plainly, recording each named module's call arguments (args only)."""
    seen: dict[str, list[Any]] = {n: [] for n in names}
    hooks = {n: (lambda _m, args, _n=n: seen[_n].append(args)) for n in names}
    with torch.set_grad_enabled(grad), forward_pre_hooks(model, hooks):
        out = model(x)
    return seen, out


def _captured_outputs(model: nn.Module, call: Callable[[], AttentionCapture]
                      ) -> tuple[AttentionCapture, list[torch.Tensor]]:
    """The capture, and the model's outputs of every forward it ran (probe excluded)."""
    outs: list[torch.Tensor] = []

    def keep(_m: nn.Module, _a: Any, out: Any) -> None:
        out = getattr(out, "logits", out)  # a Hugging Face model output
        outs.append(out.detach().clone())
    with forward_hooks(model, {"": keep}):
        att = call()
    return att, outs[1:]


def _plain_outputs(model: nn.Module, x: torch.Tensor, batch_size: int,
                   grad: bool = False) -> list[torch.Tensor]:
    with torch.set_grad_enabled(grad):
        return [model(x[i:i + batch_size]).detach() for i in range(0, len(x), batch_size)]


def _assert_identical(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def _assert_rows_sum_to_one(att: AttentionCapture, valid: np.ndarray | None = None) -> None:
    sums = att.patterns.sum(axis=-1)  # (samples, layers, heads, queries)
    if valid is not None:  # (samples, queries)
        sums = sums[valid[:, None, None, :].repeat(sums.shape[1], 1).repeat(sums.shape[2], 2)]
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)


def _assert_checked(att: AttentionCapture) -> None:
    assert att.passed
    assert set(att.check_error) == set(att.names)
    for name in att.names:
        assert 0.0 <= att.check_error[name] <= att.tolerance * att.check_scale[name]
    assert att.tolerance == 1e-5


def _softmax_heads(q: torch.Tensor, k: torch.Tensor, scale: float,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Explicit per-head softmax(q kᵀ · scale + bias): q, k ``(batch, heads, n, d)``."""
    scores = torch.einsum("bhqd,bhkd->bhqk", q.double(), k.double()) * scale
    if bias is not None:
        scores = scores + bias.double()
    scores = scores - scores.amax(dim=-1, keepdim=True)
    e = torch.exp(scores)
    return e / e.sum(dim=-1, keepdim=True)


# ---- sdpa: the zoo vit ------------------------------------------------------------------
def _zoo_expected(model: Any, x: torch.Tensor) -> torch.Tensor:
    names = [f"blocks.{i}.attn" for i in range(len(model.blocks))]
    seen, _ = _inputs_of(model, names, x)
    layers = []
    for name in names:
        attn: Any = model.get_submodule(name)
        (h,) = seen[name][0]
        b, n, d = h.shape
        qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.heads, -1)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        layers.append(_softmax_heads(q, k, 1 / math.sqrt(d // attn.heads)))
    return torch.stack(layers, dim=1)


def test_zoo_vit(seeded: None) -> None:
    from shenjing.models import build_model

    model = build_model("vit", (1, 8, 8), 10).eval()
    x = torch.rand(6, 1, 8, 8)
    att, outs = _captured_outputs(model, lambda: capture_attention(model, x, batch_size=4))
    assert [(layer.name, layer.kind, layer.module_type) for layer in att.layers] == [
        (f"blocks.{i}.attn", "sdpa", "SelfAttention") for i in range(4)]
    assert att.patterns.shape == (6, 4, 4, 17, 17) and att.patterns.dtype == np.float32
    np.testing.assert_allclose(att.patterns, _zoo_expected(model, x).detach().numpy(),
                               atol=TOL)
    _assert_rows_sum_to_one(att)
    _assert_checked(att)
    _assert_identical(outs, _plain_outputs(model, x, 4))
    _nothing_left(model)
    # token features: the input of blocks.i.attn is norm1 of the residual stream
    seen, _ = _inputs_of(model, ["blocks.2.attn"], x)
    (h,) = seen["blocks.2.attn"][0]
    assert att.cls_tokens is not None and att.mean_tokens is not None
    np.testing.assert_allclose(att.cls_tokens[:, 2], h[:, 0].detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(att.mean_tokens[:, 2], h[:, 1:].mean(1).detach().numpy(),
                               atol=1e-6)


# ---- sdpa: a timm / Hugging Face shaped model ---------------------------------------------
def _sdpa_expected(model: SDPANet, x: torch.Tensor) -> torch.Tensor:
    names = ["attns.0", "attns.1"]
    seen, _ = _inputs_of(model, names, x)
    layers = []
    for name in names:
        attn: Any = model.get_submodule(name)
        h, mask = seen[name][0]
        b, n, _ = h.shape
        q = attn.q(h).reshape(b, n, attn.heads, attn.head_dim).transpose(1, 2)
        kv = attn.kv(h).reshape(b, n, 2, attn.kv_heads, attn.head_dim)
        k = kv[:, :, 0].transpose(1, 2).repeat_interleave(attn.heads // attn.kv_heads, dim=1)
        if attn.rotary:
            q, k = rotate(q), rotate(k)
        bias = torch.zeros(n, n)
        if attn.causal:
            bias = bias.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
        if mask is not None:
            bias = bias + (torch.where(mask, 0.0, -math.inf) if mask.dtype == torch.bool
                           else mask)
        scale = attn.scale if attn.scale is not None else 1 / math.sqrt(attn.head_dim)
        layers.append(_softmax_heads(q, k, scale, bias))
    return torch.stack(layers, dim=1)


@pytest.mark.parametrize("options", [
    {}, {"mask": "bool"}, {"mask": "float"}, {"causal": True}, {"scale": 0.9},
    {"rotary": True, "kv_heads": 2, "mask": "bool"}],
    ids=["plain", "bool-mask", "float-mask", "causal", "scale", "rotary-gqa"])
def test_sdpa_model(seeded: None, options: dict[str, Any]) -> None:
    model = SDPANet(**options).eval()
    x = inputs(7)
    att, outs = _captured_outputs(model, lambda: capture_attention(model, x, batch_size=3))
    assert att.names == ["attns.0", "attns.1"]
    assert {layer.kind for layer in att.layers} == {"sdpa"}
    np.testing.assert_allclose(att.patterns, _sdpa_expected(model, x).detach().numpy(),
                               atol=TOL)
    if options.get("mask") == "bool":  # masked keys get exactly 0
        keep = model.make_mask(x)
        assert keep is not None
        assert (att.patterns[~np.broadcast_to(keep.numpy()[:, None], att.patterns.shape)]
                == 0).all()
    _assert_rows_sum_to_one(att)
    _assert_checked(att)
    _assert_identical(outs, _plain_outputs(model, x, 3))
    _nothing_left(model)
    first: Any = model.attns[0]
    assert first.dropout > 0 and not model.training


def test_training_flag_is_restored_and_dropout_is_off(seeded: None) -> None:
    model = SDPANet().train()
    att = capture_attention(model, inputs(4))
    assert model.training and att.passed  # eval during the capture: no kernel dropout


# ---- multihead: nn.TransformerEncoder, fast path and not ---------------------------------
def _encoder_expected(model: Any, x: torch.Tensor) -> torch.Tensor:
    """Each layer's weights through torch's need_weights path, on dense inputs."""
    kpm = padding_mask(x)
    h = model.embed(tokens_of(x))
    mask = nn.Transformer.generate_square_subsequent_mask(TOKENS) if model.src_mask else None
    if not model.batch_first:
        h = h.transpose(0, 1)
    layers = []
    with torch.enable_grad():  # the reference path: no fused kernel
        for layer in model.encoder.layers:
            sa = layer.norm1(h) if layer.norm_first else h
            _, w = layer.self_attn(sa, sa, sa, key_padding_mask=kpm, attn_mask=mask,
                                   need_weights=True, average_attn_weights=False)
            layers.append(w.detach())
            h = layer(h, src_mask=mask, src_key_padding_mask=kpm).detach()
    return torch.stack(layers, dim=1)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad-fast-path", "grad"])
@pytest.mark.parametrize("setup", [
    {"batch_first": True}, {"batch_first": False}, {"batch_first": True, "norm_first": True},
    {"batch_first": True, "src_mask": True}, {"batch_first": True, "activation": "gelu"}],
    ids=["batch-first", "seq-first", "norm-first", "src-mask", "gelu"])
def test_transformer_encoder(seeded: None, setup: dict[str, Any], grad: bool) -> None:
    model = EncoderNet(**setup).eval()
    x = inputs(8)
    att, outs = _captured_outputs(
        model, lambda: capture_attention(model, x, batch_size=5, grad=grad))
    assert [(layer.name, layer.kind, layer.module_type) for layer in att.layers] == [
        (f"encoder.layers.{i}.self_attn", "multihead", "MultiheadAttention") for i in (0, 1)]
    expected = _encoder_expected(model, x).numpy()
    valid = ~padding_mask(x).numpy()  # (samples, queries)
    nested = not grad and setup["batch_first"] and not setup.get("norm_first") \
        and not setup.get("src_mask")
    rows = valid[:, None, None, :, None]
    if nested:  # torch never computes the padded positions: their rows are 0
        np.testing.assert_array_equal(att.patterns * ~rows, 0.0)
        np.testing.assert_allclose(att.patterns * rows, expected * rows, atol=TOL)
        _assert_rows_sum_to_one(att, valid)
    else:
        np.testing.assert_allclose(att.patterns, expected, atol=TOL)
        _assert_rows_sum_to_one(att)
    _assert_checked(att)
    _assert_identical(outs, _plain_outputs(model, x, 5, grad))
    _nothing_left(model)


def test_fast_path_is_still_taken(seeded: None) -> None:
    """The capture leaves the fused paths on: the padded positions come out as the nested
    path makes them (zeros) also during the capture."""
    model = EncoderNet().eval()
    x = inputs(6)
    with torch.no_grad():
        plain = model.encoder(model.embed(tokens_of(x)), src_key_padding_mask=padding_mask(x))
    assert padding_mask(x).any() and (plain[padding_mask(x)] == 0).all()  # nested path ran
    _, outs = _captured_outputs(model, lambda: capture_attention(model, x, batch_size=6))
    _assert_identical(outs, _plain_outputs(model, x, 6))


# ---- multihead: bare nn.MultiheadAttention -------------------------------------------------
def _mha_expected(model: MHANet, x: torch.Tensor) -> list[torch.Tensor]:
    seen: dict[str, list[Any]] = {"self_attn": [], "cross": []}

    def keep(name: str) -> Callable[..., None]:
        return lambda _m, args, kwargs: seen[name].append((args, kwargs))
    handles = [model.get_submodule(n).register_forward_pre_hook(keep(n), with_kwargs=True)
               for n in seen]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    out = []
    with torch.enable_grad():
        for name, calls in seen.items():
            (args, kwargs), = calls
            kwargs = {**kwargs, "need_weights": True, "average_attn_weights": False}
            out.append(model.get_submodule(name)(*args, **kwargs)[1].detach())
    return out


@pytest.mark.parametrize("batch_first", [True, False])
def test_bare_multihead_attention(seeded: None, batch_first: bool) -> None:
    model = MHANet(batch_first=batch_first).eval()
    x = inputs(5)
    layers = find_attention_layers(model, x[:2])
    assert [(la.name, la.heads, la.tokens, la.keys) for la in layers] == [
        ("self_attn", HEADS, TOKENS, TOKENS), ("cross", 2, TOKENS, 5 + 1 + 1)]
    expected = _mha_expected(model, x)
    for name, want in zip(["self_attn", "cross"], expected, strict=True):
        att, outs = _captured_outputs(
            model, functools.partial(capture_attention, model, x, layers=[name], batch_size=2))
        np.testing.assert_allclose(att.patterns[:, 0], want.numpy(), atol=TOL)
        _assert_rows_sum_to_one(att)
        _assert_checked(att)
        _assert_identical(outs, _plain_outputs(model, x, 2))
        assert att.cls_tokens is not None and att.cls_tokens.shape == (5, 1, DIM)
    _nothing_left(model)


# ---- softmax: vit-pytorch -----------------------------------------------------------------
def test_vit_pytorch(seeded: None) -> None:
    import vit_pytorch_model as vp

    if vp.vit_module() is None:
        pytest.skip("vit-pytorch (and einops) is not installed: pip install --no-deps "
                    "vit-pytorch einops")
    model = vp.vit_pytorch_vit().eval()
    x = torch.rand(5, 1, 8, 8)
    att, outs = _captured_outputs(model, lambda: capture_attention(model, x, batch_size=2))
    assert [(la.name, la.kind, la.module_type) for la in att.layers] == [
        (f"transformer.layers.{i}.0", "softmax", "Attention") for i in (0, 1)]
    names = [la.name for la in att.layers]
    seen, _ = _inputs_of(model, names, x)
    want = []
    for name in names:
        attn: Any = model.get_submodule(name)
        (h,) = seen[name][0]
        q, k, _ = attn.to_qkv(attn.norm(h)).chunk(3, dim=-1)
        q, k = (t.reshape(5, 17, attn.heads, -1).transpose(1, 2) for t in (q, k))
        want.append(_softmax_heads(q, k, attn.scale))
    np.testing.assert_allclose(att.patterns, torch.stack(want, 1).detach().numpy(), atol=TOL)
    _assert_rows_sum_to_one(att)
    _assert_checked(att)
    _assert_identical(outs, _plain_outputs(model, x, 2))
    _nothing_left(model)


# ---- sdpa: Hugging Face's ViT ---------------------------------------------------------------
def test_hugging_face_vit(seeded: None) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    config = transformers.ViTConfig(image_size=8, patch_size=2, num_channels=1,
                                    hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    model = transformers.ViTForImageClassification(config).eval()
    assert model.config._attn_implementation == "sdpa"
    x = torch.rand(5, 1, 8, 8)
    att, outs = _captured_outputs(model, lambda: capture_attention(model, x, batch_size=3))
    assert [(la.name, la.kind) for la in att.layers] == [
        (f"vit.layers.{i}.attention", "sdpa") for i in (0, 1)]
    _nothing_left(model)  # (output_attentions below makes transformers add hooks of its own)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            want = torch.stack(model(x, output_attentions=True).attentions, dim=1)
    finally:
        model.set_attn_implementation("sdpa")
    np.testing.assert_allclose(att.patterns, want.numpy(), atol=TOL)
    _assert_rows_sum_to_one(att)
    _assert_checked(att)
    with torch.no_grad():
        plain = [model(x[i:i + 3]).logits for i in range(0, 5, 3)]
    _assert_identical(outs, plain)


# ---- invariants -------------------------------------------------------------------------------
def test_batch_size_does_not_change_the_patterns(seeded: None) -> None:
    model = EncoderNet(batch_first=False).eval()
    x = inputs(9)
    a = capture_attention(model, x, batch_size=2)
    b = capture_attention(model, x, batch_size=9)
    np.testing.assert_allclose(a.patterns, b.patterns, atol=1e-6)
    assert a.mean_tokens is not None and b.mean_tokens is not None
    np.testing.assert_allclose(a.mean_tokens, b.mean_tokens, atol=1e-6)


def test_streamed_to_a_file_equals_in_memory(seeded: None, tmp_path: Path) -> None:
    model = SDPANet(mask="bool").eval()
    x = inputs(7)
    plans: list[Any] = []
    done: list[tuple[int, int]] = []
    memory = capture_attention(model, x, batch_size=3)
    path = tmp_path / "sub" / "attention.npy"
    disk = capture_attention(model, x, batch_size=3, out=path, on_plan=plans.append,
                             progress=lambda d, n: done.append((d, n)))
    assert isinstance(disk.patterns, np.memmap) and not disk.patterns.flags.writeable
    np.testing.assert_array_equal(disk.patterns, memory.patterns)
    np.testing.assert_array_equal(np.load(path), memory.patterns)
    assert [p.name for p in path.parent.iterdir()] == ["attention.npy"]  # no temporary file
    (plan,) = plans
    assert plan.shape == (7, 2, HEADS, TOKENS, TOKENS) and plan.out == path
    assert plan.pattern_bytes == 7 * 2 * HEADS * TOKENS * TOKENS * 4
    assert plan.nbytes == plan.pattern_bytes + 2 * 7 * 2 * DIM * 4
    assert "streamed to" in str(plan)
    assert done == [(3, 7), (6, 7), (7, 7)]


def test_float16_storage_and_labels(seeded: None) -> None:
    model = SDPANet().eval()
    x, y = inputs(6), torch.arange(6) % 3
    half = capture_attention(model, (x, y), dtype="float16", batch_size=4)
    full = capture_attention(model, x)
    assert half.patterns.dtype == np.float16
    assert half.cls_tokens is not None and half.cls_tokens.dtype == np.float16
    np.testing.assert_allclose(half.patterns, full.patterns, atol=1e-3)
    assert half.labels is not None
    np.testing.assert_array_equal(half.labels, y.numpy())
    assert full.labels is None


def test_save_and_load(seeded: None, tmp_path: Path) -> None:
    att = capture_attention(SDPANet().eval(), (inputs(4), torch.arange(4)))
    back = load_attention_capture(att.save(tmp_path / "att.npz"))
    assert back.layers == att.layers and back.check_error == att.check_error
    assert back.tolerance == att.tolerance and back.passed
    np.testing.assert_array_equal(back.patterns, att.patterns)
    assert back.mean_tokens is not None and att.mean_tokens is not None
    np.testing.assert_array_equal(back.mean_tokens, att.mean_tokens)
    assert back.labels is not None and att.labels is not None
    np.testing.assert_array_equal(back.labels, att.labels)
    assert "passed=True" in repr(att)


def test_find_attention_layers(seeded: None) -> None:
    assert find_attention_layers(NoAttention(), inputs(2)) == []
    a, _ = find_attention_layers(SDPANet(kv_heads=2), inputs(2))
    assert (a.name, a.kind, a.module_type, a.heads, a.tokens, a.dim) == (
        "attns.0", "sdpa", "SDPAttention", HEADS, TOKENS, DIM)


def test_a_module_called_twice_gives_two_layers(seeded: None) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(4, DIM)
            self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(tokens_of(x))
            for _ in range(2):
                h = h + self.attn(h, h, h, need_weights=False)[0]
            return h

    att = capture_attention(Twice().eval(), inputs(3), layers=["attn#1"])
    assert att.names == ["attn#1"] and att.passed


# ---- bad input ---------------------------------------------------------------------------------
def test_a_layer_that_is_not_attention() -> None:
    with pytest.raises(LayerNotFoundError, match=r"'attns\.O' is not an attention layer of "
                       r"SDPANet\. Did you mean .*'attns\.0'\?.*attention layers: "
                       r"attns\.0, attns\.1"):
        capture_attention(SDPANet(), inputs(3), layers=["attns.O"])


def test_a_model_without_attention() -> None:
    model = NoAttention()
    with pytest.raises(NotApplicableError, match=r"NoAttention has no attention layer.*"
                       r"Linear ×2, ReLU ×1.*supports 'sdpa'.*'multihead'.*'softmax'"):
        capture_attention(model, inputs(3))
    _nothing_left(model)


def test_layers_of_different_shapes() -> None:
    with pytest.raises(ShapeMismatchError, match=r"differ in \(heads, queries, keys\): "
                       r"first \(4, 7, 7\), second \(4, 5, 5\).*layers=\['first'\]"):
        capture_attention(TwoShapes(), inputs(3))
    att = capture_attention(TwoShapes(), inputs(3), layers=["second"])
    assert att.patterns.shape == (3, 1, HEADS, 5, 5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 0}, r"batch_size must be a whole number ≥ 1, got 0"),
    ({"dtype": "float64"}, r"dtype 'float64' is not supported.*'float32' or 'float16'"),
    ({"out": "patterns.npz"}, r"out='patterns\.npz'.*ending in \.npy.*'patterns\.npy'"),
    ({"layers": []}, r"layers=\[\] chooses no attention layer.*attns\.0, attns\.1"),
])
def test_bad_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        capture_attention(SDPANet(), inputs(3), **kwargs)


def test_memory_is_checked_before_allocating(tmp_path: Path) -> None:
    plans: list[Any] = []
    with pytest.raises(ResourceError, match=r"needs .* but only 1\.00 KiB of memory is "
                       r"allowed.*pass out='attention\.npy'.*dtype='float16' halves it"):
        capture_attention(SDPANet(), inputs(30), max_memory=1024, on_plan=plans.append)
    assert plans and plans[0].nbytes > 1024
    with pytest.raises(ResourceError, match=r"reduce batch_size, e\.g\. batch_size="):
        capture_attention(SDPANet(), inputs(30), max_memory=3000, out=tmp_path / "a.npy")
    assert not list(tmp_path.iterdir())


def test_nothing_left_when_forward_raises(tmp_path: Path) -> None:
    from attention_models import Fused, FuseError

    for where in ("after_first", "inside_encoder"):
        for fuse in (0, 1):
            model = Fused().eval()
            Fused.where, Fused.fuse = where, fuse
            try:
                with pytest.raises(FuseError, match="boom midway"):
                    capture_attention(model, inputs(6), batch_size=3,
                                      out=tmp_path / "a.npy")
            finally:
                Fused.fuse, Fused.where = None, "after_first"
            _nothing_left(model)
            assert not list(tmp_path.iterdir())
    att = capture_attention(Fused().eval(), inputs(6), batch_size=3)
    assert [la.kind for la in att.layers] == ["sdpa", "multihead", "multihead", "softmax"]
    assert att.passed


def test_functions_rewrapped_by_another_tool(seeded: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Tools such as torchlens replace torch's public functions by wrappers
    (``functools.wraps``); a function mode may then receive either: both are seen."""
    import vit_pytorch_model as vp

    for name in ("scaled_dot_product_attention", "softmax"):
        original = getattr(F, name)

        @functools.wraps(original)
        def wrapper(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            return _original(*args, **kwargs)
        monkeypatch.setattr(F, name, wrapper)
    assert capture_attention(SDPANet().eval(), inputs(3)).passed
    if vp.vit_module() is not None:
        att = capture_attention(vp.vit_pytorch_vit().eval(), torch.rand(3, 1, 8, 8))
        assert [la.kind for la in att.layers] == ["softmax", "softmax"] and att.passed
