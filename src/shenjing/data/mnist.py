"""MNIST and Fashion-MNIST from IDX files in a folder, downloaded and verified when absent."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shenjing.data.download import download
from shenjing.data.idx import read_images_labels
from shenjing.data.scaling import (
    PixelScale,
    check_normalize,
    note,
    pixel_range,
    scale_pixels,
    spec_entries,
)
from shenjing.data.types import Dataset, Split
from shenjing.errors import DataError, UsageError


@dataclass(frozen=True)
class IdxSource:
    """Where a dataset's four IDX files come from and what they must hash to."""

    name: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]
    classes: tuple[str, ...]
    mean: float  # pixel mean and std of the 60,000 training images (scaled to [0, 1])
    std: float

    @property
    def scale(self) -> PixelScale:
        """The 8-bit pixels' maximum and the mean/std that ``normalize='standard'`` uses."""
        return PixelScale(max_value=255.0, mean=self.mean, std=self.std)


_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        sha256={
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        classes=tuple(str(d) for d in range(10)),
        mean=0.1307, std=0.3081,
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        mean=0.2860, std=0.3530,
    ),
}

DEFAULT_DATA_DIR = Path(os.environ.get("SHENJING_DATA", Path.home() / ".cache" / "shenjing"))


def _find(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``, gzip or raw, either naming style."""
    for name in (f"{stem}.gz", stem, f"{stem.replace('-idx', '.idx')}.gz",
                 stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _check_folder(folder: Path, name: str) -> None:
    """Refuse a data folder that is a file, or lies under one (``/etc/passwd/mnist``), before
    anything tries to create it or download into it."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under the file {existing}"
        raise UsageError(f"--data-dir {folder} {where}, not a folder; pass the folder that "
                         f"holds the IDX files of {name} (or leave --data-dir out to use "
                         f"{DEFAULT_DATA_DIR / name})")


def _ensure_split(source: IdxSource, folder: Path, split: str, *, download_ok: bool,
                  progress: bool) -> tuple[Path, Path] | None:
    """Paths of one split's two files, downloading them if allowed; None when unavailable."""
    paths = [_find(folder, stem) for stem in _FILES[split]]
    if all(paths):
        return paths[0], paths[1]  # type: ignore[return-value]
    if not download_ok:
        return None
    for stem in _FILES[split]:
        if _find(folder, stem) is None:
            fname = f"{stem}.gz"
            download([m + fname for m in source.mirrors], folder / fname,
                     source.sha256[fname], progress=progress)
    return folder / f"{_FILES[split][0]}.gz", folder / f"{_FILES[split][1]}.gz"


def _to_tensors(images: np.ndarray, source: IdxSource, normalize: str) -> torch.Tensor:
    """uint8 (n, 28, 28) → float32 (n, 1, 28, 28), scaled as ``normalize`` says (see
    :mod:`shenjing.data.scaling`)."""
    return torch.from_numpy(scale_pixels(images, normalize, source.scale)).unsqueeze(1)


def load_idx_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, *,
                     download_ok: bool = True, seed: int = 0, test_fraction: float = 0.2,
                     progress: bool = True, normalize: str = "standard") -> Dataset:
    """Load MNIST or Fashion-MNIST from ``data_dir`` (downloading what is missing).

    ``normalize`` scales the 8-bit pixels: ``"standard"`` (the default) divides by 255 and
    standardises with the training images' mean and std — MNIST ``(x − 0.1307) / 0.3081``,
    Fashion-MNIST ``(x − 0.2860) / 0.3530``; ``"unit"`` is ``x / 255`` in [0, 1]; ``"none"``
    the raw 0..255 as float32. The choice is recorded in ``spec['normalize']``.

    When the folder holds only the test split (the 10,000-image ``t10k`` files), that split
    is divided deterministically (seeded, stratified by class) into train and test, and the
    dataset's ``notes`` say so.
    """
    source = SOURCES[name]
    check_normalize(normalize)
    folder = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR / name
    _check_folder(folder, name)
    notes: list[str] = []
    test_paths = _find(folder, _FILES["test"][0]), _find(folder, _FILES["test"][1])
    train_paths = _find(folder, _FILES["train"][0]), _find(folder, _FILES["train"][1])
    only_test = all(test_paths) and not any(train_paths) and data_dir is not None
    try:
        if not only_test:
            train = _ensure_split(source, folder, "train", download_ok=download_ok,
                                  progress=progress)
            test = _ensure_split(source, folder, "test", download_ok=download_ok,
                                 progress=progress)
        else:
            assert test_paths[0] is not None and test_paths[1] is not None
            train, test = None, (test_paths[0], test_paths[1])
    except DataError as exc:
        raise DataError(_missing_message(source, folder, reason=str(exc))) from None
    if test is None:
        raise DataError(_missing_message(source, folder, reason="files not found"))
    n_classes = len(source.classes)
    x_test, y_test = read_images_labels(*test, n_classes=n_classes)
    if train is None:
        train_idx, test_idx = stratified_split(y_test, test_fraction, seed=seed)
        notes.append(
            f"only the test split ({len(y_test)} images) is in {folder}; it was split "
            f"deterministically (seed {seed}, stratified by class) into {len(train_idx)} "
            f"train / {len(test_idx)} test"
        )
        x = _to_tensors(x_test, source, normalize)
        y = torch.from_numpy(y_test.astype(np.int64))
        tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
        train_split = Split(x[tr], y[tr], tr)
        test_split = Split(x[te], y[te], te)
    else:
        x_train, y_train = read_images_labels(*train, n_classes=n_classes)
        train_split = Split(_to_tensors(x_train, source, normalize),
                            torch.from_numpy(y_train.astype(np.int64)), torch.arange(len(y_train)))
        test_split = Split(_to_tensors(x_test, source, normalize),
                           torch.from_numpy(y_test.astype(np.int64)), torch.arange(len(y_test)))
    notes.append(note(normalize, source.scale))
    # absolute: a run reopened from another working directory finds its data again
    spec: dict[str, object] = {"name": name, "data_dir": str(folder.resolve()), "seed": seed,
                               **spec_entries(normalize, source.scale)}
    if test_fraction != 0.2:
        spec["test_fraction"] = test_fraction
    return Dataset(name=name, train=train_split, test=test_split, classes=source.classes,
                   spec=spec, notes=tuple(notes),
                   pixel_range=pixel_range(normalize, source.scale))


def stratified_split(labels: np.ndarray, test_fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of sample positions into (train, test), both sorted."""
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        test.append(members[: round(len(members) * test_fraction)])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _missing_message(source: IdxSource, folder: Path, reason: str) -> str:
    files = ", ".join(f"{stem}.gz" for pair in _FILES.values() for stem in pair)
    return (
        f"{source.name} is not available ({reason}). Put the four IDX files ({files}) "
        f"into {folder} (or pass --data-dir FOLDER holding them; the two t10k files alone "
        "also work), or connect to the internet so they can be downloaded and verified. "
        "The embedded dataset 'digits' needs no files."
    )
