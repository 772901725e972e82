"""Load a stranger's weights file without letting it run code on this machine.

Opening a checkpoint must be safe: a pickle can call any Python function while it is read
(``__reduce__``), so shenjing reads weights only through formats that cannot:

- ``.safetensors`` (preferred): a JSON header and raw tensor bytes;
- a ``torch.save`` file (``.pt``/``.pth``/``.bin``, zip or legacy) read with
  ``torch.load(weights_only=True)``, PyTorch's restricted unpickler that only rebuilds
  tensors and plain containers. A file that needs more (a whole pickled ``nn.Module``, custom
  classes, a ``__reduce__`` payload) is **refused** with a conversion recipe, unless the user
  passes ``trust_pickle=True`` (``--trust-pickle``), which warns;
- a TorchScript archive: its tensors are read with ``torch.jit.load`` (TorchScript code is
  never Python and is not run: only ``state_dict()`` is taken);
- a ``torch.export`` program (``.pt2``): its weights are read from the archive's raw
  tensor payloads directly (``torch.export.load`` itself falls back to a full unpickle).

Then the file's tensors are matched to the model: ``{"state_dict": …}``/``{"model": …}``
wrappers are unwrapped, ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile)
prefixes are stripped, and missing/unexpected keys or shape mismatches are listed as a
table (key, shape in the model, shape in the file) instead of PyTorch's wall of text.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing.errors import CheckpointError

#: wrapper keys tried in this order when the file holds a dict that is not a state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state", "net", "network",
                "module", "params", "weights", "ema")
#: prefixes that training wrappers add to every key
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")

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
    ``torch-pickle`` (only with ``trust_pickle``), ``torchscript`` or ``torch-export``;
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
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol ≥ 2 opcode: legacy torch.save
        return "pickle"
    return "other"


def _zip_kind(path: Path) -> str:
    names = zipfile.ZipFile(path).namelist()
    if any(n.endswith("/archive_format") for n in names) or \
            any("/models/" in n and n.endswith(".json") for n in names):
        return "torch-export"
    if any(n.endswith("/constants.pkl") for n in names) and \
            any("/code/" in n for n in names):
        return "torchscript"
    return "torch"


def read_weights(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> WeightsFile:
    """Read the tensors of a weights file without running code from it.

    ``trust_pickle=True`` allows a full unpickle (``torch.load(weights_only=False)``) for
    files the restricted loader refuses; it warns, because such a file can run any code.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"weights path {path} is a folder; pass the file itself "
                              "(.safetensors, .pt, .pth, .bin)")
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
            return _read_torchscript(path)
        if sub == "torch-export":
            return _read_export(path)
    if kind in ("zip", "pickle"):
        return _read_torch(path, trust_pickle=trust_pickle)
    raise CheckpointError(
        f"{path}: not a weights file shenjing can read safely (expected safetensors, a "
        "torch.save file, a TorchScript archive or a torch.export .pt2 program)")


def _read_torch(path: Path, *, trust_pickle: bool) -> WeightsFile:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        fmt = "torch"
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise CheckpointError(_refusal(path, exc)) from None
        warnings.warn(f"unpickling {path} with --trust-pickle: this runs whatever code the "
                      "file contains; do it only for files you made or fully trust",
                      TrustPickleWarning, stacklevel=3)
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


def _refusal(path: Path, exc: BaseException) -> str:
    detail = ""
    for line in str(exc).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            detail = line.split("error:", 1)[-1].strip()
            detail = detail.split(" was not an allowed global")[0]
            break
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


def _read_torchscript(path: Path) -> WeightsFile:
    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated": we only read tensors
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"{path}: a TorchScript archive torch.jit cannot load "
                              f"({_first_line(exc)})") from None
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return WeightsFile(path, "torchscript", state,
                       ("read the weights of a TorchScript archive (its code is not run; "
                        "--model still names the Python class)",))


def _read_export(path: Path) -> WeightsFile:
    """Weights of a ``torch.export.save`` archive, from the raw payloads (no unpickling)."""
    try:
        from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE as DTYPES
    except ImportError:  # private API moved: refuse rather than unpickle
        raise CheckpointError(f"{path}: reading torch.export programs is not supported with "
                              f"torch {torch.__version__}; save model.state_dict() with "
                              "safetensors instead") from None
    state: dict[str, torch.Tensor] = {}
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
                tensor = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            else:
                tm = meta["tensor_meta"]
                dtype = DTYPES[_enum(tm["dtype"])]
                sizes = [int(s["as_int"]) for s in tm["sizes"]]
                strides = [int(s["as_int"]) for s in tm["strides"]]
                offset = int(tm["storage_offset"]["as_int"])
                flat = torch.frombuffer(bytearray(data), dtype=dtype) if data else \
                    torch.empty(0, dtype=dtype)
                tensor = torch.as_strided(flat, sizes, strides, offset).clone()
            state[fqn] = tensor
    return WeightsFile(path, "torch-export", state,
                       ("read the weights of a torch.export program (no code run; --model "
                        "still names the Python class)",))


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
           "align_keys", "check_keys", "extract_state_dict", "load_weights", "read_weights",
           "save_safetensors"]
