"""The recorder behind every capture: calls counted per forward, one key rule, hooks removed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/capture: capture_models
from capture_models import DictOut, LSTMNet, Shared

from shenjing.capture.recorder import CallLog, ModuleCall, Recorder
from shenjing.hooks import count_hooks


def _shapes(call: ModuleCall) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    return [(path, tuple(t.shape)) for path, t in call.outputs]


def test_a_module_run_twice_gets_one_key_per_call_and_counts_restart_per_forward():
    model = Shared()
    calls: list[tuple[str, int]] = []
    log = CallLog(["block", "out"], _shapes)

    def sink(call: ModuleCall) -> None:
        calls.append((call.module, call.call))
        log.sink(call)

    recorder = Recorder(model, ["block", "out"], sink)
    with recorder.observing():
        model(torch.zeros(3, 4))
        assert [o.key for o in log.keyed()] == ["block#0", "block#1", "out"]
        recorder.new_forward()
        log.clear()
        model(torch.zeros(2, 4))
    assert calls == [("block", 0), ("block", 1), ("out", 0)] * 2
    assert [(o.key, o.call, o.value) for o in log.keyed()] == [
        ("block#0", 0, (2, 4)), ("block#1", 1, (2, 4)), ("out", 0, (2, 2))]
    assert count_hooks(model) == 0


def test_tuple_and_dict_outputs_are_keyed_by_their_path_and_integer_tensors_skipped():
    lstm, heads = LSTMNet(), DictOut()
    for model, name in ((lstm, "lstm"), (heads, "heads")):
        log = CallLog([name], _shapes)
        with Recorder(model, [name], log.sink).observing():
            model(torch.zeros(2, 5, 4) if model is lstm else torch.zeros(2, 4))
        keyed = {o.key: (o.path, o.value) for o in log.keyed()}
        if model is lstm:
            assert keyed == {"lstm.0": (("0",), (2, 5, 6)), "lstm.1.0": (("1", "0"), (2, 2, 6)),
                             "lstm.1.1": (("1", "1"), (2, 2, 6))}
        else:  # the argmax (int64) is not recorded
            assert keyed == {"heads.logits": (("logits",), (2, 3)),
                             "heads.aux": (("aux",), (2, 2))}


def test_keys_know_their_parts_and_a_selection_keeps_only_what_it_names():
    from shenjing.capture.keys import KeyFilter, split_key

    model = Shared()
    log = CallLog(["block"], _shapes)
    with Recorder(model, ["block"], log.sink).observing():
        model(torch.zeros(3, 4))
    (second,) = log.keyed({"block": [KeyFilter(call=1)]})
    assert second.key == "block#1" and split_key(second.key) == ("block", 1, ())


def test_extra_hooks_never_replace_an_observed_modules_hook():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    seen: list[str] = []
    log = CallLog(["0"], _shapes)
    also = {"0": lambda *_: seen.append("replaced"), "": lambda *_: seen.append("root")}
    with Recorder(model, ["0"], log.sink).observing(also=also):
        model(torch.zeros(1, 2))
    assert seen == ["root"] and log.n_calls("0") == 1


def test_hooks_are_removed_when_the_sink_or_the_block_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())

    def failing(_call: ModuleCall) -> None:
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"), \
            Recorder(model, ["0", "1"], failing).observing():
        model(torch.zeros(1, 2))
    assert count_hooks(model) == 0
    with pytest.raises(KeyError, match="stop"), \
            Recorder(model, ["0"], lambda _c: None).observing():
        raise KeyError("stop")
    assert count_hooks(model) == 0
