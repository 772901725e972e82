"""Selecting the prediction from tuple/list/dict outputs; user model specs and factories."""

from __future__ import annotations

import copy
import re
import sys
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

from shenjing.errors import UsageError
from shenjing.models.outputs import (
    OutputSelector,
    default_output,
    describe_output,
    original_class,
    select_output,
    selected_output,
    with_output,
)
from shenjing.models.spec import (
    build_from_spec,
    nn_from_factory,
    parse_model_args,
    resolve_factory,
    user_model_spec,
    zoo_name,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: inspect_models
from inspect_models import DictNet, NamedTupleNet, RowLSTM

A, B = torch.arange(6.0).reshape(2, 3), torch.ones(2, 1)


@dataclass
class HFOutput:
    loss: None
    logits: torch.Tensor


def test_default_rule():
    assert default_output(A) is None
    assert default_output((A, B)) == 0
    assert default_output([None, B]) == 1
    assert default_output({"hidden": B, "logits": A}) == "logits"
    assert default_output({"hidden": B, "score": A}) == "hidden"
    assert default_output(HFOutput(None, A)) == "logits"
    with pytest.raises(UsageError, match=r"no tensor at the top level.*--output 0\.logits"):
        default_output(({"logits": A},))


def test_select_by_key_index_and_dotted_path():
    out = (A, (B, A + 1), {"logits": A * 2})
    assert torch.equal(select_output(out), A)
    assert torch.equal(select_output(out, 0), A)
    assert torch.equal(select_output(out, "1.1"), A + 1)
    assert torch.equal(select_output(out, "2.logits"), A * 2)
    assert torch.equal(select_output(out, -1 + 3 - 2), A)
    Pair = namedtuple("Pair", "logits aux")
    assert torch.equal(select_output(Pair(A, B), "aux"), B)
    assert torch.equal(select_output(HFOutput(None, A), "logits"), A)


def test_selection_errors_show_the_output_structure():
    with pytest.raises(UsageError, match=re.escape("--output 'logit': the model's output has "
                                                   "no key 'logit'; it returns dict('logits': "
                                                   "Tensor(2, 3))")):
        select_output({"logits": A}, "logit")
    with pytest.raises(UsageError, match=r"returns a tuple of 2 items .* use an index 0…1"):
        select_output((A, B), 5)
    with pytest.raises(UsageError, match=r"--output '1' selects a tuple .*--output 1\.0"):
        select_output((A, (B, B)), "1")


def test_describe_output():
    assert describe_output((A, {"h": B})) == "tuple(0: Tensor(2, 3), 1: dict('h': Tensor(2, 1)))"


def test_with_output_keeps_names_keys_class_and_works_with_copy_and_functional_call():
    torch.manual_seed(0)
    net = DictNet(n_classes=3)
    keys = list(net.state_dict())
    names = [n for n, _ in net.named_modules()]
    x = torch.rand(5, 1, 8, 8)
    expected = net(x)["logits"]
    sel = with_output(net, "logits")
    assert sel is net and isinstance(net, DictNet) and type(net).__name__ == "DictNet"
    assert original_class(net) is DictNet and selected_output(net) == "logits"
    assert list(net.state_dict()) == keys and [n for n, _ in net.named_modules()] == names
    assert torch.equal(net(x), expected)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.classifier.bias.add_(1.0)
    assert torch.allclose(twin(x), expected + 1.0) and torch.equal(net(x), expected)
    params = {k: v * 0 for k, v in net.named_parameters()}
    assert torch.equal(functional_call(net, params, (x,)), torch.zeros(5, 3))
    with_output(net, "features")  # re-selecting replaces the choice
    assert net(x).shape == (5, 48)


def test_lstm_tuple_and_namedtuple_models():
    x = torch.rand(4, 1, 8, 8)
    lstm = RowLSTM(n_classes=10)
    assert with_output(lstm, 0)(x).shape == (4, 10)
    assert with_output(NamedTupleNet(), "logits")(x).shape == (4, 10)


def test_wrapper_fallback_selects_too():
    net = OutputSelector(DictNet(n_classes=2), "logits")
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 2)
    assert selected_output(net) == "logits" and original_class(net) is DictNet


