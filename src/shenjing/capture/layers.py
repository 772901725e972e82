"""Find a model's layers and the keys of their outputs; list them; choose the default ones.

A "layer" is any named submodule (``model.named_modules()``), containers included. Post-
activation features are the output of the activation module: in the zoo models every
activation is its own module, so "fc1 after its ReLU" is the layer ``relu1``.

Wherever a layer is chosen, a spec may be a module name (``lstm``), a glob (``fc?``), a
module type (``Conv2d``), or an output key exactly as :func:`list_layers` prints it
(``lstm.0``, ``lstm.1.0``, ``block#1``, ``block#1.0``): :func:`resolve_keys` turns specs into
capture keys, :func:`split_key` splits a key into module, call and path. The defaults when
none is given: :func:`default_layers` (rule in :mod:`shenjing.capture.defaults`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shenjing.capture.keys import (
    KeyFilter,
    LayerKey,
    Selection,
    check_filters,
    is_selected,
    merge,
    output_key,
    split_key,
)
from shenjing.errors import LayerNotFoundError, RunError, did_you_mean

LayerSpec = str | type[nn.Module]


def _model_name(model: nn.Module) -> str:
    return type(model).__name__


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` in definition order (the root ``''`` excluded)."""
    return [name for name, _ in model.named_modules() if name]


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one dotted part, ``**`` across parts, ``?`` one character."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        if ch == "*":
            out.append(r"[^.]*")
        elif ch == "?":
            out.append(r"[^.]")
        elif ch == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(ch))
            else:
                out.append(pattern[i:end + 1])
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def resolve_layers(model: nn.Module, patterns: str | LayerSpec | Iterable[LayerSpec]
                   ) -> list[str]:
    """Turn names, glob patterns and module types into the model's layer names, in model order.

    Each item is tried as: an exact layer name; a glob over names (``features.*``, ``fc?``);
    a module class or class name (``nn.Conv2d`` or ``"Conv2d"``, also ``"type:Conv2d"``);
    an output key (``lstm.1.0``, ``block#1``), which names its module here (use
    :func:`resolve_keys` to keep the key). In globs ``*`` stays within one dotted part
    (``features.*`` is ``features.0``, ``features.1`` … but not ``features.0.conv``); ``**``
    crosses parts. An item that matches nothing raises :class:`LayerNotFoundError` naming
    the closest layers.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> resolve_layers(net, ["0", "ReLU"])
    ['0', '1']
    """
    return select_layers(model, patterns)[0]


def select_layers(model: nn.Module, patterns: Any) -> tuple[list[str], set[str], Selection]:
    """The modules to observe (model order), those named exactly, and what to keep of each.

    ``selection[name]`` is None to record all of a module's outputs, or the
    :class:`~shenjing.capture.keys.KeyFilter` list of the keys asked for (``lstm.1.0``).
    """
    if isinstance(patterns, (str, type)):
        patterns = [patterns]
    modules = [(name, mod) for name, mod in model.named_modules() if name]
    names = [name for name, _ in modules]
    name_set = set(names)
    selection: Selection = {}
    explicit: set[str] = set()
    for item in patterns:
        found: list[str]
        if isinstance(item, type):
            found = [n for n, m in modules if isinstance(m, item)]
            label = item.__name__
        else:
            text = str(item).strip()
            label = text
            if text.startswith("type:"):
                tname = text[5:]
                found = [n for n, m in modules if type(m).__name__ == tname]
            elif text in name_set:
                found = [text]
                explicit.add(text)
            elif _is_glob(text):
                rx = _glob_regex(text)
                found = [n for n in names if rx.match(n)]
            else:
                found = [n for n, m in modules if type(m).__name__ == text]
                module, call, path = split_key(text, name_set)
                if not found and module in name_set and (call is not None or path):
                    merge(selection, module, KeyFilter(call, path))
                    explicit.add(module)
                    continue
        if not found:
            raise _not_found(model, label, modules)
        for n in found:
            merge(selection, n, None)
    return [n for n in names if n in selection], explicit, selection


