"""Feature maps: what one layer outputs for one input, and how that changes with training.

Pure computation (no plotting). A layer's output for one sample keeps its axes; its *view*
says how to read them, decided by the output's number of dimensions (batch removed) and,
for 2-D outputs, by the module that produced it:

============  ==========================  ================================================
view          one sample's output         when
============  ==========================  ================================================
``spatial``   ``(channels, height, width)``  3-D outputs (conv-like layers)
``signal``    ``(channels, length)``       2-D outputs of a 1-D layer: Conv1d, ConvTranspose1d,
                                           BatchNorm1d, InstanceNorm1d, GroupNorm, 1-D pooling
``sequence``  ``(time, hidden)``           2-D outputs of a recurrent layer (RNN, LSTM, GRU);
                                           its state ``h_n``/``c_n`` is ``(layers, hidden)``
``tokens``    ``(tokens, features)``       2-D outputs of attention, transformer layers,
                                           LayerNorm, Embedding
``vector``    ``(features,)``              1-D outputs (linear layers); outputs of 4 or more
                                           dimensions (Conv3d) flattened, said so
============  ==========================  ================================================

A 2-D output of any other module (an activation, a Linear, Dropout, a container, a user's
block) takes the view of the last module with one of the layouts above that finished before
it in the same forward pass (a GELU inside a transformer's MLP is ``tokens``, a ReLU after a
Conv1d is ``signal``); with none before it, ``tokens`` (rows × features, the layout a Linear
keeps). Vectors are never reshaped into images (seed 004 reshaped a 64-d vector to 28×28).

"Off" (a dead channel for this input) means an output that is exactly zero over the whole
channel. It is counted only where exactly zero is a state the layer is pushed into: after
an activation with a hard zero floor — ``ReLU``, ``ReLU6``, ``Hardtanh(min_val=0)``,
``Threshold(value=0)`` — or a module whose output ends in one (a block ending in
``F.relu``, seen on the output's autograd node, also through views, Dropout in eval mode and
pooling). For a Tanh, GELU, LeakyReLU, LayerNorm, Linear or pre-activation conv output a
zero is just a value: :attr:`FeatureMaps.off_rule` is None and :meth:`FeatureMaps.off_reason`
says why.

Layers are named as :func:`shenjing.capture.list_layers` prints them: a module name
(``lstm``: its first floating-point output of its first call) or an output key
(``lstm.0``, ``lstm.1.0``, ``block#1``, ``encoder.layers.0.self_attn.1``), the naming of
:mod:`shenjing.capture.recorder`. Outputs are observed through its
:class:`~shenjing.capture.recorder.Recorder`, so no hook is ever left on the model, also when
forward raises.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
>>> fm = feature_maps(net, torch.zeros(1, 6, 6), "1")
>>> fm.values.shape, fm.view, fm.off_rule
((4, 6, 6), 'spatial', 'output of ReLU')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shenjing.capture.core import NoBatchDimError, forward_or_explain, prepare
from shenjing.capture.keys import KeyFilter, Selection, merge, split_key
from shenjing.capture.recorder import CallLog, ModuleCall, Recorder
from shenjing.errors import (
    LayerNotFoundError,
    NotApplicableError,
    ShapeMismatchError,
    UsageError,
    did_you_mean,
)

Scale = Literal["shared", "channel", "global"]
Order = Literal["layer", "mean", "max"]
View = Literal["spatial", "signal", "sequence", "tokens", "vector"]
SCALES: tuple[str, ...] = ("shared", "channel", "global")
ORDERS: tuple[str, ...] = ("layer", "mean", "max")
VIEWS: tuple[str, ...] = ("spatial", "signal", "sequence", "tokens", "vector")

#: names of each view's axes, in the order of ``values``' dimensions
DEFAULT_AXES: dict[str, tuple[str, ...]] = {
    "spatial": ("channel", "height", "width"),
    "signal": ("channel", "position"),
    "sequence": ("time step", "hidden unit"),
    "tokens": ("token", "feature"),
    "vector": ("unit",),
}
_NDIM = {"spatial": 3, "signal": 2, "sequence": 2, "tokens": 2, "vector": 1}

_SIGNAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d, nn.GroupNorm,
    nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d,
)
_SEQUENCE_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase,)
_TOKEN_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer,
    nn.TransformerEncoder, nn.TransformerDecoder, nn.Transformer, nn.LayerNorm, nn.Embedding,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: autograd nodes that keep "exactly zero over a channel" as it was (views, copies, pooling)
_ZERO_KEEPING_NODES = ("ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward",
                       "CloneBackward", "PermuteBackward", "TransposeBackward", "TBackward",
                       "SqueezeBackward", "UnsqueezeBackward", "MaxPool", "AvgPool",
                       "AdaptiveMaxPool", "AdaptiveAvgPool", "MaxPool2DWithIndices")
OFF_RULE = ("'off' (a channel exactly zero for this input) is counted only after an "
            "activation with a hard zero (ReLU, ReLU6, Hardtanh(min_val=0), "
            "Threshold(value=0)) or a module whose output ends in one")


@dataclass(frozen=True, repr=False)
class FeatureMaps:
    """One layer's output for one input sample, with its axes kept.

    ``values`` is shaped as :attr:`view` says (see the module docstring): ``(channels,
    height, width)``, ``(channels, length)``, ``(time, hidden)``, ``(tokens, features)`` or
    ``(features,)``; ``axes`` names its dimensions. ``input`` is the sample itself;
    ``index`` its position in the split it came from. ``off_rule`` says why "off" (exactly
    zero) means something for this output (``'output of ReLU'``), or is None when it does
    not and dead channels are not counted. ``module_type`` and ``key`` name what produced it.
    A ``view`` left empty is read from the number of dimensions (3 → spatial, 2 → tokens,
    1 → vector).
    """

    layer: str
    values: np.ndarray
    epoch: int | None = None
    index: int | None = None
    label: Any = None
    input: np.ndarray | None = field(default=None)
    view: str = ""
    axes: tuple[str, ...] = ()
    off_rule: str | None = None
    module_type: str | None = None
    key: str | None = None
    flattened_from: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        ndim = np.ndim(self.values)
        view = self.view or {3: "spatial", 2: "tokens", 1: "vector"}.get(ndim, "")
        if view not in VIEWS:
            raise ShapeMismatchError(f"feature maps of layer {self.layer!r} are shaped "
                                     f"{np.shape(self.values)}; give (channels, H, W), a 2-D "
                                     "(rows, features) or a (features,) array")
        if _NDIM[view] != ndim:
            raise ShapeMismatchError(f"view {view!r} needs {_NDIM[view]}-D values, got "
                                     f"{np.shape(self.values)} for layer {self.layer!r}")
        object.__setattr__(self, "view", view)
        if not self.axes:
            object.__setattr__(self, "axes", DEFAULT_AXES[view])

    @property
    def spatial(self) -> bool:
        """True for channel maps ``(C, H, W)``."""
        return self.view == "spatial"

    @property
    def unit_axis(self) -> int:
        """The axis of channels/units: 1 (hidden units, features) for sequences and tokens,
        else 0 (channels of maps and signals, units of vectors)."""
        return 1 if self.view in ("sequence", "tokens") else 0

    @property
    def n_channels(self) -> int:
        """Channels of maps and signals, hidden units or features of sequences and tokens,
        units of a vector."""
        return int(self.values.shape[self.unit_axis])

    @property
    def unit_name(self) -> str:
        """What one channel is called in this view: ``'channel'``, ``'hidden unit'`` …"""
        return self.axes[self.unit_axis]

    @property
    def position_name(self) -> str | None:
        """The other axis of a 2-D view (``'time step'``, ``'token'``, ``'position'``)."""
        return self.axes[1 - self.unit_axis] if self.values.ndim == 2 else None

    @property
    def counts_off(self) -> bool:
        """Whether "off" (exactly zero) is meaningful here (see the module docstring)."""
        return self.off_rule is not None

    def by_unit(self) -> np.ndarray:
        """The values as ``(channels, everything else)``."""
        return unit_rows(self.values, self.unit_axis)

    def channel_means(self) -> np.ndarray:
        """Mean activation of each channel/unit, ``(channels,)`` (the value for vectors)."""
        return self.by_unit().mean(axis=1).astype(np.float64)

    def dead(self, atol: float = 0.0) -> np.ndarray:
        """Boolean ``(channels,)``: channels with no value above ``atol`` for this input.

        A plain computation: whether such a channel is "off" depends on :attr:`off_rule`.
        """
        return dead_channels(self.values, atol=atol, axis=self.unit_axis)

    def off_reason(self) -> str | None:
        """Why dead channels are not counted for this output (None when they are)."""
        if self.counts_off:
            return None
        what = (f"{_article(self.module_type)} {self.module_type} output"
                if self.module_type else "an output")
        return f"{self.key or self.layer!r} is {what}, which has no hard zero; {OFF_RULE}"

    def __repr__(self) -> str:
        return (f"FeatureMaps(layer={self.layer!r}, {self.view} {tuple(self.values.shape)}, "
                f"epoch={self.epoch}, index={self.index}, label={self.label!r})")


def _article(word: str) -> str:
    """``an`` before a vowel sound: ``an LSTM``, ``an Embedding``, ``a GELU``, ``a Tanh``."""
    acronym = word[:2].isupper()
    return "an" if word[:1].upper() in ("AEFHILMNORSX" if acronym else "AEIOU") else "a"


#: a relative change above this (10⁴ %) means the "before" activations are essentially zero
MAX_RELATIVE = 100.0


@dataclass(frozen=True, repr=False)
class MapChange:
    """How one layer's output for the same input changed between two epochs.

    ``per_channel`` is the mean absolute change of each channel/unit, ``(channels,)``;
    ``top`` lists the channels that changed most, most first. For 2-D views
    ``per_position`` is the mean absolute change at each time step/token/position and
    ``top_positions`` the positions that changed most.
    """

    layer: str
    epochs: tuple[int | None, int | None]
    mean_abs_change: float
    relative_change: float
    per_channel: np.ndarray
    top: tuple[int, ...]
    mean_before: np.ndarray
    mean_after: np.ndarray
    unit_name: str = "channel"
    per_position: np.ndarray | None = None
    top_positions: tuple[int, ...] = ()
    position_name: str | None = None

    def relative_text(self) -> str:
        """``"26% of mean |activation| at epoch 0"``, or, when epoch 0's activations are
        (nearly) zero — a signal that vanished through a deep untrained net — a statement
        that no relative change can be given, instead of an astronomical percentage."""
        a = self.epochs[0]
        if not np.isfinite(self.relative_change) or self.relative_change > MAX_RELATIVE:
            base = self.mean_abs_change / self.relative_change \
                if np.isfinite(self.relative_change) and self.relative_change else 0.0
            return (f"no relative change: the activations at epoch {a} are nearly zero "
                    f"(mean |activation| {base:.2g})")
        return f"{self.relative_change:.0%} of mean |activation| at epoch {a}"

    def table(self) -> list[dict[str, float | int]]:
        """The top changed channels as rows: channel, change, mean before, mean after."""
        return [{"channel": int(c), "mean_abs_change": float(self.per_channel[c]),
                 "mean_before": float(self.mean_before[c]),
                 "mean_after": float(self.mean_after[c])} for c in self.top]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (what the maps stage writes next to its figure)."""
        out: dict[str, Any] = {
            "layer": self.layer, "epochs": list(self.epochs),
            "mean_abs_change": self.mean_abs_change,
            "relative_change": self.relative_change if np.isfinite(self.relative_change)
            else None,  # strict JSON: "before" was all zero
            "unit": self.unit_name, "per_channel_change": self.per_channel.tolist(),
            "top_changed": self.table()}
        if self.per_position is not None:
            out["position"] = self.position_name
            out["per_position_change"] = self.per_position.tolist()
            out["top_changed_positions"] = [
                {"position": int(p), "mean_abs_change": float(self.per_position[p])}
                for p in self.top_positions]
        return out

    def __repr__(self) -> str:
        a, b = self.epochs
        return (f"MapChange(layer={self.layer!r}, epochs {a}→{b}, "
                f"mean_abs_change={self.mean_abs_change:.4g}, top={list(self.top[:5])})")


