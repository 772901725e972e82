"""Zoo models: seed architectures, sizes adapting to the input, clear errors."""

from __future__ import annotations

import pytest
import torch

from shenjing.errors import MissingExtraError, ShapeMismatchError, UnknownNameError
from shenjing.models import MODEL_NAMES, build_model


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


def test_vgg16_without_torchvision_names_the_extra():
    pytest.importorskip("torch")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r'pip install "shenjing\[vision\]"'):
            build_model("vgg16", (3, 32, 32), 10)
    else:
        assert build_model("vgg16", (3, 32, 32), 10).features[0].out_channels == 64
