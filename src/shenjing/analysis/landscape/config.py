"""How the engine evaluates points: :class:`EngineConfig`, its allowed values and their checks.

One :class:`EngineConfig` is built where the user's options arrive (a stage, a notebook call
of :func:`~shenjing.analysis.landscape.core.plane`) and passed down whole. Values left at
``"auto"``/None are measured by :func:`~shenjing.analysis.landscape.engine.choose_engine`,
which returns a config with every value set, the measurements and the reason for the choice;
that config is what a landscape records in ``meta['engine']``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

from shenjing._device import resolve_device
from shenjing.errors import UsageError

PATHS: tuple[str, ...] = ("loop", "linear", "linear-vmap", "chain", "vmap")
BN_POLICIES: tuple[str, ...] = ("eval", "recompute")
PRECISIONS: tuple[str, ...] = ("exact", "bf16", "tf32")
"""``exact``: compute in the chosen dtype. ``bf16``: the model's forward under
``torch.autocast(bfloat16)`` (CUDA, or CPUs with bf16 units). ``tf32``: TensorFloat-32
matrix products and convolutions (NVIDIA GPUs). The reduced modes trade exactness for speed;
:func:`~shenjing.analysis.landscape.core.evaluate_landscape` measures and records the error
they cause."""
REDUCED_PRECISION_PATHS: tuple[str, ...] = ("loop", "vmap")
ENGINE_KEYWORDS: tuple[str, ...] = ("device", "dtype", "batch_size", "channels_last", "compile",
                                    "bn", "precision", "threads")
"""Keywords of the public landscape functions that go into their :class:`EngineConfig`."""


@dataclass(frozen=True)
class EngineConfig:
    """How points are evaluated: path, sample batch size, memory layout, dtype, device.

    ``path='auto'``, ``device='auto'`` (CUDA when there is one) and the values left at None
    are chosen by measurement (:func:`~shenjing.analysis.landscape.engine.choose_engine`);
    on a resumed landscape they take the stored settings instead. ``measurements`` (ms) and
    ``reason`` say why a chosen config is what it is.
    """

    path: str = "auto"
    batch_size: int | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    dtype: str = "float32"
    device: str = "auto"
    chunk: int | None = None
    bn: str = "eval"
    threads: int | None = None
    precision: str = "exact"
    measurements: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineConfig:
        """The config a landscape file recorded (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def with_fixed_defaults(self) -> EngineConfig:
        """This config with what is left open set to the values used without measuring:
        batches of 256 samples, contiguous layout, eager, 16 points per chunk."""
        return replace(self, batch_size=256 if self.batch_size is None else self.batch_size,
                       channels_last=bool(self.channels_last), compile=bool(self.compile),
                       chunk=16 if self.chunk is None else self.chunk)


def engine_config(engine: EngineConfig | str = "auto", **settings: Any) -> EngineConfig:
    """The config of a public function's ``engine`` (a config, or a path name) and its
    engine keywords (:data:`ENGINE_KEYWORDS`), the keywords taking precedence."""
    unknown = sorted(set(settings) - set(ENGINE_KEYWORDS))
    if unknown:
        raise TypeError(f"unexpected engine keyword(s): {', '.join(unknown)}")
    if isinstance(engine, EngineConfig):
        return replace(engine, **settings)
    return EngineConfig(path=engine, **settings)


def torch_dtype(name: str) -> torch.dtype:
    """``'float32'``/``'float64'`` as a torch dtype; anything else is a usage error."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise UsageError(f"dtype must be float32 or float64, got {name!r}")
    return table[name]


def validate_settings(*, path: str = "auto", bn: str = "eval", dtype: str = "float32",
                      precision: str = "exact", device: str | torch.device = "auto",
                      batch_size: int | None = None) -> torch.device:
    """Refuse engine settings that cannot work together, before any work (cheap: no model).

    Returns the resolved device. The same checks guard
    :class:`~shenjing.analysis.landscape.engine.Evaluator`, so a setting refused here is
    refused there with the same message.
    """
    if path not in (*PATHS, "auto"):
        raise UsageError(f"unknown evaluation path {path!r}; choose one of "
                         f"{', '.join(PATHS)} or auto")
    if bn not in BN_POLICIES:
        raise UsageError(f"bn policy must be one of {', '.join(BN_POLICIES)}, got {bn!r}")
    if bn == "recompute" and path not in ("loop", "auto"):
        raise UsageError("bn='recompute' needs the loop path (BatchNorm statistics are "
                         "re-estimated per point); use path='loop'")
    torch_dtype(dtype)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    _check_precision(precision, "loop" if path == "auto" else path, dev, dtype)
    return dev


def validate_config(config: EngineConfig) -> torch.device:
    """:func:`validate_settings` of a config; returns its resolved device."""
    return validate_settings(path=config.path, bn=config.bn, dtype=config.dtype,
                             precision=config.precision, device=config.device,
                             batch_size=config.batch_size)


def _check_precision(precision: str, path: str, device: torch.device, dtype: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "exact":
        return
    if path not in REDUCED_PRECISION_PATHS:
        raise UsageError(f"precision {precision!r} runs the model's own forward pass: use "
                         f"path 'loop' or 'vmap' (the {path} path is exact algebra)")
    if dtype != "float32":
        raise UsageError(f"precision {precision!r} starts from float32; drop --dtype {dtype}")
    if precision == "tf32" and device.type != "cuda":
        raise UsageError("precision 'tf32' needs a CUDA device (TensorFloat-32 is an NVIDIA "
                         "GPU format); on this device use 'bf16' or 'exact'")


@contextlib.contextmanager
def reduced_precision(mode: str, device: torch.device) -> Iterator[None]:
    """Reduced-precision arithmetic for the block: bf16 autocast, or TF32 on CUDA."""
    if mode == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    elif mode == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        yield


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (CPU), restoring the previous count afterwards."""
    if not n or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
