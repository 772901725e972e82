"""Find a model's layers: by exact name, glob pattern or module type; list them with shapes.

A "layer" is any named submodule (``model.named_modules()``), containers included. Post-
activation features are the output of the activation module: in the zoo models every
activation is its own module, so "fc1 after its ReLU" is the layer ``relu1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shenjing.errors import LayerNotFoundError, did_you_mean

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
    a module class or class name (``nn.Conv2d`` or ``"Conv2d"``, also ``"type:Conv2d"``).
    In globs ``*`` stays within one dotted part (``features.*`` is ``features.0``,
    ``features.1`` … but not ``features.0.conv``); ``**`` crosses parts. An item
    that matches nothing raises :class:`LayerNotFoundError` naming the closest layers.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> resolve_layers(net, ["0", "ReLU"])
    ['0', '1']
    """
    return _resolve(model, patterns)[0]


def _resolve(model: nn.Module, patterns: Any) -> tuple[list[str], set[str]]:
    """Layer names in model order, and those named exactly (not via a glob or a type)."""
    if isinstance(patterns, (str, type)):
        patterns = [patterns]
    modules = [(name, mod) for name, mod in model.named_modules() if name]
    names = [name for name, _ in modules]
    chosen: set[str] = set()
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
            elif text in names:
                found = [text]
                explicit.add(text)
            elif _is_glob(text):
                rx = _glob_regex(text)
                found = [n for n in names if rx.match(n)]
            else:
                found = [n for n, m in modules if type(m).__name__ == text]
        if not found:
            types = sorted({type(m).__name__ for _, m in modules})
            hint = did_you_mean(label.removeprefix("type:"), names + types)
            shown = ", ".join(names[:30]) + (" …" if len(names) > 30 else "")
            raise LayerNotFoundError(
                f"no layer {label!r} in {_model_name(model)}.{hint} Layers: {shown}. "
                "See `shenjing layers RUN` or shenjing.capture.list_layers(model, example)."
            )
        chosen.update(found)
    return [n for n in names if n in chosen], explicit


@dataclass(frozen=True)
class LayerInfo:
    """One layer as seen in a dry run: its name, module type and output shape(s).

    ``output_shapes`` maps each recorded tensor key (``fc1``; ``lstm.0`` for a tuple
    output; ``block#1`` for the second call of a shared module) to its shape with the batch
    dimension. ``n_params`` counts the module's own (non-recursive) parameters.
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


class LayerTable(Sequence[LayerInfo]):
    """What :func:`list_layers` returns: a sequence of :class:`LayerInfo`, printed as a table."""

    def __init__(self, model_name: str, input_shape: tuple[int, ...],
                 rows: list[LayerInfo]) -> None:
        self.model_name = model_name
        self.input_shape = input_shape
        self._rows = rows

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            for row in self._rows:
                if row.name == index:
                    return row
            raise LayerNotFoundError(
                f"no layer {index!r} in {self.model_name}."
                f"{did_you_mean(index, [r.name for r in self._rows])}")
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._rows]

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Printable rows: (name, type, output shape, note)."""
        out = []
        for r in self._rows:
            shapes = "; ".join(f"{k}: {tuple(v)}" if k != r.name else str(tuple(v))
                               for k, v in r.output_shapes.items()) or "(did not run)"
            note = []
            if r.type in _ACTIVATIONS:
                note.append("post-activation")
            if not r.is_leaf:
                note.append("container")
            if r.calls > 1:
                note.append(f"called {r.calls}× per forward")
            out.append((r.name, r.type, shapes, ", ".join(note)))
        return out

    def __str__(self) -> str:
        rows = [("layer", "type", "output shape (batch first)", "note"), *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [f"{self.model_name} on input {self.input_shape}"]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LayerTable({self.model_name}, {len(self)} layers)"


_ACTIVATIONS = {"ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "LeakyReLU", "ELU", "Softmax",
                "LogSoftmax", "Mish", "Hardswish", "SELU", "PReLU", "ReLU6"}


def list_layers(model: nn.Module, example: torch.Tensor | Any) -> LayerTable:
    """Run ``example`` (one batch) through ``model`` and list every layer with its output shape.

    Layers that never run for this input are listed with no shape ("did not run"). The
    model is run in ``eval()`` mode under ``inference_mode`` and restored afterwards.

    >>> from torch import nn
    >>> import torch
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> list_layers(net, torch.zeros(2, 4))["1"].output_shape
    (2, 3)
    """
    from shenjing.capture.core import _structure_pass

    names = layer_names(model)
    shapes, calls = _structure_pass(model, names, example)
    rows = []
    for name, mod in model.named_modules():
        if not name:
            continue
        rows.append(LayerInfo(
            name=name, type=type(mod).__name__,
            output_shapes={k: tuple(v) for k, v in shapes.get(name, {}).items()},
            n_params=sum(p.numel() for p in mod.parameters(recurse=False)),
            is_leaf=not any(True for _ in mod.children()),
            calls=calls.get(name, 0),
        ))
    x = example[0] if isinstance(example, (tuple, list)) else example
    shape = tuple(x.shape) if hasattr(x, "shape") else ()
    return LayerTable(_model_name(model), shape, rows)