# ---- which layer, which output ---------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Names of every submodule (what ``layer=`` accepts), in definition order."""
    return [name for name, _ in model.named_modules() if name]


def split_spec(model: nn.Module, spec: str) -> tuple[str, int | None, tuple[str, ...]]:
    """``spec`` → ``(module name, call index or None, path into its output)``.

    A module name stays a module name (no call, no path: its first output of its first
    call); an output key (``lstm.1.0``, ``block#1``) is split by
    :func:`shenjing.capture.keys.split_key`. Unknown modules raise
    :class:`LayerNotFoundError` with suggestions.
    """
    module, call, path = split_key(spec, model)
    if module and module in dict(model.named_modules()):
        return module, call, path
    names = layer_names(model)
    shown = ", ".join(names[:40]) + (" …" if len(names) > 40 else "")
    raise LayerNotFoundError(
        f"no layer {spec!r} in {type(model).__name__}.{did_you_mean(module or spec, names)} "
        f"Layers: {shown}. Output keys such as 'lstm.0' or 'block#1' are accepted too; "
        "see `shenjing layers RUN`."
    )


def check_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule that ``layer`` (a name or an output key) names, or a
    :class:`LayerNotFoundError` that suggests names."""
    return model.get_submodule(split_spec(model, layer)[0])


def _zero_floor_node(node: Any) -> str | None:
    """The autograd op that floors this tensor at exactly zero, following ops that keep
    exact zeros (views, copies, pooling); None when there is none."""
    for _ in range(32):
        if node is None:
            return None
        name = type(node).__name__
        if name.startswith("ReluBackward"):
            return "relu"
        if name.startswith("HardtanhBackward") and float(node._saved_min_val) == 0.0 \
                and float(node._saved_max_val) > 0.0:
            return "hardtanh(min=0)"
        if name.startswith("Clamp") and getattr(node, "_saved_min", None) is not None:
            low = node._saved_min
            high = getattr(node, "_saved_max", None)
            if float(low) == 0.0 and (high is None or float(high) > 0.0):
                return "clamp(min=0)"
            return None
        if not name.startswith(_ZERO_KEEPING_NODES):
            return None
        nexts = [n for n, _ in node.next_functions if n is not None]
        node = nexts[0] if len(nexts) == 1 else None
    return None


def off_rule_of(module: nn.Module, output: torch.Tensor | None = None) -> str | None:
    """Why "off" (exactly zero) means something for ``module``'s output, or None.

    The module's own type first (ReLU, ReLU6, Hardtanh(min_val=0), Threshold(value=0)),
    then the autograd node of ``output`` (a module whose forward ends in ``F.relu``).
    """
    kind = type(module).__name__
    if isinstance(module, nn.ReLU):
        return f"output of {kind}"
    if isinstance(module, nn.Hardtanh) and module.min_val == 0 and module.max_val > 0:
        return f"output of {kind}" + ("" if isinstance(module, nn.ReLU6) else "(min_val=0)")
    if isinstance(module, nn.Threshold) and module.value == 0 and module.threshold >= 0:
        return f"output of {kind}(value=0)"
    op = _zero_floor_node(getattr(output, "grad_fn", None)) if output is not None else None
    if op is not None:
        return f"output of {kind}, which ends in {op}"
    return None


def _layout_of(module: nn.Module) -> str | None:
    if isinstance(module, _SIGNAL_TYPES):
        return "signal"
    if isinstance(module, _SEQUENCE_TYPES):
        return "sequence"
    if isinstance(module, _TOKEN_TYPES):
        return "tokens"
    return None


def output_view(module: nn.Module, key_path: str, ndim: int,
                before: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The view and axis names of one sample's output of ``module`` (see the module doc).

    ``key_path`` is the part of the output key after the module's name (``''``, ``'.0'``,
    ``'#1.1.0'``); ``ndim`` the sample's number of dimensions; ``before`` the layout of the
    last module with a layout that finished before it in forward.
    """
    if ndim == 3:
        return "spatial", DEFAULT_AXES["spatial"]
    if ndim != 2:
        return "vector", DEFAULT_AXES["vector"]
    path = key_path.split("#", 1)[-1].lstrip("0123456789") if "#" in key_path else key_path
    if isinstance(module, nn.RNNBase) and path.startswith(".1"):
        return "sequence", ("layer", "hidden unit")  # h_n / c_n: (layers × directions, H)
    if isinstance(module, nn.MultiheadAttention) and path.startswith(".1"):
        return "tokens", ("query token", "key token")  # the attention weights
    view = _layout_of(module) or before or "tokens"
    return view, DEFAULT_AXES[view]


