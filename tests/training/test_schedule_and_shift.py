"""The learning-rate schedule and the random shift: their values against independent
computations, what the trainer records, and exact resumption with both on."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import shenjing as sj
from shenjing.errors import RunError, UnknownNameError, UsageError
from shenjing.models import train_defaults
from shenjing.runs import Run
from shenjing.training.augment import random_shift
from shenjing.training.schedule import WARMUP_FRACTION, lr_factor


def test_cosine_warms_up_linearly_then_follows_torchs_cosine_annealing():
    total = 200
    warmup = math.ceil(WARMUP_FRACTION * total)
    factors = [lr_factor("cosine", s, total) for s in range(total)]
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    # torch's own cosine annealing over the remaining steps, from the full rate to zero
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup - 1,
                                                       eta_min=0.0)
    expected = []
    for _ in range(total - warmup):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert factors[warmup:] == pytest.approx(expected, abs=1e-12)
    assert factors[-1] == pytest.approx(0.0, abs=1e-12) and max(factors) == 1.0
    assert all(lr_factor("constant", s, total) == 1.0 for s in range(total))


def test_each_shifted_image_is_the_input_moved_by_at_most_shift_pixels():
    x = torch.randn(64, 2, 9, 11)
    out = random_shift(x, 2, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    # an independent shift: numpy edge padding and a slice, for each of the 25 offsets
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    found = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(out[i].numpy(), padded[i, :, dy:dy + 9, dx:dx + 11])]
        assert hits, f"image {i} is not a shift of its input"
        found.append(hits[0])
    assert len(set(found)) > 10  # the offsets vary from image to image
    again = random_shift(x, 2, torch.Generator().manual_seed(3))
    assert torch.equal(again, out)  # the generator alone decides
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)


def test_trainer_records_the_scheduled_rate_and_the_settings(tmp_path, small_digits):
    run = sj.train("mlp", small_digits, epochs=2, run=tmp_path / "r", schedule="cosine",
                   shift=1, progress=False)
    config = run.manifest["config"]
    assert (config["schedule"], config["shift"]) == ("cosine", 1)
    steps = -(-len(small_digits.train) // config["batch_size"])
    lrs = [r["lr"] for r in run.metrics()]
    assert lrs[0] is None
    assert lrs[1] == pytest.approx(config["lr"] * lr_factor("cosine", steps - 1, 2 * steps))
    assert lrs[2] == pytest.approx(0.0, abs=1e-12)  # the last step ran at the end of the curve
    plain = sj.train("mlp", small_digits, epochs=2, run=tmp_path / "p", progress=False)
    assert [r["lr"] for r in plain.metrics()][1:] == [config["lr"]] * 2
    # the shift and the schedule change what is learned: not the same weights
    assert not torch.equal(run.state_dict(2)["fc1.weight"], plain.state_dict(2)["fc1.weight"])


def test_interrupted_cosine_shifted_run_resumes_byte_for_byte(tmp_path, small_digits):
    kwargs = {"epochs": 3, "schedule": "cosine", "shift": 1, "progress": False}
    full = sj.train("simple_cnn", small_digits, run=tmp_path / "full", **kwargs)
    steps_per_epoch = -(-len(small_digits.train) // 32)
    with pytest.raises(KeyboardInterrupt):
        sj.train("simple_cnn", small_digits, run=tmp_path / "cut",
                 stop_after_steps=steps_per_epoch + 3, **kwargs)
    sj.train("simple_cnn", small_digits, run=tmp_path / "cut", resume=True, **kwargs)
    cut = Run(tmp_path / "cut")
    assert cut.metrics_path.read_bytes() == full.metrics_path.read_bytes()
    assert torch.equal(cut.state_dict(3)["conv1.weight"], full.state_dict(3)["conv1.weight"])


def test_resuming_a_cosine_run_for_other_epochs_or_settings_is_refused(tmp_path,
                                                                     small_digits):
    sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", schedule="cosine",
             progress=False)
    with pytest.raises(RunError, match="epochs: run has 1, asked 2"):
        sj.train("mlp", small_digits, epochs=2, run=tmp_path / "r", schedule="cosine",
                 resume=True, progress=False)
    with pytest.raises(RunError, match="schedule: run has 'cosine', asked 'constant'"):
        sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", schedule="constant",
                 resume=True, progress=False)
    with pytest.raises(RunError, match="shift: run has 0, asked 1"):
        sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", schedule="cosine",
                 shift=1, resume=True, progress=False)


def test_bad_schedule_and_shift_write_nothing(tmp_path, small_digits):
    with pytest.raises(UnknownNameError, match="unknown schedule 'cosin'. Did you mean "
                                               "'cosine'"):
        sj.train("mlp", small_digits, schedule="cosin", run=tmp_path / "a", progress=False)
    with pytest.raises(UsageError, match="shift -2: expected a whole number from 0 to 64"):
        sj.train("mlp", small_digits, shift=-2, run=tmp_path / "b", progress=False)
    curve = sj.load_dataset("curve")
    with pytest.raises(UsageError, match=r"shift=1 moves images, but dataset 'curve' has "
                                         r"inputs of shape \(1,\)"):
        sj.train("curve_mlp", curve, shift=1, run=tmp_path / "c", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_vit_defaults_per_dataset():
    mnist, digits = train_defaults("vit", "mnist"), train_defaults("vit", "digits")
    assert (mnist.schedule, mnist.shift, mnist.lr, mnist.batch_size) == ("cosine", 1, 3e-3, 32)
    # a pixel is an eighth of a digit image: no shift there, and the model's own rate
    assert (digits.schedule, digits.shift, digits.lr, digits.batch_size) == \
        ("cosine", 0, 2e-3, 16)
    assert dataclasses.replace(train_defaults("mlp", "digits"), epochs=5) == \
        dataclasses.replace(train_defaults("mlp"), batch_size=32, lr=3e-3)
