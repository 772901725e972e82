"""``Activations``: what a dataset-level capture recorded, in memory or as ``.npy`` files.

On disk (``out_dir``), each recorded key has its own folder::

    <out_dir>/<key>/<stem>.npy           (samples, *features) float32/float16, mmap-able
    <out_dir>/<key>/<stem>.indices.npy   (samples,) int64: positions in the source split
    <out_dir>/<key>/<stem>.labels.npy    (samples,) int64 class labels (absent if none)
    <out_dir>/<key>/<stem>.json          layer, module type, shape, dtype, pool, bytes, ...

In a run, ``out_dir`` is ``activations/`` and ``stem`` is ``epoch-NNN``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.errors import LayerNotFoundError, RunError, did_you_mean


def key_dirname(key: str) -> str:
    """A recorded key as a folder name (``/`` and ``\\`` replaced; dots and ``#`` kept)."""
    return key.replace("/", "_").replace("\\", "_")


def format_bytes(n: float) -> str:
    """``1536`` → ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


class Activations(Mapping[str, np.ndarray]):
    """Per-sample layer outputs: key → array of shape (samples, *features).

    Arrays are plain numpy arrays (in memory) or read-only memory maps (on disk).
    ``indices`` (samples,) gives each row's position in its source split and ``labels`` its
    class (None when the data had none), so row ``i`` of every layer is the same sample.
    ``info[key]`` holds the layer name, module type, dtype and pooling of each key.

    >>> import numpy as np
    >>> acts = Activations({"fc1": np.ones((3, 2), np.float32)}, indices=np.arange(3))
    >>> acts.flat("fc1").shape, len(acts)
    ((3, 2), 1)
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], *, indices: np.ndarray,
                 labels: np.ndarray | None = None,
                 info: Mapping[str, Mapping[str, Any]] | None = None,
                 paths: Mapping[str, Path] | None = None) -> None:
        self._arrays = dict(arrays)
        self.indices = np.asarray(indices)
        self.labels = None if labels is None else np.asarray(labels)
        self.info = {k: dict(v) for k, v in (info or {}).items()}
        self.paths = dict(paths or {})

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            raise LayerNotFoundError(
                f"no activations for {key!r}.{did_you_mean(key, self._arrays)} "
                f"Recorded: {', '.join(self._arrays)}")
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def n_samples(self) -> int:
        return int(self.indices.shape[0])

    def flat(self, key: str) -> np.ndarray:
        """The key's activations as (samples, features) (a view, also for memory maps)."""
        a = self[key]
        return a.reshape(a.shape[0], -1)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self._arrays.values())

    def __repr__(self) -> str:
        where = "on disk" if self.paths else "in memory"
        inner = ", ".join(f"{k}: {a.shape[1:]} {a.dtype}" for k, a in self._arrays.items())
        return (f"Activations(n_samples={self.n_samples}, {inner}; "
                f"{format_bytes(self.nbytes)} {where})")

    @classmethod
    def load(cls, folder: str | os.PathLike[str], stem: str = "activations",
             keys: list[str] | None = None, *, mmap: bool = True) -> Activations:
        """Read what :func:`capture_dataset` wrote under ``folder`` (memory-mapped by default)."""
        folder = Path(folder)
        if keys is None:
            keys = sorted(p.parent.name for p in folder.glob(f"*/{stem}.npy"))
            if not keys:
                raise RunError(f"no activations named {stem}.npy under {folder}; run "
                               "`shenjing capture` first")
        arrays, info, paths = {}, {}, {}
        indices = labels = None
        for key in keys:
            base = folder / key_dirname(key)
            path = base / f"{stem}.npy"
            if not path.is_file():
                have = sorted(p.parent.name for p in folder.glob(f"*/{stem}.npy"))
                raise RunError(f"no activations for {key!r} at {path}; captured there: "
                               f"{', '.join(have) or 'none'}")
            arrays[key] = np.load(path, mmap_mode="r" if mmap else None)
            paths[key] = path
            meta = base / f"{stem}.json"
            info[key] = _io.read_json(meta) if meta.is_file() else {}
            if indices is None:
                indices = np.load(base / f"{stem}.indices.npy")
                lab = base / f"{stem}.labels.npy"
                labels = np.load(lab) if lab.is_file() else None
        assert indices is not None
        return cls(arrays, indices=indices, labels=labels, info=info, paths=paths)


def bytes_per_sample(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of one sample of a recorded tensor whose shape includes the batch dimension."""
    return math.prod(shape[1:]) * np.dtype(dtype).itemsize