@dataclass(frozen=True)
class LayerOutput:
    """One layer's output for a batch: ``tensor`` batch first, and how to read it."""

    layer: str
    key: str
    tensor: torch.Tensor
    module_type: str
    view: str
    axes: tuple[str, ...]
    off_rule: str | None


@dataclass(frozen=True)
class _TargetOutput:
    """What feature maps keep of one output of the chosen layer, as it was returned: a CPU
    copy, its off rule (read from its autograd node before a later in-place op replaces
    it), and the layout of the last module with a layout that finished before it."""

    tensor: torch.Tensor
    off_rule: str | None
    before: str | None


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def capture_layer(model: nn.Module, x: torch.Tensor, layer: str) -> LayerOutput:
    """Run ``model`` on the batch ``x`` and return ``layer``'s output with its view.

    ``layer`` is a module name (its first floating-point output of its first call) or an
    output key as ``shenjing layers`` prints it. ``x`` is ``(batch, …)`` and is moved to
    the model's device. The model runs in whatever train/eval mode it is in (runs give eval
    models), with autograd on so the output's last op can be read for :func:`off_rule_of`
    (the graph is dropped with the outputs). The output is copied when the layer returns (a
    following in-place ReLU cannot change it) and its batch dimension moved first (an
    ``nn.LSTM(batch_first=False)`` gives ``(time, batch, hidden)``).
    """
    module_name, call_index, path = split_spec(model, layer)
    target = model.get_submodule(module_name)
    finished: list[str] = []   # layouts of modules with one, in the order they finished
    batch = int(x.shape[0]) if x.ndim else 1

    def keep(call: ModuleCall) -> list[tuple[tuple[str, ...], _TargetOutput]]:
        before = finished[-1] if finished else None
        return [(p, _TargetOutput(t.detach().to("cpu", copy=True), off_rule_of(target, t),
                                  before)) for p, t in call.outputs]

    log = CallLog([module_name], keep)
    layouts: dict[str, Any] = {}
    for name, mod in model.named_modules():
        layout = _layout_of(mod)
        if name and layout is not None and name != module_name:
            layouts[name] = lambda _m, _a, _o, _l=layout: finished.append(_l)
    x = x.to(_model_device(model))
    with Recorder(model, [module_name], log.sink).observing(also=layouts), torch.enable_grad():
        forward_or_explain(model, x)  # a shape error names what the model expects
    if not log.n_calls(module_name):
        raise UsageError(f"layer {module_name!r} did not run in {type(model).__name__}.forward,"
                         " so it has no output to show; choose a layer that forward uses "
                         "(`shenjing layers RUN` shows which ran)")
    selection: Selection = {}
    merge(selection, module_name, KeyFilter(call_index, path))
    keyed = list(log.keyed(selection))
    if not keyed:
        have = [str(out.key) for out in log.keyed()]
        if not have:
            raise NotApplicableError(f"maps: layer {module_name!r} ({type(target).__name__}) "
                                     "returns no floating-point tensor, so it has no "
                                     "activations to draw")
        raise LayerNotFoundError(
            f"no layer or output {layer!r} in {type(model).__name__}: {module_name!r} "
            f"({type(target).__name__}) gives the outputs {', '.join(have)}."
            f"{did_you_mean(layer, have)} See `shenjing layers RUN`.")
    out_key, chosen = str(keyed[0].key), keyed[0].value
    try:
        tensor = prepare(chosen.tensor, batch_size=batch, pool="none", dtype=None, key=out_key)
    except NoBatchDimError as exc:
        raise NotApplicableError(f"maps: {exc}") from None
    view, axes = output_view(target, out_key[len(module_name):], tensor.ndim - 1,
                             chosen.before)
    return LayerOutput(layer=layer, key=out_key, tensor=tensor,
                       module_type=type(target).__name__, view=view, axes=axes,
                       off_rule=chosen.off_rule)


def layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``layer``'s output for the batch ``x``, batch first, detached, on the CPU."""
    return capture_layer(model, x, layer).tensor


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str, *, epoch: int | None = None,
                 index: int | None = None, label: Any = None) -> FeatureMaps:
    """``layer``'s output for one sample ``x`` (shaped like one input, without batch).

    The output keeps its axes (see the module docstring for the views); outputs of four or
    more dimensions per sample are flattened to a vector (``flattened_from`` says so).
    """
    if x.ndim == 0:
        raise ShapeMismatchError("feature_maps needs one input sample, got a scalar")
    out = capture_layer(model, x.unsqueeze(0), layer)
    values = out.tensor[0].float().numpy()
    view, axes = out.view, out.axes
    if axes[0] == "layer" and values.shape[0] == 1:  # h_n of a one-layer RNN: one vector
        values, view, axes = values[0], "vector", ("hidden unit",)
    flattened = None
    if values.ndim > 3 or values.ndim == 0:
        flattened = tuple(values.shape)
        values = values.reshape(-1)
    return FeatureMaps(layer=layer, values=np.ascontiguousarray(values), epoch=epoch,
                       index=index, label=label, input=x.detach().cpu().float().numpy(),
                       view=view if flattened is None else "vector",
                       axes=axes if flattened is None else (), off_rule=out.off_rule,
                       module_type=out.module_type, key=out.key, flattened_from=flattened)