def _not_found(model: nn.Module, label: str, modules: list[tuple[str, nn.Module]]
               ) -> LayerNotFoundError:
    names = [name for name, _ in modules]
    types = sorted({type(m).__name__ for _, m in modules})
    module, sep, call = label.partition("#")
    if sep:  # a key of a misspelt module: suggest the same call of the closest modules
        close = difflib.get_close_matches(module, names, n=3, cutoff=0.5)
        hint = (f" Did you mean {' or '.join(repr(f'{c}#{call}') for c in close)}?"
                if close else "")
    else:
        hint = did_you_mean(label.removeprefix("type:"), names + types)
    shown = ", ".join(names[:30]) + (" …" if len(names) > 30 else "")
    return LayerNotFoundError(
        f"no layer {label!r} in {_model_name(model)}.{hint} Layers: {shown}. "
        "See `shenjing layers RUN` or shenjing.capture.list_layers(model, example).")


def resolve_keys(model: nn.Module, example: Any, specs: str | LayerSpec | Iterable[LayerSpec]
                 ) -> list[str]:
    """Turn layer specs into capture keys: module names stay module names, output keys
    are checked against one batch and kept (a partial key becomes the keys it selects).

    Specs are what :func:`resolve_layers` takes plus output keys as ``shenjing layers``
    prints them: ``lstm.0``, ``lstm.1.0``, ``block#1``, ``block#1.0``. Each result is a
    :class:`~shenjing.capture.keys.LayerKey` (a ``str`` that :func:`split_key` splits without
    the model). ``example`` (one batch) checks that each key is produced; None skips the
    check. Results are in model order, a module before the keys inside it.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.LSTM(3, 4, batch_first=True))
    >>> resolve_keys(net, torch.zeros(2, 5, 3), ["0.1"])
    ['0.1.0', '0.1.1']
    """
    names, explicit, selection = select_layers(model, specs)
    if example is None:
        out: list[str] = []
        for n in names:
            filters = selection[n]
            out.extend([LayerKey(n, n)] if filters is None else [f.spec(n) for f in filters])
        return out
    from shenjing.capture.core import dry_run

    run = dry_run(model, example, names)
    _raise_never_ran(model, example, [n for n in names if not run.calls[n] and n in explicit],
                     [n for n in names if run.calls[n]])
    names = [n for n in names if run.calls[n]]  # off-path glob/type matches are dropped
    produced = {n: [[o.path for o in run.of(n) if o.call == c] for c in range(run.calls[n])]
                for n in names}
    check_filters(selection, produced, _model_name(model))
    out = []
    for n in names:
        if selection[n] is None:
            out.append(LayerKey(n, n))
            continue
        for o in run.of(n):
            if is_selected(selection, n, o.call, run.calls[n], o.path) and o.key not in out:
                out.append(output_key(n, o.call, run.calls[n], o.path))
    return out


def _raise_never_ran(model: nn.Module, example: Any, never: list[str],
                     ran: list[str] | None = None) -> None:
    """One clear error for explicitly named layers that did not run (``ran``: those asked
    for that did)."""
    if not never:
        return
    from shenjing.capture.core import shape_of

    inside = [_used_inside(model, n) for n in never]
    why = "; ".join(f"{n!r} is used inside {parent!r} (not called as a module): capture "
                    f"{parent!r} instead" for n, parent in zip(never, inside, strict=True)
                    if parent)
    raise LayerNotFoundError(
        f"layer(s) {', '.join(map(repr, never))} of {_model_name(model)} never ran for input "
        f"of shape {shape_of(example)}: they are not on this input's forward path"
        + (f" ({why})" if why else "")
        + (f". Layers that ran: {', '.join(ran)}" if ran else "")
        + ". See `shenjing layers RUN` for what ran")


def _used_inside(model: nn.Module, name: str) -> str | None:
    """The module whose forward uses ``name``'s weights without calling it, if known."""
    parent = name.rpartition(".")[0]
    if parent and type(model.get_submodule(parent)).__name__ in _CALLS_CHILDREN_FUNCTIONALLY:
        return parent
    return None


#: torch modules whose forward reads a child's weights directly instead of calling it
#: (``nn.MultiheadAttention`` applies ``out_proj.weight`` inside ``F.multi_head_attention_forward``)
_CALLS_CHILDREN_FUNCTIONALLY = {"MultiheadAttention"}


