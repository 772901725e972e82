"""Load a stranger's weights file without letting it run code on this machine.

Opening a checkpoint must be safe: a pickle can call any Python function while it is read
(``__reduce__``), so shenjing reads weights only through formats that cannot:

- ``.safetensors`` (preferred): a JSON header and raw tensor bytes;
- a ``torch.save`` file (``.pt``/``.pth``/``.bin``, zip or legacy) read with
  ``torch.load(weights_only=True)``, PyTorch's restricted unpickler that only rebuilds
  tensors and plain containers. A file that needs more (a whole pickled ``nn.Module``, custom
  classes, a ``__reduce__`` payload) is **refused** with a conversion recipe, unless the user
  passes ``trust_pickle=True`` (``--trust-pickle``), which warns;
- a TorchScript archive: its tensor records are read from the zip without running it
  (``torch.jit.load`` would run each class's TorchScript ``__setstate__``, which can write
  files); ``data.pkl`` is read by an unpickler that builds only tensors and inert records,
  and the parameter/buffer names come from the classes' source, read as text. An archive
  whose weights only its own code can produce is refused, unless ``trust_pickle=True``;
- a ``torch.export`` program (``.pt2``): its weights are read from the archive's raw
  tensor payloads directly (``torch.export.load`` itself falls back to a full unpickle).

Then the file's tensors are matched to the model: ``{"state_dict": …}``/``{"model": …}``
wrappers are unwrapped, ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile)
prefixes are stripped, and missing/unexpected keys or shape mismatches are listed as a
table (key, shape in the model, shape in the file) instead of PyTorch's wall of text.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing.errors import CheckpointError

#: wrapper keys tried in this order when the file holds a dict that is not a state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state", "net", "network",
                "module", "params", "weights", "ema")

CONVERT_SNIPPET = """\
    # run this ONLY where you trust the file (it executes the pickle), then pass the
    # .safetensors file to shenjing:
    import torch
    from safetensors.torch import save_file
    obj = torch.load("{path}", map_location="cpu", weights_only=False)
    state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    state = state.get("state_dict", state)  # if it is a training checkpoint dict
    save_file({{k: v.contiguous() for k, v in state.items()}}, "{stem}.safetensors")"""


class TrustPickleWarning(UserWarning):
    """Warned when a weights file is unpickled with ``trust_pickle=True``."""


@dataclass(frozen=True)
class WeightsFile:
    """The tensors read from a weights file, and how they were read.

    ``state_dict`` maps parameter/buffer names to CPU tensors exactly as the file stores
    them (before prefix stripping); ``format`` is ``safetensors``, ``torch``,
    ``torch-pickle`` or ``torchscript-loaded`` (only with ``trust_pickle``: the file's code
    ran), ``torchscript`` (read without running it) or ``torch-export``;
    ``notes`` say what was unwrapped (``took the 'state_dict' entry``).
    """

    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (f"WeightsFile({str(self.path)!r}, format={self.format}, "
                f"tensors={len(self.state_dict)})")


@dataclass(frozen=True)
class KeyMatch:
    """How a file's keys line up with a model's: what loads, what is missing, what is extra.

    ``missing``: (key, shape in the model); ``unexpected``: (key, shape in the file);
    ``mismatched``: (key, shape in the model, shape in the file). ``prefix_note`` says which
    prefix was stripped or added to make the names agree.
    """

    matched: tuple[str, ...]
    missing: tuple[tuple[str, tuple[int, ...]], ...] = ()
    unexpected: tuple[tuple[str, tuple[int, ...]], ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    prefix_note: str = ""

    @property
    def ok(self) -> bool:
        """True when every model tensor has a same-shaped tensor in the file and vice versa."""
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self, limit: int = 20) -> str:
        """The problems as an aligned text table (at most ``limit`` rows per kind)."""
        rows: list[tuple[str, str, str, str]] = [("problem", "key", "in model", "in file")]
        kinds = (("shape mismatch", [(k, _fmt(a), _fmt(b)) for k, a, b in self.mismatched]),
                 ("missing in file", [(k, _fmt(a), "-") for k, a in self.missing]),
                 ("not in model", [(k, "-", _fmt(b)) for k, b in self.unexpected]))
        for label, items in kinds:
            for key, a, b in items[:limit]:
                rows.append((label, key, a, b))
            if len(items) > limit:
                rows.append((label, f"… {len(items) - limit} more", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)

    def summary(self) -> str:
        """One line: counts of each kind of problem."""
        parts = [f"{len(self.matched)} tensor(s) match"]
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} differ in shape")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} in the file but not in the model")
        return ", ".join(parts)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: the file read, the key match, and notes to show."""

    file: WeightsFile
    match: KeyMatch
    strict: bool

    @property
    def notes(self) -> tuple[str, ...]:
        extra = (self.match.prefix_note,) if self.match.prefix_note else ()
        skipped: tuple[str, ...] = ()
        if not self.match.ok:
            skipped = (f"non-strict load: {self.match.summary()}; the model keeps its own "
                       "initial values for what the file does not provide",)
        return (*self.file.notes, *extra, *skipped)


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


