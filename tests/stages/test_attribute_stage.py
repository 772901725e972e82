"""Stage ``attribute`` on a tiny simple_cnn trained 1 epoch on digits: files, the numbers in
run.json against an independent forward pass, figure content, the report section; bad input
writes nothing; an error inside the stage records ``failed``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing import _io
from shenjing.errors import UsageError
from shenjing.plot.save import figure_formats
from shenjing.stages import attribute as stage_module
from shenjing.stages.attribute import attribute_stage, check_attribute_options, stage_record


def written(run):
    folder = run.path / "attribute"
    found = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    return found + sorted(p.name for p in run.figures_dir.glob("attribute-*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of simple_cnn on digits and one stage call, every figure's titles kept."""
    from shenjing.training import train

    run = train("simple_cnn", "digits", epochs=1, run=tmp_path_factory.mktemp("attr") / "run",
                progress=False)
    drawn: dict[str, list[str]] = {}
    original = stage_module.save_figure

    def keep(fig, folder, stem, **kw):
        drawn[stem] = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text()
                                                            if fig._suptitle else ""]
        return original(fig, folder, stem, **kw)

    with pytest.MonkeyPatch.context() as mp, figure_formats("png"):
        mp.setattr(stage_module, "save_figure", keep)
        result = attribute_stage(run, samples=(0, 3), methods=("ig", "gradcam"), steps=16,
                                 n_faithfulness=24, device="cpu")
    return run, result, drawn


def test_the_stage_writes_its_files_and_records_done_with_the_numbers(trained):
    run, result, _ = trained
    assert written(run) == [
        "attribute-e000.json", "attribute-e000.npz", "attribute-e001.json",
        "attribute-e001.npz", "summary.json",
        "attribute-faithfulness.png", "attribute-maps-test0.png", "attribute-maps-test3.png",
        "attribute-randomization-gradcam.png",
        "attribute-randomization-integrated_gradients.png"]
    rec = run.stage("attribute")
    assert rec["status"] == "done" and rec["epochs"] == [0, 1]
    assert rec["methods"] == ["integrated_gradients", "gradcam"]
    assert set(rec["randomization_passed"]) == {"integrated_gradients", "gradcam"}
    f = rec["faithfulness"]["integrated_gradients"]
    assert f["n"] == 24 and 0 <= f["deletion_auc"] <= 1 and 0 <= f["insertion_auc"] <= 1
    assert 0 <= rec["completeness_max"]["integrated_gradients"] < 0.5
    summary = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    assert summary["options"]["steps"] == 16 and summary["options"]["samples"] == [0, 3]
    assert summary["options"]["layer"] == "pool2"  # the analysis's default: last spatial
    assert "figures/attribute-maps-test3.png" in summary["figures"]
    assert any(line.startswith("integrated_gradients randomization test: ")
               for line in result.lines)


def test_saved_probabilities_and_predictions_equal_an_independent_forward(trained):
    from shenjing.analysis.attribute import load_attribution

    run, _, _ = trained
    x = run.data.test.x[[0, 3]]
    study = load_attribution(run.path / "attribute")
    rec = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    for epoch, saved in zip((0, 1), study.epochs, strict=True):
        with torch.no_grad():
            probs = torch.softmax(run.model(epoch)(x), dim=1).numpy()
        assert saved.epoch == epoch
        np.testing.assert_allclose(saved.inputs, x.numpy())
        np.testing.assert_array_equal(saved.predictions, probs.argmax(1))
        np.testing.assert_array_equal(saved.targets, probs.argmax(1))  # target = predicted
        assert saved.maps["integrated_gradients"].maps.shape == (2, 8, 8)
        numbers = rec["maps"]["integrated_gradients"][str(epoch)]["probabilities"]
        np.testing.assert_allclose(numbers, probs[[0, 1], probs.argmax(1)], atol=1e-4)


def test_the_saved_study_loads_back_with_the_checks(trained):
    from shenjing.analysis.attribute import load_attribution

    run, _, _ = trained
    study = load_attribution(run.path / "attribute")
    assert study.epoch_numbers == (0, 1)
    assert tuple(study.epochs[-1].maps) == ("integrated_gradients", "gradcam")
    last = study.epochs[-1]
    rec = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    r = rec["randomization"]["integrated_gradients"]
    assert last.randomization["integrated_gradients"].passed == r["passed"]
    np.testing.assert_allclose(
        np.nan_to_num(last.randomization["integrated_gradients"].spearman).mean(1),
        r["spearman"], atol=1e-4)
    f = last.faithfulness["integrated_gradients"]
    assert f.deletion.shape == (24, 21)
    assert float(f.deletion_auc.mean()) == pytest.approx(
        rec["faithfulness"]["integrated_gradients"]["deletion_auc"], abs=1e-4)
    assert study.epochs[0].randomization == {} and study.epochs[0].faithfulness == {}


