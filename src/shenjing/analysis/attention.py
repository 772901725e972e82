"""Attention patterns as numbers: patch grids, CLS maps, rollout, distance, entropy, probes.

Everything here works on arrays of attention patterns shaped like the capture's
(:func:`shenjing.capture.attention.capture_attention`):
``patterns`` ``(samples, layers, heads, queries, keys)``, each row a probability
distribution over the keys. Nothing here reads a run or draws.

- :func:`token_layout` finds where the tokens come from: ``n_prefix`` leading tokens (CLS,
  a distillation token, registers) and a ``rows × cols`` grid of square patches that tiles
  the input image exactly (17 tokens on an 8×8 digit: 1 prefix + a 4×4 grid of 2-px
  patches). When the count makes no such grid, the layout has no grid and says why; the
  views then show the query × key matrix instead.
- :func:`cls_attention`: what the CLS token (token 0) attends to, reshaped to the grid.
- :func:`attention_rollout` (Abnar & Zuidema, ACL 2020): heads averaged, the residual added
  as ``0.5·A + 0.5·I``, rows renormalised, multiplied across layers.
- :func:`mean_attention_distance` (Dosovitskiy et al., ICLR 2021, Fig. 7): per head, the
  distance in pixels between a query patch's centre and the patch centres it attends to,
  weighted by the attention, averaged over query patches and samples. **Prefix tokens**
  have no position: they are left out as queries, and the attention patch queries give
  them is left out too, the rest renormalised to sum to 1 — so the distance says where
  among the patches a head looks; the share it gives prefix tokens is reported beside it
  (:attr:`HeadStats.prefix_share`; the distance without renormalising, which counts that
  share as distance 0, is ``distance × (1 − prefix_share)`` for a single query).
- :func:`attention_entropy`: per head, the entropy (nats) of each query's row over all keys,
  averaged over all queries (prefix ones too) and samples: 0 = one key, ``log(keys)`` =
  uniform.
- :func:`head_change`: the change of both per head between two epochs — "which heads became
  local, which global" — and the heads that changed most.
- :func:`probe_by_layer`: linear-probe accuracy by layer of the CLS token and of the mean
  patch token (:func:`shenjing.analysis.separability.linear_probe`, train split → test).

:func:`epoch_attention` puts one epoch's numbers into a frozen :class:`EpochAttention`, and
:func:`attention_study` the epochs and their change into an :class:`AttentionStudy`, which
owns its files (:meth:`AttentionStudy.save` / :func:`load_attention`).

>>> layout = token_layout(17, (1, 8, 8))
>>> layout.n_prefix, layout.rows, layout.cols, layout.patch
(1, 4, 4, (2, 2))
>>> token_layout(13, (1, 8, 8)).grid
False
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shenjing.errors import ShapeMismatchError, UsageError

#: leading tokens that may carry no patch (CLS, distillation, up to 4 registers)
MAX_PREFIX = 5
#: the residual weight of rollout: Â = (1 − RESIDUAL)·A + RESIDUAL·I
RESIDUAL = 0.5
#: a head whose mean distance moved less than this fraction of a patch side is "steady"
STEADY_FRACTION = 0.1
#: a head whose entropy moved less than this (nats) is "steady" (no grid: no distance)
STEADY_NATS = 0.05
#: samples handled at a time by the per-head statistics (bounded temporary memory)
CHUNK = 64


# ---- where the tokens come from ----------------------------------------------------------
def _image_hw(image_shape: Sequence[int]) -> tuple[int, int] | None:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 3:
        return shape[1], shape[2]
    if len(shape) == 2:
        return shape[0], shape[1]
    return None


def _tile_counts(h: int, w: int) -> list[int]:
    """The patch counts of square patches tiling an ``h × w`` image exactly, fewest first."""
    sides = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
    return sorted({(h // p) * (w // p) for p in sides})


@dataclass(frozen=True)
class TokenLayout:
    """How ``n_tokens`` tokens map onto the input image: ``n_prefix`` leading tokens with no
    position, then a ``rows × cols`` grid of square patches in row-major order
    (``patch`` = ``(height, width)`` in pixels). Without a grid, ``reason`` says why.
    """

    n_tokens: int
    image: tuple[int, int] | None
    n_prefix: int = 0
    rows: int = 0
    cols: int = 0
    patch: tuple[int, int] = (0, 0)
    reason: str | None = None

    @property
    def grid(self) -> bool:
        """Whether the tokens form a patch grid."""
        return self.reason is None

    @property
    def n_patches(self) -> int:
        return self.rows * self.cols

    def centres(self) -> np.ndarray:
        """``(patches, 2)`` patch centres in pixels, ``(y, x)``, row-major."""
        r, c = np.meshgrid(np.arange(self.rows), np.arange(self.cols), indexing="ij")
        return np.stack([(r.ravel() + 0.5) * self.patch[0],
                         (c.ravel() + 0.5) * self.patch[1]], axis=1).astype(np.float64)

    def to_grid(self, values: np.ndarray) -> np.ndarray:
        """``(..., patches)`` → ``(..., rows, cols)``."""
        self._require_grid()
        values = np.asarray(values)
        if values.shape[-1] != self.n_patches:
            raise ShapeMismatchError(f"{values.shape[-1]} values per map, but the grid has "
                                     f"{self.rows}×{self.cols} = {self.n_patches} patches")
        return values.reshape(*values.shape[:-1], self.rows, self.cols)

    def _require_grid(self) -> None:
        if not self.grid:
            raise ShapeMismatchError(f"no patch grid: {self.reason}")

    def describe(self) -> str:
        """One line: ``'17 tokens = 1 prefix (CLS) + 4×4 grid of 2×2-px patches'``."""
        if not self.grid:
            return f"{self.n_tokens} tokens, no patch grid: {self.reason}"
        prefix = {0: "no prefix token", 1: "1 prefix (CLS)"}.get(
            self.n_prefix, f"{self.n_prefix} prefix (CLS first)")
        return (f"{self.n_tokens} tokens = {prefix} + {self.rows}×{self.cols} grid of "
                f"{self.patch[0]}×{self.patch[1]}-px patches")

    def to_dict(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "image": list(self.image) if self.image else None,
                "grid": self.grid, "n_prefix": self.n_prefix, "rows": self.rows,
                "cols": self.cols, "patch": list(self.patch), "reason": self.reason,
                "text": self.describe()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenLayout:
        image = d.get("image")
        return cls(n_tokens=int(d["n_tokens"]),
                   image=(int(image[0]), int(image[1])) if image else None,
                   n_prefix=int(d.get("n_prefix", 0)), rows=int(d.get("rows", 0)),
                   cols=int(d.get("cols", 0)),
                   patch=(int(d["patch"][0]), int(d["patch"][1])) if d.get("patch")
                   else (0, 0), reason=d.get("reason"))


def token_layout(n_tokens: int, image_shape: Sequence[int], *,
                 n_prefix: int | None = None) -> TokenLayout:
    """The prefix tokens and the patch grid of ``n_tokens`` tokens of an input image shaped
    ``(channels, height, width)`` (or ``(height, width)``).

    The grid is searched for with the fewest prefix tokens first (0 … :data:`MAX_PREFIX`, or
    exactly ``n_prefix`` when given): the first count leaving ``rows × cols`` tokens of
    square patches that tile the image exactly, and at least twice as many patches as
    prefix tokens, wins. Prefix tokens are taken to lead, as in ViT, DeiT, timm and Hugging
    Face models (CLS at token 0).

    >>> token_layout(50, (1, 28, 28)).describe()
    '50 tokens = 1 prefix (CLS) + 7×7 grid of 4×4-px patches'
    """
    n_tokens = int(n_tokens)
    hw = _image_hw(image_shape)
    if hw is None:
        return TokenLayout(n_tokens, None, reason=(
            f"the input is not an image (shape {tuple(image_shape)}): tokens have no pixel "
            "positions"))
    h, w = hw
    prefixes = range(MAX_PREFIX + 1) if n_prefix is None else [int(n_prefix)]
    for p in prefixes:
        m = n_tokens - p
        if m < 1:
            continue
        if m < 2 * p:  # a few patches behind many "prefix" tokens is a coincidence
            continue
        side = math.isqrt(h * w // m) if h * w % m == 0 else 0
        if side >= 1 and side * side * m == h * w and h % side == 0 and w % side == 0:
            return TokenLayout(n_tokens, (h, w), n_prefix=p, rows=h // side, cols=w // side,
                               patch=(side, side))
    counts = [str(c) for c in _tile_counts(h, w)]
    tiles = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} or {counts[-1]}"
    which = (f"{prefixes[0]} leading prefix token{'s' if prefixes[0] != 1 else ''} "
             f"{'do' if prefixes[0] != 1 else 'does'} not leave"
             if n_prefix is not None else f"no count of 0–{MAX_PREFIX} leading prefix tokens "
             "(CLS, registers) leaves")
    return TokenLayout(n_tokens, (h, w), reason=(
        f"{n_tokens} tokens do not form a patch grid of the {h}×{w} input: square patches "
        f"tile it as {tiles} patches, and {which} one of those (with at least twice as many "
        "patches as prefix tokens)"))


def _check_patterns(patterns: Any, what: str = "patterns") -> np.ndarray:
    arr = np.asarray(patterns) if not isinstance(patterns, np.ndarray) else patterns
    if arr.ndim != 5:
        raise ShapeMismatchError(f"{what} must be (samples, layers, heads, queries, keys), "
                                 f"got shape {arr.shape}")
    return arr


# ---- maps -------------------------------------------------------------------------------
def cls_attention(patterns: Any, layout: TokenLayout) -> np.ndarray:
    """``(samples, layers, heads, rows, cols)``: the attention of token 0 (CLS) to each patch.

    With no prefix token there is no CLS: the map is then the attention each patch
    *receives*, averaged over all queries (see :func:`map_query`).
    """
    arr = _check_patterns(patterns)
    layout._require_grid()
    if arr.shape[-1] != layout.n_tokens:
        raise ShapeMismatchError(f"patterns have {arr.shape[-1]} keys but the layout "
                                 f"{layout.n_tokens} tokens")
    p = layout.n_prefix
    rows = arr[..., 0, p:] if p else arr.mean(axis=-2)
    return layout.to_grid(np.asarray(rows, dtype=np.float32))


def map_query(layout: TokenLayout) -> str:
    """Which query the maps show: ``'CLS'`` or ``'mean over queries'`` (no prefix token)."""
    return "CLS" if layout.n_prefix else "mean over queries"


def attention_rollout(patterns: Any, *, residual: float = RESIDUAL) -> np.ndarray:
    """Attention rollout: ``(samples, layers, tokens, tokens)``, entry ``[:, l]`` the rollout
    through layers ``0 … l``.

    ``Â_l = (1 − residual)·mean_heads(A_l) + residual·I``, each row renormalised to 1, and
    ``R_l = Â_l · R_{l−1}`` (``R_0 = Â_0``): row ``i`` of ``R_l`` says how much each input
    token reaches output token ``i`` of layer ``l`` through attention and the residual
    stream (Abnar & Zuidema, ACL 2020).

    >>> a = np.full((1, 2, 1, 2, 2), 0.5)
    >>> attention_rollout(a)[0, -1].round(3).tolist()
    [[0.625, 0.375], [0.375, 0.625]]
    """
    arr = _check_patterns(patterns)
    if arr.shape[-1] != arr.shape[-2]:
        raise ShapeMismatchError(f"rollout needs self-attention (as many queries as keys); "
                                 f"got {arr.shape[-2]} queries × {arr.shape[-1]} keys")
    n_tokens = arr.shape[-1]
    eye = np.eye(n_tokens)
    out = np.empty((arr.shape[0], arr.shape[1], n_tokens, n_tokens), dtype=np.float32)
    for s in range(arr.shape[0]):
        joint = eye
        for layer in range(arr.shape[1]):
            a = (1.0 - residual) * np.asarray(arr[s, layer], dtype=np.float64).mean(axis=0) \
                + residual * eye
            a = a / a.sum(axis=-1, keepdims=True)
            joint = a @ joint
            out[s, layer] = joint
    return out


def rollout_maps(rollout: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """``(samples, layers, rows, cols)``: the CLS row of the rollout over the patches (the
    mean row over all tokens when there is no prefix token)."""
    layout._require_grid()
    p = layout.n_prefix
    rows = rollout[..., 0, p:] if p else rollout.mean(axis=-2)
    return layout.to_grid(np.asarray(rows, dtype=np.float32))


# ---- per-head statistics ----------------------------------------------------------------
def _pairwise_distance(layout: TokenLayout) -> np.ndarray:
    c = layout.centres()
    return np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1))


def _distance_and_share(patterns: np.ndarray, layout: TokenLayout
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per head ``(layers, heads)``: mean distance (pixels) and the share of attention patch
    queries give the prefix tokens, both averaged over query patches and samples."""
    p = layout.n_prefix
    dist = _pairwise_distance(layout)
    n = patterns.shape[0]
    total_d = np.zeros(patterns.shape[1:3])
    total_s = np.zeros(patterns.shape[1:3])
    for start in range(0, n, CHUNK):
        a = np.asarray(patterns[start:start + CHUNK, :, :, p:, :], dtype=np.float64)
        to_patches = a[..., p:]
        mass = to_patches.sum(-1)
        weighted = (to_patches * dist).sum(-1)
        per_query = np.divide(weighted, mass, out=np.zeros_like(weighted), where=mass > 0)
        total_d += per_query.mean(-1).sum(0)
        total_s += (1.0 - mass).clip(0.0, 1.0).mean(-1).sum(0)
    return total_d / n, total_s / n


