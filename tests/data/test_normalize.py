"""``normalize``: how pixels become inputs, per mode, checked against the raw bytes.

The expected tensors are computed here from the IDX bytes (read with numpy, not with
shenjing's reader) in float64, and compared with a stated tolerance; the default mode is
also checked bit for bit against the formula shenjing used before ``normalize`` existed.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from shenjing.data import load_dataset, load_from_spec
from shenjing.data.idx import write_idx
from shenjing.errors import UsageError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760
TOL = {"rtol": 1e-6, "atol": 1e-6}  # float32 rounding of values up to 255


def _idx_bytes(path) -> np.ndarray:
    """An IDX file's uint8 payload, shaped by its header (parsed here, independently)."""
    raw = gzip.decompress(path.read_bytes())
    assert raw[:3] == b"\x00\x00\x08"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def _expected(raw: np.ndarray, mode: str, top: float, mean: float, std: float) -> np.ndarray:
    x = raw.astype(np.float64)
    if mode == "none":
        return x
    if mode == "unit":
        return x / top
    return (x / top - mean) / std


@pytest.fixture(scope="module")
def mnist_bytes(mnist_dir):
    return (_idx_bytes(mnist_dir / "t10k-images-idx3-ubyte.gz"),
            _idx_bytes(mnist_dir / "t10k-labels-idx1-ubyte.gz"))


@pytest.mark.parametrize("mode", ["standard", "unit", "none"])
def test_mnist_tensors_per_mode_match_the_idx_bytes(mnist_dir, mnist_bytes, mode):
    images, labels = mnist_bytes
    ds = load_dataset("mnist", data_dir=mnist_dir, normalize=mode)
    expected = _expected(images, mode, 255.0, MNIST_MEAN, MNIST_STD)
    for split in (ds.train, ds.test):
        idx = split.indices.numpy()
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        np.testing.assert_allclose(split.x[:, 0].numpy(), expected[idx], **TOL)
        assert split.y.tolist() == labels[idx].tolist()
    assert ds.spec["normalize"] == mode and f"normalize={mode!r}" in ds.notes[-1]
    # the report reads the formula and, for standard, the constants from the spec
    assert ds.spec["pixels"] == {"none": "raw values 0..255 as float32",
                                 "unit": "x / 255, in [0, 1]",
                                 "standard": "standardised: (x / 255 − 0.1307) / 0.3081"}[mode]
    assert (ds.spec.get("mean"), ds.spec.get("std")) == (
        (MNIST_MEAN, MNIST_STD) if mode == "standard" else (None, None))
    # black and white pixels map to the ends of pixel_range (both occur in MNIST)
    lo, hi = ds.pixel_range
    assert float(ds.train.x.min()) == pytest.approx(lo, abs=1e-6)
    assert float(ds.train.x.max()) == pytest.approx(hi, abs=1e-6)
    assert (lo, hi) == pytest.approx({"none": (0, 255), "unit": (0, 1),
                                      "standard": (-MNIST_MEAN / MNIST_STD,
                                                   (1 - MNIST_MEAN) / MNIST_STD)}[mode])


def test_mnist_default_is_standard_bit_for_bit_as_before(mnist_dir, mnist_bytes):
    """Existing runs are unchanged: no ``normalize`` gives exactly the old float32 formula."""
    images, _ = mnist_bytes
    ds = load_dataset("mnist", data_dir=mnist_dir)
    before = (images.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    assert ds.spec["normalize"] == "standard"
    assert torch.equal(ds.test.x[:, 0], torch.from_numpy(before[ds.test.indices.numpy()]))


@pytest.mark.parametrize("mode", ["standard", "unit", "none"])
def test_mnist_spec_round_trip_through_json(mnist_dir, mode):
    ds = load_dataset("mnist", data_dir=mnist_dir, normalize=mode, seed=3)
    spec = json.loads(json.dumps(ds.spec))  # as run.json stores it
    again = load_from_spec(spec)
    assert again.spec["normalize"] == mode
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.x, ds.test.x)
    assert torch.equal(again.test.indices, ds.test.indices)


def test_a_spec_from_before_normalize_reloads_standardised(mnist_dir):
    """run.json written before ``normalize`` existed: no key, the old ``pixels`` text."""
    old_spec = {"name": "mnist", "data_dir": str(mnist_dir), "seed": 0,
                "pixels": "standardised (x - 0.1307) / 0.3081"}
    ds = load_from_spec(old_spec)
    standard = load_dataset("mnist", data_dir=mnist_dir, normalize="standard")
    assert ds.spec["normalize"] == "standard" and torch.equal(ds.test.x, standard.test.x)


def test_fashion_mnist_uses_its_own_constants(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 4, 4), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(60, dtype=np.uint8) % 10)
    for mode in ("standard", "unit", "none"):
        ds = load_dataset("fashion-mnist", data_dir=tmp_path, normalize=mode)
        idx = ds.train.indices.numpy()
        np.testing.assert_allclose(ds.train.x[:, 0].numpy(),
                                   _expected(images, mode, 255.0, FASHION_MEAN,
                                             FASHION_STD)[idx], **TOL)
        assert load_from_spec(ds.spec).spec["normalize"] == mode
    default = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "standardised: (x / 255 − 0.286) / 0.353" in default.notes[-1]
    assert (default.spec["mean"], default.spec["std"]) == (FASHION_MEAN, FASHION_STD)


def test_digits_default_stays_unit_and_each_mode_matches_sklearn():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # counts 0..16
    default = load_dataset("digits")
    assert default.spec["normalize"] == "unit"
    # unchanged from before normalize existed: float32 counts / 16
    before = raw.astype(np.float32) / 16.0
    assert torch.equal(default.test.x[:, 0], torch.from_numpy(before[default.test.indices.numpy()]))
    for mode in ("standard", "unit", "none"):
        ds = load_dataset("digits", normalize=mode)
        np.testing.assert_allclose(ds.test.x[:, 0].numpy(),
                                   _expected(raw, mode, 16.0, DIGITS_MEAN, DIGITS_STD)[
                                       ds.test.indices.numpy()], **TOL)
        again = load_from_spec(json.loads(json.dumps(ds.spec)))
        assert torch.equal(again.train.x, ds.train.x) and again.spec["normalize"] == mode
    assert float(load_dataset("digits", normalize="none").train.x.max()) == 16.0
    # the stated constants are the mean and std of all 1,797 images / 16 (to 4 decimals)
    assert (raw / 16).mean() == pytest.approx(DIGITS_MEAN, abs=5e-5)
    assert (raw / 16).std() == pytest.approx(DIGITS_STD, abs=5e-5)


def test_a_digits_spec_from_before_normalize_reloads_unchanged():
    assert torch.equal(load_from_spec({"name": "digits", "seed": 0}).test.x,
                       load_dataset("digits").test.x)


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion-mnist"])
def test_bad_value_names_the_choices(name, tmp_path):
    # refused before any file is looked for (the folder does not exist)
    with pytest.raises(UsageError, match=r"normalize='bogus' \(--normalize\) is not one of "
                                         r"standard, unit, none"):
        load_dataset(name, normalize="bogus", data_dir=tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", ["moons", "spirals", "curve"])
def test_normalize_on_generated_data_is_refused(name):
    with pytest.raises(UsageError, match=rf"scales pixels; it applies to the image datasets "
                                         rf"\(digits, mnist, fashion-mnist\).*not to '{name}'"):
        load_dataset(name, normalize="unit")
