"""The demo's comparison study: the mlp study's run (Adam) against the same MLP with SGD +
momentum, one page linked from the index, reused when done."""

from __future__ import annotations

from shenjing.demo import COMPARISON, SGD_RUN, DemoTask, _comparison_study, _plan
from shenjing.runs import Run


def test_the_comparison_study_reuses_the_mlp_run_and_is_reused(tmp_path):
    from shenjing.training import train

    plan = _plan("digits", fast=True)
    train("mlp", "digits", epochs=2, run=tmp_path / "mlp", progress=False)
    task = DemoTask(COMPARISON, tmp_path, "digits", None, plan, False, "cpu")
    first = _comparison_study(task, timings := {})
    assert first.report == tmp_path / COMPARISON / "report.html" and first.report.is_file()
    assert first.entry["href"] == f"{COMPARISON}/report.html"
    assert first.entry["number"].startswith("λ_max mlp ")
    assert COMPARISON in timings
    sgd = Run(tmp_path / SGD_RUN)
    assert sgd.manifest["config"]["optimizer"] == "sgd"
    assert sgd.manifest["config"]["momentum"] == 0.9
    assert sgd.epochs == [0, 1, 2]
    again = _comparison_study(task, timings := {})
    assert timings == {} and again.entry == first.entry