def test_parse_model_args():
    assert parse_model_args(["hidden=[64, 32]", "act=relu", "p=0.5", "name='x=y'"]) == {
        "hidden": [64, 32], "act": "relu", "p": 0.5, "name": "x=y"}
    with pytest.raises(UsageError, match=r"--model-arg 'hidden' must look like key=value"):
        parse_model_args(["hidden"])
    with pytest.raises(UsageError, match="must look like key=value"):
        parse_model_args(["1x=3"])


def test_zoo_references():
    assert zoo_name("simple_cnn") == "simple_cnn"
    assert zoo_name("shenjing.models:mlp") == "mlp"
    assert zoo_name("inspect_models:ResBN") is None
    spec = user_model_spec("shenjing.models:simple_cnn", input_shape=(1, 8, 8), n_outputs=10)
    assert spec == {"name": "simple_cnn", "input_shape": [1, 8, 8], "n_outputs": 10,
                    "kwargs": {}}
    assert isinstance(build_from_spec(spec).conv1, nn.Conv2d)


def test_factory_spec_with_output_and_seed_rebuilds_the_same_model():
    spec = user_model_spec("inspect_models:DictNet", {"n_classes": 3}, output="logits",
                           init_seed=7)
    a, b = build_from_spec(spec), build_from_spec(spec)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert a(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_file_factory_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text("from torch import nn\n"
                                   "def make(k=2):\n    return nn.Linear(3, k)\n")
    monkeypatch.chdir(tmp_path)
    spec = user_model_spec("m.py:make", {"k": 4})
    assert spec["factory"] == f"{tmp_path / 'm.py'}:make"
    assert build_from_spec(spec).out_features == 4
    assert not (tmp_path / "__pycache__").exists()  # no writes beside the user's code


def test_missing_factory_suggests_the_close_name():
    with pytest.raises(UsageError, match=r"'inspect_models' has no attribute 'ResBn' .*Did "
                       r"you mean 'ResBN'\?.*It defines: .*DictNet"):
        resolve_factory("inspect_models:ResBn")
    with pytest.raises(UsageError, match=r"cannot import module 'no_such_pkg.models' .*PYTHONPATH"):
        resolve_factory("no_such_pkg.models:Net")
    with pytest.raises(UsageError, match=r"model file .*nope\.py does not exist"):
        resolve_factory("nope.py:Net")
    with pytest.raises(UsageError, match="--model 'Net' is neither a zoo model nor a "
                                         "reference of the form 'pkg.module:Factory'"):
        resolve_factory("Net")
    with pytest.raises(UsageError, match="names a dict, not a class or function"):
        resolve_factory("inspect_models:MODELS")


def test_factory_that_raises_is_one_clear_paragraph():
    with pytest.raises(UsageError, match=r"model factory 'inspect_models:broken_factory' "
                       r"raised ValueError: cannot build with n_classes=3: width must be even "
                       r"\(at inspect_models\.py:\d+\) when called with n_classes=3\. Fix the "
                       r"factory or the --model-arg values"):
        nn_from_factory("inspect_models:broken_factory", {"n_classes": 3})
    with pytest.raises(UsageError, match=r"raised TypeError: .*unexpected keyword.*when "
                       r"called with widht=3"):
        nn_from_factory("inspect_models:ResBN", {"widht": 3})
    with pytest.raises(UsageError, match="returned str, not a torch.nn.Module"):
        nn_from_factory("inspect_models:not_a_module", {})


def test_model_file_that_fails_on_import(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(UsageError, match=r"model file .*bad\.py failed while being imported: "
                       r"RuntimeError: no GPU here \(at bad\.py:2\)"):
        resolve_factory(f"{tmp_path / 'bad.py'}:Net")


def test_seeded_build_does_not_move_the_global_rng():
    spec = user_model_spec("inspect_models:Shared", init_seed=3)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    build_from_spec(spec)
    assert torch.equal(torch.rand(3), expected)