def as_vector(fm: FeatureMaps) -> FeatureMaps:
    """The same output flattened to ``(features,)`` (what ``--view vector`` draws)."""
    if fm.view == "vector":
        return fm
    return FeatureMaps(fm.layer, fm.values.reshape(-1), fm.epoch, fm.index, fm.label,
                       fm.input, view="vector", off_rule=fm.off_rule,
                       module_type=fm.module_type, key=fm.key,
                       flattened_from=tuple(fm.values.shape))


def require_spatial(fm: FeatureMaps) -> None:
    """Refuse to draw a non-map layer as a grid of images, and say what to do instead."""
    if fm.spatial:
        return
    if fm.view == "vector":
        raise ShapeMismatchError(
            f"layer {fm.layer!r} outputs a vector of {fm.n_channels} features, not channel "
            "maps (batch, channels, height, width); a grid would reshape it into a fake "
            "image. Show it as a vector instead: plot_feature_vector(...) or "
            "`shenjing maps RUN --view vector`; or pick a conv layer"
        )
    raise ShapeMismatchError(
        f"layer {fm.layer!r} outputs a {fm.view} {tuple(fm.values.shape)} "
        f"({' × '.join(fm.axes)}), not channel maps (batch, channels, height, width). Draw "
        "it as a heat map: plot_feature_heatmap(...) or `shenjing maps RUN --view heatmap` "
        "(the default, --view auto)"
    )


