"""Stage ``fit``: files and keys written, numbers recomputed from them, reuse, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shenjing.errors import RunError, UsageError
from shenjing.runs import Run
from shenjing.stages.fit import fit, function_dataset, parse_poly

FAST = {"epochs": 2, "passes_per_epoch": 5, "hidden": 8, "progress": False, "n_eval": 281}


@pytest.fixture(scope="module")
def seed_fit(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "seed"
    return fit(path, polynomials=("lagrange", "chebyshev:15"), **FAST)


def test_files_and_keys(seed_fit):
    root = seed_fit.run.path
    for name in ("fit/fit.npz", "fit/epochs.npz", "fit/decomposition.npz", "fit/regions.npz",
                 "fit/summary.json", "fit/function.json", "fit/fit-epochs.gif"):
        assert (root / name).is_file(), name
    for stem in ("fit-curve", "fit-errors", "fit-decomposition", "fit-regions", "fit-epochs"):
        assert (root / "figures" / f"{stem}.png").is_file()
        assert (root / "figures" / f"{stem}.svg").is_file()
    with np.load(root / "fit/fit.npz") as f:
        assert {"x", "y_true", "y_net", "in_range", "x_train", "y_train", "poly_values",
                "poly_labels", "poly_methods", "poly_degrees"} <= set(f.files)
        assert list(f["poly_labels"]) == ["Lagrange (degree 99)", "Chebyshev (degree 15)"]
        assert f["x"][0] == -7 and f["x"][-1] == 7 and f["x_train"].size == 100
    with np.load(root / "fit/epochs.npz") as f:
        assert list(f["epochs"]) == [0, 1, 2] and f["y_net"].shape == (3, 281)
    stage = seed_fit.run.stage("fit")
    assert stage["status"] == "done" and stage["summary"] == "fit/summary.json"
    assert Run(root).data.name == "curve"  # the seed's data stays reloadable


def test_summary_errors_recomputed_from_the_arrays(seed_fit):
    root = seed_fit.run.path
    summary = json.loads((root / "fit/summary.json").read_text())
    with np.load(root / "fit/fit.npz") as f:
        x, true, net, polys = f["x"], f["y_true"], f["y_net"], f["poly_values"]
    inside = (x >= -5) & (x <= 5)
    rmse_in = float(np.sqrt(np.mean((net - true)[inside] ** 2)))
    rmse_out = float(np.sqrt(np.mean((net - true)[~inside] ** 2)))
    assert summary["errors"]["net"]["rmse_in"] == pytest.approx(rmse_in, rel=1e-12)
    assert summary["errors"]["net"]["rmse_out"] == pytest.approx(rmse_out, rel=1e-12)
    cheb = summary["errors"]["Chebyshev (degree 15)"]
    assert cheb["max_out"] == pytest.approx(np.max(np.abs(polys[1] - true)[~inside]))
    # the full-budget Lagrange interpolant oscillates at the edges
    assert summary["errors"]["Lagrange (degree 99)"]["rmse_in"] > 1e3


def test_decomposition_sum_matches_the_stored_net_output(seed_fit):
    root = seed_fit.run.path
    with np.load(root / "fit/decomposition.npz") as d, np.load(root / "fit/fit.npz") as f:
        np.testing.assert_allclose(d["partial_sums"][-1], f["y_net"], atol=1e-5)
        np.testing.assert_allclose(d["pieces"].sum(1) + d["c"], f["y_net"], atol=1e-5)
        np.testing.assert_allclose(d["kinks"], -d["b"] / d["w"])
    dec = seed_fit.summary["decomposition"]
    assert dec["max_abs_diff_float64"] < 1e-10 and dec["max_abs_diff_float32"] < 1e-5


def test_existing_run_is_reused_not_retrained(seed_fit):
    ckpt = seed_fit.run.checkpoint_path("final")
    before = ckpt.stat().st_mtime_ns
    again = fit(seed_fit.run.path, **{k: v for k, v in FAST.items() if k != "hidden"})
    assert ckpt.stat().st_mtime_ns == before
    assert again.errors["net"] == seed_fit.errors["net"]
    with pytest.raises(RunError, match="--function 'sin\\(x\\)': run .* was trained on "
                       "'exp.*not 'sin\\(x\\)'"):
        fit(seed_fit.run.path, function="sin(x)", progress=False)


def test_custom_function_deeper_net(tmp_path):
    res = fit(tmp_path / "sin", function="sin(2*x) + 0.5*x", depth=2, train_range=(-3, 3),
              polynomials=("chebyshev:9",), gif=False, **FAST)
    root = res.run.path
    recipe = json.loads((root / "fit/function.json").read_text())
    assert recipe == {"function": "sin(2*x) + 0.5*x", "kind": "expression", "n_points": 100,
                      "train_range": [-3.0, 3.0], "extrapolation": [-4.2, 4.2],
                      "n_test": 400}
    assert res.run.manifest["data"]["name"] == "function"
    assert res.summary["decomposition"] is None  # two hidden layers: regions only
    assert not (root / "fit/decomposition.npz").exists()
    assert (root / "figures/fit-regions.png").is_file()
    with np.load(root / "fit/fit.npz") as f:
        np.testing.assert_allclose(f["y_true"], np.sin(2 * f["x"]) + 0.5 * f["x"])
        np.testing.assert_allclose(f["y_train"], np.sin(2 * f["x_train"]) + 0.5 * f["x_train"],
                                   atol=1e-6)
    with np.load(root / "fit/regions.npz") as r:
        assert r["slopes"].size == res.summary["regions"]["n_regions"]


def test_fit_analyses_a_run_made_by_shenjing_train(tmp_path):
    from shenjing.training import train

    run = train("curve_mlp", "curve", epochs=1, passes_per_epoch=2, run=tmp_path / "t",
                model_kwargs={"hidden": 5}, progress=False)
    res = fit(run.path, polynomials=("chebyshev:5",), gif=False, n_eval=141)
    assert res.function.startswith("exp(-0.1*x)") and res.summary["model"] == {"hidden": 5}
    assert res.summary["decomposition"]["n_units"] == 5
    moons = train("mlp", "moons", epochs=1, run=tmp_path / "m", progress=False,
                  model_kwargs={"hidden": (4,)})
    with pytest.raises(UsageError, match="trained on 'moons', not on a function of x"):
        fit(moons.path)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"function": "x.__class__"}, "dunder"),
    ({"function": "1/x", "train_range": (-1, 1), "n_points": 101},
     "not finite on the training range"),
    ({"function": "log(x)", "train_range": (1, 2), "extrapolation": (-1, 3)},
     "not finite on the extrapolation range"),
    ({"polynomials": ("taylor",)}, "--poly 'taylor': expected one of lagrange, chebyshev"),
    ({"polynomials": ("chebyshev:x",)}, "degree after ':' must be a whole number"),
    ({"train_range": (1, -1)}, "--range 1:-1 has min ≥ max"),
    ({"depth": 0}, r"--depth 0: expected a whole number ≥ 1"),
])
def test_bad_input_fails_before_training(tmp_path, kwargs, match):
    with pytest.raises(UsageError, match=match):
        fit(tmp_path / "bad", progress=False, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_helpers():
    assert parse_poly("Chebyshev:7", None) == ("chebyshev", 7)
    assert parse_poly("lagrange", 12) == ("lagrange", 12)
    from shenjing.analysis.expr import parse_function

    ds = function_dataset(parse_function("x**2"), n_points=5, train_range=(0, 1),
                          extrapolation=(-1, 2), n_test=7)
    assert ds.name == "function" and ds.task == "regression" and ds.train.x.shape == (5, 1)
    np.testing.assert_allclose(ds.test.y.numpy().ravel(), np.linspace(-1, 2, 7) ** 2,
                               rtol=1e-6)


@pytest.mark.slow
def test_seed_defaults_acceptance(tmp_path):
    """Seed 001 with its own settings: the net beats full-budget interpolation by far."""
    res = fit(tmp_path / "seed", progress=False)
    e = res.errors
    assert e["net"]["rmse_in"] < 2.0 and e["net"]["rmse_out"] < 40
    assert e["Lagrange (degree 99)"]["rmse_in"] > 1e3
    assert e["Lagrange (degree 99)"]["rmse_out"] > 1e3
    assert res.summary["decomposition"]["max_abs_diff_float32"] < 1e-4


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize(("asked", "match"), [
    ({"hidden": 32}, r"--hidden 8 \(you asked 32\)"),
    ({"depth": 2}, r"--depth 1 \(you asked 2\)"),
    ({"epochs": 7}, r"--epochs 2 \(you asked 7\)"),
    ({"passes_per_epoch": 9}, r"--passes 5 \(you asked 9\)"),
    ({"lr": 0.1}, r"--lr 0.001 \(you asked 0.1\)"),
    ({"seed": 4}, r"--seed 0 \(you asked 4\)"),
    ({"n_points": 50}, r"--points 100 \(you asked 50\)"),
    ({"train_range": (-3, 3)}, r"--range -5:5 \(you asked -3:3\)"),
    ({"extrapolation": (-9, 9)}, r"--extrapolate -7:7 \(you asked -9:9\)"),
    ({"hidden": 32, "lr": 0.1}, r"--hidden 8 \(you asked 32\); --lr 0.001 \(you asked 0.1\)"),
])
def test_an_existing_run_refuses_settings_it_was_not_trained_with(seed_fit, asked, match):
    """These options used to be silently ignored on an existing run (item 8 of issue 13)."""
    before = _files(seed_fit.run.path)
    with pytest.raises(UsageError, match=rf"run .* was trained with other settings: {match}\. "
                                         r"Leave those options out .* --retrain"):
        fit(seed_fit.run.path, progress=False, **asked)
    assert _files(seed_fit.run.path) == before


def test_the_settings_a_run_was_trained_with_are_accepted_again(seed_fit):
    again = fit(seed_fit.run.path, hidden=8, depth=1, epochs=2, passes_per_epoch=5, lr=1e-3,
                seed=0, n_points=100, train_range=(-5, 5), extrapolation=(-7, 7),
                polynomials=("chebyshev:5",), gif=False, progress=False, n_eval=281)
    assert again.errors["net"] == seed_fit.errors["net"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"polynomials": ("chebyshev:30",), "n_points": 20},
     r"--degree 30 \(for chebyshev\) needs at least 31 training points, and the fit has 20"),
    ({"degree": 25, "n_points": 20}, r"--degree 25 \(for lagrange\) needs at least 26"),
    ({"n_points": 5000}, r"--points 5000 gives the lagrange baseline degree 4999 \(points − 1\), "
                         r"above the 1000 allowed; pass --degree"),
    ({"n_points": 10**9}, r"--points 1000000000: expected a whole number from 2 to 100000"),
    ({"polynomials": ("chebyshev:-1",)}, r"--poly 'chebyshev:-1': the degree after ':'"),
    ({"polynomials": ()}, r"--poly names no baseline"),
    ({"train_range": (float("nan"), 1.0)}, r"--range nan:1: MIN and MAX must be finite"),
    ({"extrapolation": (0.0, 1.0)}, r"--extrapolate 0:1 must contain the training range "
                                    r"--range -5:5, e.g. --extrapolate -7:7"),
    ({"device": "tpu"}, r"--device 'tpu': unknown device"),
    ({"seed": -1}, r"--seed -1: expected a whole number from 0"),
    ({"lr": float("inf")}, r"--lr inf: expected a finite number > 0"),
])
def test_values_that_cannot_work_are_refused_before_training(tmp_path, kwargs, match):
    """A degree above points − 1 used to fail only after training, in the study; the others
    were not checked at all (NaN range, empty --poly, a billion points)."""
    with pytest.raises(UsageError, match=match):
        fit(tmp_path / "bad", progress=False, **kwargs)
    assert not (tmp_path / "bad").exists()


def test_a_file_or_a_foreign_folder_is_not_taken_as_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"--run .*file is a file, not a run folder"):
        fit(tmp_path / "file", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"exists and is not a shenjing run; refusing to write"):
        fit(tmp_path / "other", progress=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
