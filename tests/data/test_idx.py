"""The IDX reader on files the test makes: valid, truncated, wrong magic, wrong counts."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest

from shenjing.data.idx import read_idx, read_images_labels, write_idx
from shenjing.errors import DataError


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_round_trip(tmp_path, images, suffix):
    path = write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images)
    np.testing.assert_array_equal(read_idx(path), images)


def test_header_is_big_endian_idx(tmp_path, images):
    raw = gzip.decompress((write_idx(tmp_path / "a.gz", images)).read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">3I", raw[4:16]) == (7, 28, 28)


def test_truncated_file_names_file_and_sizes(tmp_path, images):
    path = write_idx(tmp_path / "t-idx3-ubyte", images)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t-idx3-ubyte: truncated: header says shape "
                                        r"\(7, 28, 28\) = 5488 bytes of data, file has 5388"):
        read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="bad-idx1-ubyte: wrong magic number 0x504b0304"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_idx(path)


def test_counts_disagree(tmp_path, images):
    img = write_idx(tmp_path / "i-idx3-ubyte.gz", images)
    lab = write_idx(tmp_path / "l-idx1-ubyte.gz", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError, match="counts disagree: i-idx3-ubyte.gz has 7 images but "
                                        "l-idx1-ubyte.gz has 6 labels"):
        read_images_labels(img, lab)


def test_label_out_of_range(tmp_path, images):
    img = write_idx(tmp_path / "i-idx3-ubyte.gz", images)
    lab = write_idx(tmp_path / "l-idx1-ubyte.gz", np.array([0, 1, 2, 12, 3, 4, 5], np.uint8))
    with pytest.raises(DataError, match="label 12 at position 3 is out of range 0..9"):
        read_images_labels(img, lab)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.gz")


@pytest.mark.parametrize("dims", [(65536, 65536, 65536, 65536),  # 2**64: wraps to 0 in int64
                                  (2**32 - 1, 2**32 - 1, 2**32 - 1),
                                  (100_000, 100_000, 28)])
@pytest.mark.parametrize("suffix", [".gz", ""])
def test_header_whose_dimensions_overflow_is_refused_with_the_sizes(tmp_path, dims, suffix):
    payload = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    path = tmp_path / f"huge-idx{len(dims)}-ubyte{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    shape = "(" + ", ".join(map(str, dims)) + ")"
    with pytest.raises(DataError, match=re.escape(f"{path}: the header says shape {shape}")
                       + r" = [\d,]+ bytes of data, more than an IDX file shenjing reads "
                         r"\([\d,]+ bytes\); this is not a dataset file"):
        read_idx(path)


def test_a_folder_given_as_an_idx_file_says_so(tmp_path):
    folder = tmp_path / "t10k-images-idx3-ubyte.gz"
    folder.mkdir()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is a folder, not an IDX "
                       r"file"):
        read_idx(folder)
