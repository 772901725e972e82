"""``load_dataset(name)``: every built-in dataset by name, reloadable from its spec."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from shenjing.data.types import Dataset
from shenjing.errors import unknown_name

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "curve", "moons", "spirals")


def load_dataset(name: str, *, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0, download: bool = True, progress: bool = True,
                 **options: Any) -> Dataset:
    """Load a built-in dataset by name.

    ``digits`` (the default everywhere) needs no files; ``mnist``/``fashion-mnist`` read IDX
    files from ``data_dir`` and download what is missing; ``curve``, ``moons``, ``spirals``
    are generated from ``seed``.

    >>> load_dataset("digits").input_shape
    (1, 8, 8)
    """
    from shenjing.data import digits, mnist, synthetic

    loaders: dict[str, Callable[..., Dataset]] = {
        "digits": lambda: digits.load_digits_dataset(seed=seed, **options),
        "mnist": lambda: mnist.load_idx_dataset("mnist", data_dir, download_ok=download,
                                                seed=seed, progress=progress, **options),
        "fashion-mnist": lambda: mnist.load_idx_dataset(
            "fashion-mnist", data_dir, download_ok=download, seed=seed, progress=progress,
            **options),
        "curve": lambda: synthetic.load_curve_dataset(seed=seed, **options),
        "moons": lambda: synthetic.load_moons_dataset(seed=seed, **options),
        "spirals": lambda: synthetic.load_spirals_dataset(seed=seed, **options),
    }
    if name not in loaders:
        from shenjing.data.custom import is_user_data, load_user_data, user_data_spec

        if is_user_data(name):  # a .npz/.npy file, an image folder, or pkg.mod:make_dataset
            return load_user_data(user_data_spec(name, seed=seed, **options))
        raise unknown_name("dataset", name, DATASET_NAMES)
    return loaders[name]()


def load_from_spec(spec: dict[str, Any], *, download: bool = False) -> Dataset:
    """Rebuild a dataset from the ``spec`` a run recorded (no download unless asked)."""
    from shenjing.data.custom import USER_KINDS, load_user_data

    if spec.get("name") in USER_KINDS:
        return load_user_data(spec)
    spec = dict(spec)
    name = spec.pop("name")
    data_dir = spec.pop("data_dir", None)
    seed = spec.pop("seed", 0)
    spec.pop("train_range", None)
    spec.pop("pixels", None)  # a description of the preprocessing, not an option
    if name in ("mnist", "fashion-mnist"):
        return load_dataset(name, data_dir=data_dir, seed=seed, download=download)
    return load_dataset(name, seed=seed, **spec)
