"""The run directory format: manifest checks, epochs, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shenjing import _io
from shenjing.errors import EpochNotFoundError, RunError
from shenjing.runs import FORMAT_VERSION, Run, find_runs


def make_run(tmp_path, name="r"):
    return Run.create(tmp_path / name, model={"name": "mlp", "input_shape": [1, 8, 8],
                                              "n_outputs": 10, "kwargs": {}},
                      data={"name": "digits", "seed": 0})


def test_missing_directory(tmp_path):
    with pytest.raises(RunError, match="no run directory at .*nope; create one with "
                                       "`shenjing train --run"):
        Run(tmp_path / "nope")


def test_foreign_directory(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(RunError, match=r"is not a shenjing run \(no run.json\)"):
        Run(tmp_path / "x")
    (tmp_path / "x" / "run.json").write_text('{"hello": 1}')
    with pytest.raises(RunError, match="not a shenjing manifest"):
        Run(tmp_path / "x")


def test_newer_format_is_refused(tmp_path):
    run = make_run(tmp_path)
    run.update_manifest(format_version=FORMAT_VERSION + 1)
    with pytest.raises(RunError, match=f"run format {FORMAT_VERSION + 1}.*upgrade shenjing"):
        Run(run.path)


def test_create_refuses_non_run_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(RunError, match="exists and is not a shenjing run"):
        Run.create(tmp_path / "docs", model={}, data={})


def test_epochs_and_missing_epoch_lists_what_exists(tmp_path):
    import torch

    run = make_run(tmp_path)
    model = torch.nn.Linear(2, 2)
    for e in (0, 1, 5):
        run.save_checkpoint(e, model)
    assert run.epochs == [0, 1, 5] and run.final_epoch == 5
    assert run.resolve_epoch("final") == 5 and run.resolve_epoch("init") == 0
    with pytest.raises(EpochNotFoundError, match="no checkpoint for epoch 3; epochs there are: "
                                                 "0, 1, 5"):
        run.resolve_epoch(3)


def test_stage_status_round_trip(tmp_path):
    run = make_run(tmp_path)
    run.update_stage("embed", "done", n=3)
    assert Run(run.path).stage("embed")["n"] == 3


def test_atomic_writes_leave_no_half_file(tmp_path):
    target = tmp_path / "a.json"
    _io.write_json(target, {"v": 1})
    with pytest.raises(ZeroDivisionError), _io.atomic_open(target) as fh:
        fh.write(b'{"v": 2')
        raise ZeroDivisionError
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_npz_and_jsonl_helpers(tmp_path):
    _io.save_npz(tmp_path / "a.npz", x=np.arange(3), meta={"k": "v"})
    with np.load(tmp_path / "a.npz") as f:
        assert f["x"].tolist() == [0, 1, 2] and json.loads(str(f["meta"])) == {"k": "v"}
    _io.append_jsonl(tmp_path / "m.jsonl", {"epoch": 0})
    _io.append_jsonl(tmp_path / "m.jsonl", {"epoch": 1})
    assert _io.read_jsonl(tmp_path / "m.jsonl") == [{"epoch": 0}, {"epoch": 1}]


def test_find_runs_skips_foreign_folders(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b")
    (tmp_path / "c").mkdir()
    assert [r.path.name for r in find_runs(tmp_path)] == ["a", "b"]


def test_running_stage_marks_failure_and_a_later_success_clears_it(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(ValueError), run.running_stage("study", epoch=3):
        assert Run(run.path).stage("study")["status"] == "running"
        raise ValueError("bad thing")
    stage = Run(run.path).stage("study")
    assert stage["status"] == "failed" and stage["error"] == "ValueError: bad thing"
    assert stage["epoch"] == 3
    with run.running_stage("study", epoch=4):
        run.update_stage("study", "done", result=1)
    stage = Run(run.path).stage("study")
    assert stage["status"] == "done" and "error" not in stage and stage["result"] == 1
