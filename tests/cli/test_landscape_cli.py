"""``shenjing landscape`` and ``shenjing hessian`` invoked in-process."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from shenjing.cli import app
from shenjing.cli.app import main

runner = CliRunner()



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from shenjing.training import train

    path = tmp_path_factory.mktemp("cli") / "mlp"
    train("mlp", "digits", epochs=2, run=path, progress=False, model_kwargs={"hidden": [16]})
    return path


def test_line_and_plane_commands(run_dir):
    res = runner.invoke(app, ["landscape", str(run_dir), "--line", "0:final", "--steps", "6",
                              "--quiet", "--no-figures"])
    assert res.exit_code == 0, res.output
    out = res.output.replace("\n", " ")
    assert "line: 8 points, 8 computed" in out  # 6 steps + α = 0 and 1 inserted
    assert "line-e000-e002.npz" in out
    res = runner.invoke(app, ["landscape", str(run_dir), "--plane", "--steps", "3",
                              "--range", "-0.5:0.5", "--samples", "50", "--quiet"])
    assert res.exit_code == 0, res.output
    out = res.output.replace("\n", " ")
    assert "plane: 3×3 points, 9 computed" in out and "landscape-plane-filter-s0-e002" in out


def test_bf16_plane_reports_its_error(run_dir):
    res = runner.invoke(app, ["landscape", str(run_dir), "--plane", "--steps", "3",
                              "--samples", "60", "--precision", "bf16", "--quiet",
                              "--no-figures"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "bf16: loss within" in out and "of exact evaluation at" in out
    assert "plane-filter-s0-e002-bf16.npz" in res.output.replace("\n", "")


def test_train_split_plane_is_its_own_file(run_dir):
    res = runner.invoke(app, ["landscape", str(run_dir), "--plane", "--steps", "3",
                              "--samples", "40", "--split", "train", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "plane-filter-s0-e002-train.npz" in res.output.replace("\n", "")
    from shenjing.analysis.landscape import load_landscape
    from shenjing.plot.landscape import caption

    ls = load_landscape(run_dir / "landscapes" / "plane-filter-s0-e002-train.npz")
    assert ls.meta["provenance"]["split"] == "train"
    assert "on 40 train samples" in caption(ls)


def test_trajectory_and_hessian_commands(run_dir):
    res = runner.invoke(app, ["landscape", str(run_dir), "--trajectory", "--steps", "3",
                              "--samples", "50", "--quiet", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert "trajectory: 3×3 points" in res.output
    res = runner.invoke(app, ["hessian", str(run_dir), "--top", "2", "--trace-samples", "4",
                              "--samples", "100", "--layers", "fc2", "--quiet"])
    assert res.exit_code == 0, res.output
    out = res.output.replace("\n", " ")
    assert "top 2 eigenvalues" in out and "95 % CI" in out and "fc2: λ_max" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--plane", "--range", "1:-1"], "UsageError: range '1:-1' has min ≥ max"),
    (["--plane", "--steps", "0"], "UsageError: steps must be at least 2 (got 0)"),
    (["--line", "0"], "UsageError: --line '0' must look like START:END"),
    (["--line", "0:final", "--plane"], "UsageError: choose exactly one of"),
    (["--plane", "--norm", "filters"], "UsageError: unknown normalization 'filters'"),
    (["--plane", "--engine", "fast"], "UsageError: unknown evaluation path 'fast'"),
    (["--line", "0:7"], "EpochNotFoundError: run 'mlp' has no checkpoint for epoch 7"),
    (["--plane", "--precision", "half"], "UsageError: precision must be one of exact, bf16"),
    (["--plane", "--split", "valid"], "UsageError: split must be 'test' or 'train'"),
    pytest.param(["--plane", "--precision", "tf32"],
                 "UsageError: precision 'tf32' needs a CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_bad_input_is_one_line_exit_2(run_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["landscape", str(run_dir), *args, "--quiet", "--no-figures", "--samples", "20"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(message), err
    assert "Traceback" not in err


def test_hessian_bad_top(run_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["hessian", str(run_dir), "--top", "0"])
    assert exc.value.code == 2
    assert "--top must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "error"), [
    (["--precision", "bf16", "--engine", "chain"], "UsageError: precision 'bf16'"),
    (["--precision", "bf16", "--dtype", "float64"], "UsageError: precision 'bf16'"),
    (["--engine", "linear", "--bn", "recompute"], "UsageError: bn='recompute' needs the loop"),
])
def test_refused_settings_leave_no_file_and_a_failed_stage(run_dir, capsys, args, error):
    from shenjing.runs import open_run

    folder = run_dir / "landscapes"
    before = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    with pytest.raises(SystemExit) as exc:
        main(["landscape", str(run_dir), "--plane", "--steps", "3", "--samples", "20",
              "--quiet", "--no-figures", *args])
    assert exc.value.code == 2
    after = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert after == before  # not even the directions file
    stage = open_run(run_dir).stage("landscape_plane")
    assert stage["status"] == "failed" and stage["error"].startswith(error)
