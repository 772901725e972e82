"""Dataset-level capture: every sample's layer outputs, in memory or streamed to ``.npy``.

RAM stays bounded by a few batches: the first batch finds each key's per-sample shape,
then outputs are written batch by batch into preallocated arrays (in memory) or appended
to ``.npy`` files whose header was written first (on disk). Nothing is collected in a list
and concatenated (that peaks at ~2.4× the data). On CUDA, outputs are copied into pinned
host buffers asynchronously and written once the batch's forward has finished.

The phases of :func:`capture_dataset`: resolve the layers, probe the first batch
(:func:`_probe_first_batch`), report the :class:`CapturePlan` and check the budget
(:func:`_check_budget`), stream the other batches (:class:`_Streamer` as the recorder's
sink, into a :class:`~shenjing.capture.rows.RowStore`), finish the files (:func:`_finish`).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from shenjing.capture.batches import Batch, batches_of, n_of, to_device
from shenjing.capture.core import (
    NoBatchDimError,
    Pool,
    PoolTooLargeError,
    check_pool,
    device_for,
    forward_or_explain,
    prepare,
    resolve_dtype,
    shape_of,
)
from shenjing.capture.keys import Selection, check_filters, is_selected, output_key
from shenjing.capture.layers import _raise_never_ran, select_layers
from shenjing.capture.recorder import CallLog, ModuleCall, OutputPath, Recorder
from shenjing.capture.rows import RowStore, Specs, streaming_bytes
from shenjing.errors import (
    LayerNotFoundError,
    ResourceError,
    ShapeMismatchError,
    UsageError,
)


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
class CapturePlan:
    """What a capture will record, known after the first batch and before anything is
    allocated: ``tensors[key]`` is the per-sample shape and stored dtype of each key.

    ``str(plan)`` is the size summary (one line, then one per key), so
    ``capture_dataset(..., on_plan=print)`` shows it in a notebook.
    """

    n_samples: int
    tensors: dict[str, tuple[tuple[int, ...], np.dtype]]
    out_dir: Path | None = None

    def nbytes(self, key: str) -> int:
        shape, dtype = self.tensors[key]
        return self.n_samples * bytes_per_sample((1, *shape), dtype)

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes(key) for key in self.tensors)

    def __str__(self) -> str:
        where = f"streamed to {self.out_dir}" if self.out_dir else "in memory"
        lines = [f"capture: {self.n_samples} samples, {len(self.tensors)} tensor(s), "
                 f"{format_bytes(self.total_bytes)} {where}"]
        lines += [f"  {key:<20} {shape!s:<18} {dt!s:<8} {format_bytes(self.nbytes(key))}"
                  for key, (shape, dt) in self.tensors.items()]
        return "\n".join(lines)


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
    on_plan: Callable[[CapturePlan], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    fsync: bool = False,
    verbose: bool | None = None,
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
    file renamed at the end), readable with ``np.load(mmap_mode="r")``.

    Nothing is printed: ``on_plan`` receives the :class:`CapturePlan` (sizes per key)
    before anything is allocated or refused, ``progress(done, n_samples)`` is called after
    each batch. ``verbose`` is deprecated and ignored (pass ``on_plan=print`` instead).

    ``device``: None keeps the model where it is; ``"auto"`` moves it to CUDA if available.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    >>> acts = capture_dataset(net, torch.ones(10, 3), ["1"], batch_size=4)
    >>> acts["1"].shape
    (10, 4)
    """
    if verbose is not None:
        warnings.warn("capture_dataset(verbose=...) is deprecated and ignored: it prints "
                      "nothing; pass on_plan=print to see the sizes", DeprecationWarning,
                      stacklevel=2)
    names, explicit, selection = select_layers(model, layers)
    options = _Options(check_pool(pool), resolve_dtype(dtype))
    if batch_size < 1:
        raise UsageError(f"batch_size must be ≥ 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be ≥ 1 samples, got {limit}")
    dev = device_for(model, device)
    if device is not None:
        model.to(dev)
    batches, n_total = batches_of(data, batch_size)
    n_total = _sample_count(n_total, limit)
    cuda = dev.type == "cuda"
    out_path = Path(out_dir) if out_dir is not None else None

    was_training = model.training
    model.eval()
    store: RowStore | None = None
    try:
        with torch.inference_mode():
            it = iter(batches)
            first = next(it)
            first_x = to_device(first.x, dev, cuda)
            _check_input_shape(first_x, input_shape)
            probe = _probe_first_batch(model, first_x, min(n_of(first_x), n_total), layers,
                                       names, explicit, selection, options)
            plan = CapturePlan(n_total, probe.specs, out_path)
            if on_plan is not None:
                on_plan(plan)
            _check_budget(plan.total_bytes, probe.specs, n_total, out_path, max_memory,
                          options.pool, dtype, batch_size=min(batch_size, n_total), cuda=cuda)
            store = RowStore(probe.specs, n_total, out_path, stem)
            samples = _Samples(n_total, first, probe.n_rows)
            for key, t in probe.first_rows.items():
                store.write(key, t)
            probe.first_rows.clear()
            if progress is not None:
                progress(samples.done, n_total)
            streamer = _Streamer(store, probe, selection, options, cuda)
            _stream_batches(model, it, dev, streamer, samples, progress)
            arrays = store.finish(samples.done, fsync)
            store = None
    except BaseException:
        if store is not None:
            store.abort()
        raise
    finally:
        model.train(was_training)
    return _finish(model, arrays, probe, samples, options.pool, out_path, stem, meta)


