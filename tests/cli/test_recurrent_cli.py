"""``shenjing recurrent`` in-process: one stage call, the numbers printed; bad input is one
line, exit 2, and writes nothing; a model without recurrence says what it has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_invoke import invoke
from shenjing import _io
from shenjing.models import build_model
from shenjing.runs import Run

USER_MODELS = Path(__file__).resolve().parents[1] / "user_models.py"


@pytest.fixture()
def lstm_run(tmp_path: Path) -> Path:
    """The users' RowLSTM (8 steps of 8 pixels, hidden 24), epochs 0 and 1 hand-made."""
    torch.manual_seed(0)
    run = Run.create(tmp_path / "lstm", model={"factory": f"{USER_MODELS}:RowLSTM"},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    model = run.build_model()
    run.save_checkpoint(0, model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # a "trained" epoch with larger weights: gates saturate more
    run.save_checkpoint(1, model)
    return run.path


def nothing_written(run: Path) -> bool:
    stages = _io.read_json(run / "run.json").get("stages", {})
    figures = list((run / "figures").glob("recurrent-*")) if (run / "figures").exists() else []
    return "recurrent" not in stages and not (run / "recurrent").exists() and not figures


def test_recurrent_prints_the_probe_the_saturation_and_the_check(lstm_run, capsys):
    from shenjing.plot.save import figure_formats

    with figure_formats("png"):  # the SVGs would double the test's time
        code, out, err = invoke(capsys, "recurrent", str(lstm_run), "--layer", "lstm",
                                "--epochs", "0,final", "--n", "60", "--device", "cpu")
    assert code == 0, err
    assert "recurrent layer lstm (LSTM, 1 layer(s), hidden 24, 8 steps); linear probe on " \
           "h_t: 60 train → 60 test samples" in out
    assert "probe accuracy of h_t (top layer) at step 1 / 4 / 8:" in out
    assert "  epoch 0: " in out and "  epoch 1: " in out
    assert "of its last-step accuracy from step" in out
    assert "gate saturation (share of gate values < 0.1 | > 0.9, 60 test samples" in out
    assert "epoch 1: input" in out and "forget" in out
    assert "recomputation check: max |recomputed − module output|" in out and "passed" in out
    assert (lstm_run / "figures" / "recurrent-lstm-probe.png").is_file()
    assert (lstm_run / "recurrent" / "recurrent-lstm.npz").is_file()
    stage = _io.read_json(lstm_run / "run.json")["stages"]["recurrent"]
    assert stage["status"] == "done" and stage["epochs"] == [0, 1]


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "fc"], "UsageError: layer 'fc' is a Linear, not an nn.LSTM, nn.GRU or nn.RNN;"
                        " its recurrent layers: 'lstm', e.g. --layer lstm"),
    (["--layer", "lstn"], "LayerNotFoundError: no layer 'lstn' in RowLSTM. Did you mean "
                          "'lstm'?"),
    (["--epochs", "0,7"], "EpochNotFoundError: run 'lstm' has no checkpoint for epoch 7; "
                          "epochs there are: 0, 1"),
    (["--epochs", "first"], "epoch 'first' is not a number, 'init' or 'final'"),
    (["--epochs", ","], "--epochs ',' names no epoch"),
    (["--saturation-epochs", "5"], "no checkpoint for epoch 5"),
    (["--n", "5"], "--n 5: expected a whole number from 20 to 100000 (a probe per step needs "
                   "a few samples of each class), e.g. --n 1000"),
    (["--n", "200000"], "--n 200000: expected a whole number from 20 to 100000"),
    (["--n", "many"], "--n 'many': expected a whole number"),
    (["--n-train", "3"], "--n-train 3: expected a whole number from 20 to 100000"),
    (["--per-class", "0"], "--per-class 0: expected a whole number from 1 to 50"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(lstm_run, capsys, args, message):
    code, out, err = invoke(capsys, "recurrent", str(lstm_run), "--device", "cpu", *args) \
        if "--device" not in args else invoke(capsys, "recurrent", str(lstm_run), *args)
    assert code == 2, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert nothing_written(lstm_run)


def test_a_model_without_recurrence_says_what_it_has(tmp_path, capsys):
    run = Run.create(tmp_path / "cnn", model={"name": "simple_cnn", "input_shape": [1, 8, 8],
                                              "n_outputs": 10, "kwargs": {}},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    run.save_checkpoint(0, build_model("simple_cnn", (1, 8, 8)))
    code, _, err = invoke(capsys, "recurrent", str(run.path), "--device", "cpu")
    assert code == 2
    line = err.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("NotApplicableError: recurrent: SimpleCNN has no nn.LSTM, nn.GRU "
                           "or nn.RNN layer; its layers are conv1 (Conv2d)")
    stage = _io.read_json(run.path / "run.json")["stages"]["recurrent"]
    assert stage["status"] == "skipped" and "conv1 (Conv2d)" in stage["reason"]
    assert not (run.path / "recurrent").exists()