# ---- ordering, selection, dead channels ----------------------------------------------
def unit_rows(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """``values`` as ``(units along axis, everything else)``, in float64."""
    return np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0).reshape(
        values.shape[axis], -1)


def channel_scores(values: np.ndarray, by: Order = "mean", axis: int = 0) -> np.ndarray:
    """Per-channel activity ``(channels,)``: mean or max over the rest (the value for vectors)."""
    flat = unit_rows(values, axis)
    if by == "mean" or by == "layer":
        return flat.mean(axis=1)
    if by == "max":
        return flat.max(axis=1)
    raise UsageError(f"order {by!r} is not one of {', '.join(ORDERS)}")


def channel_order(values: np.ndarray, order: Order = "layer", axis: int = 0) -> np.ndarray:
    """Channel indices in layer order, or by descending mean/max activation (stable ties)."""
    if order not in ORDERS:
        raise UsageError(f"order {order!r} is not one of {', '.join(ORDERS)}; "
                         "use 'layer' to keep the layer's own order")
    n = values.shape[axis]
    if order == "layer":
        return np.arange(n)
    return np.argsort(-channel_scores(values, order, axis), kind="stable")


def top_channels(values: np.ndarray, k: int, by: Order = "mean", axis: int = 0) -> np.ndarray:
    """Indices of the ``k`` most active channels, most active first."""
    if k < 1:
        raise UsageError(f"top-k must be at least 1, got {k}")
    return channel_order(values, "mean" if by == "layer" else by, axis)[:k]


