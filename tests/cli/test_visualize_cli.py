"""``shenjing visualize`` in-process: printed numbers, files, one-line refusals that write
nothing, and the ``--channels`` parser."""

from __future__ import annotations

import pytest
import torch

from cli_invoke import invoke
from shenjing._checks import unit_list
from shenjing.errors import UsageError
from shenjing.models import build_model
from shenjing.plot.save import figure_formats
from shenjing.runs import Run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = Run.create(tmp_path_factory.mktemp("vis-cli") / "run",
                     model={"name": "simple_cnn", "input_shape": [1, 8, 8], "n_outputs": 10,
                            "kwargs": {}},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    run.save_checkpoint(0, build_model("simple_cnn", (1, 8, 8), 10))
    return run


def written(run):
    folder = run.path / "visualize"
    return (sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []) + \
        sorted(p.name for p in run.figures_dir.glob("visualize-*"))


@pytest.mark.parametrize(("args", "starts"), [
    (["--layer", "conv9"], "LayerNotFoundError: "),
    (["--layer", "conv2", "--channels", "60:70"], "UsageError: --channels 64 is out of range"),
    (["--layer", "conv2", "--channels", "0:999"], "UsageError: --channels: 999 units asked, "
                                                  "at most 64"),
    (["--layer", "conv2", "--channels", "a:b"], "UsageError: --channels 'a:b' is not a list"),
    (["--layer", "conv2", "--channels", "4:2"], "UsageError: --channels '4:2': the range is "
                                                "empty"),
    (["--layer", "conv2", "--steps", "0"], "UsageError: --steps"),
    (["--layer", "conv2", "--epochs", "7"], "EpochNotFoundError: "),
])
def test_bad_options_are_one_line_and_write_nothing(run, capsys, args, starts):
    code, out, err = invoke(capsys, "visualize", str(run.path), *args, "--device", "cpu")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(starts), err
    assert written(run) == []
    assert not run.stage("visualize")  # nothing recorded either


def test_unknown_layer_lists_the_layers(run, capsys):
    code, _, err = invoke(capsys, "visualize", str(run.path), "--layer", "conv9")
    assert code == 2 and "conv2" in err


def test_visualize_prints_the_numbers_and_files(run, capsys):
    with figure_formats("png"):
        code, out, err = invoke(capsys, "visualize", str(run.path), "--layer", "output",
                                "--channels", "0,3", "--steps", "8", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("epoch 0: feature visualization of output: 2 unit(s), 8 steps")
    assert lines[1].startswith("  unit 0: reached ") and "best real" in lines[1]
    assert lines[2].startswith("  unit 3: reached ")
    assert lines[-1].endswith("visualize/summary.json")
    assert any(line.endswith("figures/visualize-output-e000.png") for line in lines)
    assert run.stage("visualize")["status"] == "done"


def test_unit_list():
    assert unit_list("--channels", "0:3,7, 2") == [0, 1, 2, 7]
    assert unit_list("--channels", "5") == [5]
    for bad in ("", ",", "-1", "1:2:3", "x"):
        with pytest.raises(UsageError, match="--channels"):
            unit_list("--channels", bad)
