"""Training dynamics: a run's per-epoch metrics as arrays, and what they say.

Reads the records of ``metrics.jsonl`` (one JSON object per epoch, epoch 0 = untrained)::

    {"epoch": 3, "train_loss": …, "train_accuracy": …, "test_loss": …, "test_accuracy": …,
     "lr": …, "steps": …,
     "layers": {"fc1": {"weight_norm", "update_ratio", "dist_from_init", "cos_to_init",
                        "grad_norm"}, "fc1.bias": {…}, "lstm": {…}, "cls_token": {…}, …},
     "dead_units": {"relu1": fraction, …},
     "params": {"n_total", "n_tracked", "untracked", "groups": [{"name", "params", "n"}]}}

A "layer" here is a parameter group (see :mod:`shenjing.training.stats`: a module's weights,
its biases, or a free parameter of the root module); ``params`` is on the epoch-0 line only
and lists the groups in model order. Records written before every parameter was tracked
name modules with a ``.weight`` and have no ``params``; they read the same way.

The records become ``(epochs,)`` and ``(layers, epochs)`` arrays (``NaN`` where a value is
null or missing, e.g. the update ratio of epoch 0); then each layer is judged: still moving,
settled or unchanged since epoch 0, vanishing or exploding, many dead units. Pure
computation, no plotting.

>>> recs = [{"epoch": 0, "test_loss": 2.3, "layers": {"fc": {"weight_norm": 1.0}}},
...         {"epoch": 1, "test_loss": 0.5, "layers": {"fc": {"weight_norm": 1.2,
...                                                        "update_ratio": 0.2}}}]
>>> d = read_dynamics(recs)
>>> d.epochs.tolist(), d.layer_metric("update_ratio")[0].tolist()
([0, 1], [nan, 0.2])
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shenjing.errors import RunError, UsageError
from shenjing.training.stats import is_bias_group

SCALAR_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "steps")
LAYER_KEYS = ("weight_norm", "update_ratio", "dist_from_init", "cos_to_init", "grad_norm")


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class Coverage:
    """How many of the model's parameters the view tracks.

    ``untracked`` names the parameters left out (for runs recorded before every parameter
    was tracked: everything but the ``.weight`` of each recorded module).
    """

    n_tracked: int
    n_total: int
    untracked: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        return self.n_tracked / self.n_total if self.n_total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"n_tracked": self.n_tracked, "n_total": self.n_total, "share": self.share,
                "untracked": list(self.untracked)}

    def percent(self) -> str:
        """The share as a percentage that reads 100% only when every parameter is tracked
        (and keeps a decimal below 10%: ``2.6%``)."""
        share = self.share
        if share >= 1:
            return "100%"
        if share >= 0.1:
            return f"{min(round(share * 100), 99)}%"
        return f"{share * 100:.1f}%" if share >= 0.0005 else "<0.1%"

    def describe(self) -> str:
        """``tracks 24,714 of 24,714 parameters (100%)``."""
        return f"tracks {self.n_tracked:,} of {self.n_total:,} parameters ({self.percent()})"


def recorded_groups(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """``{group: parameter names}`` in model order, from the last record that lists them
    (``{}`` for runs recorded before the listing existed)."""
    for rec in reversed(records):
        listing = rec.get("params") if isinstance(rec, Mapping) else None
        if isinstance(listing, Mapping) and isinstance(listing.get("groups"), list):
            return {str(g["name"]): tuple(str(p) for p in g.get("params", ()))
                    for g in listing["groups"] if isinstance(g, Mapping) and "name" in g}
    return {}


def recorded_coverage(records: Sequence[Mapping[str, Any]]) -> Coverage | None:
    """The coverage the Recorder listed (None for runs recorded before it did)."""
    for rec in reversed(records):
        listing = rec.get("params") if isinstance(rec, Mapping) else None
        if isinstance(listing, Mapping) and "n_total" in listing:
            groups = listing.get("groups") or []
            n_tracked = listing.get("n_tracked")
            if n_tracked is None:
                n_tracked = sum(int(g.get("n", 0)) for g in groups)
            return Coverage(int(n_tracked), int(listing["n_total"]),
                            tuple(str(u) for u in listing.get("untracked") or ()))
    return None


@dataclass(frozen=True, repr=False)
class Dynamics:
    """Per-epoch training metrics as arrays.

    ``scalars[key]`` is ``(epochs,)``; ``layer_metrics[key]`` is ``(layers, epochs)`` in the
    order of ``layers``; ``dead_units[name]`` is ``(epochs,)`` (fraction of units that are
    zero for every test input). Missing or null values are ``NaN``; values that were
    recorded as NaN or ±inf (a diverged run) are listed in ``nonfinite`` as
    ``(key, layer or '', epoch)``. ``groups`` maps each layer (parameter group) to its
    parameters and ``coverage`` counts them, when the records list them (else ``{}`` and
    None).
    """

    epochs: np.ndarray
    scalars: dict[str, np.ndarray]
    layers: tuple[str, ...]
    layer_metrics: dict[str, np.ndarray]
    dead_units: dict[str, np.ndarray] = field(default_factory=dict)
    nonfinite: tuple[tuple[str, str, int], ...] = ()
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    coverage: Coverage | None = None

    def is_bias(self, layer: str) -> bool:
        """Whether ``layer`` is a group of biases only."""
        return is_bias_group(layer, self.groups.get(layer, ()))

    def layer_metric(self, key: str) -> np.ndarray:
        """``(layers, epochs)`` array of one per-layer metric (NaN where absent)."""
        if key not in self.layer_metrics:
            raise UsageError(f"no per-layer metric {key!r}; there are: "
                             f"{', '.join(self.layer_metrics) or 'none'}")
        return self.layer_metrics[key]

    def has(self, key: str) -> bool:
        """True when the scalar or per-layer metric has at least one finite value."""
        arr = self.scalars.get(key, self.layer_metrics.get(key))
        return arr is not None and bool(np.isfinite(arr).any())

    def to_dict(self) -> dict[str, Any]:
        def clean(a: np.ndarray) -> list[Any]:
            return [None if not np.isfinite(v) else float(v) for v in np.ravel(a)]

        return {"epochs": self.epochs.tolist(), "layers": list(self.layers),
                "groups": {k: list(v) for k, v in self.groups.items()},
                "scalars": {k: clean(v) for k, v in self.scalars.items()},
                "layer_metrics": {k: {name: clean(v[i]) for i, name in enumerate(self.layers)}
                                  for k, v in self.layer_metrics.items()},
                "dead_units": {k: clean(v) for k, v in self.dead_units.items()}}

    def __repr__(self) -> str:
        return (f"Dynamics(epochs={self.epochs.tolist()}, layers={list(self.layers)}, "
                f"metrics={[k for k in LAYER_KEYS if self.has(k)]})")


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``features.2`` before ``features.10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def read_dynamics(records: Sequence[Mapping[str, Any]],
                  layer_order: Sequence[str] | None = None) -> Dynamics:
    """Arrays from metrics records (as ``Run.metrics()`` returns them).

    Records without an ``epoch`` (per-step records) are skipped; if an epoch appears twice
    (a resumed run), the last record wins. Layers (and dead-unit activations) follow
    ``layer_order`` (e.g. the module order of ``RUN/layers.json``), by default the group
    order the records list; names not in it, or all names without it, follow in natural
    order (``features.2`` before ``features.10``) — metrics.jsonl stores keys sorted as text.
    """
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for rec in records:
        if not isinstance(rec, Mapping):
            raise RunError(f"metrics record is not a JSON object: {rec!r:.80}")
        if rec.get("epoch") is None or "step" in rec:  # per-step records carry "step"
            continue
        by_epoch[int(rec["epoch"])] = rec
    if not by_epoch:
        raise RunError("metrics.jsonl holds no per-epoch records; train the run first "
                       "(`shenjing train`) or record metrics with sj.Recorder in your loop")
    epochs = sorted(by_epoch)
    recs = [by_epoch[e] for e in epochs]
    scalars = {k: np.array([_num(r.get(k)) for r in recs]) for k in SCALAR_KEYS}
    layers: list[str] = []
    keys: list[str] = list(LAYER_KEYS)
    dead: list[str] = []
    for r in recs:
        for name, vals in (r.get("layers") or {}).items():
            if name not in layers:
                layers.append(name)
            for k in vals or {}:
                if k not in keys:
                    keys.append(k)
        for name in r.get("dead_units") or {}:
            if name not in dead:
                dead.append(name)
    groups = recorded_groups(recs)
    if layer_order is None:
        layer_order = list(groups)
    rank = {name: i for i, name in enumerate(layer_order)}

    def key(name: str) -> tuple[int, list[Any]]:
        return rank.get(name, len(rank)), natural_key(name)

    layers.sort(key=key)
    dead.sort(key=key)
    layer_metrics = {
        k: np.array([[_num(((r.get("layers") or {}).get(name) or {}).get(k)) for r in recs]
                     for name in layers]).reshape(len(layers), len(recs))
        for k in keys
    }
    dead_units = {name: np.array([_num((r.get("dead_units") or {}).get(name)) for r in recs])
                  for name in dead}
    bad: list[tuple[str, str, int]] = []
    for e, r in zip(epochs, recs, strict=True):
        bad += [(k, "", e) for k in ("train_loss", "test_loss") if _bad(r.get(k))]
        for name, vals in (r.get("layers") or {}).items():
            bad += [(k, name, e) for k, v in (vals or {}).items() if _bad(v)]
    return Dynamics(epochs=np.array(epochs, dtype=np.int64), scalars=scalars,
                    layers=tuple(layers), layer_metrics=layer_metrics, dead_units=dead_units,
                    nonfinite=tuple(bad), groups=groups, coverage=recorded_coverage(recs))


def _bad(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


# ---- judging the layers -----------------------------------------------------------------
@dataclass(frozen=True)
class DynamicsWarning:
    """One thing a user should look at.

    ``kind`` is ``unchanged`` (no parameter changed since epoch 0), ``frozen`` (some groups
    did not), ``vanishing``, ``exploding``, ``dead_units`` or ``nonfinite``; ``layer`` is
    ``""`` for a warning about the whole model; ``epoch``/``value`` are the last epoch it was
    seen at, ``epochs`` every epoch it was seen at.
    """

    kind: str
    layer: str
    epoch: int
    value: float
    message: str
    epochs: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "layer": self.layer, "epoch": self.epoch,
                "epochs": list(self.epochs or (self.epoch,)),
                "value": None if not math.isfinite(self.value) else self.value,
                "message": self.message}


def epoch_ranges(epochs: Sequence[int]) -> str:
    """Epochs as short runs: ``[1, 2, 3, 4, 7, 9, 10]`` → ``1–4, 7, 9, 10``.

    >>> epoch_ranges([0, 1, 2, 5])
    '0–2, 5'
    """
    parts: list[str] = []
    values = sorted(set(int(e) for e in epochs))
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{values[i]}–{values[j]}")
        else:
            parts += [str(v) for v in values[i:j + 1]]
        i = j + 1
    return ", ".join(parts)


def _merge(found: list[tuple[str, DynamicsWarning]]) -> tuple[DynamicsWarning, ...]:
    """One warning per (kind, layer, rule): the last epoch's, listing the other epochs."""
    groups: dict[tuple[str, str, str], list[DynamicsWarning]] = {}
    for rule, w in found:
        groups.setdefault((w.kind, w.layer, rule), []).append(w)
    out = []
    for ws in groups.values():
        last = ws[-1]
        epochs = tuple(w.epoch for w in ws)
        more = ""
        if len(ws) > 1:
            more = f" (also at epoch{'s' if len(ws) > 2 else ''} {epoch_ranges(epochs[:-1])})"
        out.append(DynamicsWarning(last.kind, last.layer, last.epoch, last.value,
                                   last.message + more, epochs))
    return tuple(out)