def select_channels(values: np.ndarray, *, order: Order = "layer",
                    top_k: int | None = None, axis: int = 0) -> np.ndarray:
    """The channels a figure shows: ``top_k`` most active (by ``order``, default mean),
    else all channels in ``order``."""
    if top_k is not None and top_k < values.shape[axis]:
        return top_channels(values, top_k, by=order, axis=axis)
    return channel_order(values, order, axis)


def dead_channels(values: np.ndarray, atol: float = 0.0, axis: int = 0) -> np.ndarray:
    """Boolean ``(channels,)``: channels whose maximum is ≤ ``atol`` for this input.

    After a ReLU such a channel is all zero: it says nothing about this input. Whether that
    is "off" depends on the layer (:attr:`FeatureMaps.off_rule`).
    """
    return unit_rows(values, axis).max(axis=1) <= atol


def grid_shape(n: int, max_aspect: float = 3.0) -> tuple[int, int]:
    """Rows × columns for ``n`` panels: 32 → (4, 8), 64 → (8, 8), 10 → (2, 5), 7 → (2, 4).

    Prefers an exact factorisation no wider than ``max_aspect`` times its height, and
    otherwise a near-square grid with a partly empty last row.
    """
    if n < 1:
        raise UsageError(f"a grid needs at least one panel, got {n}")
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    cols = n // rows
    if cols <= max_aspect * rows:
        return rows, cols
    rows = math.isqrt(n)
    cols = math.ceil(n / rows)
    return rows, cols


