"""The results of an attention capture: the layers found, the plan, and the captured patterns.

:class:`AttentionCapture` owns its file: :meth:`AttentionCapture.save` writes one ``.npz``
(arrays plus a JSON description, atomically) and :func:`load_attention_capture` reads it
back.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.capture.activations import format_bytes
from shenjing.errors import DataError

#: the kinds of attention the capture recognises (see the package docstring)
KINDS = ("sdpa", "multihead", "softmax")
#: format version of the saved ``.npz`` (its ``meta["format"]``)
FORMAT = 1


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer of a model, as one forward pass showed it.

    ``name`` is the module's name in ``model.named_modules()`` (``blocks.0.attn``); a module
    that computes attention more than once per forward gets one layer per call,
    ``name#0``, ``name#1`` (the capture keys' rule). ``kind`` says how the pattern was
    found: ``"sdpa"`` (a call of ``F.scaled_dot_product_attention``), ``"multihead"``
    (``nn.MultiheadAttention``, also inside ``nn.TransformerEncoderLayer``) or
    ``"softmax"`` (an explicit softmax whose output is multiplied with V). ``tokens`` is
    the number of queries on the example input; ``keys`` the number of keys (they differ
    in cross-attention).
    """

    name: str
    kind: str
    module_type: str
    heads: int
    tokens: int
    keys: int = -1
    dim: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(heads, queries, keys)`` of this layer's pattern, per sample."""
        return (self.heads, self.tokens, self.keys if self.keys >= 0 else self.tokens)

    def __str__(self) -> str:
        h, q, k = self.shape
        return f"{self.name} ({self.module_type}, {self.kind}): {h} heads × {q}×{k}"


@dataclass(frozen=True)
class AttentionPlan:
    """What :func:`capture_attention` will store, known before anything is allocated.

    ``shape`` is the pattern array's ``(samples, layers, heads, queries, keys)``;
    ``nbytes`` counts it and the token features; ``out`` is the ``.npy`` file it streams
    to, or None (in memory). ``str(plan)`` is one line, so ``on_plan=print`` shows it.
    """

    shape: tuple[int, int, int, int, int]
    dtype: str
    nbytes: int
    pattern_bytes: int
    layers: tuple[str, ...]
    out: Path | None = None

    def __str__(self) -> str:
        n, n_layers, h, q, k = self.shape
        where = f"streamed to {self.out}" if self.out is not None else "in memory"
        return (f"attention capture: {n} samples × {n_layers} layers × {h} heads × {q}×{k} "
                f"({self.dtype}) = {format_bytes(self.pattern_bytes)} of patterns, "
                f"{format_bytes(self.nbytes)} in all, {where}")


@dataclass(frozen=True)
class AttentionCapture:
    """Per-head attention patterns of every chosen layer for every sample.

    - ``patterns``: ``(samples, layers, heads, queries, keys)``, each row a probability
      distribution over the keys (it sums to 1; a row whose keys are all masked is 0);
      float32 or float16; a read-only memory map when streamed to a file.
    - ``cls_tokens``, ``mean_tokens``: ``(samples, layers, dim)``: the first token and the
      mean of the other tokens of the states entering each layer (see the package
      docstring for what that is for each kind); None where the layers' widths differ or
      a layer's input is not ``(batch, tokens, dim)``.
    - ``check_error[layer]``: the largest ``|pattern @ V − real output|`` over all samples;
      ``check_scale[layer]`` the magnitude it is judged against (``max(1, max |V|)``, or the
      encoder layer's output where the whole layer was recomputed); a layer passes when
      ``check_error ≤ tolerance × check_scale``.
    - ``labels``: the samples' labels when the data had them.
    """

    layers: tuple[AttentionLayer, ...]
    patterns: np.ndarray
    cls_tokens: np.ndarray | None
    mean_tokens: np.ndarray | None
    check_error: dict[str, float]
    tolerance: float
    check_scale: dict[str, float] = field(default_factory=dict)
    labels: np.ndarray | None = None
    path: Path | None = None

    @property
    def passed(self) -> bool:
        """Whether pattern @ V reproduced every layer's real output within the tolerance."""
        return all(self.layer_passed(layer.name) for layer in self.layers)

    def layer_passed(self, name: str) -> bool:
        """Whether layer ``name``'s check passed (a NaN error fails)."""
        error = self.check_error[name]
        limit = self.tolerance * self.check_scale.get(name, 1.0)
        return math.isfinite(error) and error <= limit

    @property
    def names(self) -> list[str]:
        """The layer names, in the order of the ``layers`` axis."""
        return [layer.name for layer in self.layers]

    @property
    def n_samples(self) -> int:
        return int(self.patterns.shape[0])

    def layer(self, name: str) -> np.ndarray:
        """The patterns of one layer, ``(samples, heads, queries, keys)``."""
        return self.patterns[:, self.names.index(name)]

    def __repr__(self) -> str:
        n, n_layers, h, q, k = self.patterns.shape
        where = f", file={str(self.path)!r}" if self.path is not None else ""
        worst = max(self.check_error.values(), default=0.0)
        return (f"AttentionCapture(samples={n}, layers={n_layers}, heads={h}, "
                f"queries={q}, keys={k}, dtype={self.patterns.dtype}, "
                f"passed={self.passed}, max_check_error={worst:.2g}{where})")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write everything to one ``.npz`` (atomic); read it with
        :func:`load_attention_capture`."""
        arrays: dict[str, Any] = {"patterns": np.asarray(self.patterns)}
        for key in ("cls_tokens", "mean_tokens", "labels"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = np.asarray(value)
        meta = {"format": FORMAT,
                "layers": [vars(layer) for layer in self.layers],
                "check_error": self.check_error, "check_scale": self.check_scale,
                "tolerance": self.tolerance, "passed": self.passed}
        return _io.save_npz(path, meta=meta, **arrays)


def load_attention_capture(path: str | os.PathLike[str]) -> AttentionCapture:
    """Read a capture written by :meth:`AttentionCapture.save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not an attention capture (.npz): {exc}") from None
    if "meta" not in arrays or "patterns" not in arrays:
        raise DataError(f"{path} is not an attention capture: it has no 'meta' or 'patterns'")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format", 0) > FORMAT:
        raise DataError(f"{path} was written by a newer shenjing (attention format "
                        f"{meta['format']}); upgrade shenjing to read it")
    layers = tuple(AttentionLayer(**layer) for layer in meta["layers"])
    return AttentionCapture(
        layers=layers, patterns=arrays["patterns"],
        cls_tokens=arrays.get("cls_tokens"), mean_tokens=arrays.get("mean_tokens"),
        check_error={k: float(v) for k, v in meta["check_error"].items()},
        tolerance=float(meta["tolerance"]),
        check_scale={k: float(v) for k, v in meta.get("check_scale", {}).items()},
        labels=arrays.get("labels"))
