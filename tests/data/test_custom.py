"""The user's own data: .npz/.npy arrays, image folders (Pillow), dataset factories."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shenjing.data.custom import is_user_data, load_data, load_user_data, user_data_spec
from shenjing.errors import DataError, UsageError


def _load(ref: str | Path, **kw):
    return load_user_data(user_data_spec(str(ref), **kw))


def test_is_user_data(tmp_path):
    assert not is_user_data("digits") and not is_user_data("mnist")
    assert is_user_data("pkg.mod:make_dataset") and is_user_data("x.npz")
    assert is_user_data(str(tmp_path))


def test_npz_float_inputs_int_labels_stratified_split_and_reload(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    y = np.repeat(np.arange(4), 25)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = _load(tmp_path / "d.npz", seed=3)
    assert ds.task == "classification" and ds.classes == ("0", "1", "2", "3")
    # stratified: round(25 · 0.25) = 6 test samples of each class
    assert len(ds.train) == 76 and len(ds.test) == 24
    assert np.bincount(ds.test.y.numpy()).tolist() == [6, 6, 6, 6]
    # the samples are exactly the file's rows, found again through their indices
    assert torch.equal(ds.test.x, torch.from_numpy(x[ds.test.indices.numpy()]))
    assert torch.equal(ds.train.y, torch.from_numpy(y[ds.train.indices.numpy()]))
    again = load_user_data(ds.spec)
    assert torch.equal(again.test.x, ds.test.x) and again.spec["path"] == str(tmp_path / "d.npz")


def test_npz_uint8_nhwc_images_become_nchw_in_unit_range(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 10)
    np.savez(tmp_path / "img.npz", x=x, y=y)
    ds = _load(tmp_path / "img.npz")
    assert ds.input_shape == (3, 6, 5) and ds.classes == ("cat", "dog")
    i = int(ds.train.indices[0])
    np.testing.assert_allclose(ds.train.x[0].numpy(), x[i].transpose(2, 0, 1) / 255.0,
                               rtol=0, atol=1e-7)
    assert ds.train.y[0].item() == (0 if y[i] == "cat" else 1)


def test_npz_explicit_split_classes_and_sparse_labels(tmp_path):
    np.savez(tmp_path / "s.npz", x_train=np.zeros((8, 2), np.float32),
             y_train=np.array([3, 9] * 4), x_test=np.ones((4, 2), np.float32),
             y_test=np.array([9, 3, 3, 9]))
    ds = _load(tmp_path / "s.npz")
    assert len(ds.train) == 8 and len(ds.test) == 4 and bool((ds.test.x == 1).all())
    assert ds.classes == ("3", "9") and ds.test.y.tolist() == [1, 0, 0, 1]
    assert any("renumbered" in n for n in ds.notes)


def test_float_targets_make_a_regression_task(tmp_path):
    x = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    np.savez(tmp_path / "r.npz", x=x, y=(x ** 2).ravel())
    ds = _load(tmp_path / "r.npz")
    assert ds.task == "regression" and ds.test.y.shape[1:] == (1,) and ds.classes == ()
    assert len(ds.test) == 10


@pytest.mark.parametrize("layout", ["sibling", "prefixed", "comma", "folder"])
def test_npy_pairs(tmp_path, layout):
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    y = np.arange(12) % 3
    if layout == "sibling":
        np.save(tmp_path / "x.npy", x), np.save(tmp_path / "y.npy", y)
        ref = str(tmp_path / "x.npy")
    elif layout == "prefixed":
        np.save(tmp_path / "train_x.npy", x), np.save(tmp_path / "train_y.npy", y)
        ref = str(tmp_path / "train_x.npy")
    elif layout == "comma":
        np.save(tmp_path / "a.npy", x), np.save(tmp_path / "b.npy", y)
        ref = f"{tmp_path / 'a.npy'},{tmp_path / 'b.npy'}"
    else:
        np.save(tmp_path / "x.npy", x), np.save(tmp_path / "y.npy", y)
        ref = str(tmp_path)
    ds = load_data(ref)
    both = torch.cat([ds.train.x, ds.test.x])
    order = torch.cat([ds.train.indices, ds.test.indices])
    assert torch.equal(both[order.argsort()], torch.from_numpy(x))


def test_npy_without_labels_says_how_to_name_them(tmp_path):
    np.save(tmp_path / "inputs.npy", np.zeros((4, 2)))
    with pytest.raises(UsageError, match=r"found no labels file next to it .*"
                       r"--data inputs\.npy,labels\.npy"):
        user_data_spec(str(tmp_path / "inputs.npy"))


def _write_images(root: Path, classes: dict[str, int], size=(6, 5), mode="L", seed=0,
                  fmt="png") -> dict[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            a = rng.integers(0, 256, size=shape, dtype=np.uint8)
            path = root / name / f"{i}.{fmt}"
            Image.fromarray(a, mode=mode).save(path)
            written[path] = a
    return written


def test_image_folder_grayscale_pixels_and_classes(tmp_path):
    written = _write_images(tmp_path / "imgs", {"circle": 6, "square": 6})
    ds = _load(tmp_path / "imgs")
    assert ds.classes == ("circle", "square") and ds.input_shape == (1, 5, 6)
    files = sorted(written)  # the loader's order: class folders, then file names
    for split in (ds.train, ds.test):
        for xi, yi, idx in zip(split.x, split.y, split.indices, strict=True):
            path = files[int(idx)]
            np.testing.assert_allclose(xi[0].numpy(), written[path] / 255.0, atol=1e-7)
            assert ds.classes[int(yi)] == path.parent.name


def test_image_folder_rgb_jpeg_train_test_subfolders(tmp_path):
    _write_images(tmp_path / "d" / "train", {"a": 4, "b": 4}, mode="RGB", fmt="jpg")
    _write_images(tmp_path / "d" / "test", {"a": 2, "b": 2}, mode="RGB", fmt="jpg", seed=1)
    ds = _load(tmp_path / "d")
    assert ds.input_shape == (3, 5, 6) and len(ds.train) == 8 and len(ds.test) == 4
    assert float(ds.train.x.min()) >= 0.0 and float(ds.train.x.max()) <= 1.0


def test_image_folder_mixed_sizes_are_resized_with_a_note(tmp_path):
    _write_images(tmp_path / "m", {"a": 3}, size=(6, 5))
    _write_images(tmp_path / "m", {"b": 3}, size=(4, 4), seed=2)
    (tmp_path / "m" / "b" / "extra.png").unlink(missing_ok=True)
    _write_images(tmp_path / "m", {"c": 4}, size=(6, 5), seed=3)
    ds = _load(tmp_path / "m")
    assert ds.input_shape == (1, 5, 6)
    assert any("resized to 6×5" in n for n in ds.notes)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders; an image folder holds one"):
        _load(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"class folders \['a'\] hold no images"):
        _load(tmp_path / "noimg")
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        _load(tmp_path / "broken")


FACTORY = '''
import torch
from torch.utils.data import Dataset, TensorDataset

class Pairs(Dataset):
    classes = ["zero", "one"]
    def __len__(self):
        return 30
    def __getitem__(self, i):
        return torch.full((1, 4, 4), float(i)), i % 2

def make_dataset():
    return Pairs()

def make_split():
    x = torch.arange(20.0).reshape(10, 2)
    return TensorDataset(x[:6], torch.arange(6) % 2), TensorDataset(x[6:], torch.arange(4) % 2)

def make_dict():
    tr, te = make_split()
    return {"train": tr, "test": te}

def make_bad():
    return 42

def make_raises():
    raise OSError("dataset server unreachable")
'''


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "userdata.py"
    path.write_text(FACTORY)
    return path


def test_factory_returning_a_torch_dataset(factory_file):
    ds = load_data(f"{factory_file}:make_dataset")
    assert ds.classes == ("zero", "one") and ds.input_shape == (1, 4, 4)
    assert len(ds.train) + len(ds.test) == 30
    for x, y, i in zip(ds.test.x, ds.test.y, ds.test.indices, strict=True):
        assert float(x[0, 0, 0]) == float(i) and int(y) == int(i) % 2
    assert load_user_data(ds.spec).test.indices.tolist() == ds.test.indices.tolist()


@pytest.mark.parametrize("fn", ["make_split", "make_dict"])
def test_factory_returning_train_and_test(factory_file, fn):
    ds = load_data(f"{factory_file}:{fn}")
    assert len(ds.train) == 6 and len(ds.test) == 4
    assert ds.test.x[0].tolist() == [12.0, 13.0]


def test_factory_module_on_sys_path(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    ds = load_data("userdata:make_dataset")
    assert ds.name == "make_dataset" and len(ds.test) > 0
    sys.modules.pop("userdata", None)


def test_factory_errors(factory_file):
    with pytest.raises(UsageError, match=r"the dataset is a int; shenjing needs a map-style "
                       r"torch Dataset"):
        load_data(f"{factory_file}:make_bad")
    with pytest.raises(UsageError, match=r"data factory .*make_raises' raised OSError: "
                       r"dataset server unreachable"):
        load_data(f"{factory_file}:make_raises")
    with pytest.raises(UsageError, match=r"has no attribute .make_nothing. \(from --data "
                       r".*It defines: .*make_dataset"):
        load_data(f"{factory_file}:make_nothing")


def test_bad_arrays_are_refused_clearly(tmp_path):
    np.savez(tmp_path / "a.npz", inputs=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DataError, match=r"holds arrays \['inputs', 'labels'\]; shenjing needs "
                       r"'x' \(inputs\) and 'y'"):
        _load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="3 inputs but 4 labels"):
        _load(tmp_path / "b.npz")
    x = np.zeros((4, 2), np.float32)
    x[1, 0] = np.nan
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"contain NaN or infinite values \(1 of them\)"):
        _load(tmp_path / "c.npz")
    with pytest.raises(UsageError, match="no such file or folder, and not a built-in dataset"):
        user_data_spec(str(tmp_path / "missing_dir"))
    (tmp_path / "t.csv").write_text("1,2\n")
    with pytest.raises(UsageError, match=r"a \.csv file; shenjing reads \.npz"):
        user_data_spec(str(tmp_path / "t.csv"))


def test_object_arrays_need_pickle_and_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, {"b": 2}], dtype=object))
    np.save(tmp_path / "y.npy", np.arange(2))
    with pytest.raises(DataError, match="object arrays need pickle, which shenjing does not "
                       "load"):
        load_data(str(tmp_path / "x.npy"))


def test_builtin_names_still_go_to_load_dataset():
    assert load_data("digits").name == "digits"


# ---- normalize: the implicit x / 255 of 8-bit inputs, made explicit and recorded ----------
@pytest.mark.parametrize(("mode", "divisor"), [(None, 255.0), ("unit", 255.0), ("none", 1.0)])
def test_uint8_arrays_scale_as_normalize_says_and_record_it(tmp_path, mode, divisor):
    import json

    from shenjing.data import load_from_spec

    x = np.random.default_rng(1).integers(0, 256, size=(40, 3, 4), dtype=np.uint8)
    x[0, 0, :2] = 0, 255
    np.savez(tmp_path / "u8.npz", x=x, y=np.arange(40) % 2)
    ds = _load(tmp_path / "u8.npz", normalize=mode)
    assert ds.spec["normalize"] == (mode or "unit")  # recorded even when implied
    idx = ds.train.indices.numpy()
    np.testing.assert_allclose(ds.train.x[:, 0].numpy(), x[idx].astype(np.float64) / divisor,
                               rtol=1e-6, atol=1e-7)
    assert ds.pixel_range == (0.0, 255.0 / divisor)
    again = load_from_spec(json.loads(json.dumps(ds.spec)))
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.x, ds.test.x)


def test_a_user_spec_from_before_normalize_reloads_in_unit_range(tmp_path):
    x = np.full((20, 2, 2), 51, dtype=np.uint8)
    np.savez(tmp_path / "old.npz", x=x, y=np.arange(20) % 2)
    old_spec = {"name": "npz", "path": str(tmp_path / "old.npz"), "seed": 0,
                "test_fraction": 0.25}
    ds = load_user_data(old_spec)
    assert ds.spec["normalize"] == "unit"
    np.testing.assert_allclose(ds.train.x.numpy(), 0.2, rtol=1e-6)


def test_image_folder_normalize_none_keeps_raw_pixels(tmp_path):
    written = _write_images(tmp_path / "imgs", {"a": 3, "b": 3})
    ds = _load(tmp_path / "imgs", normalize="none")
    files = sorted(written)
    for xi, idx in zip(ds.train.x, ds.train.indices, strict=True):
        np.testing.assert_array_equal(xi[0].numpy(), written[files[int(idx)]].astype(np.float32))
    assert ds.spec["normalize"] == "none"
    assert torch.equal(load_user_data(ds.spec).train.x, ds.train.x)


def test_normalize_for_user_data_errors(tmp_path, factory_file):
    np.savez(tmp_path / "u8.npz", x=np.zeros((8, 2, 2), np.uint8), y=np.arange(8) % 2)
    with pytest.raises(UsageError, match=r"normalize='standard' \(--normalize\) needs the "
                       r"images' pixel mean and std.*use --normalize unit"):
        _load(tmp_path / "u8.npz", normalize="standard")
    with pytest.raises(UsageError, match=r"normalize='bogus' \(--normalize\) is not one of "
                       r"standard, unit, none"):
        _load(tmp_path / "u8.npz", normalize="bogus")
    np.savez(tmp_path / "f.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2)
    with pytest.raises(UsageError, match=r"normalize='unit' \(--normalize\) scales 8-bit "
                       r"pixels .* these inputs are float32 and are used exactly as given"):
        _load(tmp_path / "f.npz", normalize="unit")
    assert "normalize" not in _load(tmp_path / "f.npz").spec  # floats: nothing to record
    # through load_data too (the --data path every command uses)
    with pytest.raises(UsageError, match="scales 8-bit pixels"):
        load_data(f"{factory_file}:make_dataset", normalize="none")


# ---- hostile and damaged files: one clear line each, never a traceback --------------------
def test_truncated_npz_is_one_clear_error(tmp_path):
    np.savez(tmp_path / "full.npz", x=np.random.default_rng(0).normal(size=(50, 8)),
             y=np.arange(50) % 2)
    data = (tmp_path / "full.npz").read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 40):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"cut\.npz: not a complete \.npz archive "
                           r"\(truncated or damaged"):
            _load(tmp_path / "cut.npz")


def test_damaged_member_of_an_npz_is_one_clear_error(tmp_path):
    """The zip's directory is intact but one array's bytes are not (a flipped byte)."""
    np.savez_compressed(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(50, 8)),
                        y=np.arange(50) % 2)
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "d.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d\.npz: (array '\w' cannot be read|not a complete)"):
        _load(tmp_path / "d.npz")


def test_object_array_npz_is_refused_in_one_line(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, {"b": 2}], dtype=object),
             y=np.arange(2))
    with pytest.raises(DataError, match=r"o\.npz: array 'x' holds Python objects \(dtype "
                       r"object\): object arrays need pickle, which shenjing does not load "
                       r"\(unpickling a file can run code\)\. Save numeric arrays"):
        _load(tmp_path / "o.npz")


def test_text_file_named_npz_says_it_is_not_a_zip(tmp_path):
    (tmp_path / "notes.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"notes\.npz is not a \.npz archive \(a zip made by "
                       r"np\.savez\): it starts with b'x,y\\n1,2\\n'") as err:
        _load(tmp_path / "notes.npz")
    assert "pickled" not in str(err.value)


def test_npy_file_named_npz_says_what_it_is(tmp_path):
    np.save(tmp_path / "arr.npy", np.zeros((3, 2)))
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    with pytest.raises(DataError, match=r"arr\.npz is a single \.npy array, not a \.npz "
                       r"archive"):
        _load(tmp_path / "arr.npz")


def test_a_folder_named_npz_or_npy_is_refused(tmp_path):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(DataError, match=r"d\.npz is a folder, not a \.npz file"):
        load_user_data({"name": "npz", "path": str(tmp_path / "d.npz")})
    (tmp_path / "x.npy").mkdir()
    np.save(tmp_path / "y.npy", np.arange(3))
    with pytest.raises(DataError, match=r"x\.npy is a folder, not a \.npy file"):
        load_user_data({"name": "npy", "x": str(tmp_path / "x.npy"),
                        "y": str(tmp_path / "y.npy")})


def test_truncated_npy_is_one_clear_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((40, 8), np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    data = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"x\.npy cannot be read: its header says shape "
                       r"\(40, 8\) of float32 = 1,280 bytes, but the file holds 576 "
                       r"\(truncated or damaged\)"):
        load_data(str(tmp_path / "x.npy"))


@pytest.mark.parametrize("kind", ["npy", "npz"])
def test_header_declaring_terabytes_is_refused_before_allocating(tmp_path, kind):
    """A 60-byte file whose header claims a 7 TiB array: refused from the header, with the
    sizes (np.load would try to allocate it: a MemoryError traceback)."""
    import io as _io
    import zipfile

    from numpy.lib import format as npy_format

    buf = _io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                            "shape": (10**12,)})
    if kind == "npy":
        (tmp_path / "x.npy").write_bytes(buf.getvalue())
        np.save(tmp_path / "y.npy", np.arange(3))
        ref, match = tmp_path / "x.npy", r"x\.npy cannot be read"
    else:
        with zipfile.ZipFile(tmp_path / "h.npz", "w") as zf:
            zf.writestr("x.npy", buf.getvalue())
            zf.writestr("y.npy", buf.getvalue())
        ref, match = tmp_path / "h.npz", r"h\.npz: array 'x' cannot be read"
    with pytest.raises(DataError, match=match + r": its header says shape \(1000000000000,\) "
                       r"of float64 = 8,000,000,000,000 bytes, but the file holds 0"):
        load_data(str(ref))
