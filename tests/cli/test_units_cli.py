"""``shenjing units`` in-process: printed lines, exit codes, refusals that write nothing."""

from __future__ import annotations

import pytest

from cli_invoke import invoke


@pytest.fixture
def run(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    from test_units_stage import make_cnn_run

    return make_cnn_run(tmp_path / "cnn")


def test_units_prints_the_numbers_and_writes_figures(run, capsys):
    code, out, err = invoke(capsys, "units", str(run.path), "--layer", "conv1", "--top", "3",
                            "--channels", "0:4", "--n", "40", "--device", "cpu")
    assert code == 0, err
    assert "conv1: 32 units, maps (8, 8); top 3 of 40 test inputs" in out
    assert "epoch 0: conv1: 4 units × top 3 of 40 inputs by mean" in out
    assert "receptive field 3×3 px, stride 1×1, offset -1×-1" in out
    assert (run.figures_dir / "units-conv1-e001.png").is_file()


@pytest.mark.parametrize(("args", "match"), [
    (["--layer", "conv9"], "conv9"),
    (["--layer", "conv1", "--top", "0"], "--top 0"),
    (["--layer", "conv1", "--channels", "0:99"], "--channels"),
    (["--layer", "conv1", "--n", "0"], "--n 0"),
    (["--layer", "conv1", "--reduce", "sum"], "--reduce"),
])
def test_bad_options_are_one_line_and_write_nothing(run, capsys, args, match):
    before = (run.path / "run.json").read_bytes()
    code, out, err = invoke(capsys, "units", str(run.path), *args, "--device", "cpu")
    assert code == 2, out + err
    assert match in err and len(err.strip().splitlines()) == 1
    assert (run.path / "run.json").read_bytes() == before
    assert not (run.path / "units").exists()