@dataclass(frozen=True)
class _Options:
    """How each recorded tensor is reduced: pooled by ``pool``, cast to ``dtype``."""

    pool: Pool
    dtype: torch.dtype | None


def _sample_count(n_data: int | None, limit: int | None) -> int:
    """How many samples to capture: the data's length, at most ``limit``."""
    if n_data is None:
        if limit is None:
            raise UsageError("the data has no length (an iterable dataset); pass limit=N so "
                             "the capture knows how many samples to allocate")
        n_data = limit
    elif limit is not None:
        n_data = min(n_data, limit)
    if n_data == 0:
        raise UsageError("the data holds no samples")
    return n_data


def _check_input_shape(x: Any, input_shape: tuple[int, ...] | None) -> None:
    if (input_shape is not None and isinstance(x, torch.Tensor)
            and tuple(x.shape[1:]) != tuple(input_shape)):
        raise ShapeMismatchError(
            f"data of shape {tuple(x.shape)} does not fit the model: it "
            f"expects samples of shape {tuple(input_shape)}, i.e. batches "
            f"(N, {', '.join(map(str, input_shape))}); received per-sample shape "
            f"{tuple(x.shape[1:])}")


@dataclass
class _Probe:
    """What the first batch showed: the modules that ran and their calls per forward, the
    spec and layer of every key to record, and the first batch's rows (``n_rows`` each)."""

    names: list[str]
    n_calls: dict[str, int]
    specs: dict[str, tuple[tuple[int, ...], np.dtype]]
    layer_of: dict[str, str]
    first_rows: dict[str, torch.Tensor]
    n_rows: int


def _probe_first_batch(model: nn.Module, x: Any, n_rows: int, layers: Any, names: list[str],
                       explicit: set[str], selection: Selection, options: _Options) -> _Probe:
    """Run the first batch: learn keys, per-sample shapes and calls per forward, and keep
    its first ``n_rows`` rows of every output, prepared (batch first, pooled, cast)."""
    batch = n_of(x)

    def keep(call: ModuleCall) -> list[tuple[OutputPath, torch.Tensor | UsageError]]:
        outs: list[tuple[OutputPath, torch.Tensor | UsageError]] = []
        for path, t in call.outputs:
            try:
                t = prepare(t, batch_size=batch, pool=options.pool, dtype=options.dtype,
                            key=output_key(call.module, 0, 1, path))[:n_rows]
            except (NoBatchDimError, PoolTooLargeError) as exc:
                outs.append((path, exc))  # an error only if this key is kept
                continue
            outs.append((path, t.to("cpu", copy=True)))
        return outs

    log = CallLog(names, keep)
    with Recorder(model, names, log.sink).observing():
        forward_or_explain(model, x)
    # layers picked by a glob or a type may be off this input's path: dropped
    names = [n for n in names if log.n_calls(n) or n in explicit]
    _raise_never_ran(model, x, [n for n in names if not log.n_calls(n)],
                     [n for n in names if log.n_calls(n)])
    if not names:
        raise LayerNotFoundError(
            f"none of {', '.join(map(repr, layers))} ran in {type(model).__name__} "
            f"for input of shape {shape_of(x)}: they are not on this input's "
            "forward path. See `shenjing layers RUN` for what ran")
    check_filters(selection, log.produced(), type(model).__name__)
    probe = _Probe(names, {n: log.n_calls(n) for n in names}, {}, {}, {}, n_rows)
    for out in log.keyed(selection):
        if isinstance(out.value, UsageError):
            unnamed = output_key(out.module, 0, 1, out.path)
            raise type(out.value)(str(out.value).replace(repr(unnamed), repr(out.key))) from None
        probe.specs[out.key] = (tuple(out.value.shape[1:]),
                                np.dtype(str(out.value.dtype).removeprefix("torch.")))
        probe.first_rows[out.key] = out.value
        probe.layer_of[out.key] = out.module
    if not probe.specs:
        raise LayerNotFoundError(
            f"layer(s) {', '.join(names)} returned no floating-point tensor to record")
    return probe


class _Samples:
    """The source positions and labels of the rows captured so far (``done`` of them)."""

    def __init__(self, n: int, first: Batch, n_rows: int) -> None:
        self.indices = np.empty(n, dtype=np.int64)
        self.labels: np.ndarray | None = None
        if first.y is not None:
            y0 = torch.as_tensor(first.y)
            self.labels = np.empty((n, *y0.shape[1:]), dtype=y0.numpy().dtype)
        self.done = 0
        self.add(first, n_rows)

    def add(self, batch: Batch, take: int) -> None:
        """The first ``take`` samples of ``batch`` follow the rows captured so far."""
        start, stop = self.done, self.done + take
        if batch.indices is not None:
            self.indices[start:stop] = torch.as_tensor(batch.indices)[:take].numpy()
        else:
            self.indices[start:stop] = np.arange(start, stop)
        if self.labels is not None and batch.y is not None:
            self.labels[start:stop] = torch.as_tensor(batch.y)[:take].numpy()
        self.done = stop


