"""Every key the layer table lists is what ran, and is selectable wherever a layer is chosen.

Independent reference: outputs recorded with plain ``register_forward_hook`` calls written
here (no shenjing code), walked by hand, batch dimension moved first by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shenjing.capture import (
    LayerTable,
    capture,
    capture_dataset,
    list_layers,
    resolve_keys,
    resolve_layers,
    split_key,
)
from shenjing.errors import LayerNotFoundError, RunError
from shenjing.hooks import count_hooks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: user_models
import user_models as um

N = 5


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _walk(out, path=()):
    """{path: tensor} of the floating-point tensors inside an output, copied now."""
    if isinstance(out, torch.Tensor):
        return {path: out.detach().clone()} if out.is_floating_point() else {}
    found = {}
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (tuple, list)):
        items = enumerate(out)
    else:
        items = []
    for k, v in items:
        found.update(_walk(v, (*path, str(k))))
    return found


def hand_recorded(model: nn.Module, x: torch.Tensor) -> dict[str, list[dict]]:
    """module name → per call {path: output tensor}, from raw torch forward hooks."""
    seen = {name: [] for name, _ in model.named_modules() if name}
    handles = [mod.register_forward_hook(lambda m, a, o, name=name: seen[name].append(_walk(o)))
               for name, mod in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def expected(seen: dict[str, list[dict]], key: str, model: nn.Module) -> torch.Tensor:
    module, call, path = split_key(key, model)
    calls = seen[module]
    t = calls[call if call is not None else 0][path]
    if t.shape[0] != N:  # e.g. an LSTM's h_n (layers, batch, hidden)
        t = t.movedim(next(d for d in range(t.ndim) if t.shape[d] == N), 0)
    return t


@pytest.mark.parametrize("name", list(um.MODELS))
def test_every_listed_key_captures_what_a_hand_written_hook_sees(name, x):
    model = um.build(name)
    table = list_layers(model, x)
    seen = hand_recorded(model, x)
    keys = table.keys
    # the table lists exactly the per-sample outputs the modules returned, with call counts
    assert sum(len(v) for calls in seen.values() for v in calls) >= len(keys) > 0
    for row in table:
        assert row.calls == len(seen[row.name]), row.name
    acts = capture_dataset(model, x, keys, batch_size=2)  # 3 batches
    assert list(acts) == keys
    with capture(model, keys) as live, torch.no_grad():
        model(x)
    for key in keys:
        ref = expected(seen, key, model)
        assert tuple(table[split_key(key, model)[0]].output_shapes[key][1:]) == tuple(
            ref.shape[1:])
        torch.testing.assert_close(torch.from_numpy(acts[key].copy()), ref, rtol=1e-5,
                                   atol=1e-6, msg=f"capture_dataset {key}")
        torch.testing.assert_close(live[key], ref, rtol=1e-5, atol=1e-6,
                                   msg=f"capture {key}")
    assert count_hooks(model) == 0


@pytest.mark.parametrize(("name", "key"), [("lstm", "lstm.1.0"), ("lstm", "lstm.0"),
                                           ("shared", "block#1"), ("shared", "block.0#0"),
                                           ("vit", "encoder.layers.0.self_attn.0"),
                                           ("resnet", "layer2.relu#1")])
def test_one_key_records_only_that_tensor(name, key, x):
    model = um.build(name)
    seen = hand_recorded(model, x)
    acts = capture_dataset(model, x, [key])
    assert list(acts) == [key]
    assert acts.info[key]["layer"] == split_key(key, model)[0]
    torch.testing.assert_close(torch.from_numpy(acts[key].copy()), expected(seen, key, model),
                               rtol=1e-5, atol=1e-6)
    with capture(model, key) as live, torch.no_grad():
        model(x)
    assert list(live) == [key]


def test_lstm_table_is_batch_first_and_round_trips(x):
    model = um.build("lstm")
    table = list_layers(model, x[:2])
    assert table["lstm"].output_shapes == {"lstm.0": (2, 8, 24), "lstm.1.0": (2, 1, 24),
                                           "lstm.1.1": (2, 1, 24)}
    assert table.keys == ["lstm.0", "lstm.1.0", "lstm.1.1", "fc"]
    d = table.to_dict()
    assert d == {
        "format": 1, "model_name": "RowLSTM", "input_shape": [1, 8, 8],
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "rows": [{"name": "lstm", "type": "LSTM",
                  "output_shapes": {"lstm.0": [2, 8, 24], "lstm.1.0": [2, 1, 24],
                                    "lstm.1.1": [2, 1, 24]},
                  "n_params": 4 * 24 * (8 + 24 + 2), "is_leaf": True, "calls": 1},
                 {"name": "fc", "type": "Linear", "output_shapes": {"fc": [2, 10]},
                  "n_params": 250, "is_leaf": True, "calls": 1}]}
    back = LayerTable.from_dict(json.loads(json.dumps(d)))
    assert back == table and back.to_dict() == d
    assert str(back) == str(table) and back.rows() == table.rows()
    assert back.batch_size == 2 and back.input_shape == (1, 8, 8)


@pytest.mark.parametrize("name", list(um.MODELS))
def test_every_user_model_table_round_trips_through_json(name, x):
    model = um.build(name)
    table = list_layers(model, x[:2])
    back = LayerTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert back == table and back.rows() == table.rows()
    assert back.n_params == sum(p.numel() for p in model.parameters())


def test_a_newer_table_format_is_refused():
    with pytest.raises(RunError, match="layer table format 2 is not 1"):
        LayerTable.from_dict({"format": 2, "model_name": "M", "input_shape": [1],
                              "n_params": 0, "n_trainable": 0, "rows": []})


def test_table_says_what_ran_inside_attention_and_shared_blocks(x):
    vit = list_layers(um.build("vit"), x[:2])
    attn = vit["encoder.layers.0.self_attn"]
    assert attn.calls == 1
    assert attn.output_shapes == {"encoder.layers.0.self_attn.0": (2, 17, 16)}
    assert vit.note(attn) == ""  # a module with its own weights, not a bare container
    assert vit.note("encoder.layers.0.self_attn.out_proj") == (
        "used inside encoder.layers.0.self_attn (not called as a module)")
    assert vit.note("encoder.layers") == "container, not called itself (its modules ran)"
    assert not any("did not run" in note for *_, note in vit.rows())
    # the model summary (leaves and modules with weights) shows self_attn with its shape
    summary = {row[0]: row for row in vit.summary_rows()}
    assert summary["encoder.layers.0.self_attn"][2] == "encoder.layers.0.self_attn.0: 17×16"
    assert summary["encoder.layers.0.self_attn"][3] == 3 * 16 * 16 + 3 * 16
    assert "encoder.layers" not in summary
    shared = list_layers(um.build("shared"), x[:2])
    assert shared["block"].calls == 2 and shared["block"].output_shapes == {
        "block#0": (2, 32), "block#1": (2, 32)}
    assert shared.note("block") == "container, called 2× per forward"
    text = str(shared)
    assert "block#0: (2, 32); block#1: (2, 32)" in text and "called 2× per forward" in text


def test_a_module_that_really_did_not_run_says_so():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.aux = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)

    table = list_layers(Unused(), torch.zeros(2, 4))
    assert table["aux"].calls == 0 and table["aux"].output_shapes == {}
    assert table.note("aux") == "did not run"
    with pytest.raises(LayerNotFoundError, match=r"layer\(s\) 'aux' of Unused never ran"):
        resolve_keys(Unused(), torch.zeros(2, 4), ["aux"])


def test_split_key():
    lstm = um.build("lstm")
    assert split_key("lstm.1.0", lstm) == ("lstm", None, ("1", "0"))
    assert split_key("lstm", lstm) == ("lstm", None, ())
    assert split_key("fc", ["fc", "lstm"]) == ("fc", None, ())
    assert split_key("block#1") == ("block", 1, ())
    assert split_key("block#1.0") == ("block", 1, ("0",))
    assert split_key("block.0#1") == ("block.0", 1, ())
    assert split_key("lstm#1.1.0") == ("lstm", 1, ("1", "0"))
    vit = um.build("vit")
    assert split_key("encoder.layers.0.self_attn.0", vit) == (
        "encoder.layers.0.self_attn", None, ("0",))
    assert split_key("encoder.layers.0", vit) == ("encoder.layers.0", None, ())
    with pytest.raises(LayerNotFoundError, match="after '#' comes the call number"):
        split_key("block#x")


def test_resolve_keys_keeps_names_and_keys(x):
    lstm, shared = um.build("lstm"), um.build("shared")
    assert resolve_keys(lstm, x, ["lstm"]) == ["lstm"]
    assert resolve_keys(lstm, x, ["lstm.1.0", "fc"]) == ["lstm.1.0", "fc"]
    assert resolve_keys(lstm, x, ["lstm.1"]) == ["lstm.1.0", "lstm.1.1"]  # a partial key
    assert resolve_keys(lstm, x, ["fc", "lstm.0"]) == ["lstm.0", "fc"]  # model order
    assert resolve_keys(shared, x, ["block#1", "Linear"]) == ["inp", "block#1", "block.0",
                                                               "out"]
    assert resolve_keys(shared, x, ["block.1#0"]) == ["block.1#0"]
    # the keys split without the model: they remember their parts
    keys = resolve_keys(lstm, x, ["lstm.1.0", "lstm"])
    assert [split_key(k) for k in keys] == [("lstm", None, ())]  # the module covers the key
    (key,) = resolve_keys(lstm, x, ["lstm.1.0"])
    assert split_key(key) == ("lstm", None, ("1", "0")) and json.dumps(key) == '"lstm.1.0"'
    assert resolve_keys(lstm, None, ["lstm.1.0"]) == ["lstm.1.0"]  # no example: not checked
    assert resolve_layers(lstm, ["lstm.1.0"]) == ["lstm"]  # layer names: the key's module


@pytest.mark.parametrize(("name", "spec", "match"), [
    ("lstm", "lstm.3", r"no output 'lstm\.3' in RowLSTM: 'lstm' returned no tensor at that "
                       r"place\. Its keys: lstm\.0, lstm\.1\.0, lstm\.1\.1\. See `shenjing "
                       r"layers RUN`"),
    ("shared", "block#2", r"no output 'block#2' in SharedBlock: 'block' runs 2× per forward "
                          r"\(calls #0…#1\)\. Its keys: block#0, block#1"),
    ("shared", "inp#1", r"'inp' runs once per forward, so its keys have no '#'\. Its keys: inp"),
    ("shared", "blok#1", r"no layer 'blok#1' in SharedBlock\. Did you mean 'block#1'"),
    ("vit", "encoder.layers.0.self_attn.out_proj",
     r"'encoder\.layers\.0\.self_attn\.out_proj' is used inside "
     r"'encoder\.layers\.0\.self_attn' \(not called as a module\): capture "
     r"'encoder\.layers\.0\.self_attn' instead"),
])
def test_a_key_that_selects_nothing_is_one_clear_error(name, spec, match, x):
    model = um.build(name)
    for call in (lambda: resolve_keys(model, x, [spec]),
                 lambda: capture_dataset(model, x, [spec])):
        with pytest.raises(LayerNotFoundError, match=match):
            call()
        assert count_hooks(model) == 0


def test_notebook_capture_refuses_a_wrong_key_inside_forward_and_leaves_no_hook(x):
    model = um.build("shared")
    with pytest.raises(LayerNotFoundError, match="'block' runs 2× per forward"), \
            capture(model, ["block#5"]):
        model(x)
    assert count_hooks(model) == 0


def test_no_hook_is_left_when_forward_raises():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            self.lstm(x)
            raise RuntimeError("boom")

    model = Boom()
    x = torch.zeros(2, 5, 3)
    for call in (lambda: list_layers(model, x), lambda: resolve_keys(model, x, ["lstm.1.0"]),
                 lambda: capture_dataset(model, x, ["lstm.1.0"])):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert count_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"), capture(model, ["lstm.1.0"]):
        model(x)
    assert count_hooks(model) == 0
