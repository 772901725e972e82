"""Where a dataset capture's rows go: preallocated arrays, or ``.npy`` files written front
to back by a writer thread, so RAM stays at a few batches (see :func:`streaming_bytes`).

Each key is one array ``(samples, *per-sample shape)`` whose size is known before the first
row is written; a file on disk is named by this process until :meth:`RowStore.finish`
renames it into place, and :meth:`RowStore.abort` leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from shenjing import _io
from shenjing.capture.activations import bytes_per_sample, key_dirname
from shenjing.errors import ShapeMismatchError, UsageError

#: per key: the per-sample shape and the dtype its rows are stored in
Specs = Mapping[str, tuple[tuple[int, ...], np.dtype]]


class RowStore:
    """Where rows go: preallocated arrays, or ``.npy`` files written front to back.

    On disk, a writer thread appends rows while the next batch's forward runs: each batch
    is first copied into one of ``_SLOTS`` reused buffers per key (so an in-place op later
    in the forward cannot change it, and RAM stays at a few batches), then written.
    """

    _SLOTS = 3

    def __init__(self, specs: Specs, n: int, out_dir: Path | None, stem: str) -> None:
        self.n = n
        self.specs = dict(specs)
        self.rows = dict.fromkeys(specs, 0)
        self.arrays: dict[str, np.ndarray] = {}
        self.files: dict[str, BinaryIO] = {}
        self.tmp: dict[str, Path] = {}
        self.final: dict[str, Path] = {}
        self.out_dir = out_dir
        for key, (shape, dtype) in self.specs.items():
            full = (n, *shape)
            if out_dir is None:
                # torch's allocator, not numpy's: numpy asks for transparent huge pages,
                # which can stall for seconds in compaction on a busy machine
                self.arrays[key] = torch.empty(full, dtype=torch_dtype_of(dtype)).numpy()
                continue
            self.final[key] = out_dir / key_dirname(key) / f"{stem}.npy"
            # named by this pid, so a later stage sweeps it if this process is killed;
            # the mode a plain open() gives, like every file of a run
            self.tmp[key] = _io.make_temp(self.final[key])
            fh = open(self.tmp[key], "wb", buffering=0)  # noqa: SIM115 (closed in finish/abort)
            self.files[key] = fh
            self._header(fh, full, dtype)
        self._error: BaseException | None = None
        if out_dir is not None:
            self._free: dict[str, queue.Queue[torch.Tensor]] = {}
            self._todo: queue.Queue[tuple[str, torch.Tensor, int] | None] = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="shenjing-capture-writer",
                                            daemon=True)
            self._thread.start()

    def _slot(self, key: str, rows: int) -> torch.Tensor:
        free = self._free.get(key)
        if free is None:
            free = self._free[key] = queue.Queue()
            shape, dtype = self.specs[key]
            for _ in range(self._SLOTS):
                free.put(torch.empty((rows, *shape), dtype=torch_dtype_of(dtype)))
        buf = free.get()
        if buf.shape[0] < rows:
            buf = torch.empty((rows, *buf.shape[1:]), dtype=buf.dtype)
        return buf

    def _drain(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            key, buf, rows = item
            try:
                if self._error is None:
                    self.files[key].write(buf[:rows].numpy().data)
            except BaseException as exc:  # reported by the next write() or finish()
                self._error = exc
            finally:
                self._free[key].put(buf)

    def _stop(self) -> None:
        if self.out_dir is not None and self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()

    @staticmethod
    def _header(fh: BinaryIO, shape: tuple[int, ...], dtype: np.dtype) -> int:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                  "fortran_order": False, "shape": tuple(int(s) for s in shape)}
        start = fh.tell()
        np.lib.format.write_array_header_1_0(fh, header)
        return fh.tell() - start

    def write(self, key: str, t: torch.Tensor) -> None:
        arr = t.numpy() if t.device.type == "cpu" else t.cpu().numpy()
        start = self.rows[key]
        stop = start + arr.shape[0]
        if stop > self.n:
            raise UsageError(f"the data yielded more than the {self.n} samples it announced")
        if arr.shape[1:] != self.specs[key][0]:
            raise ShapeMismatchError(
                f"output {key!r} changed shape between batches: first batch gave per-sample "
                f"shape {self.specs[key][0]}, a later batch {arr.shape[1:]}; pad or crop "
                "inputs to one size, or pool the layer (pool='mean')")
        if self.out_dir is None:
            self.arrays[key][start:stop] = arr
        else:
            if self._error is not None:
                raise self._error
            rows = arr.shape[0]
            buf = self._slot(key, rows)
            buf[:rows].copy_(t if t.device.type == "cpu" else torch.from_numpy(arr))
            self._todo.put((key, buf, rows))
        self.rows[key] = stop

    def finish(self, n_done: int, fsync: bool) -> dict[str, np.ndarray]:
        self._stop()
        if self._error is not None:
            raise self._error
        for key, count in self.rows.items():
            if count != n_done:
                raise UsageError(f"output {key!r} recorded {count} rows for {n_done} samples; "
                                 "a layer that runs only for some batches cannot be captured")
        if self.out_dir is None:
            if n_done < self.n:
                return {k: a[:n_done] for k, a in self.arrays.items()}
            return self.arrays
        out = {}
        for key, fh in self.files.items():
            shape, dtype = self.specs[key]
            if n_done != self.n:  # the data yielded fewer samples than announced
                fh.flush()
                end = fh.tell()
                fh.seek(0)
                old = self._header_len(self.n, shape, dtype)
                new = self._header(fh, (n_done, *shape), dtype)
                if new != old:
                    raise UsageError("sample count changed the .npy header size; pass limit=")
                fh.seek(end)
                fh.truncate(old + n_done * bytes_per_sample((1, *shape), dtype))
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
            fh.close()
            os.replace(self.tmp[key], self.final[key])
            out[key] = np.load(self.final[key], mmap_mode="r")
        self.files.clear()
        return out

    @staticmethod
    def _header_len(n: int, shape: tuple[int, ...], dtype: np.dtype) -> int:
        buf = io.BytesIO()
        RowStore._header(buf, (n, *shape), dtype)
        return buf.tell()

    def abort(self) -> None:
        self._stop()
        for fh in self.files.values():
            fh.close()
        for path in self.tmp.values():
            if path.exists():
                path.unlink()
        self.files.clear()


def torch_dtype_of(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype (``float16`` → ``torch.float16``)."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def streaming_bytes(specs: Specs, n: int, batch_size: int, cuda: bool = False) -> int:
    """RAM a capture streamed to disk holds at once: per key the first batch's rows, the
    writer's reused buffers (``RowStore._SLOTS``) and, on CUDA, one pinned staging buffer of
    ``batch_size`` rows each; plus the indices and labels of all ``n`` samples."""
    per_row = sum(bytes_per_sample((1, *shape), dt) for shape, dt in specs.values())
    buffers = RowStore._SLOTS + 1 + (1 if cuda else 0)
    return buffers * batch_size * per_row + 16 * n
