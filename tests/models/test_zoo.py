"""Zoo models: seed architectures, sizes adapting to the input, clear errors."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from shenjing.errors import MissingExtraError, ShapeMismatchError, UnknownNameError
from shenjing.models import MODEL_NAMES, build_model, zoo


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_seed_parameter_counts():
    assert n_params(build_model("mlp")) == 784 * 128 + 128 + 128 * 10 + 10
    assert n_params(build_model("dropout_cnn")) == 1_199_882  # seed 002 states this number
    assert build_model("simple_cnn").fc1.in_features == 3136  # 64·7·7, as in seeds 000/001
    assert n_params(build_model("mnistnet")) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in ("vgg16", "curve_mlp")])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_models_adapt_to_input_size(name, shape):
    model = build_model(name, shape, 10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_layer_names_users_expect():
    names = dict(build_model("simple_cnn").named_modules())
    assert {"conv1", "relu1", "conv2", "fc1", "fc2"} <= set(names)
    assert isinstance(names["relu1"], torch.nn.ReLU)


def test_dropout_cnn_outputs_log_probabilities():
    out = build_model("dropout_cnn").eval()(torch.rand(4, 1, 28, 28))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))


def test_mlp_hidden_widths():
    model = build_model("mlp", (2,), 2, hidden=(16, 8))
    assert [m.out_features for m in (model.fc1, model.fc2, model.fc3)] == [16, 8, 2]


def test_unknown_model_lists_choices():
    with pytest.raises(UnknownNameError, match=r"unknown model 'simplecnn'\. Did you mean "
                                               r"'simple_cnn'"):
        build_model("simplecnn")


def test_cnn_on_vectors_explains():
    with pytest.raises(ShapeMismatchError, match=r"takes images shaped \(channels, height, "
                                                 r"width\), got input shape \(2,\)"):
        build_model("simple_cnn", (2,), 2)


def _usable_torchvision():
    try:
        import torchvision
    except Exception:  # not installed, or a build for another torch (RuntimeError)
        return None
    return torchvision


def test_vgg16_builds_where_torchvision_works():
    if _usable_torchvision() is None:
        pytest.skip("torchvision is not installed or does not import here")
    assert build_model("vgg16", (3, 32, 32), 10).features[0].out_channels == 64


@pytest.fixture
def no_torchvision(monkeypatch):
    """An environment where ``import torchvision`` raises ModuleNotFoundError."""
    monkeypatch.setitem(sys.modules, "torchvision", None)


@pytest.fixture
def broken_torchvision(monkeypatch, tmp_path):
    """A torchvision whose import raises what PyPI's wheel raises beside a CPU torch."""
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))


def _advice_for(version):
    """What the message must say for this torch: the pair from torchvision's table."""
    pin, index = zoo.matching_torchvision(version)
    return f"pip install torchvision=={pin}" + (f" --index-url {index}" if index else "")


def test_vgg16_without_torchvision_says_which_build_to_install(no_torchvision, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    with pytest.raises(MissingExtraError) as info:
        build_model("vgg16", (3, 32, 32), 10)
    text = str(info.value)
    assert text.startswith("model 'vgg16' needs torchvision, and torchvision is not "
                           "installed; install the one built for your torch 2.13.0+cpu")
    assert ("pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu"
            in text)
    assert "\n" not in text and isinstance(info.value, ImportError)
    assert info.value.__suppress_context__  # raised from None: one message, no chain


def test_vgg16_with_a_torchvision_that_fails_to_import(broken_torchvision):
    with pytest.raises(MissingExtraError, match=r"torchvision is installed but does not "
                       r"import \(RuntimeError: operator torchvision::nms does not exist\), "
                       r"so it was built for another torch; install the one built for your "
                       rf"torch {re.escape(torch.__version__)}") as info:
        build_model("vgg16", (3, 32, 32), 10)
    assert _advice_for(torch.__version__) in str(info.value)
    assert "\n" not in str(info.value)


def test_vgg16_message_on_this_machine_names_this_torch():
    if _usable_torchvision() is not None:
        pytest.skip("torchvision works here")
    with pytest.raises(MissingExtraError, match=re.escape(_advice_for(torch.__version__))):
        build_model("vgg16", (3, 32, 32), 10)


@pytest.mark.parametrize(("torch_version", "expected"), [
    # pairs as published: torchvision's README table (2.13 <-> 0.28, 2.4 <-> 0.19) and
    # pytorch.org's previous-versions page (2.9.1 <-> 0.24.1, 2.6.0 <-> 0.21.0)
    ("2.13.0+cpu", ("0.28.0", "https://download.pytorch.org/whl/cpu")),
    ("2.9.1+cu128", ("0.24.1", "https://download.pytorch.org/whl/cu128")),
    ("2.6.0+rocm6.1", ("0.21.0", "https://download.pytorch.org/whl/rocm6.1")),
    ("2.4.1", ("0.19.1", None)),
    ("2.0.1", (None, None)),  # 2.0.1 <-> 0.15.2 breaks the rule: no guess
])
def test_matching_torchvision_follows_the_published_pairs(torch_version, expected):
    assert zoo.matching_torchvision(torch_version) == expected


def test_advice_without_a_known_pair_points_to_the_table():
    assert zoo.torchvision_advice("2.0.1") == (
        "install the torchvision built for your torch 2.0.1 (see the torch ↔ torchvision "
        "table in docs/data.md#torchvision)")


@pytest.mark.parametrize(("shape", "patch"), [((1, 28, 28), 7), ((1, 8, 8), 2)])
def test_vit_cuts_the_image_into_a_four_by_four_grid_with_a_cls_token(shape, patch):
    model = build_model("vit", shape, 10).eval()
    assert model.patch == patch and model.patch_embed.stride == (patch, patch)
    tokens = []
    handle = model.blocks[0].register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape))
    try:
        model(torch.zeros(2, *shape))
    finally:
        handle.remove()
    assert tokens == [torch.Size([2, 17, 64])]  # CLS + 16 patch tokens, dim 64
    assert len(model.blocks) == 4 and model.blocks[0].attn.heads == 4


def test_vit_attention_equals_an_explicit_softmax():
    """The zoo ViT's fused attention is softmax(QKᵀ/√d)·V, computed here by hand."""
    torch.manual_seed(0)
    attn = build_model("vit", (1, 8, 8), 10).blocks[0].attn.eval()
    x = torch.randn(3, 17, 64)
    q, k, v = attn.qkv(x).reshape(3, 17, 3, 4, 16).permute(2, 0, 3, 1, 4)
    pattern = torch.softmax(q @ k.transpose(-1, -2) / 16 ** 0.5, dim=-1)
    expected = attn.proj((pattern @ v).transpose(1, 2).reshape(3, 17, 64))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_vit_refuses_a_side_that_is_not_a_multiple_of_the_grid():
    with pytest.raises(ShapeMismatchError, match=r"4×4 grid of patches.*got 10×10"):
        build_model("vit", (1, 10, 10), 10)


def test_row_lstm_reads_one_row_per_step():
    model = build_model("row_lstm", (1, 28, 28), 10).eval()
    assert model.lstm.input_size == 28 and model.lstm.batch_first
    x = torch.rand(2, 1, 28, 28)
    seq, _ = model.lstm(x[:, 0])  # rows of the one channel are the steps
    torch.testing.assert_close(model(x), model.fc(seq[:, -1]))
    assert n_params(model) == 4 * (28 * 64 + 64 * 64 + 2 * 64) + 64 * 10 + 10
