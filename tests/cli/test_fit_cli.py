"""``shenjing fit`` and ``shenjing warp`` in-process: exit codes and printed lines."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from shenjing.cli import app
from shenjing.cli.app import main

runner = CliRunner()


def test_fit_prints_error_table(tmp_path):
    result = runner.invoke(app, ["fit", "--run", str(tmp_path / "f"), "--epochs", "1",
                                 "--passes", "3", "--hidden", "6", "--poly",
                                 "lagrange:20,chebyshev:10", "--no-gif"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "in = [-5, 5], out = the rest of [-7, 7]" in out.replace("\n", " ")
    for row in ("net", "Lagrange", "(degree 20)", "Chebyshev", "(degree 10)"):
        assert row in out
    assert "decomposition:" in out and "units active" in out
    assert "linear regions:" in out
    assert (tmp_path / "f" / "fit" / "summary.json").is_file()
    assert not (tmp_path / "f" / "fit" / "fit-epochs.gif").exists()


def test_warp_prints_probe_table(tmp_path):
    result = runner.invoke(app, ["warp", "--run", str(tmp_path / "w"), "--data", "moons",
                                 "--hidden", "4", "--epochs", "1", "--lines", "3"])
    assert result.exit_code == 0, result.output
    assert "linear separability per layer (epoch 1" in result.output
    for layer in ("input", "fc1", "relu1", "fc2"):
        assert layer in result.output


@pytest.mark.parametrize(("args", "code", "start"), [
    (["fit", "--function", "x.__class__"], 2, "UsageError: --function 'x.__class__' accesses"),
    (["fit", "--function", "sin(x"], 2, "UsageError: --function 'sin(x' is not a valid"),
    (["fit", "--range", "5:-5"], 2, "UsageError: --range '5:-5' has min ≥ max"),
    (["warp", "--data", "digits"], 2, "ShapeMismatchError: warp needs 2-D points"),
])
def test_bad_input_is_one_red_line(tmp_path, capsys, args, code, start):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--run", str(tmp_path / "bad")])
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.strip().replace("\n", " ").startswith(start)
    assert "Traceback" not in err
