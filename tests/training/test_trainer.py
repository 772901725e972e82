"""The trainer: what it records, determinism, exact resume after a real kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import shenjing as sj
from kill_at_signal import kill_at_signal
from shenjing.errors import RunError, UsageError
from shenjing.runs import Run
from shenjing.training import Recorder, evaluate, get_loss


def test_run_holds_checkpoints_metrics_and_manifest(tmp_path, digits):
    run = sj.train("mlp", digits, epochs=2, run=tmp_path / "r", progress=False)
    assert run.epochs == [0, 1, 2]
    assert (tmp_path / "r" / "checkpoints" / "epoch-000.safetensors").is_file()
    m = run.manifest
    assert m["format_version"] == 1 and m["model"]["name"] == "mlp"
    assert m["config"]["batch_size"] == 32 and m["stages"]["train"]["status"] == "done"
    records = run.metrics()
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[0]["train_loss"] is None and records[0]["layers"]["fc1"]["grad_norm"] is None
    fc1 = records[2]["layers"]["fc1"]
    assert set(fc1) == {"weight_norm", "update_ratio", "dist_from_init", "cos_to_init",
                        "grad_norm"}
    assert 0 <= records[2]["dead_units"]["relu1"] <= 1


def test_layer_statistics_match_checkpoints(tmp_path, digits):
    run = sj.train("mlp", digits, epochs=2, run=tmp_path / "r", progress=False)
    w0, w1, w2 = (run.state_dict(e)["fc1.weight"].double() for e in (0, 1, 2))
    rec = run.metrics()[2]["layers"]["fc1"]
    assert rec["weight_norm"] == pytest.approx(float(w2.norm()), rel=1e-9)
    assert rec["update_ratio"] == pytest.approx(float((w2 - w1).norm() / w1.norm()), rel=1e-9)
    assert rec["dist_from_init"] == pytest.approx(float((w2 - w0).norm() / w0.norm()), rel=1e-9)
    cos = float((w2 * w0).sum() / (w2.norm() * w0.norm()))
    assert rec["cos_to_init"] == pytest.approx(cos, rel=1e-9)


def test_recorded_test_metrics_match_an_independent_evaluation(tmp_path, small_digits):
    run = sj.train("simple_cnn", small_digits, epochs=1, run=tmp_path / "r", progress=False)
    model = run.model(1)
    with torch.no_grad():
        logits = model(small_digits.test.x)
    record = run.metrics()[1]
    assert record["test_accuracy"] == pytest.approx(
        int((logits.argmax(1) == small_digits.test.y).sum()) / len(small_digits.test), abs=1e-12)
    assert record["test_loss"] == pytest.approx(float(F.cross_entropy(logits, small_digits.test.y)),
                                                rel=1e-5)
    relu1 = model.relu1(model.conv1(small_digits.test.x))
    dead = float(((relu1 > 0).flatten(2).any(2).any(0) == 0).float().mean())
    assert record["dead_units"]["relu1"] == pytest.approx(dead)


def test_same_seed_gives_identical_metrics_file(tmp_path, small_digits):
    a = sj.train("dropout_cnn", small_digits, epochs=2, run=tmp_path / "a", progress=False)
    b = sj.train("dropout_cnn", small_digits, epochs=2, run=tmp_path / "b", progress=False)
    assert a.metrics_path.read_bytes() == b.metrics_path.read_bytes()
    c = sj.train("dropout_cnn", small_digits, epochs=2, run=tmp_path / "c", seed=1, progress=False)
    assert c.metrics_path.read_bytes() != a.metrics_path.read_bytes()


def test_existing_run_is_not_clobbered(tmp_path, small_digits):
    sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", progress=False)
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", progress=False)


def test_resume_with_other_settings_is_refused(tmp_path, small_digits):
    sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", progress=False)
    with pytest.raises(RunError, match="lr: run has 0.003, asked 0.1"):
        sj.train("mlp", small_digits, epochs=2, lr=0.1, run=tmp_path / "r", resume=True,
                 progress=False)


def test_bad_hyper_parameters(tmp_path, digits):
    with pytest.raises(UsageError, match=r"epochs -1: expected a whole number from 1 to "
                                         r"100000"):
        sj.train("mlp", digits, epochs=-1, run=tmp_path / "r", progress=False)
    # 0 is a value, not "the default": refused, never replaced by the seed's 10 epochs
    for bad, message in (({"epochs": 0}, r"epochs 0: expected a whole number from 1 to "),
                         ({"epochs": 10**23}, r"epochs 10{23}: expected a whole number from 1 "
                                              r"to 100000"),
                         ({"batch_size": 0}, r"batch_size 0: expected a whole number ≥ 1"),
                         ({"lr": 0.0}, r"lr 0.0: expected a finite number > 0"),
                         ({"lr": float("inf")}, r"lr inf: expected a finite number > 0")):
        with pytest.raises(UsageError, match=message):
            sj.train("mlp", digits, run=tmp_path / "r3", progress=False, **bad)
    assert not (tmp_path / "r3").exists()
    with pytest.raises(UsageError, match="loss 'mse' is for regression, but dataset 'digits'"):
        sj.train("mlp", digits, loss="mse", run=tmp_path / "r2", progress=False)


def test_interrupt_then_resume_equals_uninterrupted(tmp_path, small_digits):
    """In-process variant: stop mid-epoch 2 (KeyboardInterrupt), resume, compare bytes."""
    full = sj.train("dropout_cnn", small_digits, epochs=3, run=tmp_path / "full", progress=False)
    steps_per_epoch = -(-len(small_digits.train) // 32)
    with pytest.raises(KeyboardInterrupt):
        sj.train("dropout_cnn", small_digits, epochs=3, run=tmp_path / "cut", progress=False,
                 stop_after_steps=steps_per_epoch + 5)
    cut = Run(tmp_path / "cut")
    assert [r["epoch"] for r in cut.metrics()] == [0, 1]
    assert cut.stage("train")["status"] == "interrupted"
    sj.train("dropout_cnn", small_digits, epochs=3, run=tmp_path / "cut", resume=True,
             progress=False)
    assert cut.metrics_path.read_bytes() == full.metrics_path.read_bytes()
    assert torch.equal(cut.state_dict(3)["fc1.weight"], full.state_dict(3)["fc1.weight"])


TRAIN_ARGS = ("train", "--model", "dropout_cnn", "--data", "digits", "--epochs", "4",
              "--batch-size", "8")

# `shenjing train` that tells its parent, through a pipe, that epoch 3 has begun (its first
# batch is back-propagated, epochs 1 and 2 are on disk), then waits there to be killed
STOPS_IN_EPOCH_3 = r"""
import os, sys
from shenjing.cli import main
from shenjing.training.recorder import Recorder

