"""``load_dataset(name)``: every built-in dataset by name, reloadable from its spec."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from shenjing.data.types import Dataset
from shenjing.errors import UnknownNameError, UsageError, did_you_mean

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "curve", "moons", "spirals")
# the built-in datasets made of pixels, which take ``normalize`` (default in brackets):
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")  # [unit], [standard], [standard]


def load_dataset(name: str, *, data_dir: str | os.PathLike[str] | None = None,
                 seed: int = 0, download: bool = True, progress: bool = True,
                 normalize: str | None = None, **options: Any) -> Dataset:
    """Load a built-in dataset by name.

    ``digits`` (the default everywhere) needs no files; ``mnist``/``fashion-mnist`` read IDX
    files from ``data_dir`` and download what is missing; ``curve``, ``moons``, ``spirals``
    are generated from ``seed``.

    ``normalize`` (``"standard"``, ``"unit"`` or ``"none"``; see
    :mod:`shenjing.data.scaling`) scales the pixels of the image datasets and of the user's
    8-bit images; None keeps each dataset's default: ``"standard"`` for mnist and
    fashion-mnist, ``"unit"`` for digits and for the user's images. The choice is recorded
    in ``dataset.spec['normalize']``.

    >>> load_dataset("digits").input_shape
    (1, 8, 8)
    >>> float(load_dataset("digits", normalize="none").train.x.max())
    16.0
    """
    from shenjing.data import digits, mnist, synthetic
    from shenjing.data.scaling import check_normalize

    if normalize is not None:
        check_normalize(normalize)
        if name in DATASET_NAMES and name not in IMAGE_DATASETS:
            raise UsageError(
                f"normalize={normalize!r} (--normalize) scales pixels; it applies to the image "
                f"datasets ({', '.join(IMAGE_DATASETS)}) and your own 8-bit images, not to "
                f"{name!r}, whose inputs are generated already scaled: leave it out"
            )
        options["normalize"] = normalize

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
        raise UnknownNameError(f"--data {name!r}: unknown dataset {name!r}."
                               f"{did_you_mean(name, DATASET_NAMES)} Choices: "
                               f"{', '.join(DATASET_NAMES)}, or your own data (a .npz or "
                               "x.npy/y.npy file, an image folder, file.py:make_dataset)")
    return loaders[name]()


def load_from_spec(spec: dict[str, Any], *, download: bool = False) -> Dataset:
    """Rebuild a dataset from the ``spec`` a run recorded (no download unless asked).

    A spec written before ``normalize`` existed has no such key and reloads with the
    dataset's default scaling, which is the scaling it was made with.
    """
    from shenjing.data.custom import USER_KINDS, load_user_data

    if spec.get("name") in USER_KINDS:
        return load_user_data(spec)
    spec = dict(spec)
    name = spec.pop("name")
    data_dir = spec.pop("data_dir", None)
    seed = spec.pop("seed", 0)
    normalize = spec.pop("normalize", None)
    spec.pop("train_range", None)
    for described in ("pixels", "mean", "std"):  # descriptions of the scaling, not options
        spec.pop(described, None)
    if name in ("mnist", "fashion-mnist"):
        options = {k: spec[k] for k in ("test_fraction",) if k in spec}
        return load_dataset(name, data_dir=data_dir, seed=seed, download=download,
                            normalize=normalize, **options)
    return load_dataset(name, seed=seed, normalize=normalize, **spec)
