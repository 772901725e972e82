"""Default layers: block outputs, the features the classifier reads, the logits.

The penultimate layer is checked by value: what capture records under its key must equal
the input of the classifier, taken here with a plain torch forward pre-hook.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shenjing.capture import DefaultLayers, capture_dataset, default_layers, list_layers
from shenjing.hooks import count_hooks
from shenjing.models.zoo import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: user_models
import user_models as um

X = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def classifier_input(model: nn.Module, head: str, x: torch.Tensor) -> torch.Tensor:
    """The input of ``head`` (its last call), from a raw torch forward pre-hook."""
    got = []
    handle = model.get_submodule(head).register_forward_pre_hook(
        lambda m, args: got.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return got[-1]


@pytest.mark.parametrize(("name", "names", "penultimate", "head"), [
    ("resnet", ("layer1", "layer2", "layer3", "pool", "fc"), "pool", "fc"),
    ("lstm", ("lstm.0", "lstm.1.0", "fc"), "lstm.1.0", "fc"),
    ("shared", ("inp", "block#1", "out"), "block#1", "out"),
    ("dict", ("body", "classifier"), "body", "classifier"),
    ("vit", ("to_tokens", "encoder", "norm", "head"), "norm", "head"),
    ("conv1d", ("features", "pool", "fc"), "pool", "fc"),
    ("deep_mlp", ("195", "197", "198", "199"), "198", "199"),
])
def test_user_models_get_block_outputs_and_the_features_the_classifier_reads(
        name, names, penultimate, head):
    model = um.build(name)
    chosen = default_layers(model, X)
    assert chosen.names == names and chosen.penultimate == penultimate
    assert chosen.logits == head and chosen.names[-1] == head
    assert set(chosen.reasons) == set(names)
    # the penultimate key records exactly what the classifier reads
    acts = capture_dataset(model, X, [chosen.penultimate])
    torch.testing.assert_close(torch.from_numpy(acts.flat(chosen.penultimate).copy()),
                               classifier_input(model, head, X).flatten(1),
                               rtol=1e-5, atol=1e-6)
    # and every chosen name is a key the table lists
    assert set(names) <= set(list_layers(model, X[:2]).keys)
    assert count_hooks(model) == 0


def test_resnet_never_picks_a_shortcut_batchnorm():
    for model in (um.TinyResNet().eval(), um.FunctionalPoolResNet().eval()):
        chosen = default_layers(model, X)
        assert not any("short" in n or "bn" in n for n in chosen.names), chosen.names
        assert chosen.names[:3] == ("layer1", "layer2", "layer3")


def test_a_classifier_input_computed_in_forward_falls_back_to_the_block_before_it():
    # fc reads F.adaptive_avg_pool2d(layer3(...)): no module returns it
    chosen = default_layers(um.FunctionalPoolResNet().eval(), X)
    assert chosen.names == ("layer1", "layer2", "layer3", "fc")
    assert chosen.penultimate == "layer3"
    assert "computed in forward() that no module returns" in chosen.reasons["layer3"]


def test_lstm_reasons_say_sequence_output_and_last_hidden_state():
    chosen = default_layers(um.build("lstm"), X)
    assert "sequence output" in chosen.reasons["lstm.0"]
    assert "h_n, the hidden state after the last step" in chosen.reasons["lstm.1.0"]
    deep = default_layers(um.RowLSTM(num_layers=2).eval(), X)  # h_n is (batch, 2, hidden)
    assert deep.penultimate == "lstm.1.0"
    assert "the last layer of h_n" in deep.reasons["lstm.1.0"]


#: what stages/inspect.py's default_layers chose for each zoo model before this change
ZOO = {"mlp": ["fc1", "relu1", "fc2"], "simple_cnn": ["conv2", "fc1", "relu3", "fc2"],
       "mnist_cnn": ["conv2", "fc1", "relu3", "fc2"],
       "dropout_cnn": ["conv2", "fc1", "relu3", "fc2"],
       "mnistnet": ["fc1", "fc2", "relu2", "fc3"], "curve_mlp": ["fc1", "relu1", "fc2"]}


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_zoo_models_keep_the_layers_they_always_had(name, shape):
    model = build_model(name, shape, 10)
    chosen = default_layers(model, torch.rand(4, *shape))
    assert list(chosen.names) == ZOO[name]
    assert chosen.penultimate == ZOO[name][-2]


def test_curve_mlp_on_one_input_feature():
    chosen = default_layers(build_model("curve_mlp", (1,), 1), torch.rand(8, 1))
    assert chosen.names == ("fc1", "relu1", "fc2") and chosen.penultimate == "relu1"


def test_describe_names_each_layer_and_how_to_choose_others():
    chosen = default_layers(um.build("resnet"), X)
    text = chosen.describe()
    assert text.startswith("Layers shown for TinyResNet (chosen by default): layer1 (block "
                           "output: BasicBlock 'layer1'); layer2")
    assert "pool (penultimate: the features the classifier 'fc' (Linear) reads" in text
    assert "--layers" in text and "`shenjing layers RUN`" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        chosen.penultimate = "fc"  # type: ignore[misc]
    assert isinstance(chosen, DefaultLayers)


def test_a_model_without_weights_shows_its_last_outputs():
    chosen = default_layers(nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Tanh()), X)
    assert chosen.names == ("1", "2") and chosen.logits is None


def test_training_mode_restored_and_no_hook_left_also_when_forward_raises():
    model = um.build("resnet").train()
    default_layers(model, X)
    assert model.training and count_hooks(model) == 0

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            self.fc(x.flatten(1))
            raise RuntimeError("boom")

    boom = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        default_layers(boom, X)
    assert count_hooks(boom) == 0
