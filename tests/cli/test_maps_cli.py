"""``shenjing maps / filters / weights / dynamics`` in-process: exit codes and output lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shenjing import _io
from shenjing.cli.app import main
from shenjing.models import build_model
from shenjing.runs import Run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cnn"
    run = Run.create(path, model={"name": "simple_cnn", "input_shape": [1, 8, 8],
                                  "n_outputs": 10, "kwargs": {}},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    for epoch in (0, 1):
        model = build_model("simple_cnn", (1, 8, 8))
        run.save_checkpoint(epoch, model)
        _io.append_jsonl(run.metrics_path, {
            "epoch": epoch, "test_loss": 2.3 - epoch, "test_accuracy": 0.1 + 0.8 * epoch,
            "train_loss": None if epoch == 0 else 1.0, "train_accuracy": None, "lr": 1e-3,
            "steps": 3 * epoch,
            "layers": {"conv1": {"weight_norm": 1.0, "update_ratio": None if epoch == 0 else
                                 0.5, "grad_norm": None if epoch == 0 else 1e-9},
                       "fc1": {"weight_norm": 1.0, "update_ratio": None if epoch == 0 else 0.2,
                               "grad_norm": None if epoch == 0 else 0.4},
                       "fc2": {"weight_norm": 1.0, "update_ratio": None if epoch == 0 else 0.2,
                               "grad_norm": None if epoch == 0 else 0.3}},
            "dead_units": {"relu3": 0.9 * epoch}})
    return path


def call(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_maps_command_writes_figure_and_prints_change(run_dir, capsys):
    code, out, err = call(["maps", str(run_dir), "--layer", "conv1", "--index", "2",
                           "--epochs", "0,1", "--top-k", "8", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "conv1: spatial (channel × height × width) of input #2" in out
    assert "'off' channels not counted" in out  # a conv output, before its ReLU
    assert "mean |Δ activation| epoch 0→1:" in out
    assert (run_dir / "figures" / "maps-conv1-test2-e000-e001.png").is_file()
    assert (run_dir / "maps" / "maps-conv1-test2-e000-e001.json").is_file()


def test_maps_command_several_inputs_by_class(run_dir, capsys):
    code, out, err = call(["maps", str(run_dir), "--layer", "relu3", "--class", "3,7",
                           "--epochs", "1"], capsys)
    assert code == 0, err
    assert out.count("relu3: vector (unit) of input #") == 2
    assert "(label 3)" in out and "(label 7)" in out
    code, _, err = call(["maps", str(run_dir), "--layer", "conv1", "--index", "a,b"], capsys)
    assert code == 2 and "--index 'a,b' must be positions in the split" in err


def test_maps_command_errors_are_one_red_line(run_dir, capsys):
    code, _, err = call(["maps", str(run_dir), "--layer", "fc1", "--view", "grid"], capsys)
    assert code == 2 and "ShapeMismatchError: layer 'fc1' outputs a vector" in err
    assert "--view vector" in err
    code, _, err = call(["maps", str(run_dir), "--layer", "conv1", "--index", "9999"], capsys)
    assert code == 2 and "input index 9999 is out of range" in err
    code, _, err = call(["maps", str(run_dir), "--layer", "conv1", "--epochs", "0,4"], capsys)
    assert code == 2 and "EpochNotFoundError" in err and "epochs there are: 0, 1" in err
    code, _, err = call(["maps", str(run_dir), "--layer", "cnv1"], capsys)
    assert code == 2 and "LayerNotFoundError: no layer 'cnv1'" in err
    code, _, err = call(["maps", str(run_dir / "nope"), "--layer", "conv1"], capsys)
    assert code == 1 and "RunError: no run directory" in err


def test_filters_weights_dynamics_commands(run_dir, capsys):
    code, out, err = call(["filters", str(run_dir), "--epochs", "final", "--max-filters", "8"],
                          capsys)
    assert code == 0, err
    assert "conv1 (32×1×3×3): filters at epochs 1" in out
    assert (run_dir / "figures" / "filters-conv1-e001.png").is_file()
    code, out, err = call(["weights", str(run_dir), "--layers", "conv1,fc2"], capsys)
    assert code == 0, err
    assert "weights of 2 layers at epochs 0, 1" in out
    code, out, err = call(["dynamics", str(run_dir), "--no-weights"], capsys)
    assert code == 0, err
    assert "WARNING conv1: gradient norm 1e-09 at epoch 1" in out
    assert "WARNING relu3: 90% of units are dead" in out
    assert (run_dir / "figures" / "dynamics-status.png").is_file()


# ---- users' models: keys, sequences, Conv1d filters, skipped filters (issue 12) ------------
USER_MODELS = Path(__file__).resolve().parents[1] / "user_models.py"


def user_run(path: Path, factory: str) -> Path:
    torch.manual_seed(0)
    run = Run.create(path, model={"factory": f"{USER_MODELS}:{factory}"},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    model = run.build_model()
    run.save_checkpoint(0, model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    run.save_checkpoint(1, model)
    return path


def test_maps_accepts_an_output_key_and_draws_a_sequence(tmp_path, capsys):
    run = user_run(tmp_path / "lstm", "RowLSTM")
    code, out, err = call(["maps", str(run), "--layer", "lstm.0", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "lstm.0: sequence (time step × hidden unit) of input #0" in out
    assert "most changed hidden units:" in out and "most changed time steps:" in out
    assert (run / "figures" / "maps-lstm.0-test0-e000-e001.png").is_file()
    record = _io.read_json(run / "maps" / "maps-lstm.0-test0-e000-e001.json")
    assert record["view"] == "sequence" and record["dead_channels"] is None
    code, _, err = call(["maps", str(run), "--layer", "lstm.3", "--device", "cpu"], capsys)
    assert code == 2 and "LayerNotFoundError" in err and "lstm.0, lstm.1.0, lstm.1.1" in err


def test_maps_checks_every_input_before_writing(tmp_path, capsys):
    run = user_run(tmp_path / "lstm", "RowLSTM")
    code, _, err = call(["maps", str(run), "--layer", "lstm", "--index", "0,9999"], capsys)
    assert code == 2 and "input index 9999 is out of range" in err
    assert not (run / "maps").exists() or not any((run / "maps").iterdir())
    assert "maps" not in _io.read_json(run / "run.json")["stages"]
    code, _, err = call(["maps", str(run), "--layer", "lstm", "--top-k", "0"], capsys)
    assert code == 2 and "--top-k 0: expected a whole number from 1 to 4096" in err


def test_filters_of_a_conv1d_are_drawn_and_of_an_lstm_skipped(tmp_path, capsys):
    """Issue 12, item 3: Conv1d filters exited 1 while LSTM filters were skipped."""
    signal = user_run(tmp_path / "signal", "SignalNet")
    code, out, err = call(["filters", str(signal)], capsys)
    assert code == 0, err
    assert "features.0 (8×1×5): kernel signals at epochs 1" in out
    assert "relative weight change epoch 0→1:" in out
    assert (signal / "figures" / "filters-features.0-e001.png").is_file()
    assert _io.read_json(signal / "run.json")["stages"]["filters"]["status"] == "done"
    lstm = user_run(tmp_path / "lstm", "RowLSTM")
    code, _, err = call(["filters", str(lstm), "--layer", "lstm"], capsys)
    assert code == 2 and "NotApplicableError: filters: 'lstm'" in err
    stage = _io.read_json(lstm / "run.json")["stages"]["filters"]
    assert stage["status"] == "skipped" and "Conv1d/Conv2d kernels" in stage["reason"]


def test_maps_needs_consent_for_a_run_it_did_not_create_and_filters_runs_no_code(
        tmp_path, capsys, monkeypatch):
    run = user_run(tmp_path / "signal", "SignalNet")
    monkeypatch.setenv("SHENJING_TRUST_FILE", str(tmp_path / "someone-else.json"))
    code, _, err = call(["maps", str(run), "--layer", "features.0", "--device", "cpu"], capsys)
    assert code == 2 and "UntrustedCodeError" in err and "--trust-code" in err
    assert not (run / "maps").exists() or not any((run / "maps").iterdir())
    code, out, err = call(["filters", str(run)], capsys)   # checkpoints only: no consent
    assert code == 0, err
    code, out, err = call(["maps", str(run), "--layer", "features.0", "--device", "cpu",
                           "--trust-code"], capsys)
    assert code == 0, err
    assert "features.0: signal (channel × position) of input #0" in out
