"""Captions and headers that must fit the run: input scaling, the share of parameters the
dynamics track, regression without accuracy, long epoch lists, CKA files by their kind."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from shenjing import _io
from shenjing.report import build_report
from shenjing.report.sections.dynamics import dynamics_section
from shenjing.report.sections.embed import embed_section as embedding_section
from shenjing.report.sections.run import overview_section, training_section
from shenjing.runs import Run


def copy_run(run: Run, tmp_path) -> Run:
    shutil.copytree(run.path, tmp_path / "run")
    return Run(tmp_path / "run")


def edit_manifest(run: Run, **fields) -> None:
    manifest = _io.read_json(run.path / "run.json")
    manifest.update(fields)
    _io.write_json(run.path / "run.json", manifest)


def overview_rows(run: Run) -> dict[str, object]:
    table = overview_section(run).blocks[0]
    return {row[0]: row[1] for row in table.rows}


@pytest.mark.parametrize(("spec", "expected"), [
    ({"name": "mnist", "normalize": "standard"}, "(x − 0.1307)/0.3081 per pixel, x in [0, 1]"),
    ({"name": "fashion-mnist", "normalize": "standard"},
     "(x − 0.286)/0.353 per pixel, x in [0, 1]"),
    ({"name": "mnist", "normalize": "unit"}, "pixels scaled to [0, 1]"),
    ({"name": "digits", "normalize": "none"}, "raw values, not rescaled"),
    ({"name": "digits", "normalize": "standard", "mean": 0.3, "std": 0.4},
     "(x − 0.3)/0.4 per pixel, x in [0, 1]"),
])
def test_overview_states_the_input_scaling(tiny_run, tmp_path, spec, expected):
    run = copy_run(tiny_run, tmp_path)
    edit_manifest(run, data=spec)
    assert overview_rows(run)["input scaling"] == expected


def test_mnist_constants_are_the_ones_the_loader_uses(tiny_run, tmp_path):
    from shenjing.data.mnist import SOURCES

    run = copy_run(tiny_run, tmp_path)
    edit_manifest(run, data={"name": "mnist", "normalize": "standard"})
    src = SOURCES["mnist"]
    assert overview_rows(run)["input scaling"].startswith(f"(x − {src.mean})/{src.std}")


def test_no_scaling_row_when_the_spec_does_not_record_one(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    edit_manifest(run, data={"name": "digits", "seed": 0})  # a run written before normalize
    assert "input scaling" not in overview_rows(run)


def test_dynamics_say_what_share_of_the_parameters_they_cover(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    untracked = [f"lstm.weight_ih_l{i}" for i in range(14)]
    _io.write_json(run.path / "dynamics" / "dynamics.json", {
        "status": {"moving": ["fc"], "settled": []},
        "coverage": {"n_tracked": 650, "n_total": 24714, "share": 650 / 24714,
                     "untracked": untracked}})
    notes = [b for b in dynamics_section(run).blocks if b.kind == "note"]
    assert notes[0].level == "warning"
    assert notes[0].text.startswith("The per-layer dynamics cover 650 of the model's 24,714 "
                                    "parameters (2.6%). Not tracked: lstm.weight_ih_l0, ")
    assert notes[0].text.endswith("lstm.weight_ih_l7 and 6 more.")


def test_dynamics_captions_stay_short_for_many_layers(tiny_run, tmp_path):
    from PIL import Image

    run = copy_run(tiny_run, tmp_path)
    names = [f"layers.{i}" for i in range(100)]
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {
        "moving": names, "settled": [],
        "last_update_ratio": {n: (i + 1) / 1000 for i, n in enumerate(names)}}})
    for stem in ("dynamics-layers", "dynamics-status"):
        Image.new("L", (2, 2)).save(run.figures_dir / f"{stem}.png")
    layers, status = [b.caption for b in dynamics_section(run).blocks if b.kind == "image"]
    assert layers.endswith("Last relative updates: largest layers.99 0.1, layers.98 0.099, "
                           "layers.97 0.098, layers.96 0.097, layers.95 0.096, layers.94 "
                           "0.095, layers.93 0.094, layers.92 0.093 (100 layers in all, in "
                           "the figure).")
    assert status.endswith("Still moving: layers.0, layers.1, layers.2, layers.3, layers.4, "
                           "layers.5, layers.6, layers.7 and 92 more; settled: none.")


def test_full_coverage_is_a_plain_statement(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    _io.write_json(run.path / "dynamics" / "dynamics.json", {
        "status": {}, "coverage": {"n_tracked": 10, "n_total": 10, "share": 1.0,
                                   "untracked": []}})
    (note,) = [b for b in dynamics_section(run).blocks if b.kind == "note"]
    assert (note.level, note.text) == (
        "info", "The per-layer dynamics cover 10 of the model's 10 parameters (100.0%).")


def test_regression_training_caption_has_no_accuracy(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    edit_manifest(run, task="regression")
    records = [{"epoch": 0, "test_loss": 4.0}, {"epoch": 1, "train_loss": 1.0, "test_loss": 0.5}]
    (run.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    caption = training_section(run).blocks[0].caption
    assert "accuracy" not in caption
    assert caption == ("What this shows: how the training and test loss fell, epoch by epoch "
                       "(epoch 0 = the untrained net). Test loss went from 4 at epoch 0 to "
                       "0.5 after epoch 1.")


def test_header_summarises_a_long_list_of_epochs(tmp_path):
    run = Run.create(tmp_path / "long", model={"name": "mlp"}, data={"name": "spirals"})
    for e in range(151):
        (run.checkpoints_dir / f"epoch-{e:03d}.safetensors").write_bytes(b"")
    assert run.epochs == list(range(151))
    html = build_report(run).path.read_text()
    header = re.search(r'<div class="sub">(.*?)</div>', html, re.S).group(1)
    assert "epochs 0–150 (151 checkpoints)" in header
    assert "0, 1, 2" not in html


def test_epoch_summary():
    from shenjing.report.provenance import epoch_summary

    assert epoch_summary([0, 1, 5]) == "0, 1, 5"
    assert epoch_summary(range(0, 151, 10)) == "0, 10, 20 … 150 (16 checkpoints)"
    assert epoch_summary(range(3, 12)) == "3–11 (9 checkpoints)"
    assert epoch_summary([]) == "none"


def test_cka_captions_follow_the_file_kind_not_the_layer_name(tmp_path):
    from PIL import Image

    run = Run.create(tmp_path / "cka", model={"name": "mlp"}, data={"name": "digits"})
    _io.save_npz(run.path / "embeddings" / "encoder.layers.0-pca-epoch-001.npz",
                 coords=np.zeros((3, 2), "f4"), indices=np.arange(3),
                 labels=np.array([0, 1, 2]))
    for stem in ("cka-epochs-encoder.layers.0", "cka-layers-epoch-002", "cka-runs-other"):
        Image.new("L", (2, 2)).save(run.figures_dir / f"{stem}.png")
    captions = [b.caption for b in embedding_section(run).blocks if b.kind == "image"]
    head = ("What this shows: linear CKA similarity (1 = the same representation up to "
            "rotation and scale) ")
    assert captions == [head + "of the encoder.layers.0 layer between epochs.",
                        head + "between layers at epoch 2.",
                        head + "between the layers of this run and of the run other."]


def test_a_map_of_samples_outside_the_test_split_shows_no_wrong_thumbnails(tiny_run,
                                                                         tmp_path):
    """Thumbnails are the hovered sample's own image or none: a map of train samples once
    showed test image 0 for every point."""
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run.path / "embeddings")
    train = run.data.train
    _io.save_npz(run.path / "embeddings" / "relu1-pca-epoch-002.npz",
                 coords=np.zeros((5, 2), "f4"), indices=train.indices[:5].numpy(),
                 labels=train.y[:5].numpy())
    blocks = embedding_section(run).blocks
    assert [b.kind for b in blocks] == ["plotly"]
    assert blocks[0].hover_sprite is None
    assert ("hover a point for its class and sample index (no input images: the map's "
            "samples are not in the run's test split)") in blocks[0].caption


def test_thumbnails_are_the_hovered_samples_own_images(tiny_run, tmp_path):
    from PIL import Image

    from shenjing.report.blocks import Asset

    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run.path / "embeddings")
    test = run.data.test
    pick = np.array([7, 3, 11])
    _io.save_npz(run.path / "embeddings" / "relu1-pca-epoch-002.npz",
                 coords=np.zeros((3, 2), "f4"), indices=test.indices[pick].numpy(),
                 labels=test.y[pick].numpy())
    asset, plot = embedding_section(run).blocks
    assert isinstance(asset, Asset) and plot.hover_sprite["asset"] == asset.id
    import base64
    import io

    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(asset.src.split(",", 1)[1]))))
    tile, cols = plot.hover_sprite["tile"], plot.hover_sprite["cols"]
    x = test.x[pick, 0].numpy()
    lo, hi = x.min(), x.max()
    side = x.shape[-1]
    centres = ((np.arange(side) + 0.5) * tile / side).astype(int)  # a pixel's centre, upscaled
    for k in range(3):  # sprite cell k is point k's own image
        r, c = divmod(k, cols)
        cell = sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
        expected = (x[k] - lo) / (hi - lo) * 255
        np.testing.assert_allclose(cell[np.ix_(centres, centres)], expected, atol=1)