@dataclass(frozen=True, repr=False)
class LayerStatus:
    """Which layers still move at the last epoch, which have settled, and the warnings.

    ``status[layer]`` is ``'moving'``, ``'settled'``, ``'unchanged'`` (identical to epoch 0
    at every later epoch) or ``'unknown'`` (no update ratios); ``last_update[layer]`` the
    last epoch's ‖Δw‖/‖w‖ and ``peak_update[layer]`` its largest.
    """

    epoch: int
    status: dict[str, str]
    last_update: dict[str, float]
    peak_update: dict[str, float]
    warnings: tuple[DynamicsWarning, ...]
    thresholds: dict[str, float]

    @property
    def moving(self) -> list[str]:
        return [k for k, v in self.status.items() if v == "moving"]

    @property
    def settled(self) -> list[str]:
        return [k for k, v in self.status.items() if v == "settled"]

    @property
    def unchanged(self) -> list[str]:
        return [k for k, v in self.status.items() if v == "unchanged"]

    def to_dict(self) -> dict[str, Any]:
        def clean(d: Mapping[str, float]) -> dict[str, float | None]:
            return {k: (v if math.isfinite(v) else None) for k, v in d.items()}

        return {"epoch": self.epoch, "status": dict(self.status),
                "moving": self.moving, "settled": self.settled, "unchanged": self.unchanged,
                "last_update_ratio": clean(self.last_update),
                "peak_update_ratio": clean(self.peak_update),
                "warnings": [w.to_dict() for w in self.warnings],
                "thresholds": dict(self.thresholds)}

    def __repr__(self) -> str:
        return (f"LayerStatus(epoch={self.epoch}, moving={self.moving}, "
                f"settled={self.settled}, warnings={len(self.warnings)})")


