"""``shenjing compare RUN RUN --out DIR``: one stage call, its verdict lines, one-line refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_invoke
from cli_invoke import invoke

SMALL = ("--steps", "5", "--line-steps", "5", "--samples", "100", "--top", "1",
         "--trace-samples", "4", "--probe-train", "200", "--quiet")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    from shenjing.training import train

    root = tmp_path_factory.mktemp("compare-cli")
    train("mlp", "digits", epochs=1, run=root / "adam", progress=False)
    train("mlp", "digits", epochs=1, run=root / "sgd", optimizer="sgd", lr=0.05,
          progress=False)
    return root / "adam", root / "sgd"


def test_compare_writes_the_page_and_prints_the_verdicts(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "cmp"
    code, stdout, stderr = invoke(capsys, "compare", str(a), str(b), "--out", str(out), *SMALL)
    assert code == 0, stderr
    assert (out / "report.html").is_file() and (out / "compare.json").is_file()
    lines = stdout.splitlines()
    assert lines[0] == "compared adam, sgd at their final epochs"
    assert any(line.startswith("sharper minimum (top Hessian eigenvalue): ") for line in lines)
    assert any(line.startswith("wider minimum (area at or below loss(θ*) + 0.5): ")
               for line in lines)
    assert any(line.startswith("CKA adam vs sgd: fc1 ") for line in lines)
    assert any(line.startswith("computed: adam: plane 5×5") for line in lines)
    assert lines[-1] == f"wrote {out / 'report.html'}"


@pytest.mark.parametrize("args, expect", [
    (("{a}",), "compare needs two runs or more, got 1"),
    (("{a}", "{a}"), "given twice"),
    (("{a}", "{b}", "--delta", "nan"), "--delta"),
    (("{a}", "{b}", "--steps", "1"), "--steps"),
    (("{a}", "{b}", "--range", "1:-1"), "--range"),
    (("{a}", "{b}", "--epoch", "7"), "no checkpoint for epoch 7"),
])
def test_bad_input_is_one_line_and_writes_nothing(two_runs, tmp_path, capsys, args, expect):
    a, b = two_runs
    out = tmp_path / "cmp"
    argv = [x.format(a=a, b=b) for x in args]
    code, _, stderr = invoke(capsys, "compare", *argv, "--out", str(out), "--quiet")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expect in lines[0], stderr
    assert not out.exists()


def test_out_that_is_a_file_is_refused(two_runs, tmp_path, capsys):
    a, b = two_runs
    target = tmp_path / "report.html"
    target.write_text("mine")
    code, _, stderr = invoke(capsys, "compare", str(a), str(b), "--out", str(target))
    assert code == 2 and "that is a file" in stderr
    assert target.read_text() == "mine"
