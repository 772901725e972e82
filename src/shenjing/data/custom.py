"""The user's own data as a :class:`Dataset`: arrays, a folder of images, or a factory.

``--data`` takes, besides the built-in names:

- ``file.npz`` holding ``x`` and ``y`` (or ``x_train``/``y_train``/``x_test``/``y_test``,
  optional ``classes``);
- ``x.npy`` with a sibling ``y.npy`` (``images_x.npy`` → ``images_y.npy``), a folder holding
  ``x.npy`` and ``y.npy``, or the two paths joined by a comma ``inputs.npy,labels.npy``;
- an ImageFolder-like directory: one sub-folder of PNG/JPEG files per class (or ``train/``
  and ``test/`` sub-folders each laid out so), read with Pillow;
- ``pkg.module:make_dataset`` or ``path/to/file.py:make_dataset``: a function returning a
  torch ``Dataset`` of ``(x, y)`` pairs, a ``(train, test)`` pair of them, a dict with
  ``train``/``test``, or a shenjing :class:`Dataset`.

Arrays: ``uint8`` inputs are taken as 8-bit images (``(N, H, W)`` gains a channel axis,
``(N, H, W, C)`` becomes ``(N, C, H, W)``) and scaled as ``normalize`` says: ``"unit"`` (the
default) divides by 255, ``"none"`` keeps the raw 0..255 as float32; the mode is recorded in
the spec (``normalize``). Image files are 8-bit pixels too and scale the same way. Float
inputs are used exactly as given (``normalize`` is refused for them, so nothing is implied).
Integer or string labels make a classification task (labels renumbered 0…K−1 if needed,
class names kept), float labels a regression task. Without an explicit test split, a
deterministic stratified split (``seed``, ``test_fraction``) is made.

Every dataset carries a JSON ``spec`` (absolute paths) from which :func:`load_user_data`
rebuilds it, so a run made by ``shenjing inspect`` reopens its data.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing.data.scaling import (
    PixelScale,
    check_normalize,
    note,
    pixel_range,
    scale_pixels,
)
from shenjing.data.types import Dataset, Split
from shenjing.errors import DataError, UsageError

USER_KINDS = ("npz", "npy", "image-folder", "factory")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
BUILTIN = ("digits", "mnist", "fashion-mnist", "curve", "moons", "spirals")
# 8-bit pixels: what normalize='unit'/'none' divide by; no mean/std is known for user images
BYTE_PIXELS = PixelScale(max_value=255.0)
USER_NORMALIZE = ("unit", "none")


# ---- recognising a user data reference --------------------------------------------------
def is_user_data(ref: str) -> bool:
    """True when ``--data ref`` names the user's own data rather than a built-in dataset."""
    if ref in BUILTIN:
        return False
    if ":" in ref and not Path(ref).exists():
        return True
    return Path(ref.split(",")[0]).exists() or ref.endswith((".npz", ".npy"))


def user_data_spec(ref: str, *, seed: int = 0, test_fraction: float = 0.25,
                   **options: Any) -> dict[str, Any]:
    """The reloadable spec of ``--data ref`` (paths made absolute; nothing is read yet)."""
    if options.get("normalize") is not None:
        _check_user_normalize(str(options["normalize"]))
    else:
        options.pop("normalize", None)
    base: dict[str, Any] = {"seed": seed, "test_fraction": test_fraction, **options}
    if "," in ref:
        x_ref, _, y_ref = ref.partition(",")
        return {"name": "npy", "x": _existing(x_ref), "y": _existing(y_ref), **base}
    path = Path(ref)
    if not path.exists():
        if ":" in ref:
            module, _, attr = ref.rpartition(":")
            if module.endswith(".py"):
                ref = f"{_existing(module)}:{attr}"
            return {"name": "factory", "factory": ref, "kwargs": {}, **base}
        raise UsageError(f"--data {ref!r}: no such file or folder, and not a built-in dataset "
                         f"({', '.join(BUILTIN)}) or a 'pkg.module:make_dataset' factory")
    if path.is_dir():
        if (path / "x.npy").is_file() and (path / "y.npy").is_file():
            return {"name": "npy", "x": _existing(path / "x.npy"),
                    "y": _existing(path / "y.npy"), **base}
        return {"name": "image-folder", "path": _existing(path), **base}
    if path.suffix == ".npz":
        return {"name": "npz", "path": _existing(path), **base}
    if path.suffix == ".npy":
        y_path = _sibling_labels(path)
        return {"name": "npy", "x": _existing(path), "y": _existing(y_path), **base}
    raise UsageError(f"--data {ref!r}: a {path.suffix or 'suffix-less'} file; shenjing reads "
                     ".npz (x, y), an x.npy/y.npy pair, a folder of images per class, or a "
                     "'pkg.module:make_dataset' factory")