# ---- reading files ------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    """The container format by content (extensions lie): safetensors, zip, pickle or other."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"weights file {path} cannot be read ({exc.strerror or exc})"
                              ) from None
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol ≥ 2 opcode: legacy torch.save
        return "pickle"
    return "other"


def _zip_names(path: Path) -> list[str]:
    """The member names of a zip archive, or one clear error for a damaged one."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: not a complete zip archive (truncated or damaged: "
                              f"{_first_line(exc)}); save or copy the weights file again"
                              ) from None


def _zip_kind(path: Path) -> str:
    """``torch-export``, ``torchscript`` or ``torch`` (a torch.save zip), by the archive's
    members. An archive with a ``constants.pkl`` is TorchScript, as torch itself decides."""
    names = _zip_names(path)
    if any(n.endswith("/archive_format") for n in names) or \
            any("/models/" in n and n.endswith(".json") for n in names):
        return "torch-export"
    if any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "torch"


def read_weights(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> WeightsFile:
    """Read the tensors of a weights file without running code from it.

    ``trust_pickle=True`` allows a full unpickle (``torch.load(weights_only=False)``) for
    files the restricted loader refuses, and ``torch.jit.load`` for TorchScript archives whose
    classes restore themselves with their own code; it warns first, because such a file can
    run any code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"weights path {path} is a folder; pass the file itself "
                              "(.safetensors, .pt, .pth, .bin)")
    if not path.is_file():
        raise CheckpointError(f"weights path {path} is not a regular file (a device, pipe "
                              "or socket); pass the weights file itself")
    kind = _sniff(path)
    if kind == "safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        return WeightsFile(path, "safetensors", dict(state))
    if kind == "zip":
        sub = _zip_kind(path)
        if sub == "torchscript":
            return _read_torchscript(path, trust_pickle=trust_pickle)
        if sub == "torch-export":
            return _read_export(path)
    if kind in ("zip", "pickle"):
        return _read_torch(path, trust_pickle=trust_pickle)
    raise CheckpointError(
        f"{path}: not a weights file shenjing can read safely (expected safetensors, a "
        "torch.save file, a TorchScript archive or a torch.export .pt2 program)")


def _warn_trusted(path: Path, how: str) -> None:
    """The ``trust_pickle`` warning, issued *before* the file is opened in a way that runs
    its code (so it is seen even when a later step fails)."""
    warnings.warn(f"{how} {path} with --trust-pickle: this runs whatever code the file "
                  "contains; do it only for files you made or fully trust",
                  TrustPickleWarning, stacklevel=4)


def read_torch_file(path: str | os.PathLike[str], *, what: str = "torch file") -> Any:
    """``torch.load(path, weights_only=True)`` with one clear :class:`CheckpointError` for a
    file it refuses (a pickle that needs more than tensors) or cannot read.

    For the torch files shenjing itself writes and reads back (``state-NNN.pt``, the
    optimizer and RNG state for ``--resume``): a run folder from someone else is data, so
    such a file is never fully unpickled. ``what`` names the file in the message.
    """
    return _weights_only(path, f"{what} {path}", "shenjing writes these files with tensors "
                         "only: delete it, or make the run again")


