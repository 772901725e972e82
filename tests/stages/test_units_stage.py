"""The units stage: its files, run.json numbers that match the figures, bad inputs that write
nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from shenjing.analysis.units import load_top_units, top_activations
from shenjing.errors import LayerNotFoundError, UsageError
from shenjing.models import build_model
from shenjing.runs import Run
from shenjing.stages.units import parse_channels, units_stage


def make_cnn_run(path):
    """A simple_cnn run on digits with two checkpoints (0: untrained, 1: perturbed)."""
    run = Run.create(path, model={"name": "simple_cnn", "input_shape": [1, 8, 8],
                                  "n_outputs": 10, "kwargs": {}},
                     data={"name": "digits", "seed": 0},
                     classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = build_model("simple_cnn", (1, 8, 8), 10)
    run.save_checkpoint(0, model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    run.save_checkpoint(1, model)
    return run


@pytest.fixture
def run(tmp_path):
    return make_cnn_run(tmp_path / "cnn")


def test_stage_writes_files_and_run_json_numbers(run):
    result = units_stage(run, layer="conv2", top=4, channels="0:3", n=60, device="cpu")
    names = sorted(p.name for p in (run.path / "units").iterdir())
    assert names == ["units-conv2-e000.json", "units-conv2-e000.npz",
                     "units-conv2-e001.json", "units-conv2-e001.npz"]
    for e in (0, 1):
        for fmt in ("png", "svg"):
            assert (run.figures_dir / f"units-conv2-e{e:03d}.{fmt}").is_file()
    rec = json.loads((run.path / "run.json").read_text())["stages"]["units"]
    assert rec["status"] == "done" and rec["layer"] == "conv2" and rec["epochs"] == [0, 1]
    # the numbers agree with an independent call on the same subset and model
    data = run.data.test.subset(60, seed=0)
    ref = top_activations(run.model(1), data, "conv2", k=4, units=[0, 1, 2], batch_size=7)
    got = rec["by_epoch"]["1"]["units"]
    assert [u["unit"] for u in got] == [0, 1, 2]
    np.testing.assert_allclose([u["values"] for u in got], ref.values, atol=1e-4)
    split_idx = data.indices.numpy()
    assert [u["indices"] for u in got] == split_idx[ref.indices].tolist()
    assert [u["purity"] for u in got] == ref.purity().tolist()
    assert rec["by_epoch"]["1"]["receptive_field"]["size"] == [8, 8]
    saved = load_top_units(run.path / "units" / "units-conv2-e001")
    np.testing.assert_array_equal(saved.indices, ref.indices)
    assert saved.extra["split_indices"] == split_idx[ref.indices].tolist()
    assert result.epochs[-1].field.stride == (2, 2)
    assert "mean purity" in result.summary()


def test_output_layer_has_one_unit_per_class_and_no_field(run):
    result = units_stage(run, layer="output", top=3, n=40, epochs=["final"], device="cpu")
    (e,) = result.epochs
    assert e.top.n_units == 10 and e.field is None and e.top.positions is None


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"layer": "conv9"}, LayerNotFoundError, "conv9.*conv2"),
    ({"layer": "conv1", "top": 0}, UsageError, "--top 0"),
    ({"layer": "conv1", "reduce": "median"}, UsageError, "--reduce"),
    ({"layer": "conv1", "channels": "30:40"}, UsageError, "--channels.*32 units"),
    ({"layer": "conv1", "n": 0}, UsageError, "--n 0"),
])
def test_bad_inputs_write_nothing(run, kwargs, error, match):
    before = (run.path / "run.json").read_bytes()
    with pytest.raises(error, match=match):
        units_stage(run, device="cpu", **kwargs)
    assert (run.path / "run.json").read_bytes() == before
    assert not (run.path / "units").exists()
    assert not list((run.path / "figures").glob("units-*")) if (run.path / "figures").exists() \
        else True


def test_parse_channels():
    assert parse_channels("0:3") == [0, 1, 2] and parse_channels("4,2") == [4, 2]
    with pytest.raises(UsageError, match="--channels '3:1'"):
        parse_channels("3:1")


def test_report_section_shows_each_figure_with_its_numbers(run):
    from shenjing.report.sections.units import units_section

    assert units_section(run) is None  # nothing computed yet
    units_stage(run, layer="conv1", top=3, channels="0:2", n=30, device="cpu")
    section = units_section(run)
    assert section.title == "What each unit responds to"
    kinds = [b.kind for b in section.blocks]
    assert kinds == ["image", "table", "image", "table"]  # epoch 0, then epoch 1
    rec = json.loads((run.path / "units" / "units-conv1-e001.json").read_text())
    table = section.blocks[3]
    assert [r[0] for r in table.rows] == [0, 1]
    assert table.rows[0][1] == f"{rec['units'][0]['values'][0]:.4g}"
    assert table.rows[0][2] == rec["units"][0]["purity"]
    assert "3×3 px" in section.blocks[2].caption and "purity" in section.blocks[2].caption