def _check_user_normalize(value: str) -> str:
    """``normalize`` for the user's own pixels: unit or none (no known mean and std)."""
    check_normalize(value)
    if value not in USER_NORMALIZE:
        raise UsageError(
            f"normalize={value!r} (--normalize) needs the images' pixel mean and std, which "
            "shenjing knows only for mnist, fashion-mnist and digits; for your own images use "
            "--normalize unit (x / 255, the default) or none (raw 0..255), or standardise "
            "them in a data factory ('file.py:make_dataset' returning float tensors)")
    return value


def _existing(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--data: {p} does not exist")
    return str(p.resolve())


def _sibling_labels(x_path: Path) -> Path:
    stem = x_path.stem
    candidates = []
    if stem == "x" or stem.endswith(("_x", "-x")):
        candidates.append(x_path.with_name(stem[:-1] + "y.npy"))
    if stem.startswith(("x_", "x-")):
        candidates.append(x_path.with_name("y" + stem[1:] + ".npy"))
    candidates.append(x_path.with_name("y.npy"))
    for c in candidates:
        if c.is_file():
            return c
    raise UsageError(f"--data {x_path}: found no labels file next to it (looked for "
                     f"{', '.join(c.name for c in candidates)}); name them as 'x.npy'/"
                     "'y.npy' or pass both paths: --data inputs.npy,labels.npy")


# ---- loading ------------------------------------------------------------------------------
def load_user_data(spec: Mapping[str, Any]) -> Dataset:
    """Build the :class:`Dataset` a user-data ``spec`` describes (see :func:`user_data_spec`).

    >>> import tempfile, numpy as np, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "toy.npz")
    >>> np.savez(f, x=np.random.rand(40, 3).astype("float32"), y=np.arange(40) % 2)
    >>> load_user_data(user_data_spec(f)).input_shape
    (3,)
    """
    spec = dict(spec)
    kind = spec.get("name")
    seed = int(spec.get("seed", 0))
    frac = float(spec.get("test_fraction", 0.25))
    if kind == "npz":
        return _from_npz(spec, seed, frac)
    if kind == "npy":
        x = _load_npy(spec["x"])
        y = _load_npy(spec["y"])
        return _from_arrays(spec, Path(spec["x"]).stem, x, y, None, None, None, seed, frac)
    if kind == "image-folder":
        return _from_image_folder(spec, seed, frac)
    if kind == "factory":
        return _from_factory(spec, seed, frac)
    raise UsageError(f"unknown user data kind {kind!r}; expected one of {', '.join(USER_KINDS)}")


def load_data(ref: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
              normalize: str | None = None, **options: Any) -> Dataset:
    """``--data``: a built-in dataset name (via ``load_dataset``) or the user's own data.

    ``normalize`` (None: the dataset's default) is passed to either; ``options`` go to
    ``load_dataset`` only.
    """
    if is_user_data(ref):
        return load_user_data(user_data_spec(ref, seed=seed, normalize=normalize))
    from shenjing.data.registry import load_dataset

    return load_dataset(ref, data_dir=data_dir, seed=seed, normalize=normalize, **options)


# ---- reading array files: numbers only, one clear error for anything else ------------------
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
_FIX = "Save numeric arrays: np.savez(path, x=inputs, y=labels)"


def _file_head(path: Path, kind: str) -> bytes:
    """The first bytes of ``path``, refusing folders and unreadable paths by name."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a {kind} file; pass the file itself")
    try:
        with open(path, "rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_array_header(fh: Any, available: int, label: str) -> None:
    """Read an ``.npy`` header from ``fh`` and refuse, before anything is allocated, an array
    of Python objects (only a pickle rebuilds those) or one that needs more bytes than the
    ``available`` ones (a truncated file, or a header declaring terabytes)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
        else:
            return  # a newer header: np.load checks it (and MemoryError is caught there)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{label} cannot be read (not a complete .npy header: {exc})") from None
    if dtype.hasobject:
        raise DataError(f"{label} holds Python objects (dtype {dtype}): object arrays need "
                        "pickle, which shenjing does not load (unpickling a file can run "
                        f"code). {_FIX}")
    need = math.prod(shape) * dtype.itemsize
    have = available - fh.tell()
    if need > have:
        raise DataError(f"{label} cannot be read: its header says shape {tuple(shape)} of "
                        f"{dtype} = {need:,} bytes, but the file holds {max(have, 0):,} "
                        "(truncated or damaged); write it again")


def _load_npy(path: str) -> np.ndarray:
    p = Path(path)
    head = _file_head(p, ".npy")
    if not head.startswith(_NPY_MAGIC):
        raise DataError(f"{path} is not a .npy array file (np.save): it starts with "
                        f"{head!r}. {_FIX}, or np.save each array")
    try:
        with open(p, "rb") as fh:
            _check_array_header(fh, p.stat().st_size, str(path))
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        raise DataError(f"{path}: cannot read as a plain numpy array ({_first_line(exc)}); "
                        f"object arrays need pickle, which shenjing does not load. {_FIX}"
                        ) from None


def _open_npz(path: str) -> Any:
    """``np.load`` of a ``.npz``, after checking that it is one (a zip made by np.savez)."""
    p = Path(path)
    head = _file_head(p, ".npz")
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"{path} is a single .npy array, not a .npz archive: pass it as "
                        "x.npy with its y.npy, or np.savez(path, x=inputs, y=labels)")
    if not head.startswith(_ZIP_MAGICS):
        raise DataError(f"{path} is not a .npz archive (a zip made by np.savez): it starts "
                        f"with {head!r}. {_FIX}")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(_damaged_npz(path, exc)) from None