def _same_as_init(dyn: Dynamics, i: int) -> bool:
    """Whether layer ``i`` is exactly as at epoch 0 at every later epoch (False when there is
    no later epoch, or when the records cannot tell)."""
    n = len(dyn.epochs)
    if n < 2:
        return False

    def row(key: str) -> np.ndarray:
        values = dyn.layer_metrics.get(key)
        return values[i] if values is not None else np.full(n, np.nan)

    dist, ratio, norm = row("dist_from_init"), row("update_ratio"), row("weight_norm")
    for j in range(1, n):
        if np.isfinite(dist[j]):
            same = dist[j] == 0
        elif np.isfinite(ratio[j]):
            same = ratio[j] == 0      # no move this epoch (earlier epochs checked already)
        elif np.isfinite(norm[j]) and np.isfinite(norm[0]) and norm[0] == 0:
            same = norm[j] == 0       # zero at init (e.g. a BatchNorm bias), still zero
        else:
            return False
        if not same:
            return False
    return True


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" … and {len(names) - limit} more" if len(names) > limit else "")


def _unchanged_warnings(dyn: Dynamics, unchanged: list[str]) -> list[DynamicsWarning]:
    """Say so when nothing moved (item: a flat line must not pass for a converged one)."""
    epochs = dyn.epochs.tolist()
    last = int(epochs[-1])
    if len(epochs) == 1:
        return [DynamicsWarning(
            "unchanged", "", last, math.nan,
            "only epoch 0 (the initial weights) is recorded: nothing has been trained yet, "
            "so there is no movement to show")]
    if dyn.layers and len(unchanged) == len(dyn.layers):
        return [DynamicsWarning(
            "unchanged", "", last, 0.0,
            f"every tracked parameter is identical to epoch 0 at epoch"
            f"{'s' if len(epochs) > 2 else ''} {epoch_ranges(epochs[1:])}: the weights never "
            "changed (a weights file equal to the initial weights, or a run that never "
            "trained), so the flat lines mean no training, not convergence", tuple(epochs[1:]))]
    if unchanged:
        return [DynamicsWarning(
            "frozen", "", last, float(len(unchanged)),
            f"{len(unchanged)} of {len(dyn.layers)} parameter groups never changed since "
            f"epoch 0 (frozen, or receiving no gradient): {_names(unchanged)}",
            tuple(epochs[1:]))]
    return []


