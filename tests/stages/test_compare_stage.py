"""``shenjing.compare``: runs side by side, reusing what they have, refusing what cannot work.

Runs are tiny (mlp on digits, 2 epochs) and the grids small, so the whole file takes seconds.
The CKA is checked on constructed runs: a copy of a run with its hidden units permuted (the
same function, a representation equal up to a permutation: CKA exactly 1) and against CKA
computed here with numpy from activations taken by a plain forward.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from shenjing import _io
from shenjing.errors import UsageError
from shenjing.runs import Run
from shenjing.stages.compare import compare

SMALL = dict(steps=5, line_steps=5, samples=120, top_k=1, trace_samples=4, probe_train=200)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    from shenjing.training import train

    root = tmp_path_factory.mktemp("compare")
    adam = train("mlp", "digits", epochs=2, run=root / "adam", progress=False)
    sgd = train("mlp", "digits", epochs=2, run=root / "sgd", optimizer="sgd", lr=0.05,
                progress=False)
    # the same network with its 128 hidden units in another order, in every checkpoint
    shutil.copytree(adam.path, root / "perm")
    perm = Run(root / "perm")
    perm.update_manifest(name="perm")
    order = torch.randperm(128, generator=torch.Generator().manual_seed(3))
    for e in perm.epochs:
        state = perm.state_dict(e)
        state["fc1.weight"] = state["fc1.weight"][order]
        state["fc1.bias"] = state["fc1.bias"][order]
        state["fc2.weight"] = state["fc2.weight"][:, order]
        _io.save_safetensors(perm.checkpoint_path(e), state)
    return {"adam": adam, "sgd": sgd, "perm": perm, "root": root}  # type: ignore[dict-item]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2
                 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _features(run: Run, n: int, seed: int) -> dict[str, np.ndarray]:
    """fc1, relu1, fc2 of the final model by a plain forward (no shenjing capture)."""
    model = run.model("final", device="cpu").eval()
    x = run.data.test.subset(n, seed=seed).x
    with torch.no_grad():
        h = model.fc1(model.flatten(x))
        return {"fc1": h.numpy(), "relu1": torch.relu(h).numpy(),
                "fc2": model.fc2(torch.relu(h)).numpy()}


def test_two_runs_side_by_side(runs, tmp_path):
    res = compare([runs["adam"], runs["sgd"]], tmp_path / "cmp", **SMALL)
    s = res.summary
    assert res.report == tmp_path / "cmp" / "report.html" and res.report.is_file()
    assert set(s["views"]) == {"curves", "dynamics", "lines", "planes", "sharpness", "cka",
                               "probes"}
    assert s["not_compared"] == {}
    # every figure exists and is named in the summary
    for view in ("curves", "dynamics", "lines", "planes", "sharpness", "probes"):
        assert (tmp_path / "cmp" / s["views"][view]["figure"]).is_file()
    # the same plane axes and one colour scale for both runs, covering both surfaces
    planes = s["views"]["planes"]
    assert planes["axes"] == [-1.0, 1.0, 5]
    from shenjing.analysis.landscape import load_landscape

    losses = [load_landscape(r.landscapes_dir / "plane-filter-s0-e002.npz").loss
              for r in (runs["adam"], runs["sgd"])]
    assert planes["color_scale"]["vmin"] == pytest.approx(min(v.min() for v in losses))
    assert planes["color_scale"]["vmax"] == pytest.approx(max(v.max() for v in losses))
    centers = [float(v[2, 2]) for v in losses]
    assert planes["common_level"] == pytest.approx(max(centers) + 0.5)
    for r, center in zip(("adam", "sgd"), centers, strict=True):
        assert planes["runs"][r]["center_loss"] == pytest.approx(center)
        assert planes["runs"][r]["level"] == pytest.approx(center + 0.5)
    # the verdicts name the runs in order of their numbers
    top = {k: v["top_eigenvalue"] for k, v in s["views"]["sharpness"]["runs"].items()}
    sharper = max(top, key=top.get)
    assert s["verdict"]["sharper"].startswith(f"sharper minimum (top Hessian eigenvalue): "
                                              f"{sharper}")
    # what was computed went into the runs through their stages (their files exist now)
    assert any("stage landscape_plane" in c for c in s["computed"])
    assert (runs["sgd"].landscapes_dir / "hessian-e002.json").is_file()
    assert len(s["views"]["sharpness"]["runs"]["adam"]["top_eigenvalue_by_epoch"]) == 3
    # probes by layer, for every layer of both runs
    probes = s["views"]["probes"]["runs"]
    assert set(probes["adam"]) == {"fc1", "relu1", "fc2"} and probes["sgd"]["fc2"] > 0.5
    html = res.report.read_text(encoding="utf-8")
    for title in ("Runs compared", "Loss landscapes side by side", "Sharpness side by side",
                  "CKA between the runs", "Probe accuracy by layer"):
        assert title in html


def test_a_second_comparison_reuses_what_the_runs_have(runs, tmp_path):
    compare([runs["adam"], runs["sgd"]], tmp_path / "one", **SMALL)
    before = _hashes(runs["adam"].path)
    res = compare([runs["adam"], runs["sgd"]], tmp_path / "two", **SMALL)
    assert not any(word in c for c in res.computed
                   for word in ("line θ₀", "plane", "Hessian", "λ_max")), res.computed
    assert all("linear probes" in c for c in res.computed)
    assert sum("plane" in r for r in res.reused) == 2
    assert _hashes(runs["adam"].path) == before


def test_a_run_file_of_other_settings_is_left_alone(runs, tmp_path):
    """The run has a 5×5 plane; a 7×7 comparison computes its own into computed/."""
    compare([runs["adam"], runs["sgd"]], tmp_path / "five", **SMALL)
    plane = runs["adam"].landscapes_dir / "plane-filter-s0-e002.npz"
    before = plane.read_bytes()
    res = compare([runs["adam"], runs["sgd"]], tmp_path / "seven", **{**SMALL, "steps": 7})
    assert plane.read_bytes() == before
    made = [p for p in (tmp_path / "seven" / "computed").rglob("plane-*.npz")
            if not p.name.endswith(".directions.npz")]
    assert len(made) == 2
    assert res.summary["views"]["planes"]["axes"] == [-1.0, 1.0, 7]


def test_cka_of_constructed_runs(runs, tmp_path):
    """A run and its permuted copy: CKA 1 at every layer; with another run, the layers ×
    layers map equals linear CKA computed here from a plain forward."""
    res = compare([runs["adam"], runs["perm"]], tmp_path / "perm", **SMALL, hessian=False,
                  probes=False)
    cka = res.summary["views"]["cka"]
    assert cka["shared"] == ["fc1", "relu1", "fc2"]
    for value in cka["corresponding"]["adam vs perm"].values():
        assert value == pytest.approx(1.0, abs=1e-6)
    res = compare([runs["adam"], runs["sgd"]], tmp_path / "pair", **SMALL, hessian=False,
                  probes=False)
    pair = res.summary["views"]["cka"]["pair"]
    fa, fb = _features(runs["adam"], 120, 0), _features(runs["sgd"], 120, 0)
    expect = np.array([[_linear_cka(fa[i], fb[j]) for j in pair["cols"]]
                       for i in pair["rows"]])
    np.testing.assert_allclose(np.array(pair["matrix"]), expect, atol=1e-5)
    assert np.all(np.array(pair["matrix"]) < 1.0)


def test_runs_on_different_data_or_losses_say_what_cannot_be_compared(runs, tmp_path):
    from shenjing.training import train

    root = runs["root"]
    spirals = train("mlp", "spirals", epochs=1, run=root / "spirals", progress=False)  # type: ignore[operator]
    res = compare([runs["adam"], spirals], tmp_path / "data", **SMALL)
    nc = res.summary["not_compared"]
    assert set(nc) == {"cka"} and "same samples" in nc["cka"]
    assert "cka" not in res.summary["views"] and "planes" in res.summary["views"]
    assert any("different data" in n for n in res.summary["notes"])
    nll = train("dropout_cnn", "digits", epochs=1, run=root / "nll", progress=False)  # type: ignore[operator]
    cnn = train("simple_cnn", "digits", epochs=1, run=root / "cnn", progress=False)  # type: ignore[operator]
    res = compare([cnn, nll], tmp_path / "loss", **SMALL)
    nc = res.summary["not_compared"]
    assert set(nc) == {"landscape", "sharpness"}
    assert "same loss" in nc["landscape"] and "nll" in nc["landscape"]
    assert {"curves", "cka", "probes"} <= set(res.summary["views"])
    assert "planes" not in res.summary["views"]
    assert "Not compared — landscape" in res.report.read_text(encoding="utf-8")


def test_a_run_without_checkpoints(runs, tmp_path):
    shutil.copytree(runs["sgd"].path, tmp_path / "bare")
    bare = Run(tmp_path / "bare")
    bare.update_manifest(name="bare")
    shutil.rmtree(bare.path / "checkpoints")
    res = compare([runs["adam"], bare], tmp_path / "cmp", **SMALL)
    nc = res.summary["not_compared"]
    assert "no checkpoints" in nc["weights of bare"]
    assert "only adam has a checkpoint" in nc["landscape"]
    assert set(res.summary["views"]) == {"curves", "dynamics"}


def test_bad_input_is_refused_before_anything_is_written(runs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="two runs or more, got 1"):
        compare([runs["adam"]], out)
    with pytest.raises(UsageError, match="given twice"):
        compare([runs["adam"], runs["adam"].path], out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="that is a file"):
        compare([runs["adam"], runs["sgd"]], tmp_path / "file")
    with pytest.raises(UsageError, match="delta"):
        compare([runs["adam"], runs["sgd"]], out, delta=0.0)
    with pytest.raises(UsageError, match="no checkpoint for epoch 9"):
        compare([runs["adam"], runs["sgd"]], out, epoch=9)
    assert not out.exists()


def test_the_page_escapes_run_names(runs, tmp_path):
    hostile = '<img src=x onerror="alert(1)">'
    shutil.copytree(runs["sgd"].path, tmp_path / "evil")
    Run(tmp_path / "evil").update_manifest(name=hostile)
    res = compare([runs["adam"], tmp_path / "evil"], tmp_path / "cmp", **SMALL, hessian=False)
    html = res.report.read_text(encoding="utf-8")
    assert hostile not in html
    assert "&lt;img src=x onerror=" in html
    assert res.summary["runs"][1]["label"] == hostile


def test_a_view_that_fails_is_said_and_the_others_are_done(runs, tmp_path, monkeypatch):
    from shenjing.errors import ResourceError

    def fail(*_args, **_kwargs):
        raise ResourceError("injected: the plane does not fit")

    monkeypatch.setattr("shenjing.analysis.compare.basin_summary", fail)
    res = compare([runs["adam"], runs["sgd"]], tmp_path / "cmp", **SMALL)
    assert res.summary["not_compared"] == {
        "landscape": "could not be computed: ResourceError: injected: the plane does not fit"}
    assert {"curves", "sharpness", "cka", "probes"} <= set(res.summary["views"])
    assert "planes" not in res.summary["views"]