@contextlib.contextmanager
def _quiet_unpickler() -> Iterator[None]:
    """torch's restricted unpickler warns about pickle protocols it was not written for; the
    file is refused or read all the same, so that warning only adds lines to the one the
    user gets."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        yield


def _weights_only(source: Any, label: str, fix: str) -> Any:
    """``torch.load(source, weights_only=True)``; refusals and damage as one error."""
    import pickle

    try:
        with _quiet_unpickler():
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{label}: refusing to unpickle it: it needs more than tensors to be "
            f"rebuilt ({_unsupported(exc) or _first_line(exc)}), and unpickling such a file "
            f"can run arbitrary code. {fix}") from None
    except Exception as exc:
        raise CheckpointError(f"{label}: torch cannot read this file "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _read_torch(path: Path, *, trust_pickle: bool) -> WeightsFile:
    import pickle

    try:
        with _quiet_unpickler():
            obj = torch.load(path, map_location="cpu", weights_only=True)
        fmt = "torch"
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise CheckpointError(_refusal(path, exc)) from None
        _warn_trusted(path, "unpickling")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise CheckpointError(f"{path}: torch cannot read this file even with "
                                  f"--trust-pickle ({type(exc2).__name__}: "
                                  f"{_first_line(exc2)})") from None
        fmt = "torch-pickle"
    except Exception as exc:
        raise CheckpointError(f"{path}: torch cannot read this file "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    state, notes = extract_state_dict(obj, path)
    return WeightsFile(path, fmt, state, notes)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unsupported(exc: BaseException) -> str:
    """The global torch's weights_only unpickler refused (``posix.system``), or ''."""
    for line in str(exc).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            detail = line.split("error:", 1)[-1].strip()
            return detail.split(" was not an allowed global")[0]
    return ""


def _refusal(path: Path, exc: BaseException) -> str:
    detail = _unsupported(exc)
    what = f" ({detail})" if detail else ""
    return (
        f"refusing to load {path}: it is a pickle that needs more than tensors to be "
        f"rebuilt{what}. Unpickling such a file can run arbitrary code on this machine (a "
        "pickled whole model imports and calls its classes; a malicious file can call any "
        "function), so shenjing reads torch files only with torch.load(weights_only=True). "
        "Convert it once, where you trust it, to a state_dict in safetensors:\n"
        + CONVERT_SNIPPET.format(path=path, stem=path.with_suffix("").name)
        + "\nor, if you made the file yourself, pass --trust-pickle (trust_pickle=True)."
    )


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str | os.PathLike[str] = "the file"
                       ) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The state dict inside a loaded object: itself, a wrapper entry, or a module's.

    Non-tensor entries (``num_batches_tracked`` as int, metadata) are dropped with a note.
    """
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict()), (f"took state_dict() of the pickled "
                                        f"{type(obj).__name__} module",)
    if _is_state_dict(obj):
        return dict(obj), ()
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj:
                inner, notes = _try_extract(obj[key], source)
                if inner is not None:
                    return inner, (f"took the {key!r} entry of the checkpoint dict", *notes)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and isinstance(next(iter(obj)), str):
            dropped = sorted(str(k) for k in obj if k not in tensors)
            return tensors, (f"ignored non-tensor entries: {', '.join(dropped)}",)
        keys = ", ".join(repr(k) for k in list(obj)[:20])
        raise CheckpointError(
            f"{source} holds a dict with keys {keys} but none of them is a state dict "
            f"(a mapping of names to tensors); shenjing looks for {', '.join(WRAPPER_KEYS)}. "
            "Save the model's state_dict() itself")
    raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict; save "
                          "model.state_dict() (ideally with safetensors.torch.save_file)")


def _try_extract(obj: Any, source: Any) -> tuple[dict[str, torch.Tensor] | None, tuple[str, ...]]:
    if isinstance(obj, nn.Module) or _is_state_dict(obj):
        return extract_state_dict(obj, source)
    return None, ()


# ---- tensors from raw bytes (shared by the archive readers) ------------------------------
def _strided(flat: torch.Tensor, size: Any, stride: Any, offset: Any, where: str
             ) -> torch.Tensor:
    """``flat[offset + Σ i·stride]`` as a tensor of ``size``, copied; refuses a view that
    would reach outside the storage (a hostile header must not read beyond its bytes)."""
    try:
        dims = [int(d) for d in size]
        steps = [int(s) for s in stride]
        start = int(offset)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: tensor size/stride/offset are not whole numbers "
                              f"({size!r}, {stride!r}, {offset!r})") from None
    if len(dims) != len(steps) or min([start, *dims, *steps], default=0) < 0:
        raise CheckpointError(f"{where}: tensor of size {dims} with strides {steps} and "
                              f"offset {start} is not a valid view")
    if 0 in dims:
        return torch.empty(dims, dtype=flat.dtype)
    last = start + sum((d - 1) * s for d, s in zip(dims, steps, strict=True))
    if last >= flat.numel():
        raise CheckpointError(f"{where}: a tensor of size {dims} (strides {steps}, offset "
                              f"{start}) reaches element {last} of a storage of "
                              f"{flat.numel()}; the file is damaged")
    return torch.as_strided(flat, dims, steps, start).clone()


def _flat(data: bytes, dtype: torch.dtype) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=dtype) if data else \
        torch.empty(0, dtype=dtype)


# ---- TorchScript archives, read without running them ---------------------------------------
# A TorchScript archive is a zip: ``<root>/data.pkl`` pickles the module tree (each module an
# object of a ``__torch__.*`` class, its attributes as state), tensors are persistent ids
# naming the raw records ``<root>/data/<key>``, and ``<root>/code/`` holds the classes'
# TorchScript source, which says which attributes are parameters and buffers. torch.jit.load
# runs that code (a class's ``__setstate__`` is called on load), and torch.load refuses the
# format with weights_only=True; so shenjing unpickles data.pkl with its own unpickler that
# builds nothing but tensors, plain containers and inert records of the script objects.

#: storage classes a TorchScript pickle names → the element type of their raw record
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32,
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128, "ComplexFloatStorage": torch.complex64,
}
_CLASS_LINE = re.compile(r"^class (\w+)\((\w+)\):")
_NAME_LIST = re.compile(r"^\s+__(parameters|buffers)__ = \[(.*)\]\s*$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_MAX_DEPTH = 500  # nested modules; deeper is a hostile file, not a network


class _NeedsCodeError(CheckpointError):
    """The archive's weights are only known after its own code runs (``__setstate__``)."""