def uniform_distance(layout: TokenLayout) -> float:
    """The mean attention distance (pixels) of uniform attention over the patches: the mean
    distance between two patch centres (a pair may be one patch twice) — the reference a
    head is local below and global above.

    >>> round(uniform_distance(token_layout(5, (1, 2, 2))), 4)  # 2×2 grid of 1-px patches
    0.8536
    """
    layout._require_grid()
    return float(_pairwise_distance(layout).mean())


def mean_attention_distance(patterns: Any, layout: TokenLayout) -> np.ndarray:
    """``(layers, heads)``: mean attention distance in pixels (Dosovitskiy et al., 2021).

    For each query patch ``q``: ``Σ_k a_qk ‖pos_q − pos_k‖`` over the patch keys ``k`` (patch
    centres in pixels), the weights renormalised over the patches (prefix tokens have no
    position; the share they receive is in :func:`head_stats`); averaged over query patches
    and samples.
    """
    arr = _check_patterns(patterns)
    layout._require_grid()
    _check_tokens(arr, layout)
    return _distance_and_share(arr, layout)[0]


def attention_entropy(patterns: Any) -> np.ndarray:
    """``(layers, heads)``: the entropy ``−Σ_k a_qk log a_qk`` (nats) of each query's row,
    averaged over all queries and samples; ``log(keys)`` for uniform attention.

    >>> float(attention_entropy(np.full((1, 1, 1, 3, 4), 0.25))[0, 0]) == float(np.log(4))
    True
    """
    arr = _check_patterns(patterns)
    total = np.zeros(arr.shape[1:3])
    for start in range(0, arr.shape[0], CHUNK):
        a = np.asarray(arr[start:start + CHUNK], dtype=np.float64)
        logs = np.log(a, out=np.zeros_like(a), where=a > 0)
        total += (-(a * logs).sum(-1)).mean(-1).sum(0)
    return total / arr.shape[0]


