"""Stage ``warp``: files and keys, the stored grid equals the layers' outputs, user points,
bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shenjing.errors import DataError, ShapeMismatchError, UsageError
from shenjing.stages.warp import load_points, points_dataset, warp

FAST = {"hidden": (6, 6), "epochs": 2, "progress": False, "n_lines": 5, "resolution": 40}


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    return warp(tmp_path_factory.mktemp("warp") / "moons", data="moons", **FAST)


def test_files_keys_and_stage(moons):
    root = moons.run.path
    tag = f"e{moons.epoch:03d}"
    assert moons.epoch == 2
    for name in (f"warp/warp-{tag}.npz", f"warp/warp-{tag}.json", f"warp/boundary-{tag}.npz"):
        assert (root / name).is_file(), name
    for stem in ("warp-layers", "warp-probes", "warp-boundary"):
        assert (root / "figures" / f"{stem}-{tag}.png").is_file()
    summary = json.loads((root / f"warp/warp-{tag}.json").read_text())
    assert [r["layer"] for r in summary["layers"]] == ["input", "fc1", "relu1", "fc2", "relu2",
                                                      "fc3"]
    assert summary["last_hidden"] == "relu2" and 0.5 <= summary["chance"] <= 0.6
    with np.load(root / f"warp/warp-{tag}.npz") as f:
        assert list(f["layer_kinds"]) == ["input", "linear", "activation", "linear",
                                          "activation", "output"]
        assert list(f["projections"]) == ["identity", "pca", "pca", "pca", "pca", "identity"]
        assert f["grid"].shape == (2, 5, 101, 2) and f["grid_3"].shape == (2, 5, 101, 2)
        assert f["data_0"].shape == (1000, 2) and f["is_test"].sum() == 250
        assert np.isnan(f["explained_variance"][0]).all()
        assert (f["explained_variance"][1] > 0).all()
        np.testing.assert_allclose(f["probe_test"], [r["probe_test_accuracy"]
                                                     for r in summary["layers"]])
    stage = moons.run.stage("warp")
    assert stage["status"] == "done" and stage["json"] == f"warp/warp-{tag}.json"


def test_stored_grid_is_the_output_of_the_layers(moons):
    """Acceptance: the warped grid's stored coordinates are the net's outputs at the grid."""
    root = moons.run.path
    model = moons.run.model("final")
    with np.load(root / "warp/warp-e002.npz") as f:
        grid = f["grid"].reshape(-1, 2)
        logits = model(torch.tensor(grid, dtype=torch.float32)).detach().double().numpy()
        np.testing.assert_allclose(f["grid_5"].reshape(-1, 2), logits, atol=1e-5)
        np.testing.assert_allclose(f["data_0"][~f["is_test"]],
                                   moons.run.data.train.x.numpy(), atol=1e-6)
    with np.load(root / "warp/boundary-e002.npz") as b:
        xx, yy = np.meshgrid(b["xs"], b["ys"])
        pts = torch.tensor(np.column_stack([xx.ravel(), yy.ravel()]), dtype=torch.float32)
        proba = torch.softmax(model(pts), 1).detach().numpy().reshape(b["proba"].shape)
        np.testing.assert_allclose(b["proba"], proba, atol=1e-5)


def test_a_study_too_large_for_memory_is_refused_before_training_or_writing(
        moons, tmp_path, monkeypatch):
    """Issue 13 item 7: `warp --lines 100000` was OOM-killed. The grid and data through
    every layer are estimated first (from the untrained architecture for a new run, from
    the run's model otherwise) and refused with the size and the --lines that fit."""
    import shenjing.capture.dataset as ds
    from shenjing.errors import ResourceError

    fast = {k: v for k, v in FAST.items() if k != "n_lines"}
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 20 * 2**20)  # 20 MiB allowed
    with pytest.raises(ResourceError, match=r"^warp with --lines 300 sends 60,600 grid points "
                                            r"and 1,000 data points through 5 layers \(6, 6, "
                                            r"6, 6, 2 features\): about .* only 20\.00 MiB is "
                                            r"allowed .*; reduce --lines, e.g. --lines 91$"):
        warp(tmp_path / "new", data="moons", n_lines=300, **fast)
    assert not (tmp_path / "new").exists()  # refused before the run was trained
    before = _listing(moons.run.path)
    with pytest.raises(ResourceError, match=r"--lines 300 .*e.g. --lines 91$"):
        warp(moons.run.path, n_lines=300, resolution=40)
    assert _listing(moons.run.path) == before
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 16 * 2**30)
    with pytest.raises(ResourceError, match=r"^warp with --lines 100000 sends 20,200,000 grid"):
        warp(moons.run.path, n_lines=100000, resolution=40)
    # the estimate covers at least the float64 layer outputs it is built from
    from shenjing.analysis.warp import layer_widths, warp_bytes

    model = moons.run.model("final")
    widths = layer_widths(model)
    assert widths == [6, 6, 6, 6, 2]
    n = 1000 + 2 * 17 * 101
    assert warp_bytes(widths, 1000, n_lines=17) > n * 8 * sum(widths)