@dataclass(frozen=True)
class _ScriptClass:
    """What an archive's source says about one TorchScript class (read as text, not run)."""

    qualname: str
    is_module: bool
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    has_setstate: bool


class _ScriptObject:
    """An inert stand-in for an object of a TorchScript class: it only keeps its state."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _Storage:
    flat: torch.Tensor


def _script_classes(zf: zipfile.ZipFile, root: str) -> dict[str, _ScriptClass]:
    """Every class defined in ``<root>/code/**.py``, parsed as text line by line."""
    classes: dict[str, _ScriptClass] = {}
    prefix = f"{root}/code/"
    for name in zf.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = name[len(prefix):-3].replace("/", ".")
        text = zf.read(name).decode("utf-8", errors="replace")
        current: dict[str, Any] | None = None
        for line in [*text.splitlines(), "class _End(object):"]:
            m = _CLASS_LINE.match(line)
            if m or (line and not line[0].isspace()):
                if current is not None:
                    classes[current["qualname"]] = _ScriptClass(**current)
                    current = None
                if m:
                    current = {"qualname": f"{module}.{m[1]}", "is_module": m[2] == "Module",
                               "parameters": (), "buffers": (), "has_setstate": False}
                continue
            if current is None:
                continue
            listed = _NAME_LIST.match(line)
            if listed:
                current[listed[1]] = tuple(_QUOTED.findall(listed[2]))
            elif line.lstrip().startswith("def __setstate__("):
                current["has_setstate"] = True
    return classes


def _ts_unpickler(zf: zipfile.ZipFile, root: str, where: str) -> Any:
    """A pickle.Unpickler for ``data.pkl`` that can construct nothing but tensors (from the
    archive's raw records), dicts and inert :class:`_ScriptObject` records; any other global
    the pickle names is refused by name."""
    import pickle

    storages: dict[str, torch.Tensor] = {}
    script_types: dict[str, type] = {}
    records = {i.filename: i for i in zf.infolist()}

    def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any
                       ) -> torch.Tensor:
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"{where}: a tensor whose storage is not a tensor record")
        return _strided(storage.flat, size, stride, offset, where)

    def same(value: Any, *rest: Any) -> Any:
        return value

    helpers: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): same,
        ("collections", "OrderedDict"): dict,
        **{("torch.jit._pickle", f"build_{kind}list"): same
           for kind in ("int", "double", "bool", "tensor")},
        ("torch.jit._pickle", "restore_type_tag"): same,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in helpers:
                return helpers[(module, name)]
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(_STORAGE_DTYPES[name])
            if module == "__torch__" or module.startswith("__torch__."):
                qualname = f"{module}.{name}"
                if qualname not in script_types:
                    script_types[qualname] = type("_ScriptObject", (_ScriptObject,),
                                                  {"qualname": qualname})
                return script_types[qualname]
            raise CheckpointError(
                f"{where}: a TorchScript archive whose data.pkl names {module}.{name}, which "
                "is not a tensor, a storage or a TorchScript class; shenjing does not call "
                "it. A genuine torch.jit.save file never names it: the file was made to run "
                "code. Save model.state_dict() with safetensors instead")

        def persistent_load(self, pid: Any) -> Any:
            ok = (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                  and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                  and isinstance(pid[4], int) and pid[4] >= 0)
            if not ok:
                raise CheckpointError(f"{where}: a TorchScript archive with an unknown "
                                      f"tensor reference {str(pid)[:80]}")
            _, kind, key, _, numel = pid
            if key not in storages:
                name = f"{root}/data/{key}"
                info = records.get(name)
                if info is None:
                    raise CheckpointError(f"{where}: the tensor record {name} is missing")
                need = numel * torch.empty(0, dtype=kind.dtype).element_size()
                if info.file_size != need:
                    raise CheckpointError(
                        f"{where}: tensor record {name} holds {info.file_size} bytes, but its "
                        f"{numel} {kind.dtype} elements need {need}; the file is damaged")
                storages[key] = _flat(zf.read(name), kind.dtype)
            return _Storage(storages[key])

    return Unpickler


def _collect(obj: Any, prefix: str, classes: dict[str, _ScriptClass], where: str,
             out: dict[str, torch.Tensor], depth: int = 0) -> None:
    """Fill ``out`` with the parameters and buffers of the module record ``obj`` and of its
    submodules, named as ``state_dict()`` names them."""
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: modules nested more than {_MAX_DEPTH} deep")
    cls = classes.get(obj.qualname)
    short = obj.qualname.rsplit(".", 1)[-1]
    if cls is None:
        raise _NeedsCodeError(f"{where}: a TorchScript archive whose class {short} "
                         f"({obj.qualname}) has no TorchScript source in the archive (a C++ "
                         "custom class?), so its contents are only known by running it")
    if cls.has_setstate:
        raise _NeedsCodeError(
            f"{where}: a TorchScript archive whose class {short} restores itself with its "
            "own __setstate__ code, which torch.jit.load runs when it opens the file; "
            "shenjing reads TorchScript weights without running them, so it does not run "
            "that code and cannot know these weights. Save model.state_dict() with "
            "safetensors where you trust the file, or pass --trust-pickle (trust_pickle=True) "
            "to load it with torch.jit.load if you made it yourself")
    state = obj.__dict__.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: the module {prefix.rstrip('.') or short} has no "
                              "attribute table in data.pkl; the file is damaged")
    for name in (*cls.parameters, *cls.buffers):
        value = state.get(name)
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif value is not None:  # an optional bias is None
            raise CheckpointError(f"{where}: {prefix}{name} is listed as a parameter or "
                                  f"buffer but holds a {type(value).__name__}")
    for name, value in state.items():
        if isinstance(value, _ScriptObject) and getattr(
                classes.get(value.qualname), "is_module", True):
            _collect(value, f"{prefix}{name}.", classes, where, out, depth + 1)


def _torchscript_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive, read from its records without running it."""
    import pickle

    where = str(path)
    with zipfile.ZipFile(path) as zf:
        roots = [n[: -len("/data.pkl")] for n in zf.namelist()
                 if n.endswith("/data.pkl") and n.count("/") == 1]
        if not roots:
            raise CheckpointError(f"{where}: a TorchScript archive without data.pkl (an old "
                                  "format); save model.state_dict() with safetensors instead")
        root = roots[0]
        if f"{root}/byteorder" in zf.namelist() and \
                zf.read(f"{root}/byteorder").strip() not in (b"", b"little"):
            raise CheckpointError(f"{where}: a big-endian TorchScript archive; save "
                                  "model.state_dict() with safetensors on that machine")
        classes = _script_classes(zf, root)
        unpickler = _ts_unpickler(zf, root, where)
        state: dict[str, torch.Tensor] = {}
        try:
            top = unpickler(io.BytesIO(zf.read(f"{root}/data.pkl"))).load()
            if not isinstance(top, _ScriptObject):
                raise CheckpointError(f"{where}: the TorchScript archive's data.pkl holds a "
                                      f"{type(top).__name__}, not a module")
            _collect(top, "", classes, where, state)
        except (CheckpointError, zipfile.BadZipFile, zlib.error):
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                IndexError, KeyError, RecursionError, MemoryError, OverflowError) as exc:
            # a hand-made data.pkl (odd opcodes, attributes replaced through BUILD): one line
            raise CheckpointError(f"{where}: the TorchScript archive's data.pkl cannot be "
                                  f"read ({type(exc).__name__}: {_first_line(exc)})") from None
    return state


def _read_torchscript(path: Path, *, trust_pickle: bool) -> WeightsFile:
    try:
        state = _torchscript_state(path)
    except _NeedsCodeError as exc:
        if not trust_pickle:
            raise CheckpointError(str(exc)) from None
        return _load_torchscript_trusted(path)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise CheckpointError(f"{path}: not a complete zip archive (truncated or damaged: "
                              f"{_first_line(exc)}); save or copy the weights file again"
                              ) from None
    return WeightsFile(path, "torchscript", state,
                       ("read the weights of a TorchScript archive from its tensor records "
                        "(its code was not run; --model still names the Python class)",))


def _load_torchscript_trusted(path: Path) -> WeightsFile:
    """``torch.jit.load`` (which runs the archive's code), only with ``trust_pickle``."""
    _warn_trusted(path, "loading the TorchScript archive")
    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": we only read tensors
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: a TorchScript archive torch.jit cannot load "
                              f"({_first_line(exc)})") from None
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return WeightsFile(path, "torchscript-loaded", state,
                       ("loaded the TorchScript archive with torch.jit.load (--trust-pickle): "
                        "its code ran",))


# ---- torch.export programs ----------------------------------------------------------------
def _read_export(path: Path) -> WeightsFile:
    """Weights of a ``torch.export.save`` archive, from the raw payloads (no unpickling)."""
    try:
        from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE as DTYPES
    except ImportError:  # private API moved: refuse rather than unpickle
        raise CheckpointError(f"{path}: reading torch.export programs is not supported with "
                              f"torch {torch.__version__}; save model.state_dict() with "
                              "safetensors instead") from None
    try:
        state = _export_state(path, DTYPES)
    except CheckpointError:
        raise
    except Exception as exc:  # a hand-made or damaged archive: one line, never a traceback
        raise CheckpointError(f"{path}: a torch.export archive shenjing cannot read "
                              f"({type(exc).__name__}: {_first_line(exc)}); save "
                              "model.state_dict() with safetensors instead") from None
    return WeightsFile(path, "torch-export", state,
                       ("read the weights of a torch.export program (no code run; --model "
                        "still names the Python class)",))


def _export_state(path: Path, dtypes: Mapping[Any, torch.dtype]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    where = str(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        configs = [n for n in names if n.endswith("weights/model_weights_config.json")]
        if not configs:
            raise CheckpointError(f"{path}: a torch.export archive without the weights "
                                  "config shenjing reads (legacy format?); save "
                                  "model.state_dict() with safetensors instead")
        root = configs[0].rsplit("/", 1)[0]
        config = json.loads(zf.read(configs[0]))["config"]
        for fqn, meta in config.items():
            data = zf.read(f"{root}/{meta['path_name']}")
            if meta.get("use_pickle"):
                tensor = _weights_only(io.BytesIO(data), f"{path}: tensor {fqn}",
                                       "save model.state_dict() with safetensors instead")
            else:
                tm = meta["tensor_meta"]
                dtype = dtypes[_enum(tm["dtype"])]
                tensor = _strided(_flat(data, dtype), [s["as_int"] for s in tm["sizes"]],
                                  [s["as_int"] for s in tm["strides"]],
                                  tm["storage_offset"]["as_int"], f"{where}: tensor {fqn}")
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{path}: entry {fqn} holds a {type(tensor).__name__}")
            state[str(fqn)] = tensor
    return state


def _enum(value: Any) -> Any:
    from torch._export.serde.schema import ScalarType

    return ScalarType(value)


# ---- matching keys ----------------------------------------------------------------------
def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict())


def _compare(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
             note: str = "") -> KeyMatch:
    matched, mismatched, missing = [], [], []
    for key, tensor in expected.items():
        if key not in given:
            missing.append((key, tuple(tensor.shape)))
        elif tuple(given[key].shape) != tuple(tensor.shape):
            mismatched.append((key, tuple(tensor.shape), tuple(given[key].shape)))
        else:
            matched.append(key)
    unexpected = [(k, tuple(v.shape)) for k, v in given.items() if k not in expected]
    return KeyMatch(tuple(matched), tuple(missing), tuple(unexpected), tuple(mismatched), note)


def _common_prefix(keys: list[str]) -> str:
    """The first dotted component shared by every key (``'module.'``), or ''."""
    if not keys or any("." not in k for k in keys):
        return ""
    first = {k.split(".", 1)[0] for k in keys}
    return f"{first.pop()}." if len(first) == 1 else ""


def align_keys(model: nn.Module, state: Mapping[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], KeyMatch]:
    """Rename the file's keys to the model's where a wrapper prefix is all that differs.

    Tries the names as they are, then strips (repeatedly) a prefix every file key shares
    (``module.`` from DataParallel/DDP, ``_orig_mod.`` from torch.compile, ``model.``, …), or
    adds the prefix every model key shares; keeps whichever matches the most tensors.
    """
    expected = _model_state(model)
    best_state = dict(state)
    best = _compare(expected, best_state)
    candidate = dict(state)
    stripped: list[str] = []
    while True:
        prefix = _common_prefix(list(candidate))
        if not prefix:
            break
        candidate = {k[len(prefix):]: v for k, v in candidate.items()}
        stripped.append(prefix)
        match = _compare(expected, candidate,
                         f"stripped the prefix {''.join(stripped)!r} from the file's keys")
        if len(match.matched) > len(best.matched):
            best, best_state = match, candidate
    model_prefix = _common_prefix(list(expected))
    if model_prefix:
        added = {model_prefix + k: v for k, v in state.items()}
        match = _compare(expected, added,
                         f"added the prefix {model_prefix!r} to the file's keys")
        if len(match.matched) > len(best.matched):
            best, best_state = match, added
    return best_state, best


def check_keys(model: nn.Module, state: Mapping[str, torch.Tensor]) -> KeyMatch:
    """Compare a state dict with a model (after :func:`align_keys`), without loading."""
    return align_keys(model, state)[1]


def load_weights(model: nn.Module, weights: str | os.PathLike[str] | Mapping[str, torch.Tensor],
                 *, strict: bool = True, trust_pickle: bool = False,
                 what: str = "--weights") -> LoadReport:
    """Load a weights file (or a state dict) into ``model`` in place, safely and clearly.

    ``strict=True``: every model tensor must come from the file with the same shape, and the
    file may hold nothing else; otherwise a :class:`CheckpointError` lists the differences as a
    table. ``strict=False``: tensors that match are loaded, the rest are listed in the report's
    notes and the model keeps its own values for them.

    >>> import torch; from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> rep = load_weights(net, {"module.weight": torch.ones(1, 2), "module.bias": torch.zeros(1)})
    >>> rep.match.prefix_note, net.weight.sum().item()
    ("stripped the prefix 'module.' from the file's keys", 2.0)
    """
    if isinstance(weights, Mapping):
        wfile = WeightsFile(Path("<state_dict>"), "state_dict", dict(weights))
    else:
        wfile = read_weights(weights, trust_pickle=trust_pickle)
    state, match = align_keys(model, wfile.state_dict)
    name = type(model).__name__
    if not match.matched:
        raise CheckpointError(
            f"{what} {wfile.path}: none of its {len(state)} tensors fits {name} (is it the "
            "weights of another model, or does --model-arg change the architecture?). "
            f"{match.summary()}:\n{match.table(limit=8)}")
    if strict and not match.ok:
        raise CheckpointError(
            f"{what} {wfile.path} does not fit {name}: {match.summary()}. Check that --model "
            "and --model-arg build the architecture the weights were trained with, or pass "
            "--no-strict to load only the matching tensors:\n" + match.table())
    loadable = {k: state[k] for k in match.matched}
    model.load_state_dict(loadable, strict=False)
    return LoadReport(file=wfile, match=match, strict=strict)


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a state dict as safetensors (the conversion the refusal message suggests)."""
    from safetensors.torch import save_file

    from shenjing._io import atomic_path

    target = Path(path)
    # shared storage (tied weights) must be cloned: safetensors refuses aliased tensors
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp))
    return target


__all__ = ["CONVERT_SNIPPET", "KeyMatch", "LoadReport", "TrustPickleWarning", "WeightsFile",
           "align_keys", "check_keys", "extract_state_dict", "load_weights", "read_torch_file",
           "read_weights", "save_safetensors"]
