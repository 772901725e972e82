"""``shenjing export RUN --tensorboard DIR``: read back with TensorBoard's own event reader,
every scalar equals the run's metrics.jsonl value, every histogram the checkpoint's tensor,
and the projector files are the embed stage's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the 'tensorboard' extra is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import shenjing as sj
from cli_invoke import invoke
from shenjing.errors import UsageError
from shenjing.report.tensorboard import LAYER_STATS, export_tensorboard


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tb") / "mlp"
    r = sj.train("mlp", "digits", epochs=2, run=path, progress=False)
    from shenjing.stages.embed import embed_stage

    embed_stage(r, ["fc1"], method="pca", projector=True, figures=False, n=60)
    return sj.Run(path)


def _accumulator(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_round_trip_through_tensorboards_reader(run, tmp_path, capsys):
    logdir = tmp_path / "tb"
    code, out, err = invoke(capsys, "export", str(run.path), "--tensorboard", str(logdir))
    assert code == 0, err
    acc = _accumulator(logdir)
    tags = acc.Tags()
    records = run.metrics()
    # curves: every finite number of every metrics line, at its epoch
    for key in ("test_loss", "test_accuracy", "train_loss", "train_accuracy", "lr"):
        events = acc.Scalars(f"curves/{key}")
        want = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events] == want
    assert [e.step for e in acc.Scalars("curves/test_loss")] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("curves/train_loss")] == [1, 2]  # none at epoch 0
    # per-layer dynamics and dead units
    n_dyn = 0
    for r in records:
        for group, stats in r["layers"].items():
            for stat in LAYER_STATS:
                if stats.get(stat) is None:
                    continue
                got = {e.step: e.value for e in acc.Scalars(f"dynamics/{stat}/{group}")}
                assert got[r["epoch"]] == pytest.approx(stats[stat], rel=1e-6)
                n_dyn += 1
        for relu, frac in r["dead_units"].items():
            got = {e.step: e.value for e in acc.Scalars(f"dead_units/{relu}")}
            assert got[r["epoch"]] == pytest.approx(frac, rel=1e-6, abs=1e-9)
    assert n_dyn >= 2 * 4 * 3  # 4 groups (fc1, fc1.bias, fc2, fc2.bias), epochs 0-2
    # weight histograms: one per tensor and checkpoint, with the tensor's own statistics
    assert sorted(t for t in tags["histograms"]) == sorted(
        f"weights/{k}" for k in run.state_dict(0))
    for epoch in run.epochs:
        w = run.state_dict(epoch)["fc1.weight"].double().numpy()
        h = {e.step: e.histogram_value for e in acc.Histograms("weights/fc1.weight")}[epoch]
        assert h.num == w.size
        assert h.min == pytest.approx(w.min(), rel=1e-6)
        assert h.max == pytest.approx(w.max(), rel=1e-6)
        assert h.sum == pytest.approx(w.sum(), rel=1e-4, abs=1e-4)
        assert h.sum_squares == pytest.approx((w ** 2).sum(), rel=1e-5)
    # the projector files: those embed wrote, byte for byte, where TensorBoard looks
    projector = run.path / "embeddings" / "projector"
    for src in projector.iterdir():
        assert (logdir / src.name).read_bytes() == src.read_bytes()
    first = next(p for p in logdir.glob("*.tsv") if p.name != "metadata.tsv")
    assert np.loadtxt(first, delimiter="\t").shape[0] == 60
    assert "projector" in out and "weight histograms" in out


def test_export_again_replaces_the_earlier_export(run, tmp_path):
    logdir = tmp_path / "tb"
    export_tensorboard(run, logdir)
    first = sorted(p.name for p in logdir.iterdir())
    result = export_tensorboard(run, logdir, histograms=False)
    events = list(logdir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and result.n_histograms == 0
    assert len(first) == len(list(logdir.iterdir()))
    assert _accumulator(logdir).Tags()["histograms"] == []


def test_bad_folders_are_refused_before_anything_is_written(run, tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError, match="is a file; pass a folder"):
        export_tensorboard(run, a_file)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="not a shenjing export; choose a new or empty"):
        export_tensorboard(run, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["mine.txt"]
    with pytest.raises(UsageError, match="inside the run"):
        export_tensorboard(run, run.path / "tb")
    assert not (run.path / "tb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "f.txt"]
