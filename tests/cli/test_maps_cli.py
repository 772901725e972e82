"""``shenjing maps / filters / weights / dynamics`` in-process: exit codes and output lines."""

from __future__ import annotations

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
    assert "conv1: grid of input #2" in out
    assert "mean |Δ activation| epoch 0→1:" in out
    assert (run_dir / "figures" / "maps-conv1-test2-e000-e001.png").is_file()
    assert (run_dir / "maps" / "maps-conv1-test2-e000-e001.json").is_file()


def test_maps_command_several_inputs_by_class(run_dir, capsys):
    code, out, err = call(["maps", str(run_dir), "--layer", "relu3", "--class", "3,7",
                           "--epochs", "1"], capsys)
    assert code == 0, err
    assert out.count("relu3: vector of input #") == 2
    assert "(label 3)" in out and "(label 7)" in out
    code, _, err = call(["maps", str(run_dir), "--layer", "conv1", "--index", "a,b"], capsys)
    assert code == 2 and "--index 'a,b' must be numbers" in err


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
