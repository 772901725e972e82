"""Landscape and hessian stages on a real (tiny) trained run: files, keys, figures, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shenjing.analysis.landscape import load_landscape, random_directions
from shenjing.errors import CheckpointError, EpochNotFoundError, UsageError
from shenjing.stages._inputs import run_loss
from shenjing.stages.hessian import hessian
from shenjing.stages.landscape import (
    landscape_line,
    landscape_plane,
    landscape_trajectory,
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
    with pytest.raises(UsageError, match="steps \\S+: expected a whole number ≥ 2"):
        landscape_plane(run, steps=0, progress=False)
    with pytest.raises(UsageError, match="samples 0: expected a whole number ≥ 1"):
        landscape_plane(run, samples=0, progress=False)
    other = train("mlp", "digits", epochs=1, run=tmp_path / "wide", progress=False,
                  model_kwargs={"hidden": [48]})
    with pytest.raises(CheckpointError, match=r"mismatched shapes: fc1.weight \(48, 64\) "
                                              r"vs \(32, 64\)"):
        landscape_line(run, start_run=other, start="final", progress=False)


def _listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize(("call", "kwargs", "message"), [
    (landscape_line, {"steps": 1}, "steps 1: expected a whole number ≥ 2"),
    (landscape_plane, {"steps": 1}, "steps 1: expected a whole number ≥ 2"),
    (landscape_plane, {"samples": 0}, "samples 0: expected a whole number ≥ 1"),
    (landscape_plane, {"seed": -2}, "seed -2: expected a whole number ≥ 0"),
    (landscape_plane, {"engine": "linear", "bn": "recompute"}, "bn='recompute' needs"),
    (landscape_trajectory, {"margin": -1.0}, "margin must be a number ≥ 0"),
    (landscape_trajectory, {"samples": 0}, "samples \\S+: expected a whole number ≥ 1"),
    (hessian, {"top_k": 0}, "top_k 0: expected a whole number ≥ 1"),
    (hessian, {"samples": 0}, "samples 0: expected a whole number ≥ 1"),
    (hessian, {"trace_samples": 1}, "trace_samples 1: expected a whole number ≥ 2"),
    (hessian, {"density": True, "density_steps": 1},
     "density_steps \\S+: expected a whole number ≥ 2"),
    (hessian, {"layers": ["fc7"]}, "no layer 'fc7' with parameters in MLP. Did you mean "
                                   "'fc2' or 'fc1'\\? Layers with parameters: fc1, fc2"),
])
def test_library_calls_validate_before_writing_anything(run, call, kwargs, message):
    before = _listing(run.path)
    with pytest.raises(UsageError, match=message):
        call(run, progress=False, **kwargs)
    assert _listing(run.path) == before  # not even run.json's stage entry


def test_memory_beyond_the_budget_is_refused_before_the_stage_writes(run, monkeypatch):
    """Issue 13 item 7: the trajectory's PCA (checkpoints × parameters × 28 bytes) and the
    engine's weight copies are estimated after the model is built and before anything is
    written or marked running: one ResourceError, the run unchanged."""
    import shenjing.capture.dataset as ds
    from shenjing.errors import ResourceError

    n = sum(p.numel() for p in run.model().parameters())  # 2,410
    assert n == 2410
    before = _listing(run.path)
    # PCA: 4 × 2,410 × 28 = 269,920 B; weights: 15 × 2,410 × 4 + 2 × 10 × 64 × 4 = 149,720 B
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 200_000)
    with pytest.raises(ResourceError, match=r"trajectory plane's PCA of 4 checkpoints × 2,410 "
                                            r"parameters needs about 263\.59 KiB .* "
                                            r"`landscape plane`"):
        landscape_trajectory(run, steps=5, samples=10, progress=False)
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 100_000)
    with pytest.raises(ResourceError, match=r"model with 2,410 parameters needs about "
                                            r"146\.21 KiB"):
        landscape_plane(run, steps=5, samples=10, progress=False)
    # the Hessian's Lanczos basis: 2 × 101 vectors × 2,410 float32 = 1,947,280 B
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 2**20)
    with pytest.raises(ResourceError, match=r"Lanczos basis of up to 100 vectors of 2,410 "
                                            r"parameters needs about 1\.86 MiB of memory but "
                                            r"only 1\.00 MiB"):
        hessian(run, samples=10, progress=False)
    assert _listing(run.path) == before


def test_a_runs_directions_files_are_small_and_remade_from_its_checkpoints(run):
    from shenjing.analysis.landscape import directions_path, line_direction, read_directions_meta
    from shenjing.stages.landscape import landscape_directions

    plane_res = landscape_plane(run, steps=3, seed=4, samples=50, progress=False,
                                figures=False)
    line_res = landscape_line(run, steps=3, samples=50, progress=False, figures=False)
    traj_res = landscape_trajectory(run, steps=3, samples=50, progress=False, figures=False)
    n = sum(p.numel() for p in run.model().parameters())
    sizes = {r.path.stem: directions_path(r.path).stat().st_size
             for r in (plane_res, line_res, traj_res)}
    assert sizes["plane-filter-s4-e003"] < 4_000 and sizes["line-e000-e003"] < 4_000
    assert 4 * 2 * n * 0.8 < sizes["trajectory-e003"] < 4 * 2 * n * 1.2  # 2 float32 vectors
    assert read_directions_meta(directions_path(traj_res.path))["stored_as"] == "vectors"
    remade = landscape_directions(run, plane_res.path)
    assert torch.equal(remade.vectors, random_directions(run.model(3), 2, seed=4).vectors)
    line_dirs = landscape_directions(run, "line-e000-e003.npz")  # by name, in landscapes/
    assert torch.equal(line_dirs.vectors,
                       line_direction(run.state_dict(0), run.model(3))[1].vectors)
    assert line_dirs.sha256() == line_res.landscape.meta["directions"]["sha256"]
    traj = landscape_directions(run, traj_res.path)
    assert traj.sha256() == traj_res.landscape.meta["directions"]["sha256"]


HESSIAN_SETTINGS = dict(top_k=2, trace_samples=4, samples=100, layers=["fc2"],
                        across_epochs=True, density=True, density_runs=1, density_steps=6)

HESSIAN_CHILD = f"""
# a hessian that tells its parent, through a pipe, which Hessian-vector product it reached
# (its progress is saved after every step), then waits to be killed: no sleeps, no polling
import os, sys, torch
from shenjing.analysis.hessian import HessianOperator
from shenjing.runs import Run
from shenjing.stages.hessian import hessian

