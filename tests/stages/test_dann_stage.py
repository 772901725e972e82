"""The dann stage on a small domain pair (digits at 8×8 vs mirrored digits at 12×12): what it
writes, that the same seed gives the same numbers, that a killed study resumes to the same
numbers, the report section, and the refusals that come before anything is written."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from shenjing import _io
from shenjing.data import load_dataset
from shenjing.data.domains import DomainPair, match_domains, resize_images
from shenjing.data.types import Split
from shenjing.errors import UsageError
from shenjing.stages.dann import dann

SMALL = {"epochs": 2, "batch_size": 16, "n_gap": 60, "device": "cpu"}


def _small_pair() -> DomainPair:
    digits = load_dataset("digits", seed=0)

    def cut(s: Split, n: int) -> Split:
        return s.subset(n, seed=0)

    source = replace(digits, train=cut(digits.train, 300), test=cut(digits.test, 120))

    def mirrored(s: Split) -> Split:  # another "scanner": mirrored, blurred, 12×12
        return Split(resize_images(s.x.flip(-1), (12, 12)), s.y, s.indices)

    target = replace(digits, name="mirrored-digits", train=mirrored(cut(digits.train, 200)),
                     test=mirrored(cut(digits.test, 100)))
    return match_domains(source, target, "digits-to-mirrored")


@pytest.fixture(scope="module")
def pair() -> DomainPair:
    return _small_pair()


@pytest.fixture(scope="module")
def study(pair, tmp_path_factory):
    # one torch thread, as every test has (a module fixture runs before the per-test one)
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("dann") / "study"
    return dann(run, pair=pair, tsne=True, **SMALL)


def _history(run) -> list[dict]:
    return _io.read_jsonl(run.path / "dann" / "history.jsonl")


def test_match_domains_upsamples_the_smaller_images_with_a_note(pair):
    assert pair.source.input_shape == pair.target.input_shape == (1, 12, 12)
    assert pair.notes == ("the source domain digits was upsampled from 8×8 to 12×12 by "
                          "bilinear interpolation (no detail added; the other domain is "
                          "unchanged)",)
    assert float(pair.source.train.x.min()) >= 0.0 and float(pair.source.train.x.max()) <= 1.0


def test_match_domains_refuses_different_channels(pair):
    rgb = replace(pair.target, train=Split(pair.target.train.x.repeat(1, 3, 1, 1),
                                           pair.target.train.y, pair.target.train.indices))
    with pytest.raises(UsageError, match="1 channel.*3: domain adaptation here needs images "
                                         "with the same channels"):
        match_domains(pair.source, rgb)


def test_the_study_records_every_training_and_epoch(study):
    records = _history(study.run)
    assert [(r["method"], r["epoch"]) for r in records] == [
        (m, e) for m in ("source_only", "dann", "mmd") for e in (0, 1, 2)]
    untrained = [r for r in records if r["epoch"] == 0]
    # one seed, one initial net: epoch 0 is the same for all three trainings
    assert all(r["target_accuracy"] == untrained[0]["target_accuracy"] for r in untrained)
    assert all(r["layers"] == untrained[0]["layers"] for r in untrained)
    for r in records:
        assert set(r["layers"]) == {"hidden", "feature"}
        g = r["layers"]["feature"]
        assert len(g["bandwidths"]) == 5 and g["bandwidths"][0] > 0
        assert g["proxy_a"] == pytest.approx(2 * (1 - 2 * (1 - g["domain_accuracy"])))
    dann_rows = [r for r in records if r["method"] == "dann" and r["epoch"] > 0]
    assert all(r["loss_domain"] is not None and r["penalty"] is None for r in dann_rows)
    mmd_rows = [r for r in records if r["method"] == "mmd" and r["epoch"] > 0]
    assert all(r["penalty"] is not None and r["loss_domain"] is None for r in mmd_rows)
    # two short epochs on 300 images already lift the source accuracy well above the
    # untrained net's (≈ 0.1)
    final = study.summary["final"]
    assert all(final[m]["source_accuracy"] > untrained[0]["source_accuracy"] + 0.3
               for m in final)


def test_the_study_writes_maps_tests_figures_and_a_report(study):
    run = study.run
    summary = json.loads((run.path / "dann" / "dann.json").read_text())
    assert summary["n_gap"] == 60 and summary["methods"] == ["source_only", "dann", "mmd"]
    assert set(summary["permutation_tests"]) == {"untrained", "source_only", "dann", "mmd"}
    for t in summary["permutation_tests"].values():
        assert 0 < t["p_value"] <= 1 and t["n_permutations"] == 200
    assert summary["figures"] == ["figures/dann-accuracy.png", "figures/dann-gap.png",
                                  "figures/dann-gap-bars.png", "figures/dann-maps-hidden.png",
                                  "figures/dann-maps-feature.png"]
    for name in summary["figures"]:
        assert (run.path / name).stat().st_size > 5_000
    from shenjing.analysis.dann import load_domain_map

    assert set(summary["maps"]) == {"hidden", "feature"}
    for layer in ("hidden", "feature"):
        assert set(summary["maps"][layer]) == {"untrained", "source_only", "dann", "mmd"}
        m = load_domain_map(run.path / "dann" / "maps" / f"{layer}-dann.npz")
        assert m.coords.shape == (120, 2) and m.domain.tolist() == [0] * 60 + [1] * 60
        assert m.params["layer"] == layer and m.params["method"] == "tsne"
        assert summary["maps"][layer]["dann"]["knn_domain_mixing"] == pytest.approx(
            m.knn_domain_mixing)
        assert 0.0 <= m.knn_domain_mixing <= 1.0
    stages = run.manifest["stages"]
    assert stages["dann"]["status"] == "done"
    assert "dann" in stages["report"]["sections"]
    page = (run.path / "report.html").read_text()
    assert "Do DANN&#39;s features forget the domain?" in page
    assert "MMD² p (perm.)" in page and "proxy A-distance" in page
    for layer in ("hidden", "feature"):
        assert f"of the {layer} layer&#39;s features of 60 source and 60 target" in page


def test_the_same_seed_gives_the_same_numbers_and_a_resumed_study_matches(pair, study,
                                                                          tmp_path):
    again = dann(tmp_path / "again", pair=pair, tsne=False, report=False, **SMALL)
    assert _history(again.run) == _history(study.run)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        dann(killed, pair=pair, tsne=False, report=False, stop_after_epochs=3, **SMALL)
    done = [(r["method"], r["epoch"]) for r in _io.read_jsonl(killed / "dann" /
                                                                "history.jsonl")]
    assert done == [("source_only", 0), ("source_only", 1), ("source_only", 2), ("dann", 0),
                    ("dann", 1)]
    resumed = dann(killed, pair=pair, tsne=False, report=False, resume=True, **SMALL)
    assert resumed.resumed
    assert _history(resumed.run) == _history(study.run)


def test_bad_options_are_refused_before_anything_is_written(pair, tmp_path):
    run = tmp_path / "r"
    with pytest.raises(UsageError, match=r"--lambda -0.5: expected a finite number ≥ 0"):
        dann(run, pair=pair, lambda_=-0.5, **SMALL)
    with pytest.raises(UsageError, match="--data-dir .*nowhere does not exist"):
        dann(run, data_dir=tmp_path / "nowhere", **SMALL)
    with pytest.raises(UsageError, match="--align 'kl'"):
        dann(run, pair=pair, align="kl", **SMALL)
    with pytest.raises(UsageError, match="--direction"):
        dann(run, direction="mnist-to-usps", **SMALL)
    assert not run.exists()


def test_the_coral_penalty_trains_and_is_recorded(pair, tmp_path):
    result = dann(tmp_path / "coral", pair=pair, align="coral", tsne=False, report=False,
                  epochs=1, batch_size=16, n_gap=60, device="cpu")
    rows = [r for r in _history(result.run) if r["method"] == "coral"]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["penalty"] > 0
    assert result.run.manifest["config"]["align_weight"] == 1000.0


def test_measured_accuracy_is_the_models_own(study, pair):
    """The target accuracy in the history is that of the saved checkpoint on the eval
    split (recomputed here from the weights)."""
    from safetensors.torch import load_file

    from shenjing.models.dann import DANN

    net = DANN((1, 12, 12), 10)
    net.load_state_dict(load_file(str(study.run.path / "dann" / "dann" /
                                      "epoch-002.safetensors")))
    net.eval()
    with torch.no_grad():
        pred = net(pair.target.test.x)[0].argmax(1)
    expected = float((pred == pair.target.test.y).float().mean())
    recorded = study.summary["final"]["dann"]["target_accuracy"]
    assert recorded == pytest.approx(expected, abs=1e-6)
    assert np.isfinite(recorded)


def test_a_figure_that_fails_ends_the_stage_failed_with_the_error(pair, tmp_path,
                                                                  monkeypatch):
    import shenjing.stages.dann as stage
    from shenjing.runs import Run

    def broken(*_args, **_kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(stage, "save_figure", broken)
    with pytest.raises(RuntimeError, match="the disk is full"):
        dann(tmp_path / "r", pair=pair, tsne=False, report=False, epochs=1, batch_size=16,
             n_gap=60, device="cpu")
    record = Run(tmp_path / "r").stage("dann")
    assert record["status"] == "failed" and "the disk is full" in record["error"]


@pytest.mark.slow
def test_demo_study_trains_once_then_reuses_its_run(mnist_dir, tmp_path):
    from shenjing.stages.dann import DEMO_EPOCHS, demo_study

    entry = demo_study(tmp_path, data_dir=mnist_dir, device="cpu")
    assert entry["href"] == "dann-mnist-to-digits/report.html"
    assert (tmp_path / entry["href"]).is_file()
    assert entry["number"].startswith("target accuracy ")
    from shenjing.runs import Run

    assert Run(tmp_path / entry["name"]).stage("dann")["epochs"] == DEMO_EPOCHS
    mtime = (tmp_path / entry["href"]).stat().st_mtime_ns
    assert demo_study(tmp_path, data_dir=mnist_dir, device="cpu") == entry
    assert (tmp_path / entry["href"]).stat().st_mtime_ns == mtime
