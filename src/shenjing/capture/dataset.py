"""Dataset-level capture: every sample's layer outputs, in memory or streamed to ``.npy``.

RAM stays bounded by a few batches: the first batch finds each key's per-sample shape,
then outputs are written batch by batch into preallocated arrays (in memory) or appended
to ``.npy`` files whose header was written first (on disk). Nothing is collected in a list
and concatenated (that peaks at ~2.4× the data). On CUDA, outputs are copied into pinned
host buffers asynchronously and written once the batch's forward has finished.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from shenjing import _io
from shenjing.capture.activations import (
    Activations,
    bytes_per_sample,
    format_bytes,
    key_dirname,
)
from shenjing.capture.core import (
    NoBatchDimError,
    Pool,
    PoolTooLargeError,
    call_key,
    check_pool,
    flatten_output,
    forward_or_explain,
    prepare,
    resolve_device,
    resolve_dtype,
    shape_of,
)
from shenjing.capture.keys import check_filters, is_selected, output_path
from shenjing.capture.layers import _raise_never_ran, select_layers
from shenjing.errors import (
    LayerNotFoundError,
    ResourceError,
    ShapeMismatchError,
    UsageError,
)
from shenjing.hooks import forward_hooks


def available_memory() -> int:
    """Bytes of RAM available now (``MemAvailable`` on Linux; free pages elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def memory_budget(max_memory: int | None = None) -> int:
    """The bytes a job may hold in RAM: ``max_memory`` when given, else half of what is
    available now (the other half is left to the system and to the model's own work).

    Every large allocation (a capture, a landscape grid, the warp study, the Hessian's
    Lanczos basis) is estimated first and refused with a
    :class:`~shenjing.errors.ResourceError` above this, naming the size and the option that
    reduces it. An option value that can never work for the model, whatever the machine
    (``--pool`` larger than the maps), is a usage error instead.
    """
    return max_memory if max_memory is not None else available_memory() // 2


@dataclass(frozen=True)
class _Batch:
    x: Any
    y: torch.Tensor | None
    indices: torch.Tensor | None


def _batches(data: Any, batch_size: int) -> tuple[Iterator[_Batch], int | None]:
    """Batches from a Split, a tensor, an (x, y) pair or a DataLoader, plus the sample count."""
    if hasattr(data, "x") and hasattr(data, "y") and hasattr(data, "indices"):  # Split
        x, y, idx = data.x, data.y, data.indices
        n = int(x.shape[0])
        return (_Batch(x[i:i + batch_size], y[i:i + batch_size], idx[i:i + batch_size])
                for i in range(0, n, batch_size)), n
    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
        n = int(x.shape[0])
        return (_Batch(x[i:i + batch_size], None, None) for i in range(0, n, batch_size)), n
    if (isinstance(data, tuple) and len(data) == 2
            and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data)):
        x, y = (torch.as_tensor(v) for v in data)
        n = int(x.shape[0])
        return (_Batch(x[i:i + batch_size], y[i:i + batch_size], None)
                for i in range(0, n, batch_size)), n
    if isinstance(data, Iterable):
        sized: int | None = None
        dataset = getattr(data, "dataset", None)
        if dataset is not None:
            try:
                sized = len(dataset)
            except TypeError:
                sized = None

        def gen() -> Iterator[_Batch]:
            for item in data:
                if isinstance(item, (tuple, list)):
                    yield _Batch(item[0], item[1] if len(item) > 1 else None, None)
                elif isinstance(item, Mapping) and "x" in item:
                    yield _Batch(item["x"], item.get("y"), item.get("indices"))
                else:
                    yield _Batch(item, None, None)
        return gen(), sized
    raise UsageError(f"cannot capture from {type(data).__name__}; pass a Split, a tensor, "
                     "an (x, y) pair of tensors, or a DataLoader")


