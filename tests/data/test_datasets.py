"""Built-in datasets: shapes, dtypes, determinism, and the real MNIST test set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shenjing.data import load_dataset
from shenjing.data.synthetic import curve_function
from shenjing.errors import UnknownNameError


def test_digits_is_real_and_split_deterministically(digits):
    from sklearn.datasets import load_digits

    assert digits.input_shape == (1, 8, 8)
    assert (len(digits.train), len(digits.test)) == (1347, 450)
    assert digits.train.x.dtype == torch.float32 and digits.train.y.dtype == torch.int64
    raw = load_digits()
    i = int(digits.test.indices[5])
    np.testing.assert_allclose(digits.test.x[5, 0].numpy(), raw.images[i] / 16.0, rtol=1e-6)
    assert int(digits.test.y[5]) == raw.target[i]
    again = load_dataset("digits")
    assert torch.equal(again.test.indices, digits.test.indices)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.test.indices, digits.test.indices)
    assert set(digits.train.indices.tolist()).isdisjoint(digits.test.indices.tolist())


def test_real_mnist_test_split_is_divided_8000_2000(mnist_dir):
    ds = load_dataset("mnist", data_dir=mnist_dir)
    assert (len(ds.train), len(ds.test)) == (8000, 2000)
    assert ds.input_shape == (1, 28, 28)
    assert "only the test split" in ds.notes[0]
    counts = torch.bincount(torch.cat([ds.train.y, ds.test.y]), minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    lo, hi = ds.pixel_range
    assert float(ds.train.x.min()) == pytest.approx(lo) and float(ds.train.x.max()) == \
        pytest.approx(hi)
    # standardised with MNIST's usual constants: mean ≈ 0, std ≈ 1 on these images
    assert abs(float(ds.train.x.mean())) < 0.05 and abs(float(ds.train.x.std()) - 1) < 0.05
    assert "standardised" in ds.notes[-1]


def test_curve_matches_seed_function():
    ds = load_dataset("curve")
    assert len(ds.train) == 100 and ds.task == "regression"
    x = ds.train.x[:, 0].double().numpy()
    np.testing.assert_allclose(x, np.linspace(-5, 5, 100), rtol=1e-6)
    np.testing.assert_allclose(ds.train.y[:, 0].numpy(), curve_function(x), rtol=1e-5,
                               atol=1e-4)
    assert float(ds.test.x.min()) < -5 and float(ds.test.x.max()) > 5


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_two_d_sets(name):
    ds = load_dataset(name)
    assert ds.input_shape == (2,) and ds.n_classes == 2
    assert 0.4 < float(ds.train.y.float().mean()) < 0.6


def test_unknown_dataset_lists_choices():
    with pytest.raises(UnknownNameError, match=r"--data 'mnsit': unknown dataset 'mnsit'\. "
                                               r"Did you mean 'mnist'.*Choices: digits, "
                                               r"mnist, fashion-mnist, curve, moons, spirals"):
        load_dataset("mnsit")


def test_a_file_given_as_the_data_dir_says_so(tmp_path):
    from shenjing.errors import UsageError

    (tmp_path / "passwd").write_text("root:x:0:0\n")
    with pytest.raises(UsageError, match=r"--data-dir .*passwd is a file, not a folder; pass "
                       r"the folder that holds the IDX files"):
        load_dataset("mnist", data_dir=tmp_path / "passwd")
    assert (tmp_path / "passwd").read_text() == "root:x:0:0\n"
    with pytest.raises(UsageError, match=r"--data-dir .*passwd/mnist lies under the file "
                       r".*passwd, not a folder"):
        load_dataset("mnist", data_dir=tmp_path / "passwd" / "mnist")


def test_a_relative_data_dir_is_recorded_absolute(mnist_dir, monkeypatch):
    """A run trained with ``--data-dir ../shared/data/mnist`` reopens from any folder."""
    monkeypatch.chdir(mnist_dir.parent)
    spec = load_dataset("mnist", data_dir=mnist_dir.name).spec
    assert spec["data_dir"] == str(mnist_dir.resolve())
    monkeypatch.chdir("/")
    again = load_dataset("mnist", data_dir=spec["data_dir"])
    assert len(again.test) == 2000