class _Streamer:
    """The recorder's sink for the batches after the first: the keys are known, so each
    selected output is prepared and handed to the row store at once (on CUDA it is copied
    into a pinned buffer without waiting, and written once the batch has finished)."""

    def __init__(self, store: RowStore, probe: _Probe, selection: Selection,
                 options: _Options, cuda: bool) -> None:
        self.store, self.probe, self.selection = store, probe, selection
        self.options, self.cuda = options, cuda
        self.batch_size = self.take = 0
        self.staged: list[tuple[str, torch.Tensor]] = []
        self.pinned: dict[str, torch.Tensor] = {}

    def __call__(self, call: ModuleCall) -> None:
        n_calls = self.probe.n_calls[call.module]
        for path, t in call.outputs:
            if not is_selected(self.selection, call.module, call.call, n_calls, path):
                continue
            key = output_key(call.module, call.call, n_calls, path)
            if key not in self.probe.specs:
                raise UsageError(
                    f"layer {call.module!r} produced {key!r}, which the first batch did "
                    f"not (it ran {n_calls}× there); capture needs the same calls in every "
                    "batch")
            t = prepare(t, batch_size=self.batch_size, pool=self.options.pool,
                        dtype=self.options.dtype, key=key)[:self.take]
            if self.cuda:
                self.staged.append((key, self._pin(key, t)))
            else:
                self.store.write(key, t)

    def _pin(self, key: str, t: torch.Tensor) -> torch.Tensor:
        buf = self.pinned.get(key)
        if buf is None or buf.shape[0] < t.shape[0]:
            buf = self.pinned[key] = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        view = buf[:t.shape[0]]
        view.copy_(t, non_blocking=True)
        return view

    def write_staged(self, dev: torch.device) -> None:
        """Write the pinned copies of a finished batch (waits for the copies on CUDA)."""
        if self.cuda:
            torch.cuda.current_stream(dev).synchronize()
            for key, t in self.staged:
                self.store.write(key, t)
            self.staged.clear()


def _stream_batches(model: nn.Module, batches: Iterator[Batch], dev: torch.device,
                    streamer: _Streamer, samples: _Samples,
                    progress: Callable[[int, int | None], None] | None) -> None:
    """Run the remaining batches, each with the calls per forward the first one had."""
    n_total = samples.indices.shape[0]
    recorder = Recorder(model, streamer.probe.names, streamer)
    with recorder.observing():
        for batch in batches:
            if samples.done >= n_total:
                break
            x = to_device(batch.x, dev, streamer.cuda)
            streamer.batch_size = n_of(x)
            streamer.take = min(streamer.batch_size, n_total - samples.done)
            recorder.new_forward()
            forward_or_explain(model, x)
            for n, c in recorder.calls.items():
                if c != streamer.probe.n_calls[n]:
                    raise UsageError(
                        f"layer {n!r} ran {c}× in a later batch but {streamer.probe.n_calls[n]}×"
                        " in the first; capture needs the same calls in every batch")
            streamer.write_staged(dev)
            samples.add(batch, streamer.take)
            if progress is not None:
                progress(samples.done, n_total)


def _finish(model: nn.Module, arrays: Mapping[str, np.ndarray], probe: _Probe,
            samples: _Samples, pool: Pool, out_path: Path | None, stem: str,
            meta: Mapping[str, Any] | None) -> Activations:
    """The result, and on disk each key's indices, labels and description next to it."""
    done = samples.done
    indices = samples.indices[:done]
    labels = None if samples.labels is None else samples.labels[:done]
    info = {}
    for key, (shape, dt) in probe.specs.items():
        layer = probe.layer_of[key]
        info[key] = {"key": key, "layer": layer,
                     "type": type(model.get_submodule(layer)).__name__,
                     "shape": [done, *shape], "dtype": str(dt), "pool": pool,
                     "calls_per_forward": probe.n_calls[layer], "n_samples": done,
                     "bytes": done * bytes_per_sample((1, *shape), dt),
                     "model": type(model).__name__, **dict(meta or {})}
    paths = {}
    if out_path is not None:
        for key in probe.specs:
            folder = out_path / key_dirname(key)
            _io.save_npy(folder / f"{stem}.indices.npy", indices)
            if labels is not None:
                _io.save_npy(folder / f"{stem}.labels.npy", labels)
            _io.write_json(folder / f"{stem}.json", info[key])
            paths[key] = folder / f"{stem}.npy"
    return Activations(arrays, indices=indices, labels=labels, info=info, paths=paths)


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


def _check_budget(total: int, specs: Specs,
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
