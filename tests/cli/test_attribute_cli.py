"""``shenjing attribute`` in-process: the plan line first, the numbers, the files; every bad
option is one line with exit 2 and writes nothing."""

from __future__ import annotations

import pytest

from cli_invoke import invoke
from shenjing import _io
from shenjing.plot.save import figure_formats
from shenjing.stages.attribute import stage_record


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from shenjing.training import train

    return train("simple_cnn", "digits", epochs=1,
                 run=tmp_path_factory.mktemp("attr-cli") / "run", progress=False)


def attribute_files(run):
    folder = run.path / "attribute"
    files = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    return files + sorted(p.name for p in run.figures_dir.glob("attribute-*"))


def test_attribute_prints_the_plan_the_numbers_and_the_files(run, capsys):
    with figure_formats("png"):
        code, out, err = invoke(capsys, "attribute", str(run.path), "--samples", "1",
                                "--method", "ig,saliency", "--epochs", "0,final",
                                "--steps", "8", "--n-faithfulness", "12", "--target",
                                "label", "--baseline", "mean", "--device", "cpu")
    assert code == 0, err
    plan, *lines = out.splitlines()
    assert plan == ("attribute: 1 input(s) × 2 method(s) × 2 epoch(s); IG 8 steps; checks "
                    "on epoch 1: randomization on, deletion/insertion over 12 test inputs")
    summary = stage_record(_io.read_json(run.path / "attribute" / "summary.json"))
    assert summary["options"]["target"] == "label" and summary["options"]["baseline"] == "mean"
    label = int(run.data.test.y[1])
    assert summary["maps"]["saliency"]["1"]["targets"] == [label]
    p = summary["maps"]["integrated_gradients"]["1"]["probabilities"][0]
    assert f"integrated_gradients, epoch 1: target probability {p:.2f}" in out
    r = summary["randomization"]["saliency"]
    assert any(line.startswith(f"saliency randomization test: "
                               f"{'PASS' if r['passed'] else 'FAIL'} — Spearman ")
               for line in lines)
    f = summary["faithfulness"]["integrated_gradients"]
    assert (f"integrated_gradients deletion AUC {f['deletion_auc']:.3f} (random "
            f"{f['deletion_auc_random']:.3f})") in out
    wrote = [line for line in lines if line.startswith("wrote ")]
    assert wrote and lines[-1].endswith("summary.json")
    assert any(line.endswith("attribute-maps-test1.png") for line in wrote)


def test_no_randomization_and_no_faithfulness_skip_the_checks(run, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    with figure_formats("png"):
        code, out, err = invoke(capsys, "attribute", str(copy), "--samples", "0",
                                "--method", "saliency", "--epochs", "final",
                                "--no-randomization", "--n-faithfulness", "0",
                                "--device", "cpu")
    assert code == 0, err
    assert "randomization off, deletion/insertion over 0 test inputs" in out
    assert "randomization test" not in out and "deletion AUC" not in out
    summary = stage_record(_io.read_json(copy / "attribute" / "summary.json"))
    assert summary["randomization"] == {} and summary["faithfulness"] == {}
    assert summary["figures"] == ["figures/attribute-maps-test0.png"]


@pytest.mark.parametrize(("args", "match"), [
    (["--samples", "x"], "--samples 'x': expected a whole number"),
    (["--samples", "99999"], "--samples 99999: sample index 99999 is out of range"),
    (["--method", "lime"], "--method 'lime': expected one of"),
    (["--steps", "0"], "--steps 0: expected a whole number from 1"),
    (["--target", "11"], "--target 11: class index out of range"),
    (["--target", "best"], "--target 'best': expected predicted, label or a class index"),
    (["--baseline", "blur"], "--baseline 'blur': expected one of zeros, mean"),
    (["--layer", "fc2", "--method", "gradcam"], "--layer fc2: Grad-CAM needs a spatial"),
    (["--n-faithfulness", "-3"], "--n-faithfulness -3: expected a whole number"),
    (["--epochs", "7"], "epoch"),
])
def test_bad_options_are_one_line_exit_2_and_write_nothing(run, capsys, args, match):
    before = attribute_files(run)
    code, out, err = invoke(capsys, "attribute", str(run.path), "--device", "cpu",
                            "--n-faithfulness", "4", *args)
    assert code == 2, (out, err)
    assert match in err and len(err.strip().splitlines()) == 1, err
    assert attribute_files(run) == before