THRESHOLDS = ("settled_below", "settled_fraction", "vanishing_below", "exploding_above",
              "exploding_update", "dead_above")


def check_thresholds(**thresholds: float) -> None:
    """Refuse unknown or out-of-range :func:`layer_status` thresholds (before any work)."""
    unknown = sorted(set(thresholds) - set(THRESHOLDS))
    if unknown:
        raise UsageError(f"unknown threshold {', '.join(map(repr, unknown))}; the thresholds "
                         f"are {', '.join(THRESHOLDS)}")
    for name, value in thresholds.items():
        if not isinstance(value, (int, float)) or not value > 0:
            raise UsageError(f"{name} must be a number > 0, got {value!r}")
    fraction = thresholds.get("settled_fraction", 0.1)
    if not 0 < fraction < 1:
        raise UsageError(f"settled_fraction must be in (0, 1), got {fraction}")


def layer_status(dyn: Dynamics, *, settled_below: float = 1e-3, settled_fraction: float = 0.1,
                 vanishing_below: float = 1e-3, exploding_above: float = 1e3,
                 exploding_update: float = 1.0, dead_above: float = 0.5) -> LayerStatus:
    """Judge each layer at the last epoch.

    - *unchanged*: the layer's parameters are identical to epoch 0 at every later epoch
      (distance to init, or every update, exactly 0). When that holds for every layer — or
      only epoch 0 is recorded — one ``unchanged`` warning says so first: flat lines then
      mean no training at all; when it holds for some, one ``frozen`` warning names them.
    - *settled*: the last update ratio ‖Δw‖/‖w‖ is below ``settled_below`` or below
      ``settled_fraction`` of the layer's peak ratio; *moving* otherwise.
    - *vanishing*: a layer's gradient norm is below ``vanishing_below`` × the largest
      layer's gradient norm at that epoch (a layer that barely receives gradient).
    - *exploding*: gradient norm above ``exploding_above`` × the median over layers while
      at least 10× its own first recorded value (growing, not just a big layer), an update ratio
      above ``exploding_update`` (the weights moved by more than their own size in one
      epoch; not counted for the first training epoch, where a small init makes this
      common), or a loss or layer metric recorded as NaN/inf (diverged).
    - *dead_units*: an activation with more than ``dead_above`` of its units dead.

    Bias groups are left out of the vanishing and exploding rules: their gradient and
    update scale differ from the weights' by construction (a bias before BatchNorm gets no
    gradient; a zero-initialised bias moves by more than its own norm).
    """
    check_thresholds(settled_below=settled_below, settled_fraction=settled_fraction,
                     vanishing_below=vanishing_below, exploding_above=exploding_above,
                     exploding_update=exploding_update, dead_above=dead_above)
    epochs = dyn.epochs.tolist()
    last = int(epochs[-1])
    ratio = dyn.layer_metrics.get("update_ratio", np.full((len(dyn.layers), len(epochs)), np.nan))
    grad = dyn.layer_metrics.get("grad_norm", np.full_like(ratio, np.nan))
    status: dict[str, str] = {}
    last_update: dict[str, float] = {}
    peak_update: dict[str, float] = {}
    warnings: list[tuple[str, DynamicsWarning]] = []
    for i, name in enumerate(dyn.layers):
        r = ratio[i]
        finite = np.isfinite(r)
        last_update[name] = float(r[finite][-1]) if finite.any() else math.nan
        peak_update[name] = float(r[finite].max()) if finite.any() else math.nan
        if _same_as_init(dyn, i):
            status[name] = "unchanged"
        elif not finite.any():
            status[name] = "unknown"
        else:
            lu, pk = last_update[name], peak_update[name]
            status[name] = ("settled" if lu < settled_below or lu < settled_fraction * pk
                            else "moving")
    judged = np.array([not dyn.is_bias(name) for name in dyn.layers], dtype=bool)
    first_grad = np.array([row[np.isfinite(row)][0] if np.isfinite(row).any() else np.nan
                           for row in grad])
    for j, epoch in enumerate(epochs):
        g = grad[:, j]
        ok = np.isfinite(g) & (g > 0) & judged
        enough = ok.sum() >= 2
        median = float(np.median(g[ok])) if enough else math.nan
        top = float(g[ok].max()) if enough else math.nan
        for i, name in enumerate(dyn.layers):
            if not judged[i]:
                continue
            if enough and np.isfinite(g[i]):
                if g[i] < vanishing_below * top:
                    warnings.append(("grad", DynamicsWarning(
                        "vanishing", name, int(epoch), float(g[i]),
                        f"{name}: gradient norm {g[i]:.3g} at epoch {epoch} is below "
                        f"{vanishing_below:g}× the largest layer's ({top:.3g}); this layer "
                        "barely learns (vanishing gradient: try BatchNorm, residual "
                        "connections or another init)")))
                elif (g[i] > exploding_above * median
                      and g[i] > 10 * first_grad[i]):
                    warnings.append(("grad", DynamicsWarning(
                        "exploding", name, int(epoch), float(g[i]),
                        f"{name}: gradient norm {g[i]:.3g} at epoch {epoch} is above "
                        f"{exploding_above:g}× the median over layers ({median:.3g}) and "
                        f"grew from {first_grad[i]:.3g}; lower the learning rate or clip "
                        "gradients")))
            u = ratio[i, j]
            # the first training epoch from a small init often moves weights by more than
            # their norm; only later epochs doing so point at a too-high learning rate
            first = bool(np.isfinite(ratio[i, j]) and not np.isfinite(ratio[i, :j]).any())
            if np.isfinite(u) and u > exploding_update and not first:
                warnings.append(("update", DynamicsWarning(
                    "exploding", name, int(epoch), float(u),
                    f"{name}: weights moved by {u:.3g}× their own norm in epoch {epoch} "
                    f"(‖Δw‖/‖w‖ > {exploding_update:g}); the learning rate may be too high")))
    for key, name, epoch in dyn.nonfinite:
        j = epochs.index(epoch)
        value = (dyn.scalars[key][j] if not name
                 else dyn.layer_metrics[key][dyn.layers.index(name), j])
        where = f"{name}: {key}" if name else key
        warnings.append((key, DynamicsWarning(
            "nonfinite", name or key, int(epoch), float(value),
            f"{where} is {value} at epoch {epoch}; training diverged (lower the learning "
            "rate, or clip gradients)")))
    for name, frac in dyn.dead_units.items():
        for j, v in enumerate(frac):
            if np.isfinite(v) and v > dead_above:
                warnings.append(("dead", DynamicsWarning(
                    "dead_units", name, int(epochs[j]), float(v),
                    f"{name}: {v:.0%} of units are dead (zero for every test input) at "
                    f"epoch {epochs[j]}; consider a lower learning rate, LeakyReLU or a "
                    "different init")))
    unchanged = [k for k, v in status.items() if v == "unchanged"]
    found = _unchanged_warnings(dyn, unchanged)
    nothing_moved = bool(found) and (len(epochs) == 1 or len(unchanged) == len(dyn.layers))
    merged = _merge(warnings)
    return LayerStatus(
        epoch=last, status=status, last_update=last_update, peak_update=peak_update,
        warnings=(*found, *merged) if nothing_moved else (*merged, *found),
        thresholds={"settled_below": settled_below, "settled_fraction": settled_fraction,
                    "vanishing_below": vanishing_below, "exploding_above": exploding_above,
                    "exploding_update": exploding_update, "dead_above": dead_above})
