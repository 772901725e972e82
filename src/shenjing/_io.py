"""File writes that are all or nothing, and JSON that any strict reader accepts.

Every writer puts the bytes into a temporary file in the same directory, flushes and
fsyncs it, then renames it over the target (atomic on POSIX and on Windows' NTFS). The
temporary file is named after the target and the writing process,
``.<stem>.<pid>.<random>.tmp<suffix>``, so a later writer can tell a file that a killed
process left behind (its pid is gone) from one a live process is still writing
(:func:`sweep_stale_temps`).

Files get the mode a plain ``open()`` would give them (``0o666`` less the umask), whichever
library created them.

JSON is written strictly (RFC 8259 has no NaN or Infinity): a non-finite float is written
as ``null`` and listed under the top-level key ``"nonfinite"`` as a JSON Pointer →
``"nan"`` | ``"inf"`` | ``"-inf"``; :func:`read_json` and :func:`read_jsonl` put the values
back, so Python callers see the floats they wrote.

An ``OSError`` that a user can act on (a full disk, a read-only disk, a file where a folder
should be) is turned into one shenjing error that names the file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shenjing.errors import ResourceError, RunError, ShenjingError

#: the top-level key that lists the non-finite floats of a JSON document (see module doc)
NONFINITE_KEY = "nonfinite"
#: ``.<stem>.<pid>.<random>.tmp<suffix>``: a temporary file of :func:`atomic_path`
TEMP_NAME = re.compile(r"^\.(?P<stem>.*)\.(?P<pid>\d+)\.(?P<rand>[a-z0-9_]{8})\.tmp"
                       r"(?P<suffix>(\.[^.]+)?)$")
#: ``.<stem>.<random>.tmp<suffix>``: the same without a pid (``tempfile.mkstemp``'s eight
#: random characters), as older shenjing versions named them
LEGACY_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")
#: a temporary file without a pid is swept only once it is this old (seconds): its writer
#: cannot be asked whether it is alive, but no writer leaves a file untouched this long
LEGACY_TEMP_AGE = 3600.0


# ---- modes and processes ----------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` sets it to read it, which
    another thread creating a file at that moment would see)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return False
    try:  # a zombie has exited; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True


# ---- errors a user can act on -----------------------------------------------------------
def write_error(exc: OSError, path: str | os.PathLike[str]) -> ShenjingError | None:
    """The shenjing error for an ``OSError`` met while writing ``path``, or None for one a
    user cannot act on (left as it is)."""
    code = exc.errno
    where = Path(path)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"cannot write {where}: no space left on the disk (errno "
                             f"{code}); free some space, or write to a folder on another "
                             "disk, and run the command again")
    if code == errno.EROFS:
        return RunError(f"cannot write {where}: the disk is read-only (errno {code}); copy "
                        "the run to a folder you can write to, or write the output elsewhere")
    if code in (errno.EACCES, errno.EPERM) and _concerns(exc, where):
        return RunError(f"cannot write {where}: permission denied (errno {code}); make the "
                        "folder writable, or write the output elsewhere")
    if code == errno.EISDIR and where.is_dir():
        return RunError(f"{where} is a folder, where shenjing writes a file; move that folder "
                        "away (or choose another name) and run the command again")
    if code in (errno.ENOTDIR, errno.EEXIST) and _concerns(exc, where):
        blocker = _file_in_the_way(where.parent)
        if blocker is not None:
            return RunError(f"{blocker} is a file, where shenjing keeps a folder; move that "
                            "file away (or choose another folder) and run the command again")
    return None


def _concerns(exc: OSError, path: Path) -> bool:
    """Whether ``exc`` is about ``path``, its temporary file or a folder above it (and not
    about some other file the caller's block touched)."""
    if exc.filename is None:
        return True
    name = os.path.abspath(os.fspath(exc.filename))
    target = os.path.abspath(path)
    return name == target or target.startswith(name.rstrip(os.sep) + os.sep) or \
        os.path.dirname(name) == os.path.dirname(target)


def _file_in_the_way(folder: Path) -> Path | None:
    """The first non-folder on the way down to ``folder`` (None if there is none)."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            return part
    return None


@contextlib.contextmanager
def translated_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an actionable ``OSError`` of the block as a one-line shenjing error naming
    ``path`` (see :func:`write_error`); any other error passes unchanged."""
    try:
        yield
    except OSError as exc:
        mapped = write_error(exc, path)
        if mapped is None:
            raise
        raise mapped from None


def make_folder(folder: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` that says which file is in the way, in one line, instead of
    ``FileExistsError``."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        raise RunError(f"{blocker} is a file, where shenjing keeps a folder; move that file "
                       "away (or choose another folder) and run the command again")
    with translated_errors(folder / "."):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- temporary files and atomic writes ---------------------------------------------------
def make_temp(target: str | os.PathLike[str]) -> Path:
    """Create an empty temporary file beside ``target`` for this process to write, named
    ``.<stem>.<pid>.<random>.tmp<suffix>`` (the suffix kept, so libraries that choose a
    format by suffix still do the right thing), with the mode of a plain ``open()``.

    The caller renames it onto ``target`` (``os.replace``) or deletes it.
    """
    target = Path(target)
    make_folder(target.parent)
    with translated_errors(target):
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.",
                                    suffix=f".tmp{target.suffix}", dir=target.parent)
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes it private (0600)
        finally:
            os.close(fd)
    return Path(name)


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of :func:`make_temp`'s (or an older pid-less one)."""
    return bool(TEMP_NAME.match(name) or LEGACY_TEMP_NAME.match(name))


def sweep_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files under ``folder`` whose writer is gone; return them.

    A temporary file names its writer's pid: it is stale when that process no longer runs.
    Files of live processes (this one included) are left alone. A pid-less name from an
    older shenjing is stale once untouched for :data:`LEGACY_TEMP_AGE` seconds. Call it
    while holding the run's writer lock, so no other writer is starting one meanwhile.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            if not name.startswith("."):
                continue
            path = Path(root) / name
            match = TEMP_NAME.match(name)
            if match is not None:
                stale = not pid_alive(int(match["pid"]))
            elif LEGACY_TEMP_NAME.match(name):
                try:
                    stale = now - path.lstat().st_mtime > LEGACY_TEMP_AGE
                except OSError:
                    continue
            else:
                continue
            if stale and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps the target's suffix, so libraries that choose a format by
    suffix (matplotlib, numpy) still do the right thing. Whatever the block does to it
    (safetensors re-creates the file 0600), the target gets the mode of a plain ``open()``.
    A full or read-only disk, in the block or at the rename, is one shenjing error naming
    ``path``; either way the target is untouched and the temporary file removed.
    """
    path = Path(path)
    tmp = make_temp(path)
    try:
        with translated_errors(path):
            yield tmp
            os.chmod(tmp, file_mode())
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
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


# ---- strict JSON ---------------------------------------------------------------------------
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


def _pointer_part(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _without_nonfinite(obj: Any, pointer: str, found: dict[str, str]) -> Any:
    """``obj`` with every NaN/±inf float replaced by None, recording each in ``found``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        found[pointer] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    if isinstance(obj, dict):
        return {k: _without_nonfinite(v, f"{pointer}/{_pointer_part(k)}", found)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_nonfinite(v, f"{pointer}/{i}", found) for i, v in enumerate(obj)]
    return obj


def strict_json(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as key-sorted JSON with no NaN/Infinity (see the module doc: ``null`` plus the
    top-level ``"nonfinite"`` map). Equal data gives equal text.

    >>> strict_json({"loss": float("nan"), "acc": 0.5})
    '{"acc": 0.5, "loss": null, "nonfinite": {"/loss": "nan"}}'
    """
    found: dict[str, str] = {}
    clean = _without_nonfinite(to_jsonable(obj), "", found)
    if found:
        if not isinstance(clean, dict):
            raise ValueError("only a JSON object can record non-finite values (under "
                             f"{NONFINITE_KEY!r}); got a {type(clean).__name__} holding "
                             f"{', '.join(found.values())}")
        if NONFINITE_KEY in clean:
            raise ValueError(f"{NONFINITE_KEY!r} is reserved at the top level of shenjing's "
                             "JSON files (it lists the non-finite values); rename that key")
        clean = {**clean, NONFINITE_KEY: found}
    return json.dumps(clean, indent=indent, sort_keys=True, allow_nan=False)


_NONFINITE_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _restore_nonfinite(data: Any) -> Any:
    """Undo :func:`strict_json`'s ``null`` + ``"nonfinite"`` (a foreign key of that name,
    not shaped like ours, is left as it is)."""
    if not isinstance(data, dict):
        return data
    found = data.get(NONFINITE_KEY)
    if not isinstance(found, dict) or not all(
            isinstance(k, str) and k.startswith("/") and v in _NONFINITE_VALUES
            for k, v in found.items()):
        return data
    del data[NONFINITE_KEY]
    for pointer, kind in found.items():
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
        node: Any = data
        try:
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = _NONFINITE_VALUES[kind]
            elif isinstance(node, dict) and last in node:
                node[last] = _NONFINITE_VALUES[kind]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
    return data


def loads_json(text: str) -> Any:
    """Parse JSON written by :func:`strict_json` (or any JSON), putting NaN/±inf back."""
    return _restore_nonfinite(json.loads(text))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted strict JSON (stable bytes for equal
    data; NaN/±inf as ``null`` listed under ``"nonfinite"``)."""
    return write_text(path, strict_json(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file (non-finite values recorded by :func:`write_json` restored)."""
    with open(path, encoding="utf-8") as fh:
        return loads_json(fh.read())


def jsonl_line(record: Mapping[str, Any]) -> str:
    """One strict, key-sorted JSON line (with its newline) for a JSON-lines file."""
    return strict_json(record) + "\n"


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line, rewriting the file atomically.

    Files here are small (one line per epoch), so a rewrite keeps the guarantee that
    a reader never sees a half line.
    """
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_bytes(path, old + jsonl_line(record).encode("utf-8"))


class JsonLinesError(ValueError):
    """A line of a JSON-lines file that is not a JSON object (``line`` counts from 1)."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path} line {line}: {problem}")
        self.path, self.line, self.problem = path, line, problem


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a line that is not a JSON object
    raises :class:`JsonLinesError` naming the file and the line."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except ValueError as exc:
                raise JsonLinesError(path, number, f"not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise JsonLinesError(path, number,
                                     f"a JSON {type(record).__name__}, not an object")
            yield number, record


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file; a missing file is an empty list."""
    path = Path(path)
    if not path.exists():
        return []
    return [record for _, record in iter_jsonl(path)]


# ---- arrays and tensors -------------------------------------------------------------------
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


def canonical_safetensors_header(path: str | os.PathLike[str]) -> None:
    """Rewrite a safetensors file's header with its ``__metadata__`` keys sorted, in place.

    safetensors stores the metadata in a hash map whose order changes from one process to
    the next, so the same tensors would give different bytes. The header keeps its length
    (same keys and values, only reordered), so the tensor offsets stay valid.
    """
    with open(path, "rb+") as fh:
        size = int.from_bytes(fh.read(8), "little")
        raw = fh.read(size)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not isinstance(meta, dict):
            return
        ordered = {"__metadata__": dict(sorted(meta.items())),
                   **{k: v for k, v in header.items() if k != "__metadata__"}}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # never: same content, only reordered
            raise ValueError(f"{path}: the reordered safetensors header is longer")
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Any], *,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write torch ``tensors`` as safetensors: loading it runs no code, and equal
    tensors and metadata give equal bytes (see :func:`canonical_safetensors_header`)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
        canonical_safetensors_header(tmp)
    return Path(path)