def _check_tokens(arr: np.ndarray, layout: TokenLayout) -> None:
    if arr.shape[-1] != layout.n_tokens or arr.shape[-2] != layout.n_tokens:
        raise ShapeMismatchError(f"patterns have {arr.shape[-2]} queries × {arr.shape[-1]} "
                                 f"keys but the layout {layout.n_tokens} tokens")


@dataclass(frozen=True)
class HeadStats:
    """Per layer × head, at one epoch: mean attention distance (pixels; None without a
    grid), the share of attention patch queries give prefix tokens, the entropy (nats)."""

    layers: tuple[str, ...]
    entropy: np.ndarray              # (layers, heads)
    distance: np.ndarray | None      # (layers, heads), pixels
    prefix_share: np.ndarray | None  # (layers, heads)
    n_keys: int
    n_samples: int

    @property
    def n_heads(self) -> int:
        return int(self.entropy.shape[1])

    @property
    def max_entropy(self) -> float:
        """``log(keys)``: the entropy of uniform attention."""
        return float(np.log(self.n_keys))

    def layer_lines(self) -> list[str]:
        """One line per layer: mean distance and entropy, and their range over heads."""
        lines = []
        for i, name in enumerate(self.layers):
            e = self.entropy[i]
            text = (f"entropy {e.mean():.3f} nats (heads {e.min():.3f}–{e.max():.3f}; "
                    f"uniform {self.max_entropy:.3f})")
            if self.distance is not None:
                d = self.distance[i]
                text = (f"distance {d.mean():.2f} px (heads {d.min():.2f}–{d.max():.2f}), "
                        + text)
            lines.append(f"{name}: {text}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "entropy": self.entropy.tolist(),
                "distance": None if self.distance is None else self.distance.tolist(),
                "prefix_share": None if self.prefix_share is None
                else self.prefix_share.tolist(),
                "n_keys": self.n_keys, "max_entropy": self.max_entropy,
                "n_samples": self.n_samples, "units": {"distance": "pixels",
                                                       "entropy": "nats"}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadStats:
        def arr(v: Any) -> np.ndarray | None:
            return None if v is None else np.asarray(v, dtype=np.float64)

        entropy = arr(d["entropy"])
        assert entropy is not None
        return cls(layers=tuple(d["layers"]), entropy=entropy, distance=arr(d.get("distance")),
                   prefix_share=arr(d.get("prefix_share")), n_keys=int(d["n_keys"]),
                   n_samples=int(d["n_samples"]))


def head_stats(patterns: Any, layout: TokenLayout, layers: Sequence[str] | None = None
               ) -> HeadStats:
    """Mean distance (with a grid), prefix share and entropy of every layer × head of
    ``patterns`` ``(samples, layers, heads, queries, keys)``, streamed over samples."""
    arr = _check_patterns(patterns)
    names = tuple(layers) if layers is not None else tuple(
        f"layer {i}" for i in range(arr.shape[1]))
    if len(names) != arr.shape[1]:
        raise ShapeMismatchError(f"{len(names)} layer names for {arr.shape[1]} layers of "
                                 "patterns")
    if arr.shape[0] == 0:
        raise UsageError("head statistics need at least one sample")
    distance = share = None
    if layout.grid:
        _check_tokens(arr, layout)
        distance, share = _distance_and_share(arr, layout)
    return HeadStats(layers=names, entropy=attention_entropy(arr), distance=distance,
                     prefix_share=share, n_keys=int(arr.shape[-1]), n_samples=int(arr.shape[0]))


# ---- the change between epochs ------------------------------------------------------------
@dataclass(frozen=True)
class HeadChange:
    """Per layer × head, from epoch ``epochs[0]`` to ``epochs[1]``: the change of mean
    distance (pixels, None without a grid) and entropy (nats).

    :meth:`became` says per head ``local`` (distance down), ``global`` (up) or ``steady``
    (moved less than ``steady_pixels``); :meth:`focus` says ``sharper`` (entropy down),
    ``more diffuse`` (up) or ``steady`` (less than :data:`STEADY_NATS`). The heads that
    changed most (:meth:`top`) are ranked by :meth:`score`: both changes relative to
    uniform attention's value, ``|Δ distance| / uniform_distance + |Δ entropy| / log(keys)``
    (the entropy term alone without a grid).
    """

    epochs: tuple[int, int]
    layers: tuple[str, ...]
    before: HeadStats
    after: HeadStats
    steady_pixels: float | None
    uniform_distance: float | None = None

    @property
    def delta_distance(self) -> np.ndarray | None:
        if self.before.distance is None or self.after.distance is None:
            return None
        return self.after.distance - self.before.distance

    @property
    def delta_entropy(self) -> np.ndarray:
        return self.after.entropy - self.before.entropy

    @property
    def ranked_by(self) -> str:
        """What :meth:`score` adds up, in words."""
        entropy = f"|Δ entropy| / {self.after.max_entropy:.2f} nats"
        if self.delta_distance is None or not self.uniform_distance:
            return entropy
        return f"|Δ distance| / {self.uniform_distance:.2f} px + {entropy}"

    def score(self) -> np.ndarray:
        """``(layers, heads)``: how much each head changed, relative to uniform attention."""
        total = np.abs(self.delta_entropy) / max(self.after.max_entropy, 1e-12)
        dd = self.delta_distance
        if dd is not None and self.uniform_distance:
            total = total + np.abs(dd) / self.uniform_distance
        return total

    def became(self) -> np.ndarray:
        """``(layers, heads)`` of ``'local'``, ``'global'``, ``'steady'`` by distance (by
        entropy, as :meth:`focus`, without a grid)."""
        dd = self.delta_distance
        if dd is None:
            return self.focus()
        steady = self.steady_pixels or 0.0
        return np.where(np.abs(dd) < steady, "steady", np.where(dd < 0, "local", "global"))

    def focus(self) -> np.ndarray:
        """``(layers, heads)`` of ``'sharper'``, ``'more diffuse'``, ``'steady'`` by entropy."""
        de = self.delta_entropy
        return np.where(np.abs(de) < STEADY_NATS, "steady",
                        np.where(de < 0, "sharper", "more diffuse"))

    @staticmethod
    def _count(words: np.ndarray) -> dict[str, int]:
        found, n = np.unique(words, return_counts=True)
        return {str(w): int(c) for w, c in zip(found, n, strict=True)}

    def counts(self) -> dict[str, int]:
        """How many heads :meth:`became` each word."""
        return self._count(self.became())

    def focus_counts(self) -> dict[str, int]:
        """How many heads got each :meth:`focus` word."""
        return self._count(self.focus())

    def counts_text(self) -> str:
        """``'2 local, 14 steady in distance; 12 sharper, 4 steady in entropy'``."""
        def words(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {w}" for w, n in sorted(counts.items()))

        focus = f"{words(self.focus_counts())} in entropy"
        if self.delta_distance is None:
            return focus
        return f"{words(self.counts())} in distance; {focus}"

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` heads that changed most (:meth:`score`), largest first, with their
        numbers before and after."""
        dd = self.delta_distance
        score = self.score()
        order = np.argsort(-score, axis=None, kind="stable")[:k]
        became, focus = self.became(), self.focus()
        out = []
        for flat in order:
            li, hi = np.unravel_index(int(flat), score.shape)
            row: dict[str, Any] = {
                "layer": self.layers[li], "layer_index": int(li), "head": int(hi),
                "score": float(score[li, hi]),
                "entropy_before": float(self.before.entropy[li, hi]),
                "entropy_after": float(self.after.entropy[li, hi]),
                "delta_entropy": float(self.delta_entropy[li, hi]),
                "became": str(became[li, hi]), "focus": str(focus[li, hi])}
            if dd is not None:
                assert self.before.distance is not None and self.after.distance is not None
                row.update(distance_before=float(self.before.distance[li, hi]),
                           distance_after=float(self.after.distance[li, hi]),
                           delta_distance=float(dd[li, hi]))
            out.append(row)
        return out

    @staticmethod
    def head_text(row: Mapping[str, Any]) -> str:
        """``'blocks.1 head 2: 3.10 → 1.20 px (local), entropy 2.80 → 1.90 nats
        (sharper)'``."""
        text = f"{row['layer']} head {row['head']}: "
        if "distance_before" in row:
            text += (f"{row['distance_before']:.2f} → {row['distance_after']:.2f} px "
                     f"({row['became']}), ")
        return text + (f"entropy {row['entropy_before']:.2f} → {row['entropy_after']:.2f} "
                       f"nats ({row.get('focus', row['became'])})")

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        dd = self.delta_distance
        return {"epochs": list(self.epochs), "layers": list(self.layers),
                "delta_distance": None if dd is None else dd.tolist(),
                "delta_entropy": self.delta_entropy.tolist(), "score": self.score().tolist(),
                "became": self.became().tolist(), "focus": self.focus().tolist(),
                "counts": self.counts(), "focus_counts": self.focus_counts(),
                "counts_text": self.counts_text(), "ranked_by": self.ranked_by,
                "steady_pixels": self.steady_pixels, "steady_nats": STEADY_NATS,
                "uniform_distance": self.uniform_distance, "top_changed": self.top(k)}


def head_change(before: HeadStats, after: HeadStats, *, epochs: tuple[int, int] = (0, 1),
                layout: TokenLayout | None = None) -> HeadChange:
    """The change of every head's distance and entropy from ``before`` to ``after``.

    A head's distance is *steady* when it moved less than :data:`STEADY_FRACTION` of a
    patch side (``layout``'s; without one, any change counts); the ranking's distance term
    needs the layout too (:func:`uniform_distance`).
    """
    if before.entropy.shape != after.entropy.shape or before.layers != after.layers:
        raise ShapeMismatchError(
            f"the two epochs' heads differ: {before.layers} {before.entropy.shape} vs "
            f"{after.layers} {after.entropy.shape}")
    steady = uniform = None
    if layout is not None and layout.grid:
        steady, uniform = STEADY_FRACTION * min(layout.patch), uniform_distance(layout)
    return HeadChange(epochs=(int(epochs[0]), int(epochs[1])), layers=before.layers,
                      before=before, after=after, steady_pixels=steady,
                      uniform_distance=uniform)


# ---- probe ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerProbe:
    """Linear-probe test accuracy by layer of token features: ``accuracy[feature]`` is
    ``(layers,)`` for ``feature`` ``'cls'`` (token 0 of each attention layer's input) and
    ``'mean'`` (the mean of the other tokens)."""

    layers: tuple[str, ...]
    accuracy: dict[str, np.ndarray]
    train_accuracy: dict[str, np.ndarray]
    chance: float
    n_train: int
    n_test: int

    def best(self, feature: str) -> tuple[str, float]:
        acc = self.accuracy[feature]
        i = int(np.argmax(acc))
        return self.layers[i], float(acc[i])

    def lines(self, names: Mapping[str, str] | None = None) -> list[str]:
        names = names or {}
        return [f"{names.get(f, f)}: " + ", ".join(
            f"{name} {a:.1%}" for name, a in zip(self.layers, acc, strict=True))
            for f, acc in self.accuracy.items()]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers),
                "accuracy": {k: v.tolist() for k, v in self.accuracy.items()},
                "train_accuracy": {k: v.tolist() for k, v in self.train_accuracy.items()},
                "chance": self.chance, "n_train": self.n_train, "n_test": self.n_test}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerProbe:
        return cls(layers=tuple(d["layers"]),
                   accuracy={k: np.asarray(v) for k, v in d["accuracy"].items()},
                   train_accuracy={k: np.asarray(v) for k, v in d["train_accuracy"].items()},
                   chance=float(d["chance"]), n_train=int(d["n_train"]),
                   n_test=int(d["n_test"]))


def probe_by_layer(train: Mapping[str, Any], y_train: Any, test: Mapping[str, Any],
                   y_test: Any, *, layers: Sequence[str], random_state: int = 0
                   ) -> LayerProbe:
    """Probe accuracy by layer of each feature set: ``train[f]`` / ``test[f]`` are
    ``(samples, layers, dim)`` (``f`` = ``'cls'``, ``'mean'``; a None value is left out).

    Each layer's features are scored with :func:`~shenjing.analysis.separability.linear_probe`
    (a standardised logistic regression fitted on ``train``, scored on ``test``).
    """
    from shenjing.analysis.separability import linear_probe

    acc: dict[str, np.ndarray] = {}
    tr_acc: dict[str, np.ndarray] = {}
    y_tr = np.asarray(y_train)
    y_te = np.asarray(y_test)
    for f, a in train.items():
        b = test.get(f)
        if a is None or b is None:
            continue
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.shape[1] != len(layers) or b_arr.shape[1] != len(layers):
            raise ShapeMismatchError(f"{f} features have {a_arr.shape[1]} / {b_arr.shape[1]} "
                                     f"layers, expected {len(layers)}")
        scores = [linear_probe(a_arr[:, i], y_tr, b_arr[:, i], y_te,
                               random_state=random_state) for i in range(len(layers))]
        acc[f] = np.array([s[0] for s in scores])
        tr_acc[f] = np.array([s[1] for s in scores])
    _, counts = np.unique(y_te, return_counts=True)
    chance = float(counts.max() / counts.sum()) if counts.size else 0.0
    return LayerProbe(layers=tuple(layers), accuracy=acc, train_accuracy=tr_acc,
                      chance=chance, n_train=len(y_tr), n_test=len(y_te))


# ---- one epoch, and the study ------------------------------------------------------------
@dataclass(frozen=True)
class EpochAttention:
    """One epoch's attention: the maps of a few inputs and the per-head numbers of many.

    ``patterns`` ``(samples, layers, heads, queries, keys)`` and ``images``
    ``(samples, channels, height, width)`` are the chosen inputs'; ``maps`` (CLS → patch)
    ``(samples, layers, heads, rows, cols)`` and ``rollout_map``
    ``(samples, layers, rows, cols)`` are None without a grid; ``rollout``
    ``(samples, layers, tokens, tokens)`` is None when the layers' token counts differ.
    ``check_error`` is the capture's check (layer → max |pattern @ V − real output|); a
    layer passes when its error is at most ``tolerance × check_scale[layer]`` (the scale
    the capture judged it against, 1 when not given).
    """

    epoch: int
    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    layout: TokenLayout
    patterns: np.ndarray
    images: np.ndarray
    samples: tuple[int, ...]
    labels: tuple[Any, ...]
    maps: np.ndarray | None
    rollout: np.ndarray | None
    rollout_map: np.ndarray | None
    stats: HeadStats
    probe: LayerProbe | None
    check_error: dict[str, float]
    tolerance: float
    check_scale: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def limit(self, layer: str) -> float:
        """The largest error layer ``layer``'s check allows."""
        return self.tolerance * self.check_scale.get(layer, 1.0)

    @property
    def passed(self) -> bool:
        """Whether pattern @ V reproduced every layer's real output within the tolerance
        (a NaN error fails)."""
        return all(math.isfinite(e) and e <= self.limit(k) for k, e in self.check_error.items())

    @property
    def n_heads(self) -> int:
        return int(self.patterns.shape[2])

    def check_text(self) -> str:
        """``'pattern @ V vs the layers' real outputs: max error 2.1e-07 (tolerance 1.0e-05
        × max(1, |V|)) — passed'``."""
        worst = max(self.check_error.values(), default=0.0)
        word = "passed" if self.passed else "FAILED"
        scaled = " × each layer's scale, max(1, max |V|)" if self.check_scale else ""
        return (f"pattern @ V vs the layers' real outputs: max error {worst:.2e} "
                f"(tolerance {self.tolerance:.1e}{scaled}) — {word}")

    def __repr__(self) -> str:
        return (f"EpochAttention(epoch={self.epoch}, layers={len(self.layers)}, "
                f"heads={self.n_heads}, samples={list(self.samples)}, "
                f"layout={self.layout.describe()!r}, "
                f"check={'passed' if self.passed else 'FAILED'})")

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "layers": list(self.layers), "kinds": list(self.kinds),
                "heads": self.n_heads, "layout": self.layout.to_dict(),
                "map_query": map_query(self.layout) if self.layout.grid else None,
                "samples": list(self.samples), "labels": list(self.labels),
                "stats": self.stats.to_dict(),
                "probe": self.probe.to_dict() if self.probe is not None else None,
                "check": {"error": dict(self.check_error), "tolerance": self.tolerance,
                          "scale": dict(self.check_scale), "passed": self.passed,
                          "text": self.check_text()},
                **self.extra}

    def save(self, path: str | os.PathLike[str]) -> list[Path]:
        """Write ``<path>.json`` (:meth:`to_dict`) and ``<path>.npz`` (the arrays), atomically;
        :func:`load_epoch_attention` reads them back."""
        from shenjing import _io

        base = Path(path).with_suffix("")
        arrays: dict[str, Any] = {"patterns": self.patterns.astype(np.float32),
                                  "images": np.asarray(self.images, dtype=np.float32)}
        for name in ("maps", "rollout", "rollout_map"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value.astype(np.float32)
        return [_io.write_json(base.with_suffix(".json"), self.to_dict()),
                _io.save_npz(base.with_suffix(".npz"), **arrays)]


_EPOCH_FIELDS = {"epoch", "layers", "kinds", "heads", "layout", "map_query", "samples",
                 "labels", "stats", "probe", "check"}


def load_epoch_attention(path: str | os.PathLike[str]) -> EpochAttention:
    """The epoch :meth:`EpochAttention.save` wrote at ``path`` (``.json``, ``.npz`` or stem)."""
    from shenjing import _io

    base = Path(path).with_suffix("")
    rec = _io.read_json(base.with_suffix(".json"))
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    probe = rec.get("probe")
    return EpochAttention(
        epoch=int(rec["epoch"]), layers=tuple(rec["layers"]), kinds=tuple(rec["kinds"]),
        layout=TokenLayout.from_dict(rec["layout"]), patterns=a["patterns"],
        images=a["images"], samples=tuple(int(s) for s in rec["samples"]),
        labels=tuple(rec["labels"]), maps=a.get("maps"), rollout=a.get("rollout"),
        rollout_map=a.get("rollout_map"), stats=HeadStats.from_dict(rec["stats"]),
        probe=LayerProbe.from_dict(probe) if probe else None,
        check_error={k: float(v) for k, v in rec["check"]["error"].items()},
        tolerance=float(rec["check"]["tolerance"]),
        check_scale={k: float(v) for k, v in rec["check"].get("scale", {}).items()},
        extra={k: v for k, v in rec.items() if k not in _EPOCH_FIELDS})


def epoch_attention(patterns: Any, stats_patterns: Any, *, image_shape: Sequence[int],
                    layers: Sequence[str], kinds: Sequence[str] | None = None,
                    images: Any = None, epoch: int = 0, samples: Sequence[int] = (),
                    labels: Sequence[Any] = (), probe: LayerProbe | None = None,
                    check_error: Mapping[str, float] | None = None, tolerance: float = 0.0,
                    check_scale: Mapping[str, float] | None = None,
                    n_prefix: int | None = None, extra: Mapping[str, Any] | None = None
                    ) -> EpochAttention:
    """One epoch's :class:`EpochAttention`: the maps and rollout of ``patterns`` (the chosen
    inputs), the per-head numbers of ``stats_patterns`` (many inputs), both
    ``(samples, layers, heads, queries, keys)``; ``image_shape`` ``(channels, height,
    width)`` places the tokens (:func:`token_layout`)."""
    arr = _check_patterns(patterns)
    layout = token_layout(arr.shape[-1], image_shape, n_prefix=n_prefix)
    rollout = attention_rollout(arr) if arr.shape[-1] == arr.shape[-2] else None
    maps = cls_attention(arr, layout) if layout.grid else None
    rmap = rollout_maps(rollout, layout) if layout.grid and rollout is not None else None
    if images is None:
        images = np.zeros((arr.shape[0], *image_shape), dtype=np.float32)
    return EpochAttention(
        epoch=int(epoch), layers=tuple(layers),
        kinds=tuple(kinds) if kinds is not None else ("",) * len(layers), layout=layout,
        patterns=np.asarray(arr, dtype=np.float32), images=np.asarray(images),
        samples=tuple(int(s) for s in samples), labels=tuple(labels), maps=maps,
        rollout=rollout, rollout_map=rmap,
        stats=head_stats(stats_patterns, layout, layers), probe=probe,
        check_error=dict(check_error or {}), tolerance=float(tolerance),
        check_scale=dict(check_scale or {}), extra=dict(extra or {}))


@dataclass(frozen=True)
class AttentionStudy:
    """The attention view of a model at several epochs, and the change of its heads from
    the first epoch to the last (None for one epoch)."""

    epochs: tuple[EpochAttention, ...]
    change: HeadChange | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layout(self) -> TokenLayout:
        return self.epochs[-1].layout

    @property
    def layers(self) -> tuple[str, ...]:
        return self.epochs[-1].layers

    @property
    def epoch_numbers(self) -> tuple[int, ...]:
        return tuple(e.epoch for e in self.epochs)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.epochs)

    def max_check_error(self) -> float:
        return max((v for e in self.epochs for v in e.check_error.values()), default=0.0)

    def __repr__(self) -> str:
        return (f"AttentionStudy(epochs={list(self.epoch_numbers)}, layers={list(self.layers)}"
                f", layout={self.layout.describe()!r}, "
                f"check={'passed' if self.passed else 'FAILED'})")

    def summary_lines(self) -> list[str]:
        """The lines the CLI prints: layout, check, numbers per layer, change, probe."""
        first, last = self.epochs[0], self.epochs[-1]
        lines = [f"{len(self.layers)} attention layers × {last.n_heads} heads: "
                 f"{', '.join(self.layers)}", self.layout.describe()]
        if not self.layout.grid:
            lines.append("showing the query × key matrix instead of patch maps (and no "
                         "attention distance: tokens have no pixel positions)")
        for e in self.epochs:
            lines.append(f"epoch {e.epoch}: {e.check_text()}")
        for e in self.epochs:
            lines.append(f"epoch {e.epoch}, mean over {e.stats.n_samples} test inputs:")
            lines += [f"  {line}" for line in e.stats.layer_lines()]
        if self.change is not None:
            a, b = self.change.epochs
            lines.append(f"heads epoch {a} → {b}: {self.change.counts_text()}; changed most "
                         f"({self.change.ranked_by}):")
            lines += [f"  {HeadChange.head_text(r)}" for r in self.change.top(5)]
        for e in (first, last) if first is not last else (last,):
            if e.probe is not None:
                names = {"cls": "CLS token" if self.layout.n_prefix else "token 0",
                         "mean": "mean patch token"}
                lines.append(f"probe accuracy by layer, epoch {e.epoch} (train {e.probe.n_train}"
                             f" → test {e.probe.n_test}, chance {e.probe.chance:.1%}):")
                lines += [f"  {line}" for line in e.probe.lines(names)]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The summary: layout, checks, distance/entropy per head per epoch, change, probes."""
        return {
            "epochs": list(self.epoch_numbers), "layers": list(self.layers),
            "kinds": list(self.epochs[-1].kinds), "heads": self.epochs[-1].n_heads,
            "layout": self.layout.to_dict(),
            "map_query": map_query(self.layout) if self.layout.grid else None,
            "samples": list(self.epochs[-1].samples), "labels": list(self.epochs[-1].labels),
            "check": {"per_epoch": {str(e.epoch): {"error": dict(e.check_error),
                                                   "tolerance": e.tolerance,
                                                   "scale": dict(e.check_scale),
                                                   "passed": e.passed} for e in self.epochs},
                      "max_error": self.max_check_error(),
                      "tolerance": max(e.tolerance for e in self.epochs),
                      "passed": self.passed},
            "stats": {str(e.epoch): e.stats.to_dict() for e in self.epochs},
            "change": self.change.to_dict() if self.change is not None else None,
            "probe": {str(e.epoch): e.probe.to_dict() for e in self.epochs
                      if e.probe is not None},
            **self.extra}

    def save(self, folder: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
             ) -> list[Path]:
        """Write ``folder/attention-e<NNN>.json|npz`` per epoch and ``folder/summary.json``
        (:meth:`to_dict` and ``extra``); :func:`load_attention` reads them back."""
        from shenjing import _io

        folder = Path(folder)
        written: list[Path] = []
        for e in self.epochs:
            written += e.save(folder / f"attention-e{e.epoch:03d}")
        summary = {**self.to_dict(), **(extra or {}),
                   "files": [p.name for p in written]}
        written.append(_io.write_json(folder / "summary.json", summary))
        return written


def attention_study(epochs: Sequence[EpochAttention], *, extra: Mapping[str, Any] | None = None
                    ) -> AttentionStudy:
    """The epochs (in order) and the change of every head from the first to the last."""
    if not epochs:
        raise UsageError("an attention study needs at least one epoch")
    first, last = epochs[0], epochs[-1]
    change = (head_change(first.stats, last.stats, epochs=(first.epoch, last.epoch),
                          layout=last.layout) if len(epochs) > 1 else None)
    return AttentionStudy(epochs=tuple(epochs), change=change, extra=dict(extra or {}))


_STUDY_FIELDS = {"epochs", "layers", "kinds", "heads", "layout", "map_query", "samples",
                 "labels", "check", "stats", "change", "probe", "files"}


def load_attention(folder: str | os.PathLike[str]) -> AttentionStudy:
    """The study :meth:`AttentionStudy.save` wrote into ``folder``."""
    from shenjing import _io

    folder = Path(folder)
    summary = _io.read_json(folder / "summary.json")
    epochs = [load_epoch_attention(folder / f"attention-e{int(e):03d}")
              for e in summary["epochs"]]
    return attention_study(epochs, extra={k: v for k, v in summary.items()
                                          if k not in _STUDY_FIELDS})