def read_npz_arrays(path: str | os.PathLike[str], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a ``.npz``, each header checked first (no objects: nothing is
    unpickled; not truncated): one :class:`DataError` naming the file for anything else."""
    archive = _open_npz(str(path))
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise DataError(f"{path} must hold the arrays {', '.join(map(repr, keys))}; it "
                            f"has {', '.join(map(repr, archive.files)) or 'none'}")
        return {k: _npz_array(archive, k, str(path)) for k in keys}


def _damaged_npz(path: str, exc: BaseException) -> str:
    return (f"{path}: not a complete .npz archive (truncated or damaged: {_first_line(exc)}); "
            "write it again with np.savez")


def _npz_array(archive: Any, key: str, path: str) -> np.ndarray:
    """One array of an open ``.npz``, its header checked first (objects, truncation)."""
    label = f"{path}: array {key!r}"
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as fh:
                _check_array_header(fh, info.file_size, label)
        return np.asarray(archive[key])
    except DataError:
        raise
    except (KeyError, ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise DataError(f"{label} cannot be read (truncated or damaged: {_first_line(exc)}); "
                        "write the file again with np.savez") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _from_npz(spec: dict[str, Any], seed: int, frac: float) -> Dataset:
    path = spec["path"]
    archive = _open_npz(path)
    with archive:
        keys = set(archive.files)
        try:
            classes = [str(c) for c in _npz_array(archive, "classes", path)] \
                if "classes" in keys else None
        except DataError:
            classes = None
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            x_tr, y_tr, x_te, y_te = (_npz_array(archive, k, path)
                                      for k in ("x_train", "y_train", "x_test", "y_test"))
            x = np.concatenate([x_tr, x_te])
            y = np.concatenate([y_tr, y_te])
            test = np.arange(len(x_tr), len(x))
            return _from_arrays(spec, Path(path).stem, x, y, classes, test, None, seed, frac)
        if not {"x", "y"} <= keys:
            raise DataError(f"{path} holds arrays {sorted(keys)}; shenjing needs 'x' (inputs) "
                            "and 'y' (labels or targets), or x_train/y_train/x_test/y_test: "
                            "np.savez(path, x=inputs, y=labels)")
        return _from_arrays(spec, Path(path).stem, _npz_array(archive, "x", path),
                            _npz_array(archive, "y", path), classes, None, None, seed, frac)


def _inputs(x: np.ndarray, source: str, normalize: str | None
            ) -> tuple[torch.Tensor, list[str], str | None]:
    """(inputs tensor, notes, the pixel scaling applied: None unless the inputs are uint8)."""
    notes: list[str] = []
    if x.dtype != np.uint8 and normalize is not None:
        raise UsageError(
            f"{source}: normalize={normalize!r} (--normalize) scales 8-bit pixels (uint8 "
            f"arrays, image files), but these inputs are {x.dtype} and are used exactly as "
            "given: leave --normalize out, or save the pixels as uint8")
    mode: str | None = None
    if x.dtype == np.uint8:
        mode = _check_user_normalize(normalize or "unit")
        how = note(mode, BYTE_PIXELS)
        xf = scale_pixels(x, mode, BYTE_PIXELS)
        if xf.ndim == 3:
            xf = xf[:, None]
            notes.append(f"uint8 (N, H, W) images, channel axis added; {how}")
        elif xf.ndim == 4 and xf.shape[-1] in (1, 3, 4) and xf.shape[1] not in (1, 3, 4):
            xf = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
            notes.append(f"uint8 (N, H, W, C) images, moved to (N, C, H, W); {how}")
        else:
            notes.append(f"uint8 inputs; {how}")
        x = xf
    if not np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_:
        x = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        notes.append(f"integer inputs ({x.dtype}) kept as int64 (token ids)")
        return torch.from_numpy(x.astype(np.int64)), notes, mode
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{source}: the inputs contain NaN or infinite values "
                        f"({int((~np.isfinite(x)).sum())} of them); clean them first")
    return torch.from_numpy(np.ascontiguousarray(x)), notes, mode


def _labels(y: np.ndarray, classes: list[str] | None, source: str
            ) -> tuple[torch.Tensor, tuple[str, ...], str, list[str]]:
    """(labels tensor, class names, task, notes)."""
    notes: list[str] = []
    if y.dtype.kind in "iub" or y.dtype.kind in "US":
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise DataError(f"{source}: integer labels must be one per sample, got shape "
                            f"{tuple(y.shape)}")
        y = y[:, 0]
        values = np.unique(y)
        if y.dtype.kind in "US":
            names = [str(v) for v in values]
            codes = np.searchsorted(values, y)
            return torch.from_numpy(codes.astype(np.int64)), tuple(names), \
                "classification", ["string labels: classes sorted by name"]
        if classes is not None:
            if values.min() < 0 or values.max() >= len(classes):
                raise DataError(f"{source}: labels run {values.min()}…{values.max()} but "
                                f"'classes' names {len(classes)} classes")
            return torch.from_numpy(y.astype(np.int64)), tuple(classes), "classification", notes
        if values.min() >= 0 and values.max() < max(len(values) * 2, 2):
            n = int(values.max()) + 1
            return torch.from_numpy(y.astype(np.int64)), tuple(str(i) for i in range(n)), \
                "classification", notes
        codes = np.searchsorted(values, y)
        notes.append(f"labels {values.tolist()[:10]} renumbered 0…{len(values) - 1}")
        return torch.from_numpy(codes.astype(np.int64)), tuple(str(v) for v in values), \
            "classification", notes
    if y.dtype.kind == "f":
        yf = y.astype(np.float32).reshape(len(y), -1)
        return torch.from_numpy(yf), (), "regression", ["float targets: a regression task"]
    raise DataError(f"{source}: labels of dtype {y.dtype} are neither integers, strings nor "
                    "floats")


def _from_arrays(spec: dict[str, Any], name: str, x: np.ndarray, y: np.ndarray,
                 classes: list[str] | None, test_idx: np.ndarray | None,
                 extra_notes: list[str] | None, seed: int, frac: float) -> Dataset:
    source = spec.get("path") or spec.get("x") or spec.get("factory") or name
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} inputs but {len(y)} labels; x and y must have "
                        "one row per sample")
    if len(x) < 2:
        raise DataError(f"{source}: needs at least 2 samples, has {len(x)}")
    xt, notes, mode = _inputs(np.asarray(x), str(source), spec.get("normalize"))
    spec = dict(spec)
    if mode is not None:
        spec["normalize"] = mode  # explicit, so the run records how its pixels were scaled
    yt, class_names, task, label_notes = _labels(np.asarray(y), classes, str(source))
    notes += label_notes + list(extra_notes or [])
    n = len(xt)
    if test_idx is None:
        if task == "classification":
            from shenjing.data.mnist import stratified_split

            train_idx, test_idx = stratified_split(yt.numpy(), frac, seed=seed)
        else:
            rng = np.random.default_rng(seed)
            test_idx = np.sort(rng.permutation(n)[:max(1, round(n * frac))])
            train_idx = np.setdiff1d(np.arange(n), test_idx)
        if len(test_idx) == 0:
            test_idx, train_idx = np.arange(n), np.arange(n)
            notes.append("too few samples for a split: the test split is the whole data")
        else:
            notes.append(f"split {len(train_idx)} train / {len(test_idx)} test "
                         f"(seed {seed}, test fraction {frac})")
    else:
        train_idx = np.setdiff1d(np.arange(n), test_idx)
        if len(train_idx) == 0:
            train_idx = test_idx

    def split(idx: np.ndarray) -> Split:
        t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        return Split(xt[t], yt[t], t)

    return Dataset(name=name, train=split(train_idx), test=split(test_idx),
                   classes=class_names, task=task,  # type: ignore[arg-type]
                   spec=dict(spec), notes=tuple(notes),
                   pixel_range=pixel_range(mode, BYTE_PIXELS) if mode else (0.0, 1.0))


# ---- image folders --------------------------------------------------------------------------
def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


def _from_image_folder(spec: dict[str, Any], seed: int, frac: float) -> Dataset:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise UsageError("reading an image folder needs Pillow: pip install pillow") from None
    root = Path(spec["path"])
    subsets = {p.name: p for p in _class_dirs(root)}
    split_dirs = None
    for test_name in ("test", "val", "valid", "validation"):
        if "train" in subsets and test_name in subsets:
            split_dirs = (subsets["train"], subsets[test_name])
            break
    parts = split_dirs or (root,)
    class_names = sorted({d.name for part in parts for d in _class_dirs(part)})
    if not class_names:
        raise DataError(f"{root}: no class folders; an image folder holds one sub-folder of "
                        "PNG/JPEG files per class (root/cat/1.png, root/dog/2.png)")
    files: list[tuple[Path, int, int]] = []
    for part_i, part in enumerate(parts):
        for d in _class_dirs(part):
            for f in _images_in(d):
                files.append((f, class_names.index(d.name), part_i))
    if not files:
        raise DataError(f"{root}: class folders {class_names[:10]} hold no images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f, _, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except Exception as exc:
            raise DataError(f"{f}: not a readable image ({exc})") from None
    gray = all(im.mode in ("L", "1", "LA", "I", "I;16") or not _is_color(im)
               for im in images)
    mode = "L" if gray else "RGB"
    sizes: dict[tuple[int, int], int] = {}
    for im in images:
        sizes[im.size] = sizes.get(im.size, 0) + 1
    size = tuple(spec["size"]) if spec.get("size") else max(sizes, key=lambda s: sizes[s])
    notes = [f"{len(files)} images in {len(class_names)} classes, read as "
             f"{'grayscale' if gray else 'RGB'} 8-bit pixels"]
    if len(sizes) > 1 or spec.get("size"):
        notes.append(f"images resized to {size[0]}×{size[1]} (width×height)")
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = np.stack(arrays)  # uint8 (N, C, H, W): scaled by _inputs as spec['normalize'] says
    y = np.array([c for _, c, _ in files], dtype=np.int64)
    test_idx = np.flatnonzero([p == 1 for _, _, p in files]) if split_dirs else None
    return _from_arrays(spec, root.name, x, y, class_names, test_idx, notes, seed, frac)


def _is_color(im: Any) -> bool:
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool((np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).any())


# ---- factories ------------------------------------------------------------------------------
def _import_object(ref: str) -> Any:
    """The dataset factory ``pkg.module:make_dataset`` or ``file.py:make_dataset`` names."""
    from shenjing._imports import import_reference

    return import_reference(ref, kind="data factory", option="--data")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "mode") and hasattr(value, "size") and hasattr(value, "convert"):
        a = np.asarray(value)  # a PIL image: (H, W) or (H, W, C) uint8
        return a if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.asarray(value)


def _materialise(ds: Any, ref: str, what: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    if not hasattr(ds, "__len__") or not hasattr(ds, "__getitem__"):
        raise UsageError(f"--data {ref!r}: the {what} is a {type(ds).__name__}; shenjing "
                         "needs a map-style torch Dataset (with __len__ and __getitem__) "
                         "whose items are (input, label) pairs")
    n = len(ds) if limit is None else min(len(ds), limit)
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise UsageError(f"--data {ref!r}: item {i} of the {what} is a "
                             f"{type(item).__name__}; items must be (input, label) pairs")
        xs.append(_to_numpy(item[0]))
        ys.append(_to_numpy(item[1]))
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"--data {ref!r}: the {what}'s inputs differ in shape "
                        f"({sorted(shapes)[:4]}); every input must have the same shape")
    return np.stack(xs), np.stack(ys)


def _from_factory(spec: dict[str, Any], seed: int, frac: float) -> Dataset:
    ref = spec["factory"]
    factory = _import_object(ref)
    try:
        made = factory(**dict(spec.get("kwargs") or {}))
    except Exception as exc:
        raise UsageError(f"data factory {ref!r} raised {type(exc).__name__}: {exc}") from None
    if isinstance(made, Dataset):
        if spec.get("normalize") is not None:
            raise UsageError(f"data factory {ref!r} returned a shenjing Dataset, whose inputs "
                             "are used as built; normalize (--normalize) cannot rescale "
                             "them: leave it out, or scale them in the factory")
        return made
    limit = spec.get("max_samples")
    name = ref.rpartition(":")[2]
    classes = getattr(made, "classes", None)
    pair = isinstance(made, (tuple, list)) and len(made) == 2 and all(
        _looks_like_dataset(d) for d in made)
    if isinstance(made, Mapping) or pair:
        if isinstance(made, Mapping):
            if "train" not in made or not ({"test", "val"} & set(made)):
                raise UsageError(f"data factory {ref!r} returned a dict with keys "
                                 f"{sorted(made)}; use 'train' and 'test'")
            train_ds, test_ds = made["train"], made.get("test", made.get("val"))
        else:
            train_ds, test_ds = made
        classes = classes or getattr(train_ds, "classes", None)
        x_tr, y_tr = _materialise(train_ds, ref, "train dataset", limit)
        x_te, y_te = _materialise(test_ds, ref, "test dataset", limit)
        x = np.concatenate([x_tr, x_te])
        y = np.concatenate([y_tr, y_te])
        test_idx = np.arange(len(x_tr), len(x))
    else:
        x, y = _materialise(made, ref, "dataset", limit)
        test_idx = None
    classes = [str(c) for c in classes] if classes is not None else None
    return _from_arrays(spec, name, x, y, classes, test_idx,
                        [f"materialised from the factory {ref}"], seed, frac)


def _looks_like_dataset(obj: Any) -> bool:
    """A dataset (not an (x, y) sample): indexable and each item is itself a pair."""
    try:
        item = obj[0]
    except Exception:
        return False
    return isinstance(item, (tuple, list)) and len(item) >= 2


__all__ = ["USER_KINDS", "is_user_data", "load_data", "load_user_data", "read_npz_arrays",
           "user_data_spec"]
