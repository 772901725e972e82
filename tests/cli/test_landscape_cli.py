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
    (["--plane", "--range", "1:-1"], "UsageError: --range '1:-1' has min ≥ max"),
    (["--plane", "--steps", "0"], "UsageError: --steps 0: expected a whole number ≥ 2"),
    (["--line", "0"], "UsageError: --line '0' must look like START:END"),
    (["--line", "0:final", "--plane"], "UsageError: choose exactly one of"),
    (["--plane", "--norm", "filters"], "UnknownNameError: --norm 'filters': expected one of"),
    (["--plane", "--engine", "fast"],
     "UnknownNameError: --engine 'fast': expected one of loop, linear"),
    (["--line", "0:7"], "EpochNotFoundError: run 'mlp' has no checkpoint for epoch 7"),
    (["--plane", "--precision", "half"],
     "UnknownNameError: --precision 'half': expected one of exact, bf16"),
    (["--plane", "--split", "valid"],
     "UnknownNameError: --split 'valid': expected one of test, train"),
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


def _listing(folder):
    """Every file under the run folder with its bytes: what a refused command must not touch."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize(("args", "message"), [
    (["--plane", "--steps", "1"], "--steps 1: expected a whole number ≥ 2 (a plane needs 2 or more "
                                  "points per axis), e.g. --steps 21"),
    (["--line", "0:final", "--steps", "0"], "--steps 0: expected a whole number ≥ 2 (a line needs "
                                            "2 or more points), e.g. --steps 51"),
    (["--trajectory", "--steps", "-3"], "--steps -3: expected a whole number ≥ 2"),
    (["--plane", "--samples", "0"], "--samples 0: expected a whole number ≥ 1"),
    (["--line", "0:final", "--samples", "-5"], "--samples -5: expected a whole number ≥ 1"),
    (["--plane", "--seed", "-1"], "--seed -1: expected a whole number ≥ 0, e.g. --seed 0"),
    (["--plane", "--batch-size", "0"], "--batch-size 0: expected a whole number ≥ 1"),
    (["--plane", "--bn", "train"], "--bn 'train': expected one of eval, recompute"),
    (["--plane", "--dtype", "float16"], "--dtype 'float16': expected one of float32, float64"),
    (["--plane", "--device", "tpu9"], "unknown device 'tpu9'"),
    (["--plane", "--precision", "bf16", "--engine", "chain"], "precision 'bf16' runs the "
                                                              "model's own forward pass"),
    (["--plane", "--precision", "bf16", "--dtype", "float64"], "precision 'bf16' starts from "
                                                               "float32"),
    (["--plane", "--engine", "linear", "--bn", "recompute"], "bn='recompute' needs the loop"),
    (["--trajectory", "--range", "-1:1"], "--range does not apply to --trajectory"),
    (["--line", "0:99"], "EpochNotFoundError: run 'mlp' has no checkpoint for epoch 99"),
])
def test_bad_landscape_options_create_nothing(run_dir, capsys, args, message):
    before = _listing(run_dir)
    with pytest.raises(SystemExit) as exc:
        main(["landscape", str(run_dir), *args, "--quiet"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert _listing(run_dir) == before  # no file created, run.json untouched


@pytest.mark.parametrize(("args", "message"), [
    (["--plane", "--steps", "100000"],
     r"^ResourceError: a 100001×100001 plane \(10,000,200,001 points\) needs about "
     r"2\.33 TiB of memory \(256 bytes per point\) but only .* is allowed .*; reduce "
     r"--steps, e.g. --steps \d+$"),
    (["--trajectory", "--steps", "100000"], r"^ResourceError: a 100001×100001 trajectory plane"),
    (["--line", "0:final", "--steps", "1000000000000"],
     r"^ResourceError: a line of 1,000,000,000,000 points needs about 232\.83 TiB .*; "
     r"reduce --steps, e.g. --steps \d+$"),
])
def test_grids_too_big_for_memory_are_refused_exit_1_creating_nothing(run_dir, capsys, args,
                                                                      message):
    """Issue 13 item 7: `landscape --steps 100000` died allocating 74.5 GiB. The grid's bytes
    are estimated with the options, before the run is opened: one line, exit 1."""
    import re

    before = _listing(run_dir)
    with pytest.raises(SystemExit) as exc:
        main(["landscape", str(run_dir), *args, "--quiet"])
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(message, err), err
    assert _listing(run_dir) == before


def test_a_grid_that_fits_but_not_with_this_much_memory_is_refused_by_the_stage(
        run_dir, capsys, monkeypatch):
    """The estimate uses the memory available now: with 1 MiB allowed, a 100×100 plane
    (2.49 MiB) is refused, naming the steps that fit; with the default it runs."""
    import shenjing.capture.dataset as ds

    before = _listing(run_dir)
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 2**20)
    with pytest.raises(SystemExit) as exc:
        main(["landscape", str(run_dir), "--plane", "--steps", "100", "--quiet",
              "--samples", "20"])
    assert exc.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "needs about 2.49 MiB of memory" in err and "only 1.00 MiB is allowed" in err, err
    assert "e.g. --steps 63" in err, err
    assert _listing(run_dir) == before


@pytest.mark.parametrize(("args", "message"), [
    (["--top", "0"], "--top 0: expected a whole number ≥ 1 (the number of top eigenvalues), "
                     "e.g. --top 5"),
    (["--top", "-2"], "--top -2: expected a whole number ≥ 1"),
    (["--samples", "0"], "--samples 0: expected a whole number ≥ 1"),
    (["--trace-samples", "1"], "--trace-samples 1: expected a whole number ≥ 2 (a confidence "
                               "interval needs 2 or more probe vectors)"),
    (["--seed", "-4"], "--seed -4: expected a whole number ≥ 0"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'"),
    (["--layers", "fc9"], "LayerNotFoundError: no layer 'fc9' with parameters in MLP."),
    (["--epoch", "12"], "EpochNotFoundError: run 'mlp' has no checkpoint for epoch 12"),
])
def test_bad_hessian_options_create_nothing(run_dir, capsys, args, message):
    before = _listing(run_dir)
    with pytest.raises(SystemExit) as exc:
        main(["hessian", str(run_dir), *args, "--quiet"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err, err
    assert "Traceback" not in err
    assert _listing(run_dir) == before


def test_validators_name_the_callers_own_options():
    """The functions ``inspect`` calls before it creates a run, with its own flag names."""
    from shenjing.errors import UsageError
    from shenjing.stages.hessian import validate_hessian_options
    from shenjing.stages.landscape import (
        validate_line_options,
        validate_plane_options,
    )

    with pytest.raises(UsageError, match="^--plane-steps 1: expected a whole number ≥ 2 .*, e.g. "
                                         "--plane-steps 21$"):
        validate_plane_options(steps=1, names={"steps": "--plane-steps"})
    with pytest.raises(UsageError, match="^samples 0: expected a whole number ≥ 1 .*, e.g. "
                                         "samples 500$"):
        validate_plane_options(samples=0)
    with pytest.raises(UsageError, match="^--line-steps 1: expected a whole number ≥ 2"):
        validate_line_options(steps=1, names={"steps": "--line-steps"})
    with pytest.raises(UsageError, match="^steps 2.5: expected a whole number ≥ 2"):
        validate_line_options(steps=2.5)
    with pytest.raises(UsageError, match="^--hessian-top 0: expected a whole number ≥ 1"):
        validate_hessian_options(top_k=0, names={"top_k": "--hessian-top"})
    with pytest.raises(UsageError, match="^tol must be a number > 0, got 0"):
        validate_hessian_options(tol=0)
    # the defaults are valid
    validate_line_options()
    validate_plane_options()
    validate_hessian_options()


@pytest.mark.parametrize(("command", "says"), [
    ("landscape", "Resumes: the grid is saved as it is computed"),
    ("hessian", "Resumes: progress is saved every 2 s"),
])
def test_help_says_whether_the_command_resumes(capsys, command, says):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_invoke
    from cli_invoke import invoke

    code, out, _ = invoke(capsys, command, "--help")
    assert code == 0
    out = " ".join(out.replace("│", " ").split())
    assert says in out, out
