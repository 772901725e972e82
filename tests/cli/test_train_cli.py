"""``shenjing train``/``runs``/``--version`` invoked in-process and as a console script."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from shenjing._version import __version__
from shenjing.cli import app, main

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"shenjing {__version__}"


def test_train_then_runs_lists_it(tmp_path):
    result = runner.invoke(app, ["train", "--model", "mlp", "--epochs", "1", "--run",
                                 str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"run: {tmp_path / 'r'}" in result.output.replace("\n", "")
    listed = runner.invoke(app, ["runs", str(tmp_path)])
    assert listed.exit_code == 0 and "mlp" in listed.output and "digits" in listed.output


def test_usage_error_is_one_red_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "shenjing", "train", "--model", "nope",
                           "--run", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("UnknownNameError: --model 'nope': expected one of "
                                          "mlp, simple_cnn")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_failure_exit_1_and_debug_shows_traceback(tmp_path):
    args = [sys.executable, "-m", "shenjing", "runs", str(tmp_path / "missing")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 1 and "RunError: no folder" in proc.stderr
    proc = subprocess.run([*args[:3], "--debug", *args[3:]], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_vgg16_error_keeps_its_pip_line_whole(tmp_path):
    """Rich markup must not eat brackets or wrap the pip line of the vgg16 advice."""
    from shenjing.models import zoo

    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision works here")
    proc = subprocess.run([sys.executable, "-m", "shenjing", "train", "--model", "vgg16",
                           "--run", str(tmp_path / "r")], capture_output=True, text=True)
    pin, index = zoo.matching_torchvision(torch.__version__)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("MissingExtraError: model 'vgg16' needs torchvision")
    assert f"pip install torchvision=={pin}" + (f" --index-url {index}" if index else "") \
        in proc.stderr
    assert not (tmp_path / "r").exists()


# ---- every option checked before anything is written (issue 12, item 3) -----------------
def _main(argv, capsys):
    """Run the console entry point in-process: (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err.strip().splitlines()


BAD_OPTIONS = [
    (["--epochs", "0"], r"UsageError: --epochs 0: expected a whole number from 1 to 100000, "
                        r"e\.g\. --epochs 5$"),
    (["--epochs", "-2"], r"--epochs -2: expected a whole number from 1 to 100000"),
    (["--epochs", "9" * 23], r"--epochs 9{23}: expected a whole number from 1 to 100000"),
    (["--batch-size", "0"], r"--batch-size 0: expected a whole number ≥ 1, e\.g\. "
                            r"--batch-size 64$"),
    (["--lr", "0"], r"--lr 0\.0: expected a finite number > 0, e\.g\. --lr 0\.001$"),
    (["--lr", "-1"], r"--lr -1\.0: expected a finite number > 0"),
    (["--lr", "inf"], r"--lr inf: expected a finite number > 0"),
    (["--lr", "nan"], r"--lr nan: expected a finite number > 0"),
    (["--hidden", "0"], r"--hidden '0': '0' is not a whole number ≥ 1; give whole numbers "
                        r"separated by commas, e\.g\. --hidden 64,32$"),
    (["--hidden", "-3"], r"--hidden '-3': '-3' is not a whole number ≥ 1"),
    (["--hidden", "abc"], r"--hidden 'abc': 'abc' is not a whole number ≥ 1"),
    (["--hidden", "64,,32"], r"--hidden '64,,32': '' is not a whole number ≥ 1"),
    (["--model", "simple_cnn", "--hidden", "64"],
     r"--hidden sets the hidden widths of mlp and curve_mlp; 'simple_cnn' has fixed widths"),
    (["--model", "curve_mlp", "--data", "curve", "--hidden", "64,32"],
     r"--hidden '64,32': curve_mlp's hidden layers all have one width"),
    (["--optimizer", "bogus"], r"UnknownNameError: --optimizer 'bogus': expected one of "
                               r"adam, adamw, sgd\. E\.g\. --optimizer adam$"),
    (["--model", "bogus"], r"UnknownNameError: --model 'bogus': expected one of mlp, "),
    (["--data", "bogus"], r"UnknownNameError: --data 'bogus': expected one of digits, mnist, "
                          r"fashion-mnist, curve, moons, spirals, or your own data"),
    (["--data", "mnsit"], r"Did you mean 'mnist' or 'moons'\? E\.g\. --data digits$"),
    (["--normalize", "bogus"], r"UnknownNameError: --normalize 'bogus': expected one of "
                               r"standard, unit, none\. E\.g\. --normalize standard$"),
    (["--data", "moons", "--normalize", "unit"],
     r"normalize='unit' \(--normalize\) scales pixels; it applies to the image datasets"),
    (["--seed", "-1"], r"--seed -1: expected a whole number from 0 to 4294967295, e\.g\. "
                       r"--seed 0$"),
    (["--seed", str(2**40)], r"--seed 1099511627776: expected a whole number from 0 to"),
    (["--resume", "--force"], r"--resume and --force contradict each other"),
    (["--schedule", "cosin"], r"UnknownNameError: --schedule 'cosin': expected one of "
                              r"constant, cosine\. Did you mean 'cosine'\?"),
    (["--shift", "-1"], r"--shift -1: expected a whole number from 0 to 64, e\.g\. --shift 1$"),
    (["--data", "moons", "--shift", "1"],
     r"UsageError: shift=1 moves images, but dataset 'moons' has inputs of shape \(2,\)"),
    (["--data-dir", "idx", "--data", "digits"],
     r"--data-dir is where the IDX files of mnist and fashion-mnist are; it does not apply "
     r"to --data 'digits'"),
    (["--device", "bogus"], r"--device 'bogus': unknown device 'bogus'; use auto, cpu or "
                            r"cuda\[:N\]"),
    (["--data", "missing.npz"], r"UsageError: --data 'missing\.npz': no such file or folder, "
                                r"and not a built-in dataset"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS,
                         ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_train_options_exit_2_with_one_line_and_write_nothing(tmp_path, monkeypatch,
                                                                  capsys, args, message):
    monkeypatch.chdir(tmp_path)  # the default run folder (runs/…) would land here too
    code, lines = _main(["train", *args, "--run", "r"], capsys)
    assert code == 2, lines
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert "Traceback" not in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing else either


def test_click_level_type_errors_also_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, lines = _main(["train", "--epochs", "abc", "--run", "r"], capsys)
    text = "\n".join(lines)
    assert code == 2 and "--epochs" in text and "'abc'" in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


# ---- --normalize ------------------------------------------------------------------------
def test_normalize_is_recorded_and_the_run_reloads_the_same_pixels(tmp_path):
    from shenjing.runs import Run

    result = runner.invoke(app, ["train", "--model", "mlp", "--epochs", "1", "--normalize",
                                 "none", "--run", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    run = Run(tmp_path / "r")
    assert run.manifest["data"]["normalize"] == "none"
    assert float(run.data.train.x.max()) == 16.0  # digits' raw counts 0..16


def test_resume_keeps_the_recorded_scaling_and_refuses_another(tmp_path, capsys):
    from shenjing.runs import Run

    path = str(tmp_path / "r")
    assert runner.invoke(app, ["train", "--epochs", "1", "--normalize", "standard",
                               "--run", path]).exit_code == 0
    code, lines = _main(["train", "--epochs", "2", "--resume", "--normalize", "unit",
                         "--run", path], capsys)
    assert code == 2 and len(lines) == 1
    assert re.search(r"--normalize unit: cannot resume .*, which was trained with "
                     r"normalize='standard'; leave --normalize out", lines[0])
    result = runner.invoke(app, ["train", "--epochs", "2", "--resume", "--run", path])
    assert result.exit_code == 0, result.output
    run = Run(path)
    assert run.epochs == [0, 1, 2] and run.manifest["data"]["normalize"] == "standard"
    # the resumed epoch trained on standardised pixels: it continued the run's own data
    standard = runner.invoke(app, ["train", "--epochs", "2", "--normalize", "standard",
                                   "--run", str(tmp_path / "fresh")])
    assert standard.exit_code == 0
    assert run.metrics()[-1] == Run(tmp_path / "fresh").metrics()[-1]


# ---- the reusable checks (shenjing.cli._checks), which every command can call ------------
def test_checks_return_the_value_converted():
    from shenjing import _checks

    assert _checks.positive_int("--n", "12") == 12 and _checks.positive_int("--n", 1) == 1
    assert _checks.random_seed("--seed", 0) == 0
    assert _checks.random_seed("--seed", _checks.SEED_MAX) == 2**32 - 1
    assert _checks.finite_float("--lr", "1e-3", low=0, low_open=True) == 0.001
    assert _checks.probability("--p", 0) == 0.0 and _checks.probability("--p", "1") == 1.0
    assert _checks.int_list("--hidden", " 64, 32 ") == [64, 32]
    assert _checks.choice("--method", "pca", ["tsne", "pca"]) == "pca"


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.positive_int("--samples", 0, example=1000),
     r"^--samples 0: expected a whole number ≥ 1, e\.g\. --samples 1000$"),
    (lambda c: c.positive_int("--samples", True), r"^--samples True: expected a whole number"),
    (lambda c: c.positive_int("--samples", "1.5"), r"^--samples '1\.5': expected a whole"),
    (lambda c: c.bounded_int("--plane-steps", 1, low=2, high=201),
     r"^--plane-steps 1: expected a whole number from 2 to 201, e\.g\. --plane-steps 2$"),
    (lambda c: c.finite_float("--range", "wide", low=0),
     r"^--range 'wide': expected a finite number ≥ 0, e\.g\. --range 0\.01$"),
    (lambda c: c.finite_float("--scale", 5, low=0, high=1, high_open=True),
     r"^--scale 5: expected a finite number ≥ 0 and < 1, e\.g\. --scale 0\.5$"),
    (lambda c: c.finite_float("--x", float("-inf")), r"^--x -inf: expected a finite number,"),
    (lambda c: c.probability("--dropout", 1.5),
     r"^--dropout 1\.5: expected a finite number ≥ 0 and ≤ 1, e\.g\. --dropout 0\.5$"),
    (lambda c: c.probability("--dropout", "nan"), r"^--dropout nan: expected a finite number"),
    (lambda c: c.choice("--method", "tnse", ["tsne", "pca", "umap"]),
     r"^--method 'tnse': expected one of tsne, pca, umap\. Did you mean 'tsne'\? "
     r"E\.g\. --method tsne$"),
    (lambda c: c.int_list("--hidden", " , "), r"^--hidden ' , ': expected whole numbers "
                                               r"separated by commas, e\.g\. --hidden 64,32$"),
])
def test_checks_refuse_with_one_line_naming_the_option(call, message):
    from shenjing import _checks
    from shenjing.errors import UsageError

    with pytest.raises(UsageError, match=message) as info:
        call(_checks)
    assert "\n" not in str(info.value)