torch.set_num_threads(1)
run, fd, stop_at = Run(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
real, count = HessianOperator._matvec, [0]

def counted(self, v):
    if count[0] == stop_at:
        os.write(fd, f"{{count[0]}}\\n".encode())
        sys.stdin.read()  # blocks until the parent kills this process
    count[0] += 1
    return real(self, v)

HessianOperator._matvec = counted
hessian(run, **{HESSIAN_SETTINGS!r}, progress=False, figures=False, save_every=0.0)
"""


def _count_products(monkeypatch):
    from shenjing.analysis.hessian import HessianOperator

    real, count = HessianOperator._matvec, [0]

    def counted(self, v):
        count[0] += 1
        return real(self, v)

    monkeypatch.setattr(HessianOperator, "_matvec", counted)
    return count


def _kill_at(run_path, stop_at, tmp_path):
    """Start the hessian of ``run_path`` in a child and SIGKILL it at product ``stop_at``."""
    import os
    import select
    import subprocess
    import sys

    script = tmp_path / "hessian_child.py"
    script.write_text(HESSIAN_CHILD)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, str(script), str(run_path), str(write_end),
                             str(stop_at)], pass_fds=(write_end,), stdin=subprocess.PIPE)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 120)
        assert ready, "the child never reached the product"
        reached = int(os.read(read_end, 64).decode().split()[0])
        proc.kill()
        proc.wait(timeout=30)
    finally:
        os.close(read_end)
        if proc.poll() is None:
            proc.kill()
    return reached


def test_a_killed_hessian_resumes_and_writes_what_an_uninterrupted_one_does(
        run, tmp_path, monkeypatch):
    """Issue 13 item 11: `hessian` killed at 100 s started again from zero. Killed by
    SIGKILL in the top eigenvalues and again in the λ_max curve over the epochs, a rerun
    continues from the saved progress: no product is computed twice, and the files it
    writes equal an uninterrupted run's, bit for bit."""
    import shutil

    from shenjing.runs import Run

    clean = Run(shutil.copytree(run.path, tmp_path / "clean"))
    count = _count_products(monkeypatch)
    hessian(clean, **HESSIAN_SETTINGS, progress=False, figures=False)
    total = count[0]
    files = ("hessian-e003.json", "hessian-e003.npz", "sharpness-epochs.json")
    for stop_at in (3, total - 4):
        killed = Run(shutil.copytree(run.path, tmp_path / f"killed-{stop_at}"))
        assert _kill_at(killed.path, stop_at, tmp_path) == stop_at
        progress_file = killed.landscapes_dir / "hessian-e003.progress.npz"
        assert progress_file.is_file()  # the progress so far, saved
        count[0] = 0
        res = hessian(Run(killed.path), **HESSIAN_SETTINGS, progress=False, figures=False)
        assert stop_at + count[0] == total  # resumed: nothing computed twice
        for name in files:
            a, b = (r.landscapes_dir / name for r in (killed, clean))
            if name.endswith(".npz"):
                with np.load(a) as za, np.load(b) as zb:
                    assert za.files == zb.files
                    for key in za.files:
                        np.testing.assert_array_equal(za[key], zb[key], err_msg=key)
            else:
                assert a.read_bytes() == b.read_bytes(), name
        assert not progress_file.exists()  # done: nothing left to resume
        assert Run(killed.path).stage("hessian")["status"] == "done"
        assert res.summary["top_n_hvp"] == json.loads(
            (clean.landscapes_dir / "hessian-e003.json").read_text())["top_n_hvp"]


# ---- a user's transformer (nn.TransformerEncoder) ----------------------------------------

@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, digits):
    """A RowViT recorded for two epochs of a few Adam steps (a factory-file model spec)."""
    from pathlib import Path

    from shenjing.models.spec import build_from_spec
    from shenjing.runs import Run
    from shenjing.training.recorder import Recorder

    torch.set_num_threads(1)
    spec = {"factory": f"{Path(__file__).with_name('landscape_models.py')}:RowViT",
            "kwargs": {"n_classes": 10}}
    torch.manual_seed(0)
    model = build_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:  # never the user's own trust list
        mp.setenv("SHENJING_TRUST_FILE", str(tmp_path_factory.mktemp("trust") / "t.json"))
        rec = Recorder(tmp_path_factory.mktemp("vit") / "vit", model, data=digits,
                       model_spec=spec)
    rec.start()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        model.train()
        for _ in range(10):
            pick = torch.randint(0, len(digits.train.x), (64,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(digits.train.x[pick]),
                                                     digits.train.y[pick])
            opt.zero_grad()
            loss.backward()
            rec.after_backward(loss)
            opt.step()
        rec.end_epoch(optimizer=opt)
    # each test has a fresh trust list (conftest): consent explicitly, as a user would
    return Run(rec.run.path, trust_code=True)


def test_hessian_stage_on_a_transformer_is_done(vit_run):
    res = hessian(vit_run, top_k=2, trace_samples=4, samples=64, layers=["head"],
                  progress=False, figures=False)
    assert vit_run.stage("hessian")["status"] == "done"
    top = res.summary["top_eigenvalues"]
    assert len(top) == 2 and top[0] >= top[1] and np.isfinite(top).all()
    # the head's block against an exact Hessian of the loss w.r.t. the head's weights
    from torch.func import functional_call

    net = vit_run.model("final").double().eval()
    sub = vit_run.data.test.subset(64, seed=0)
    np.testing.assert_array_equal(
        np.load(vit_run.landscapes_dir / "hessian-e002.npz")["sample_indices"],
        sub.indices.numpy())
    with torch.no_grad():
        features = net.encoder(torch.cat([net.cls.expand(64, -1, -1),
                                          net.embed(sub.x.double().squeeze(1))], 1)
                               + net.pos)[:, 0]
    w, b = net.head.weight.detach(), net.head.bias.detach()

    def f(v):
        ps = {"weight": v[:w.numel()].view_as(w), "bias": v[w.numel():]}
        return torch.nn.functional.cross_entropy(functional_call(net.head, ps, (features,)),
                                                 sub.y)

    block = torch.autograd.functional.hessian(f, torch.cat([w.reshape(-1), b]))
    exact_block = float(torch.linalg.eigvalsh(block)[-1])
    assert res.summary["per_layer"]["head"]["top_eigenvalue"] == pytest.approx(exact_block,
                                                                              rel=1e-2)
    # a diagonal block's largest eigenvalue never exceeds the whole Hessian's
    assert top[0] >= exact_block * (1 - 1e-2)
    assert res.summary["n_params"] == sum(p.numel() for p in net.parameters())


def test_landscape_plane_on_a_transformer(vit_run):
    res = landscape_plane(vit_run, steps=3, samples=64, progress=False, figures=False)
    assert res.landscape.complete and vit_run.stage("landscape_plane")["status"] == "done"
    model = vit_run.model("final").eval()
    sub = vit_run.data.test.subset(64, seed=0)
    np.testing.assert_array_equal(res.landscape.sample_indices, sub.indices.numpy())
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(model(sub.x), sub.y))
    assert res.landscape.loss[res.landscape.center_index] == pytest.approx(expected, rel=1e-5)