def test_every_figure_carries_its_numbers(trained):
    run, _, drawn = trained
    rec = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    maps = drawn["attribute-maps-test3"]
    # rows = 2 methods, columns = input + 2 epochs
    assert len(maps) == 2 * 3 + 1
    p = rec["maps"]["integrated_gradients"]["1"]["probabilities"][1]
    assert any(f"p {p:.3f}" in t and "completeness err" in t for t in maps), maps
    rand = drawn["attribute-randomization-integrated_gradients"]
    assert len(rand) == 1 + 4 + 1 + 1  # trained + 4 stages + curves + suptitle
    r = rec["randomization"]["integrated_gradients"]
    verdict = r["outcome"].upper()
    assert any(t.startswith(f"{verdict}: Spearman {r['spearman'][0]:.2f} → ") for t in rand)
    faith = drawn["attribute-faithfulness"]
    assert faith[0].startswith("Deletion") and faith[1].startswith("Insertion")


def test_the_report_section_shows_the_verdicts_and_aucs(trained):
    from shenjing.report.blocks import Image, Note, Table
    from shenjing.report.sections.attribute import attribute_section

    run, _, _ = trained
    section = attribute_section(run)
    assert section is not None and section.title == "What the network looks at"
    images = [b for b in section.blocks if isinstance(b, Image)]
    assert len(images) == 5 and all(b.src.startswith("data:image/png") for b in images)
    rec = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    notes = " ".join(b.text for b in section.blocks if isinstance(b, Note))
    for method, name in (("integrated_gradients", "IG"), ("gradcam", "Grad-CAM")):
        r = rec["randomization"][method]
        words = {"pass": f"{name}'s maps change as layers",
                 "partial": f"{name} passes only in part",
                 "fail": f"{name} FAILS: the maps"}[r["outcome"]]
        assert words in notes and f"→ {r['spearman'][-1]:.2f}" in notes
    table = next(b for b in section.blocks if isinstance(b, Table))
    f = rec["faithfulness"]["integrated_gradients"]
    assert ["IG", f"{f['deletion_auc']:.3f}"] == table.rows[0][:2] or \
        ["IG", f"{f['deletion_auc']:.3f}"] in [r[:2] for r in table.rows]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"samples": (9999,)}, r"--samples 9999: sample index 9999 is out of range"),
    ({"methods": ("igg",)}, r"--method 'igg': expected one of"),
    ({"steps": 0}, r"--steps 0: expected a whole number from 1"),
    ({"target": 10}, r"--target 10: class index out of range: the run has 10 classes"),
    ({"target": "best"}, r"--target 'best': expected predicted, label or a class index"),
    ({"baseline": "noise"}, r"--baseline 'noise': expected one of zeros, mean"),
    ({"layer": "fc1", "methods": ("gradcam",)},
     r"--layer fc1: Grad-CAM needs a spatial layer .* gives \(1, 128\); spatial layers: "
     r"conv1, .*e.g. --layer pool2"),
    ({"layer": "conv9", "methods": ("gradcam",)}, r"unknown --layer 'conv9'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, kwargs, match):
    from shenjing.training import train

    run = train("simple_cnn", "digits", epochs=1, run=tmp_path / "run", progress=False)
    before = run.stage("attribute")
    with pytest.raises(UsageError, match=match) as info:
        attribute_stage(run, **{"samples": (0,), "n_faithfulness": 4, "device": "cpu",
                                **kwargs})
    assert "\n" not in str(info.value)
    assert written(run) == [] and run.stage("attribute") == before


def test_options_alone_are_checked_without_a_run():
    opts = check_attribute_options(samples=["0", "2", "0"], methods="ig", target="3")
    assert opts.samples == (0, 2) and opts.methods == ("integrated_gradients",)
    assert opts.target == 3
    with pytest.raises(UsageError, match="--n-faithfulness -1"):
        check_attribute_options(samples=[0], methods="ig", n_faithfulness=-1)


def test_an_error_inside_the_stage_records_failed(tmp_path, monkeypatch):
    import shenjing.analysis.attribute as lib
    from shenjing.training import train

    run = train("simple_cnn", "digits", epochs=1, run=tmp_path / "run", progress=False)

    def broken(*_a, **_k):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(lib, "attribute", broken)
    with pytest.raises(RuntimeError, match="the model broke"):
        attribute_stage(run, samples=(0,), methods=("saliency",), device="cpu")
    rec = run.stage("attribute")
    assert rec["status"] == "failed" and "the model broke" in rec["error"]


def test_the_verdict_in_words_for_a_method_that_fails():
    from shenjing.report.sections.attribute import verdict_text

    rec = {"layers": ["fc2", "fc1"], "spearman": [0.98, 0.97], "ssim": [0.95, 0.93],
           "passed": False, "threshold": 0.5}
    assert verdict_text("integrated_gradients", rec) == (
        "IG FAILS: the maps do not depend on the model — they stay alike when its weights "
        "are destroyed: Spearman 0.98 → 0.97, SSIM 0.95 → 0.93 as 2 layers are "
        "re-initialised from the output down (pass: final Spearman and SSIM both < 0.50; "
        "partial: one of them).")
    assert verdict_text("saliency", {**rec, "passed": True}).startswith(
        "Saliency's maps change as layers are randomized: Spearman 0.98 → 0.97")