def evenly_spaced(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)``, evenly spaced, always the first and the last."""
    if n < 1 or k < 1:
        raise UsageError(f"need n ≥ 1 and k ≥ 1, got n={n}, k={k}")
    if n <= k:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return sorted({round(float(i)) for i in np.linspace(0, n - 1, k)})


# ---- colour scales -------------------------------------------------------------------
def normalise_maps(stack: np.ndarray, scale: Scale = "shared") -> tuple[np.ndarray,
                                                                         np.ndarray, np.ndarray]:
    """Map activations to ``[0, 1]`` for drawing; return ``(normed, lo, hi)``.

    ``stack`` is ``(panels, channels, …)`` (one panel per epoch/input). ``scale``:
    ``'shared'`` one range per panel over all its channels, ``'channel'`` one range per
    channel of each panel, ``'global'`` one range over every panel (shows magnitude change).
    ``lo`` and ``hi`` are ``(panels, channels)``: the value drawn as 0 and as 1. When the
    range holds negative values it is made symmetric, so 0.5 always means zero.
    """
    if scale not in SCALES:
        raise UsageError(f"scale {scale!r} is not one of {', '.join(SCALES)}")
    x = np.asarray(stack, dtype=np.float64)
    p, c = x.shape[:2]
    flat = x.reshape(p, c, -1)
    if scale == "channel":
        lo, hi = flat.min(axis=2), flat.max(axis=2)
    elif scale == "shared":
        lo = np.repeat(flat.min(axis=(1, 2))[:, None], c, axis=1)
        hi = np.repeat(flat.max(axis=(1, 2))[:, None], c, axis=1)
    else:
        lo, hi = np.full((p, c), flat.min()), np.full((p, c), flat.max())
    signed = lo < 0
    bound = np.maximum(np.abs(lo), np.abs(hi))
    lo = np.where(signed, -bound, lo)
    hi = np.where(signed, bound, hi)
    span = hi - lo
    safe = np.where(span > 0, span, 1.0)
    normed = (flat - lo[..., None]) / safe[..., None]
    normed = np.where((span > 0)[..., None], normed, np.where(signed, 0.5, 0.0)[..., None])
    return normed.reshape(x.shape), lo, hi


# ---- change between epochs -------------------------------------------------------------
def compare_feature_maps(before: FeatureMaps, after: FeatureMaps, top: int = 10) -> MapChange:
    """Mean absolute change of ``layer``'s output between two epochs for the same input.

    ``relative_change`` is ``mean|after − before| / mean|before|`` (inf when before is 0).
    Per channel/unit (along the view's unit axis) and, for 2-D views, per position.
    """
    if before.values.shape != after.values.shape:
        raise ShapeMismatchError(
            f"cannot compare maps shaped {before.values.shape} and {after.values.shape}; "
            "compare the same layer of the same architecture"
        )
    a = before.values.astype(np.float64)
    b = after.values.astype(np.float64)
    diff = np.abs(b - a)
    axis = after.unit_axis
    per_channel = unit_rows(diff, axis).mean(axis=1)
    base = float(np.abs(a).mean())
    mean_abs = float(diff.mean())
    order = np.argsort(-per_channel, kind="stable")[:max(0, top)]
    per_position = None
    top_positions: tuple[int, ...] = ()
    if diff.ndim == 2:
        per_position = unit_rows(diff, 1 - axis).mean(axis=1)
        top_positions = tuple(int(i) for i in
                              np.argsort(-per_position, kind="stable")[:max(0, top)])
    return MapChange(
        layer=after.layer, epochs=(before.epoch, after.epoch), mean_abs_change=mean_abs,
        relative_change=mean_abs / base if base > 0 else float("inf"),
        per_channel=per_channel, top=tuple(int(i) for i in order),
        mean_before=before.channel_means(), mean_after=after.channel_means(),
        unit_name=after.unit_name, per_position=per_position, top_positions=top_positions,
        position_name=after.position_name,
    )


def stack_values(maps: Sequence[FeatureMaps]) -> np.ndarray:
    """Stack several FeatureMaps of one layer into ``(panels, …)``."""
    shapes = {m.values.shape for m in maps}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"feature maps of different shapes {sorted(shapes)} cannot "
                                 "share one figure; pass maps of one layer")
    return np.stack([m.values for m in maps])