fd = int(sys.argv[1])
record_batch = Recorder.after_backward

def after_backward(self, *args, **kwargs):
    record_batch(self, *args, **kwargs)
    if self.epoch == 2:  # the last epoch closed: this batch is epoch 3's
        os.write(fd, b"in epoch 3\n")
        sys.stdin.read()  # blocks until the parent kills this process

Recorder.after_backward = after_backward
main(sys.argv[2:])
"""


def _train_cmd(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "shenjing", *TRAIN_ARGS, "--run", str(run), *extra]


def _kill_in_epoch_3(run: Path, env: dict[str, str]) -> None:
    """Train ``run`` in a child and SIGKILL it once it says epoch 3 is under way."""

    message = kill_at_signal(
        lambda fd: [sys.executable, "-c", STOPS_IN_EPOCH_3, str(fd), *TRAIN_ARGS,
                    "--run", str(run)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert message == b"in epoch 3\n"


def test_kill_during_epoch_3_then_resume_matches(tmp_path):
    """A real SIGKILL of a training subprocess during epoch 3, then ``--resume``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref), check=True, env=env, capture_output=True, timeout=600)
    run = tmp_path / "killed"
    _kill_in_epoch_3(run, env)
    metrics = run / "metrics.jsonl"
    epochs_before = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
    assert epochs_before == [0, 1, 2]
    assert Run(run).epochs == [0, 1, 2]
    subprocess.run(_train_cmd(run, "--resume"), check=True, env=env, capture_output=True,
                   timeout=600)
    assert metrics.read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert not list(run.rglob(".*.tmp*")), "a temporary file was left behind"


def test_recorder_in_a_users_own_loop(tmp_path, digits):
    """A hand-written loop records the same kind of run in a few lines."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec = Recorder(tmp_path / "mine", model, data=digits, loss="cross_entropy")
    rec.start()
    for _epoch in range(2):
        for x, y in digits.train.loader(64, shuffle=True,
                                        generator=torch.Generator().manual_seed(0)):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            rec.after_backward(loss, output=out, target=y)
            opt.step()
        rec.end_epoch(optimizer=opt)
    run = Run(tmp_path / "mine")
    assert run.epochs == [0, 1, 2]
    last = run.metrics()[-1]
    ev = evaluate(model, digits.test, get_loss("cross_entropy"))
    assert last["test_accuracy"] == pytest.approx(ev.accuracy)
    assert last["test_accuracy"] > 0.8
    assert set(last["layers"]) == {"1", "1.bias", "3", "3.bias"}
    assert last["layers"]["1"]["grad_norm"] > 0
    assert last["dead_units"].keys() == {"2"}
