"""``shenjing train``/``runs``/``--version`` invoked in-process and as a console script."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from shenjing._version import __version__
from shenjing.cli import app

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
    assert proc.stderr.strip().startswith("UnknownNameError: unknown model 'nope'.")
    assert "Traceback" not in proc.stderr


def test_failure_exit_1_and_debug_shows_traceback(tmp_path):
    args = [sys.executable, "-m", "shenjing", "runs", str(tmp_path / "missing")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 1 and "RunError: no folder" in proc.stderr
    proc = subprocess.run([*args[:3], "--debug", *args[3:]], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_error_message_keeps_brackets_of_pip_lines(tmp_path):
    """Rich markup must not eat '[vision]' from the install hint."""
    proc = subprocess.run([sys.executable, "-m", "shenjing", "train", "--model", "vgg16",
                           "--run", str(tmp_path / "r")], capture_output=True, text=True)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert proc.returncode == 1
        assert 'pip install "shenjing[vision]"' in proc.stderr