def _listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_existing_run_and_other_epoch(moons):
    before = moons.run.checkpoint_path("final").stat().st_mtime_ns
    res = warp(moons.run.path, epoch="init", n_lines=3, resolution=20)
    assert res.epoch == 0 and (moons.run.path / "warp/warp-e000.json").is_file()
    assert moons.run.checkpoint_path("final").stat().st_mtime_ns == before


def test_user_points_from_npz_and_csv(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 2))
    y = np.where(x[:, 0] > 0, 7, 3)  # labels need not be 0..C-1
    np.savez(tmp_path / "pts.npz", x=x, y=y)
    res = warp(tmp_path / "r", data=tmp_path / "pts.npz", **FAST)
    assert res.run.manifest["data"]["name"] == "pts"
    assert (res.run.path / "warp/data.npz").is_file()
    assert res.probes[0]["probe_test_accuracy"] >= 0.9  # linearly separable input
    again = warp(tmp_path / "r", n_lines=3, resolution=20)  # reloads the stored points
    assert again.probes[0]["probe_test_accuracy"] == res.probes[0]["probe_test_accuracy"]
    np.savetxt(tmp_path / "pts.csv", np.column_stack([x, y]), delimiter=",",
               header="x1,x2,label", comments="")
    ds = load_points(tmp_path / "pts.csv")
    assert ds.classes == ("3", "7") and len(ds.train) + len(ds.test) == 80


@pytest.mark.parametrize(("data", "exc", "match"), [
    ("digits", ShapeMismatchError, r"inputs of shape \(N, 2\); dataset 'digits' has inputs "
                                   r"of shape \(N, 1, 8, 8\)"),
    ("curve", ShapeMismatchError, r"dataset 'curve' has inputs of shape \(N, 1\)"),
    ((np.zeros((10, 3)), np.zeros(10)), ShapeMismatchError, r"has shape \(10, 3\)"),
    ((np.zeros((10, 2)), np.zeros(9)), ShapeMismatchError, "10 points but 9 labels"),
    ((np.zeros((10, 2)), np.zeros(10)), DataError, "at least two classes"),
    ("nothing.npz", UsageError, "no data file nothing.npz"),
])
def test_bad_data_fails_before_training(tmp_path, data, exc, match):
    with pytest.raises(exc, match=match):
        warp(tmp_path / "bad", data=data, **FAST)
    assert not (tmp_path / "bad").exists()


def test_points_dataset_split():
    ds = points_dataset(np.zeros((20, 2)), np.arange(20) % 2, test_fraction=0.25)
    assert len(ds.test) == 5 and len(ds.train) == 15 and ds.input_shape == (2,)


@pytest.mark.slow
def test_spirals_acceptance(tmp_path):
    """Spirals: near-chance input, probe ≥ 0.95 at the last hidden layer of a net that fits."""
    res = warp(tmp_path / "spirals", data="spirals", progress=False)
    probes = {p["layer"]: p["probe_test_accuracy"] for p in res.probes}
    assert probes["input"] < 0.6  # chance is 0.5: a line cannot separate 2.5-turn spirals
    assert probes["relu2"] >= 0.95
    assert res.run.metrics()[-1]["test_accuracy"] >= 0.95
