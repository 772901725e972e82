"""Landscape and hessian stages on a real (tiny) trained run: files, keys, figures, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shenjing.analysis.landscape import load_landscape
from shenjing.errors import CheckpointError, EpochNotFoundError, UsageError
from shenjing.stages.landscape import (
    hessian,
    landscape_line,
    landscape_plane,
    landscape_trajectory,
    run_loss,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from shenjing.training import train

    torch.set_num_threads(1)
    return train("mlp", "digits", epochs=3, run=tmp_path_factory.mktemp("r") / "mlp",
                 progress=False, model_kwargs={"hidden": [32]})


def test_line_stage_writes_file_figure_and_stage(run):
    res = landscape_line(run, steps=9, progress=False)
    assert res.path == run.landscapes_dir / "line-e000-e003.npz"
    ls = load_landscape(res.path)
    assert ls.complete and 0.0 in ls.axes[0] and 1.0 in ls.axes[0]
    assert ls.sample_indices is not None and len(ls.sample_indices) == len(run.data.test)
    model = run.model("final")
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(run.data.test.x),
                                                           run.data.test.y))
    assert ls.loss[ls.center_index] == pytest.approx(expected, rel=1e-5)
    prov = ls.meta["provenance"]
    assert prov["epochs"] == {"start": 0, "end": 3, "start_run": None}
    assert len(prov["model_sha256"]) == 64 and "torch" in prov["versions"]
    assert (run.figures_dir / "landscape-line-e000-e003.png").is_file()
    assert (run.figures_dir / "landscape-line-e000-e003.svg").is_file()
    stage = run.stage("landscape_line")
    assert stage["status"] == "done" and stage["file"] == "landscapes/line-e000-e003.npz"
    assert run_loss(run) == "cross_entropy"


def test_plane_stage_subset_resume_and_figures(run):
    res = landscape_plane(run, steps=5, samples=100, progress=False)
    assert res.path.name == "plane-filter-s0-e003.npz"
    assert res.path.with_suffix(".vtk").is_file()  # for ParaView
    ls = res.landscape
    assert ls.shape == (5, 5) and ls.meta["n_samples"] == 100
    assert len(ls.sample_indices) == 100
    assert ls.meta["directions"]["norm"] == "filter"
    assert ls.meta["directions"]["file"] == "plane-filter-s0-e003.directions.npz"
    for suffix in ("contour", "filled", "surface"):
        assert (run.figures_dir / f"landscape-plane-filter-s0-e003-{suffix}.png").is_file()
    again = landscape_plane(run, steps=5, samples=100, progress=False, figures=False)
    assert again.landscape.meta["n_computed_now"] == 0
    assert again.landscape.meta["engine"] == ls.meta["engine"]
    np.testing.assert_array_equal(again.landscape.loss, ls.loss)


def test_trajectory_stage_projects_every_checkpoint(run):
    res = landscape_trajectory(run, steps=5, samples=100, progress=False)
    ls = load_landscape(res.path)
    assert ls.kind == "trajectory"
    assert ls.trajectory_epochs.tolist() == run.epochs == [0, 1, 2, 3]
    np.testing.assert_allclose(ls.trajectory[-1], 0.0, atol=1e-9)
    assert np.abs(ls.trajectory).max() <= max(np.abs(ls.axes[0]).max(),
                                              np.abs(ls.axes[1]).max())
    assert ls.meta["directions"]["kind"] == "pca"
    assert (run.figures_dir / "landscape-trajectory-e003.png").is_file()


def test_hessian_stage_files(run):
    hessian(run, top_k=2, trace=True, density=True, trace_samples=5, density_runs=1,
                  density_steps=8, samples=200, across_epochs=True, progress=False,
                  layers=["fc2"])
    folder = run.landscapes_dir
    summary = json.loads((folder / "hessian-e003.json").read_text())
    assert len(summary["top_eigenvalues"]) == 2 and summary["samples"] == 200
    assert summary["trace"]["ci95"][0] <= summary["trace"]["mean"] <= summary["trace"]["ci95"][1]
    assert set(summary["per_layer"]) == {"fc2"}
    with np.load(folder / "hessian-e003.npz") as z:
        assert {"eigenvalues", "trace_samples", "density_grid", "density", "slq_nodes",
                "slq_weights", "sample_indices"} <= set(z.files)
    curve = json.loads((folder / "sharpness-epochs.json").read_text())
    assert curve["epochs"] == [0, 1, 2, 3] and len(curve["top_eigenvalue"]) == 4
    assert curve["top_eigenvalue"][-1] == pytest.approx(summary["top_eigenvalues"][0],
                                                        rel=1e-2)
    assert (run.figures_dir / "hessian-density-e003.png").is_file()
    assert (run.figures_dir / "sharpness-epochs.png").is_file()
    assert run.stage("hessian")["status"] == "done"


def test_bad_inputs(run, tmp_path):
    from shenjing.training import train

    with pytest.raises(EpochNotFoundError, match="no checkpoint for epoch 9"):
        landscape_line(run, end=9, progress=False)
    with pytest.raises(UsageError, match="min ≥ max"):
        landscape_plane(run, range_=(1.0, -1.0), progress=False)
    with pytest.raises(UsageError, match="steps must be at least 2"):
        landscape_plane(run, steps=0, progress=False)
    with pytest.raises(UsageError, match="--samples must be at least 1"):
        landscape_plane(run, samples=0, progress=False)
    other = train("mlp", "digits", epochs=1, run=tmp_path / "wide", progress=False,
                  model_kwargs={"hidden": [48]})
    with pytest.raises(CheckpointError, match=r"mismatched shapes: fc1.weight \(48, 64\) "
                                              r"vs \(32, 64\)"):
        landscape_line(run, start_run=other, start="final", progress=False)
