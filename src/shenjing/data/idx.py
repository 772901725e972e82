"""Reader for the IDX format of MNIST and Fashion-MNIST, with errors that name the file.

IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
one big-endian int32 per dimension, then the data, row-major.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from shenjing.errors import DataError

_UBYTE = 0x08
#: the most data bytes an IDX header may declare: far above any real IDX dataset (EMNIST's
#: largest file holds 0.55 GB), far below what a hostile header can claim (2**128)
MAX_IDX_BYTES = 4 * 2**30


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a uint8 array of the shape its header gives.

    The header is checked before the data is read: a shape whose size exceeds
    :data:`MAX_IDX_BYTES` is refused with the sizes, so a hostile header cannot make the
    reader allocate (or decompress) more than a real dataset needs.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an IDX file; pass the file itself (or its "
                        "folder as --data-dir)")
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            raw, dims = _read_header(fh, path)
            header = len(raw)
            expected = math.prod(dims)
            raw += fh.read(expected + 1)  # one byte more tells trailing bytes apart
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); "
                        "delete it and download it again") from None
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        shown = f"{got}" if got <= expected else f"more than {expected}"
        raise DataError(
            f"{path}: {what}: header says shape {dims} = {expected} bytes of data, "
            f"file has {shown}; delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_header(fh: io.BufferedIOBase, path: Path) -> tuple[bytes, tuple[int, ...]]:
    """The header bytes and the shape they declare, refusing shapes no dataset has."""
    raw = fh.read(4)
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _UBYTE or not 1 <= ndim <= 4:
        raise DataError(
            f"{path}: wrong magic number 0x{raw[:4].hex()} (expected 0x0000080{min(ndim, 9)} "
            "style: two zero bytes, 0x08 for unsigned bytes, then 1-4 dimensions); "
            "this is not an IDX image or label file"
        )
    raw += fh.read(4 * ndim)
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated header ({len(raw)} of {4 + 4 * ndim} bytes)")
    dims = tuple(int(d) for d in struct.unpack(f">{ndim}I", raw[4:]))
    size = math.prod(dims)  # Python ints: no overflow
    if size > MAX_IDX_BYTES:
        raise DataError(
            f"{path}: the header says shape {dims} = {size:,} bytes of data, more than an "
            f"IDX file shenjing reads ({MAX_IDX_BYTES:,} bytes); this is not a dataset file "
            "(a damaged or hostile header): delete it and download it again")
    return raw, dims


def read_images_labels(images_path: Path, labels_path: Path,
                       n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read a matching pair of image (n, h, w) and label (n,) IDX files and check them."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected 3 dimensions (n, height, width), "
                        f"header gives {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected 1 dimension (n,), header gives {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"counts disagree: {images_path.name} has {images.shape[0]} images but "
            f"{labels_path.name} has {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DataError(
            f"{labels_path}: label {int(labels[bad])} at position {bad} is out of range "
            f"0..{n_classes - 1}"
        )
    return images, labels


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a uint8 array as IDX (gzip-compressed if the name ends in .gz). For tests/tools."""
    from shenjing import _io

    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">HBB", 0, _UBYTE, array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return _io.write_bytes(path, payload)
