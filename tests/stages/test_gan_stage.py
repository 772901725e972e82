"""The gan stage: files per epoch, the same numbers for the same seed, exact resumption
(also after a real SIGKILL), the classifier's accuracy recorded, the report's section, and
bad input refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kill_at_signal import kill_at_signal
from shenjing.errors import RunError, UsageError
from shenjing.runs import Run, read_metrics
from shenjing.stages.gan import gan

FAST = {"n_eval": 100, "report": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One 3-epoch GAN run on the digits, with its report."""
    # one torch thread, as every test has (a module fixture runs before the per-test one):
    # the runs compared with it sum in the same order
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("gan") / "run"
    gan(path, epochs=3, n_eval=100)
    return path


def _history_bytes(path: Path) -> bytes:
    return (path / "gan" / "history.jsonl").read_bytes()


def test_every_epoch_has_both_checkpoints_its_numbers_and_its_grid(trained):
    run = Run(trained)
    assert run.epochs == [0, 1, 2, 3]
    for e in range(4):
        assert (trained / "gan" / f"discriminator-epoch-{e:03d}.safetensors").is_file()
        grid = np.load(trained / "gan" / f"samples-e{e:03d}.npy")
        assert grid.shape == (64, 1, 8, 8) and grid.min() >= -1 and grid.max() <= 1
    assert sorted(p.name for p in (trained / "gan").glob("state-*.pt")) == [
        "state-002.pt", "state-003.pt"]
    records = read_metrics(trained / "gan" / "history.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert records[0]["loss_d"] is None  # the untrained generator: measured, not trained
    for r in records[1:]:
        assert r["n_steps"] == 22  # 1,347 training digits in batches of 64
        assert 0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1
        assert sum(r["class_counts"]) == 100
        assert r["n_covered"] == sum(c >= 0.02 * 100 for c in r["class_counts"])
        assert r["frechet"] > r["frechet_floor"] > 0


def test_the_summary_of_a_long_run_prints_evenly_spaced_epochs_first_and_last(trained):
    from shenjing.analysis.gan import GanHistory
    from shenjing.stages.gan import SUMMARY_EPOCHS_SHOWN, GanResult

    record = read_metrics(trained / "gan" / "history.jsonl")[-1]
    records = [{**record, "epoch": e, "frechet": 100.0 - e / 4} for e in range(201)]
    short = GanResult(Run(trained), GanHistory.from_records(records[:4]), 0.9, ())
    long = GanResult(Run(trained), GanHistory.from_records(records), 0.9, ())
    assert [ln.split(":")[0] for ln in short.summary().splitlines()
            if ln.startswith("epoch ")] == ["epoch 0", "epoch 1", "epoch 2", "epoch 3"]
    lines = long.summary().splitlines()
    shown = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(shown) == SUMMARY_EPOCHS_SHOWN == 11
    assert [ln.split(":")[0] for ln in shown] == [f"epoch {e}" for e in range(0, 201, 20)]
    assert "Fréchet 50.000" in shown[-1]  # epoch 200's own number, not another epoch's
    assert "11 of 201 epochs shown" in long.summary()


def test_the_classifier_is_a_shenjing_run_and_its_accuracy_is_recorded(trained):
    clf = Run(trained / "gan" / "classifier")
    accuracy = clf.metrics()[-1]["test_accuracy"]
    assert accuracy > 0.9
    summary = json.loads((trained / "gan" / "gan.json").read_text())
    assert summary["classifier"]["test_accuracy"] == accuracy
    stage = Run(trained).stage("gan")
    assert stage["status"] == "done" and stage["classifier_accuracy"] == accuracy
    assert stage["n_classes"] == 10


def test_the_report_has_the_gan_section_with_its_figures(trained):
    html = (trained / "report.html").read_text()
    assert "What a GAN&#39;s generator learned" in html or \
        "What a GAN's generator learned" in html
    assert "not FID" in html
    summary = json.loads((trained / "gan" / "gan.json").read_text())
    assert len(summary["figures"]) == 7
    for name in summary["figures"]:
        assert (trained / name).is_file()
    assert Run(trained).stage("report")["sections"] == ["overview", "model", "gan"]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not(trained, tmp_path):
    again = tmp_path / "again"
    gan(again, epochs=3, n_eval=100, report=False)
    assert _history_bytes(again) == _history_bytes(trained)
    assert (again / "checkpoints" / "epoch-003.safetensors").read_bytes() == \
        (trained / "checkpoints" / "epoch-003.safetensors").read_bytes()
    other = tmp_path / "other"
    gan(other, epochs=1, n_eval=100, report=False, seed=1)
    assert read_metrics(other / "gan" / "history.jsonl")[1]["loss_d"] != \
        read_metrics(trained / "gan" / "history.jsonl")[1]["loss_d"]


def test_a_stopped_run_resumes_to_the_same_numbers(trained, tmp_path):
    path = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        gan(path, epochs=3, stop_after_epochs=1, **FAST)
    assert [r["epoch"] for r in read_metrics(path / "gan" / "history.jsonl")] == [0, 1]
    assert Run(path).stage("gan")["status"] == "failed"
    with pytest.raises(RunError, match="--resume"):
        gan(path, epochs=3, **FAST)
    result = gan(path, epochs=3, resume=True, **FAST)
    assert result.resumed_from == 1
    assert _history_bytes(path) == _history_bytes(trained)
    assert Run(path).stage("gan")["status"] == "done"


def test_resume_extends_a_finished_run_and_refuses_other_settings(trained, tmp_path):
    path = tmp_path / "short"
    gan(path, epochs=2, **FAST)
    with pytest.raises(RunError, match="lr: run has 0.0002, asked 0.001"):
        gan(path, epochs=3, lr=1e-3, resume=True, **FAST)
    gan(path, epochs=3, resume=True, **FAST)
    assert _history_bytes(path) == _history_bytes(trained)


CHILD = r"""
import os, sys
import torch
torch.set_num_threads(1)  # as the tests' own process: the same sums, the same bits
import shenjing.stages.gan as stage
fd, run = int(sys.argv[1]), sys.argv[2]
real = stage._measure
def measure(run_, epoch, *args, **kwargs):
    out = real(run_, epoch, *args, **kwargs)
    if epoch == 2:
        os.write(fd, b"epoch 2 written\n")
        sys.stdin.read()  # blocks until the parent kills it
    return out
stage._measure = measure
stage.gan(run, epochs=3, n_eval=100, report=False)
"""


def test_a_killed_run_resumes_exactly(trained, tmp_path):
    path = tmp_path / "killed"
    message = kill_at_signal(lambda fd: [sys.executable, "-c", CHILD, str(fd), str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert message.startswith(b"epoch 2")
    assert Run(path).stage("gan")["status"] == "running"
    gan(path, epochs=3, resume=True, **FAST)
    assert _history_bytes(path) == _history_bytes(trained)
    assert (path / "checkpoints" / "epoch-003.safetensors").read_bytes() == \
        (trained / "checkpoints" / "epoch-003.safetensors").read_bytes()


def test_force_starts_over(tmp_path):
    path = tmp_path / "forced"
    gan(path, epochs=2, **FAST)
    gan(path, epochs=1, force=True, **FAST)
    assert Run(path).epochs == [0, 1]
    assert len(read_metrics(path / "gan" / "history.jsonl")) == 2


@pytest.mark.parametrize(("data", "match"), [
    ("curve", "regression data without class labels"),
    ("moons", "2-D points, not images"),
    ("digitz", "Did you mean 'digits'"),
])
def test_data_the_study_cannot_use_is_refused_before_anything_is_written(tmp_path, data,
                                                                         match):
    with pytest.raises(UsageError, match=match):
        gan(tmp_path / "bad", data=data, epochs=1, **FAST)
    assert not (tmp_path / "bad").exists()


def test_an_unlabelled_dataset_in_memory_is_refused(tmp_path):
    from shenjing.data import load_dataset

    curve = load_dataset("curve")
    with pytest.raises(UsageError, match="has no class labels"):
        gan(tmp_path / "bad", data=curve, epochs=1, **FAST)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("options", "match"), [
    ({"epochs": 0}, "--epochs 0: expected a whole number from 1"),
    ({"batch_size": 0}, "--batch-size 0"),
    ({"lr": -1.0}, "--lr -1.0"),
    ({"lr": float("nan")}, "--lr nan"),
    ({"seed": -1}, "--seed -1"),
    ({"n_eval": 1}, "--n-eval 1"),
    ({"data_dir": "/tmp"}, "--data-dir .* does not apply to --data 'digits'"),
    ({"resume": True, "force": True}, "contradict"),
    ({"device": "tpu"}, "tpu"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, match):
    kwargs = {"epochs": 1, **FAST, **options}
    with pytest.raises(UsageError, match=match):
        gan(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_demo_study_writes_and_then_reuses_its_study(tmp_path, monkeypatch):
    import shenjing.stages.gan as stage

    monkeypatch.setattr(stage, "DEMO_EPOCHS", {"digits": 1})
    entry = stage.demo_study(tmp_path)
    assert entry["href"] == "gan-digits/report.html"
    assert (tmp_path / entry["href"]).is_file()
    assert set(entry) == {"href", "name", "model", "data", "shows", "number"}
    assert "classes covered" in entry["number"] and "Fréchet" in entry["number"]
    before = (tmp_path / "gan-digits" / "run.json").read_bytes()
    assert stage.demo_study(tmp_path) == entry
    assert (tmp_path / "gan-digits" / "run.json").read_bytes() == before


def test_a_figure_that_fails_ends_the_stage_failed_with_the_error(tmp_path, monkeypatch):
    import shenjing.stages.gan as stage

    def broken(*_args, **_kwargs):
        raise RuntimeError("no disk for figures")

    monkeypatch.setattr(stage, "save_figure", broken)
    with pytest.raises(RuntimeError, match="no disk"):
        gan(tmp_path / "run", epochs=1, **FAST)
    record = Run(tmp_path / "run").stage("gan")
    assert record["status"] == "failed" and "no disk for figures" in record["error"]
