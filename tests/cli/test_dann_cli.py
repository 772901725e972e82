"""``shenjing dann`` in-process on a small MNIST-format folder: one stage call, its lines,
the report, resume, and refusals in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_invoke import invoke
from shenjing.data.idx import write_idx


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
    """300 MNIST-format test images: the digits upsampled to 28×28 and shifted right (not
    the real MNIST, so the test needs no shared files), as the two t10k IDX files."""
    import torch

    from shenjing.data import load_dataset
    from shenjing.data.domains import resize_images

    d = load_dataset("digits", seed=0).train.subset(300, seed=1)
    x = resize_images(d.x, (20, 20))
    canvas = torch.zeros(len(x), 1, 28, 28)
    canvas[:, :, 4:24, 6:26] = x
    folder = tmp_path_factory.mktemp("mnist-like")
    write_idx(folder / "t10k-images-idx3-ubyte.gz",
              (canvas[:, 0].numpy() * 255).round().astype(np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", d.y.numpy().astype(np.uint8))
    return folder


def test_dann_trains_three_ways_and_reports(capsys, tmp_path, mnist_like):
    run = tmp_path / "dann"
    args = ("dann", "--data-dir", str(mnist_like), "--epochs", "1", "--n-gap", "50",
            "--batch-size", "32", "--run", str(run))
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("mnist-to-digits: source mnist (239 train / 61 eval), "
                               "target digits (1347 unlabelled train / 450 eval)")
    assert any("upsampled from 8×8 to 28×28 by bilinear interpolation" in ln for ln in lines)
    rows = [ln.split()[0] for ln in lines if ln.startswith("  ")]
    assert rows == ["untrained", "source_only", "dann", "mmd"]
    assert all("target acc" in ln and "MMD²" in ln and "proxy A" in ln
               for ln in lines if ln.startswith("  "))
    assert lines[-1] == f"report: {run / 'report.html'}"
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert stages["dann"]["status"] == "done" and "dann" in stages["report"]["sections"]

    code, out, err = invoke(capsys, *args)  # again without --resume: one line, exit 1
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--resume" in err
    before = (run / "dann" / "history.jsonl").read_bytes()
    code, out, err = invoke(capsys, "dann", "--data-dir", str(mnist_like), "--epochs", "2",
                            "--n-gap", "50", "--batch-size", "32", "--run", str(run),
                            "--resume")
    assert code == 0, err
    assert "resumed after the last complete epoch" in out
    after = (run / "dann" / "history.jsonl").read_text().splitlines()
    assert len(after) == 9 and before.decode().splitlines()[:2] == after[:2]


def test_dann_refuses_a_negative_lambda_in_one_line(capsys, tmp_path):
    code, _out, err = invoke(capsys, "dann", "--lambda", "-1", "--run", str(tmp_path / "r"))
    assert code == 2
    assert err.strip() == ("UsageError: --lambda -1.0: expected a finite number ≥ 0, "
                           "e.g. --lambda 0.1")
    assert not (tmp_path / "r").exists()


def test_dann_help_says_it_resumes(capsys):
    code, out, _ = invoke(capsys, "dann", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Resumable: --resume continues a killed run" in text
    assert "target labels used only to evaluate" in text
