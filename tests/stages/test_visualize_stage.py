"""Stage ``visualize`` on a tiny trained simple_cnn run on digits: files, run.json numbers,
the report section; bad input writes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing import _io
from shenjing.analysis.visualize import load_feature_visualization
from shenjing.errors import LayerNotFoundError, UsageError
from shenjing.plot.save import figure_formats
from shenjing.stages.visualize import visualize_stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from shenjing.training import train

    run = train("simple_cnn", "digits", epochs=1, run=tmp_path_factory.mktemp("sc") / "run",
                progress=False, device="cpu")
    with figure_formats("png"):
        result = visualize_stage(run, layer="conv2", channels=[0, 3], epochs=("init", "final"),
                                 steps=40, device="cpu")
    return run, result


def test_files_and_record(trained):
    run, result = trained
    epochs = list(result.epochs)
    assert epochs == [0, 1]
    names = sorted(p.name for p in (run.path / "visualize").iterdir())
    assert names == ["summary.json", "visualize-conv2-e000.json", "visualize-conv2-e000.npz",
                     "visualize-conv2-e001.json", "visualize-conv2-e001.npz"]
    assert sorted(p.name for p in run.figures_dir.glob("visualize-*")) == [
        "visualize-conv2-e000.png", "visualize-conv2-e001.png"]
    stage = _io.read_json(run.path / "run.json")["stages"]["visualize"]
    assert stage["status"] == "done" and stage["steps"] == 40 and stage["seed"] == 0
    assert stage["transforms"] == {"jitter_px": 1, "scale": [0.95, 1.05], "rotate_deg": 10.0}
    fv = load_feature_visualization(run.path / "visualize" / "visualize-conv2-e001.json")
    rows = stage["units"]["1"]
    assert [r["unit"] for r in rows] == [0, 3]
    for r, reached, best, index in zip(rows, fv.reached, fv.best_real, fv.best_index,
                                       strict=True):
        assert r["reached"] == pytest.approx(float(reached), abs=1e-4)
        assert r["best_real"] == pytest.approx(float(best), abs=1e-4)
        assert r["best_index"] == int(index)
    # the best real activation, recomputed independently with a plain forward hook
    model = run.model(1, device="cpu").eval()
    seen = []
    handle = model.get_submodule("conv2").register_forward_hook(
        lambda m, a, o: seen.append(o.detach()))
    import torch
    with torch.no_grad():
        model(run.data.test.x)
    handle.remove()
    means = seen[0].mean(dim=(2, 3))[:, [0, 3]].numpy()
    np.testing.assert_allclose(fv.best_real, means.max(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fv.best_index, means.argmax(0))
    assert (fv.reached > fv.noise).all()


def test_report_section(trained):
    from shenjing.report.sections.visualize import visualize_section

    run, result = trained
    section = visualize_section(run)
    assert section is not None and section.title.startswith("What each unit would like")
    images = [b for b in section.blocks if getattr(b, "kind", "") == "image"]
    assert len(images) == 2
    fv = result.visualizations[-1]
    caption = images[-1].caption
    assert f"unit 3: {fv.reached[1]:.3g} vs {fv.best_real[1]:.3g}" in caption
    table = next(b for b in section.blocks if getattr(b, "kind", "") == "table")
    assert len(table.rows) == 4


def test_bad_input_writes_nothing(tmp_path):
    from shenjing.training import train

    run = train("mlp", "digits", epochs=1, run=tmp_path / "run", progress=False,
                device="cpu")
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(LayerNotFoundError, match="fc9"):
        visualize_stage(run, layer="fc9", channels=[0], device="cpu")
    with pytest.raises(UsageError, match="--channels 10 is out of range"):
        visualize_stage(run, layer="output", channels=[10], device="cpu")
    with pytest.raises(UsageError, match="--steps"):
        visualize_stage(run, layer="output", channels=[0], steps=0, device="cpu")
    assert sorted(p.name for p in run.path.iterdir()) == before
    assert "visualize" not in _io.read_json(run.path / "run.json").get("stages", {})