@dataclass(frozen=True)
class LayerInfo:
    """One layer as seen in a dry run: its name, module type and output shape(s).

    ``output_shapes`` maps each recorded tensor key (``fc1``; ``lstm.0`` for a tuple
    output; ``block#1`` for the second call of a shared module) to its shape, batch first
    (as capture records it: an LSTM's ``h_n`` is (batch, layers, hidden)). ``n_params``
    counts the module's own (non-recursive) parameters; ``calls`` how often it ran in one
    forward (0: it did not run as a module).
    """

    name: str
    type: str
    output_shapes: dict[str, tuple[int, ...]]
    n_params: int
    is_leaf: bool
    calls: int

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The shape of the single output tensor (None when the layer has several)."""
        if len(self.output_shapes) == 1:
            return next(iter(self.output_shapes.values()))
        return None

    @property
    def ran(self) -> bool:
        return self.calls > 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type,
                "output_shapes": {k: [int(v) for v in s] for k, s in self.output_shapes.items()},
                "n_params": int(self.n_params), "is_leaf": bool(self.is_leaf),
                "calls": int(self.calls)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerInfo:
        return cls(name=str(d["name"]), type=str(d["type"]),
                   output_shapes={str(k): tuple(int(v) for v in s)
                                  for k, s in d["output_shapes"].items()},
                   n_params=int(d["n_params"]), is_leaf=bool(d["is_leaf"]),
                   calls=int(d["calls"]))


TABLE_FORMAT = 1


class LayerTable(Sequence[LayerInfo]):
    """What :func:`list_layers` returns: a sequence of :class:`LayerInfo`, printed as a table.

    ``input_shape`` is one sample's shape (no batch dimension), ``batch_size`` the size of
    the batch the dry run used (None if unknown); ``n_params``/``n_trainable`` count all
    the model's parameters. ``to_dict``/``from_dict`` give the ``RUN/layers.json`` format.
    """

    def __init__(self, model_name: str, input_shape: tuple[int, ...],
                 rows: list[LayerInfo], *, n_params: int | None = None,
                 n_trainable: int | None = None, batch_size: int | None = None) -> None:
        self.model_name = model_name
        self.input_shape = tuple(input_shape)
        self._rows = list(rows)
        self.n_params = sum(r.n_params for r in rows) if n_params is None else int(n_params)
        self.n_trainable = self.n_params if n_trainable is None else int(n_trainable)
        self.batch_size = batch_size
        self._by_name = {r.name: r for r in self._rows}

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            if index in self._by_name:
                return self._by_name[index]
            raise LayerNotFoundError(
                f"no layer {index!r} in {self.model_name}."
                f"{did_you_mean(index, list(self._by_name))}")
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerTable):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking: compared by content

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    @property
    def keys(self) -> list[str]:
        """Every capture key, in table order (each selectable with ``--layers``)."""
        return [k for r in self._rows for k in r.output_shapes]

    def note(self, row: LayerInfo | str) -> str:
        """What the table says about a layer besides its shapes: ran how, or why not."""
        r = self[row] if isinstance(row, str) else row
        if not r.ran:
            parent = r.name.rpartition(".")[0]
            p = self._by_name.get(parent)
            if p is not None and p.ran and p.type in _CALLS_CHILDREN_FUNCTIONALLY:
                return f"used inside {parent} (not called as a module)"
            prefix = r.name + "."
            if not r.is_leaf and any(o.ran for o in self._rows if o.name.startswith(prefix)):
                return "container, not called itself (its modules ran)"
            return "did not run"
        notes = []
        if r.type in _ACTIVATIONS:
            notes.append("post-activation")
        if not r.is_leaf and r.n_params == 0:
            notes.append("container")
        if r.calls > 1:
            notes.append(f"called {r.calls}× per forward")
        if not r.output_shapes:
            notes.append("ran; no per-sample tensor output")
        return ", ".join(notes)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Printable rows: (name, type, output shapes batch first, note)."""
        out = []
        for r in self._rows:
            shapes = "; ".join(f"{k}: {tuple(v)}" if k != r.name else str(tuple(v))
                               for k, v in r.output_shapes.items()) or "-"
            out.append((r.name, r.type, shapes, self.note(r)))
        return out

    def summary_rows(self) -> list[tuple[str, str, str, int, str]]:
        """A model summary: (name, type, per-sample shape(s), own parameters, note) for every
        leaf and every module with its own parameters (``self_attn`` of a transformer),
        containers without parameters left out."""
        out = []
        for r in self._rows:
            if not r.is_leaf and r.n_params == 0:
                continue
            shapes = "; ".join(
                ("×".join(map(str, v[1:])) or "scalar") if k == r.name else
                f"{k}: {'×'.join(map(str, v[1:])) or 'scalar'}"
                for k, v in r.output_shapes.items()) or "-"
            out.append((r.name, r.type, shapes, r.n_params, self.note(r)))
        return out

    def __str__(self) -> str:
        rows = [("layer", "type", "output shape (batch first)", "note"), *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        shown = (self.input_shape if self.batch_size is None
                 else (self.batch_size, *self.input_shape))
        lines = [f"{self.model_name} on input {shown} ({self.n_params:,} parameters)"]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LayerTable({self.model_name}, {len(self)} layers)"

    def to_dict(self) -> dict[str, Any]:
        """The table as ``RUN/layers.json`` stores it (JSON-able; ``format`` 1)."""
        return {"format": TABLE_FORMAT, "model_name": self.model_name,
                "input_shape": [int(v) for v in self.input_shape],
                "n_params": int(self.n_params), "n_trainable": int(self.n_trainable),
                "rows": [r.to_dict() for r in self._rows]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerTable:
        """Read what :meth:`to_dict` wrote (a newer ``format`` is refused)."""
        fmt = d.get("format")
        if fmt != TABLE_FORMAT:
            raise RunError(f"layer table format {fmt!r} is not {TABLE_FORMAT}; it was written "
                           "by another shenjing version. Upgrade shenjing to read it")
        rows = [LayerInfo.from_dict(r) for r in d["rows"]]
        batch = next((s[0] for r in rows for s in r.output_shapes.values() if s), None)
        return cls(str(d["model_name"]), tuple(int(v) for v in d["input_shape"]), rows,
                   n_params=int(d["n_params"]), n_trainable=int(d["n_trainable"]),
                   batch_size=batch)


_ACTIVATIONS = {"ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "LeakyReLU", "ELU", "Softmax",
                "LogSoftmax", "Mish", "Hardswish", "SELU", "PReLU", "ReLU6"}


def list_layers(model: nn.Module, example: torch.Tensor | Any) -> LayerTable:
    """Run ``example`` (one batch) through ``model`` and list every layer with what it did.

    Each row gives the keys its outputs are captured under, shapes batch first, and how
    many times it ran; a layer that never runs for this input is listed with no shape and
    says why (``did not run``, or ``used inside self_attn (not called as a module)`` for the
    output projection that ``nn.MultiheadAttention`` applies itself). The model is run in
    ``eval()`` mode under ``inference_mode`` and restored afterwards.

    >>> from torch import nn
    >>> import torch
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> list_layers(net, torch.zeros(2, 4))["1"].output_shape
    (2, 3)
    """
    from shenjing.capture.core import dry_run

    run = dry_run(model, example, layer_names(model))
    rows = []
    for name, mod in model.named_modules():
        if not name:
            continue
        rows.append(LayerInfo(
            name=name, type=type(mod).__name__,
            output_shapes={o.key: o.shape for o in run.of(name) if o.per_sample},
            n_params=sum(p.numel() for p in mod.parameters(recurse=False)),
            is_leaf=not any(True for _ in mod.children()),
            calls=run.calls.get(name, 0),
        ))
    x = example[0] if isinstance(example, (tuple, list)) else example
    shape = tuple(x.shape[1:]) if hasattr(x, "shape") else ()
    return LayerTable(_model_name(model), shape, rows,
                      n_params=sum(p.numel() for p in model.parameters()),
                      n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                      batch_size=run.batch_size)


# the default-layer rule lives in its own module; named here too, with the other layer tools
from shenjing.capture.defaults import DefaultLayers, default_layers  # noqa: E402

__all__ = ["DefaultLayers", "LayerInfo", "LayerKey", "LayerTable", "default_layers",
           "layer_names", "list_layers", "resolve_keys", "resolve_layers", "select_layers",
           "split_key"]