def _n_of(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return int(x.shape[0])
    if isinstance(x, (tuple, list)):
        return _n_of(x[0])
    if isinstance(x, Mapping):
        return _n_of(next(iter(x.values())))
    raise UsageError(f"cannot find the batch size of an input of type {type(x).__name__}")


def _to(x: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, tuple):
        return tuple(_to(v, device, non_blocking) for v in x)
    if isinstance(x, list):
        return [_to(v, device, non_blocking) for v in x]
    if isinstance(x, Mapping):
        return {k: _to(v, device, non_blocking) for k, v in x.items()}
    return x


class _Sink:
    """Where rows go: preallocated arrays, or ``.npy`` files written front to back.

    On disk, a writer thread appends rows while the next batch's forward runs: each batch
    is first copied into one of ``_SLOTS`` reused buffers per key (so an in-place op later
    in the forward cannot change it, and RAM stays at a few batches), then written.
    """

    _SLOTS = 3

    def __init__(self, specs: Mapping[str, tuple[tuple[int, ...], np.dtype]], n: int,
                 out_dir: Path | None, stem: str) -> None:
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
                self.arrays[key] = torch.empty(full, dtype=_torch_dtype(dtype)).numpy()
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
                free.put(torch.empty((rows, *shape), dtype=_torch_dtype(dtype)))
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
        import io

        buf = io.BytesIO()
        _Sink._header(buf, (n, *shape), dtype)
        return buf.tell()

    def abort(self) -> None:
        self._stop()
        for fh in self.files.values():
            fh.close()
        for path in self.tmp.values():
            if path.exists():
                path.unlink()
        self.files.clear()


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def capture_dataset(
    model: nn.Module,
    data: Any,
    layers: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    pool: Pool | str = "none",
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    stem: str = "activations",
    max_memory: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    meta: Mapping[str, Any] | None = None,
    verbose: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
    fsync: bool = False,
) -> Activations:
    """Run ``data`` through ``model`` and record ``layers`` for every sample.

    The model runs in ``eval()`` (restored afterwards) under ``torch.inference_mode()``.
    ``data``: a :class:`shenjing.data.Split` (indices and labels kept), a tensor, an
    ``(x, y)`` pair, or a DataLoader yielding ``x`` or ``(x, y, ...)``.
    ``layers``: names, globs or module types (:func:`resolve_layers`).
    ``dtype`` (``float32``/``float16``), ``pool`` (``none``/``mean``/``max``/k) and ``limit``
    (first samples only) reduce the bytes on the fly.

    Storage: ``out_dir=None`` keeps arrays in memory, refused with a
    :class:`ResourceError` above ``max_memory`` (default: half the available RAM);
    with ``out_dir`` each key streams to ``out_dir/<key>/<stem>.npy`` (atomic: a temporary
    file renamed at the end), readable with ``np.load(mmap_mode="r")``. The size per layer
    is printed (``verbose``) before anything is allocated.

    ``device``: None keeps the model where it is; ``"auto"`` moves it to CUDA if available.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    >>> acts = capture_dataset(net, torch.ones(10, 3), ["1"], batch_size=4, verbose=False)
    >>> acts["1"].shape
    (10, 4)
    """
    names, explicit, selection = select_layers(model, layers)
    pool = check_pool(pool)
    torch_dtype = resolve_dtype(dtype)
    if batch_size < 1:
        raise UsageError(f"batch_size must be ≥ 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be ≥ 1 samples, got {limit}")
    dev = resolve_device(device, model)
    if device is not None:
        model.to(dev)
    batches, n_total = _batches(data, batch_size)
    if n_total is None:
        if limit is None:
            raise UsageError("the data has no length (an iterable dataset); pass limit=N so "
                             "the capture knows how many samples to allocate")
        n_total = limit
    elif limit is not None:
        n_total = min(n_total, limit)
    if n_total == 0:
        raise UsageError("the data holds no samples")
    cuda = dev.type == "cuda"
    out_path = Path(out_dir) if out_dir is not None else None

    was_training = model.training
    model.eval()
    sink: _Sink | None = None
    try:
        with torch.inference_mode():
            it = iter(batches)
            first = next(it)
            first_x = _to(first.x, dev, cuda)
            if (input_shape is not None and isinstance(first_x, torch.Tensor)
                    and tuple(first_x.shape[1:]) != tuple(input_shape)):
                raise ShapeMismatchError(
                    f"data of shape {tuple(first_x.shape)} does not fit the model: it "
                    f"expects samples of shape {tuple(input_shape)}, i.e. batches "
                    f"(N, {', '.join(map(str, input_shape))}); received per-sample shape "
                    f"{tuple(first_x.shape[1:])}")
            # first batch: learn keys, shapes and calls per forward, keep its outputs
            b0 = min(_n_of(first_x), n_total)
            seen: dict[str, list[list[tuple[str, torch.Tensor | UsageError]]]] = {
                n: [] for n in names}

            def record_first(name: str):
                def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                    outs: list[tuple[str, torch.Tensor | UsageError]] = []
                    for k, t in flatten_output(name, out):
                        try:
                            t = prepare(t, batch_size=_n_of(first_x), pool=pool,
                                        dtype=torch_dtype, key=k)[:b0]
                        except (NoBatchDimError, PoolTooLargeError) as exc:
                            outs.append((k, exc))  # an error only if this key is kept
                            continue
                        outs.append((k, t.to("cpu", copy=True)))
                    seen[name].append(outs)
                return hook

            with forward_hooks(model, {n: record_first(n) for n in names}):
                forward_or_explain(model, first_x)
            # layers picked by a glob or a type may be off this input's path: dropped
            for n in [n for n, calls in seen.items() if not calls and n not in explicit]:
                del seen[n]
            names = list(seen)
            _raise_never_ran(model, first_x, [n for n, calls in seen.items() if not calls],
                             [n for n, calls in seen.items() if calls])
            if not names:
                raise LayerNotFoundError(
                    f"none of {', '.join(map(repr, layers))} ran in {type(model).__name__} "
                    f"for input of shape {shape_of(first_x)}: they are not on this input's "
                    "forward path. See `shenjing layers RUN` for what ran")
            check_filters(selection, {n: [[output_path(n, k) for k, _ in outs] for outs in v]
                                      for n, v in seen.items()}, type(model).__name__)
            n_calls = {n: len(v) for n, v in seen.items()}
            specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
            first_rows: dict[str, torch.Tensor] = {}
            key_layer: dict[str, str] = {}
            for name, per_call in seen.items():
                for c, outs in enumerate(per_call):
                    prefix = call_key(name, c, len(per_call))
                    for k, t in outs:
                        if not is_selected(selection, name, c, len(per_call),
                                           output_path(name, k)):
                            continue
                        key = prefix + k[len(name):]
                        if isinstance(t, UsageError):
                            raise type(t)(str(t).replace(repr(k), repr(key))) from None
                        specs[key] = (tuple(t.shape[1:]),
                                      np.dtype(str(t.dtype).removeprefix("torch.")))
                        first_rows[key] = t
                        key_layer[key] = name
            if not specs:
                raise LayerNotFoundError(
                    f"layer(s) {', '.join(names)} returned no floating-point tensor to record")

            total = sum(n_total * bytes_per_sample((1, *s), d) for s, d in specs.values())
            if verbose:
                where = f"streamed to {out_path}" if out_path else "in memory"
                print(f"capture: {n_total} samples, {len(specs)} tensor(s), "
                      f"{format_bytes(total)} {where}", file=sys.stderr)
                for key, (shape, dt) in specs.items():
                    size = n_total * bytes_per_sample((1, *shape), dt)
                    print(f"  {key:<20} {shape!s:<18} {dt!s:<8} {format_bytes(size)}",
                          file=sys.stderr)
            _check_budget(total, specs, n_total, out_path, max_memory, pool, dtype,
                          batch_size=min(batch_size, n_total), cuda=cuda)

            sink = _Sink(specs, n_total, out_path, stem)
            for key, t in first_rows.items():
                sink.write(key, t)
            del first_rows
            done = b0
            indices = np.empty(n_total, dtype=np.int64)
            labels: np.ndarray | None = None
            _fill_meta(first, 0, b0, indices, n_total)
            if first.y is not None:
                y0 = torch.as_tensor(first.y)
                labels = np.empty((n_total, *y0.shape[1:]), dtype=y0.numpy().dtype)
                labels[:b0] = y0[:b0].numpy()
            if progress is not None:
                progress(done, n_total)

            # the remaining batches: hooks prepare outputs and hand them to the sink at once
            calls = dict.fromkeys(names, 0)
            state = {"b": 0, "take": 0}
            staged: list[tuple[str, torch.Tensor]] = []
            pinned: dict[str, torch.Tensor] = {}

            def stream(name: str):
                def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                    c = calls[name]
                    calls[name] = c + 1
                    prefix = call_key(name, c, n_calls[name])
                    for k, t in flatten_output(name, out):
                        if not is_selected(selection, name, c, n_calls[name],
                                           output_path(name, k)):
                            continue
                        key = prefix + k[len(name):]
                        if key not in specs:
                            raise UsageError(
                                f"layer {name!r} produced {key!r}, which the first batch did "
                                f"not (it ran {n_calls[name]}× there); capture needs the "
                                "same calls in every batch")
                        t = prepare(t, batch_size=state["b"], pool=pool, dtype=torch_dtype,
                                    key=key)[:state["take"]]
                        if cuda:
                            buf = pinned.get(key)
                            if buf is None or buf.shape[0] < t.shape[0]:
                                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                                pinned[key] = buf
                            view = buf[:t.shape[0]]
                            view.copy_(t, non_blocking=True)
                            staged.append((key, view))
                        else:
                            sink.write(key, t)  # type: ignore[union-attr]
                return hook

            with forward_hooks(model, {n: stream(n) for n in names}):
                for batch in it:
                    if done >= n_total:
                        break
                    x = _to(batch.x, dev, cuda)
                    b = _n_of(x)
                    take = min(b, n_total - done)
                    state["b"], state["take"] = b, take
                    for n in calls:
                        calls[n] = 0
                    forward_or_explain(model, x)
                    for n, c in calls.items():
                        if c != n_calls[n]:
                            raise UsageError(
                                f"layer {n!r} ran {c}× in a later batch but {n_calls[n]}× in "
                                "the first; capture needs the same calls in every batch")
                    if cuda:
                        torch.cuda.current_stream(dev).synchronize()
                        for key, t in staged:
                            sink.write(key, t)
                        staged.clear()
                    _fill_meta(batch, done, take, indices, n_total)
                    if labels is not None and batch.y is not None:
                        labels[done:done + take] = torch.as_tensor(batch.y)[:take].numpy()
                    done += take
                    if progress is not None:
                        progress(done, n_total)
            arrays = sink.finish(done, fsync)
            sink = None
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    finally:
        model.train(was_training)

    indices = indices[:done]
    labels = None if labels is None else labels[:done]
    info = {}
    for key, (shape, dt) in specs.items():
        layer = key_layer[key]
        info[key] = {"key": key, "layer": layer,
                     "type": type(model.get_submodule(layer)).__name__,
                     "shape": [done, *shape], "dtype": str(dt), "pool": pool,
                     "calls_per_forward": n_calls[layer], "n_samples": done,
                     "bytes": done * bytes_per_sample((1, *shape), dt),
                     "model": type(model).__name__, **dict(meta or {})}
    paths = {}
    if out_path is not None:
        for key in specs:
            folder = out_path / key_dirname(key)
            _io.save_npy(folder / f"{stem}.indices.npy", indices)
            if labels is not None:
                _io.save_npy(folder / f"{stem}.labels.npy", labels)
            _io.write_json(folder / f"{stem}.json", info[key])
            paths[key] = folder / f"{stem}.npy"
    return Activations(arrays, indices=indices, labels=labels, info=info, paths=paths)


def _fill_meta(batch: _Batch, start: int, take: int, indices: np.ndarray, n: int) -> None:
    if batch.indices is not None:
        indices[start:start + take] = torch.as_tensor(batch.indices)[:take].numpy()
    else:
        indices[start:start + take] = np.arange(start, start + take)


def streaming_bytes(specs: Mapping[str, tuple[tuple[int, ...], np.dtype]], n: int,
                    batch_size: int, cuda: bool = False) -> int:
    """RAM a capture streamed to disk holds at once: per key the first batch's rows, the
    writer's reused buffers (``_Sink._SLOTS``) and, on CUDA, one pinned staging buffer of
    ``batch_size`` rows each; plus the indices and labels of all ``n`` samples."""
    per_row = sum(bytes_per_sample((1, *shape), dt) for shape, dt in specs.values())
    buffers = _Sink._SLOTS + 1 + (1 if cuda else 0)
    return buffers * batch_size * per_row + 16 * n


def check_capture_memory(probe: Activations, n: int, *, out_dir: str | os.PathLike[str] | None,
                         max_memory: int | None = None, pool: Any = "none",
                         dtype: Any = "float32", batch_size: int = 256,
                         cuda: bool = False) -> None:
    """Refuse a capture of ``n`` samples whose bytes would not fit (memory, or disk with
    ``out_dir``), from ``probe``: the same layers captured on a couple of samples.

    A stage calls this before it marks itself running, so a refusal changes nothing in the
    run; :func:`capture_dataset` checks the same again before it allocates.
    """
    specs = {key: (tuple(int(s) for s in arr.shape[1:]), np.dtype(arr.dtype))
             for key, arr in probe.items()}
    if not specs:
        return
    total = sum(n * bytes_per_sample((1, *s), d) for s, d in specs.values())
    _check_budget(total, specs, n, Path(out_dir) if out_dir is not None else None, max_memory,
                  pool, dtype, batch_size=min(batch_size, n), cuda=cuda)


def _check_budget(total: int, specs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                  n: int, out_path: Path | None, max_memory: int | None, pool: Any,
                  dtype: Any, *, batch_size: int = 1, cuda: bool = False) -> None:
    """Refuse a capture that would not fit, naming the bytes and what reduces them."""
    biggest = max(specs, key=lambda k: bytes_per_sample((1, *specs[k][0]), specs[k][1]))
    hints = []
    if any(len(s) >= 3 for s, _ in specs.values()) and pool == "none":
        hints.append("pool='mean' (CLI --pool mean) or pool=2 for conv maps")
    if str(dtype) in ("float32", "torch.float32"):
        hints.append("dtype='float16' (--dtype float16) halves it")
    hints.append("limit=N (--n N) captures fewer samples")
    if out_path is None:
        budget = memory_budget(max_memory)
        if total > budget:
            raise ResourceError(
                f"capturing {n} samples needs {format_bytes(total)} ({total} bytes; largest: "
                f"{biggest!r}) but only {format_bytes(budget)} of memory is allowed; pass "
                f"out_dir=... to stream to disk (the CLI's `shenjing capture` does), or reduce "
                f"it: {'; '.join(hints)}")
    else:
        if max_memory is not None and total > max_memory:  # the user's own cap, on disk too
            raise ResourceError(
                f"capturing {n} samples needs {format_bytes(total)} ({total} bytes; largest: "
                f"{biggest!r}), above the {format_bytes(max_memory)} allowed (--max-memory); "
                f"raise --max-memory or reduce it: {'; '.join(hints)}")
        ram = streaming_bytes(specs, n, batch_size, cuda)
        budget = memory_budget(max_memory)
        if ram > budget:
            fits = max(1, (budget - 16 * n) // max(1, streaming_bytes(specs, 0, 1, cuda)))
            raise ResourceError(
                f"streaming batches of {batch_size} samples to disk ({len(specs)} tensor(s), "
                f"largest {biggest!r}) need {format_bytes(ram)} of memory for their buffers "
                f"but only {format_bytes(budget)} is allowed (half the available memory, or "
                f"--max-memory); reduce --batch-size (batch_size=), e.g. --batch-size {fits}")
        existing = next((p for p in (out_path, *out_path.parents) if p.exists()), out_path)
        free = shutil.disk_usage(existing).free
        if total > free:
            raise ResourceError(
                f"capturing {n} samples needs {format_bytes(total)} ({total} bytes) on disk "
                f"but {out_path} has {format_bytes(free)} free; reduce it: {'; '.join(hints)}")
