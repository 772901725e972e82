"""TensorBoard Projector export: the files, their rows and the sprite."""

from __future__ import annotations

import numpy as np
import pytest

from shenjing.analysis.projector import export_projector, sprite_image
from shenjing.errors import UsageError


def test_export_writes_tensors_metadata_sprite_and_config(tmp_path):
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    images = np.random.default_rng(0).random((4, 1, 5, 5))
    out = export_projector(tmp_path / "p", {"fc1@epoch5": feats}, labels=[0, 1, 1, 0],
                           indices=[10, 11, 12, 13], classes=["zero", "one"], images=images)
    rows = (out / "fc1_epoch5.tsv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].split("\t") == ["3", "4", "5"]
    meta = (out / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "index\tlabel\tclass" and meta[2] == "11\t1\tone"
    config = (out / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "fc1@epoch5"' in config and 'tensor_path: "fc1_epoch5.tsv"' in config
    assert "single_image_dim: 5" in config
    from PIL import Image

    assert Image.open(out / "sprite.png").size == (10, 10)  # 2×2 grid of 5×5 images


def test_sprite_tiles_images_in_order():
    imgs = np.zeros((3, 2, 2))
    imgs[1] = 1.0
    grid, size = sprite_image(imgs)
    assert size == (2, 2) and grid.shape == (4, 4)
    assert (grid[0:2, 2:4] == 255).all() and (grid[0:2, 0:2] == 0).all()


def test_mismatched_rows_are_refused(tmp_path):
    with pytest.raises(UsageError, match="'b' has 2, others 3"):
        export_projector(tmp_path, {"a": np.zeros((3, 2)), "b": np.zeros((2, 2))})
