"""Atomic file writes: a file is either absent or complete, never half-written.

Every writer puts the bytes into a temporary file in the same directory, flushes and
fsyncs it, then renames it over the target (atomic on POSIX and on Windows' NTFS).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the target's suffix, so libraries that choose a format by
    suffix (matplotlib, numpy) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file for writing that appears at ``path`` only when closed cleanly."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        yield fh


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Turn numpy/torch scalars, arrays, paths and tuples into plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch tensors
        return obj.tolist()
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (stable bytes for equal data)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=True)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> Path:
    """Atomically write a compressed ``.npz``; values that are not arrays are stored as JSON."""
    buf = io.BytesIO()
    packed: dict[str, Any] = {}
    for key, value in arrays.items():
        if isinstance(value, (dict, list, str)) and not isinstance(value, np.ndarray):
            packed[key] = np.array(json.dumps(to_jsonable(value)))
        else:
            packed[key] = np.asarray(value)
    np.savez_compressed(buf, **packed)
    return write_bytes(path, buf.getvalue())


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Atomically write one array as ``.npy`` (loadable with ``mmap_mode='r'``)."""
    with atomic_open(path) as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line, rewriting the file atomically.

    Files here are small (one line per epoch), so a rewrite keeps the guarantee that
    a reader never sees a half line.
    """
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    line = json.dumps(to_jsonable(record), sort_keys=True, allow_nan=True) + "\n"
    write_bytes(path, old + line.encode("utf-8"))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a missing file is an empty list."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
