"""Recurrent layers over time: the state at every step, what a probe reads from it, gates.

For ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (batch-first or not, any number of layers, one or
two directions, an LSTM's ``proj_size`` too) inside any model:

- :func:`recurrent_layers` / :func:`find_recurrent_layer` find them;
- :func:`recurrent_states` hooks one of them while the model runs (recording the input
  sequence it was given, the initial state when passed positionally, and its output) and
  returns the hidden state at every step of every layer and direction. The top layer's
  states *are* the module's output; the lower layers' states and every gate are recomputed
  step by step from the module's own weights (:func:`step_by_step`), and the recomputation
  is **verified**: its top layer must reproduce the module's real output and final states
  (:class:`RecomputeCheck`: the largest absolute error and the tolerance it is held to);
- :func:`probe_by_step` fits a linear probe (:func:`shenjing.analysis.separability.
  linear_probe`, train split → test split) on ``h_t`` for every step ``t``: "after which row
  of the image does a row-by-row LSTM know the digit?";
- :func:`gate_saturation`: the fraction of sigmoid gate values below 0.1 and above 0.9
  (an LSTM's input and forget gates, a GRU's reset and update gates);
- :func:`state_trajectories`: a 2-D PCA of the states of all steps, with a few trajectories
  per class to draw;
- :func:`over_time` runs all of it at several epochs and returns one frozen
  :class:`OverTime`, which owns its files (:meth:`OverTime.save` / :func:`load_over_time`).

Steps are numbered from 1: the state after step ``t`` has read inputs ``1 … t`` (for a
bidirectional layer's backward direction: inputs ``t … T``). Nothing here reads a run or
draws.

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0) and None
>>> lstm = nn.LSTM(3, 5, batch_first=True)
>>> seq = torch.randn(4, 6, 3)
>>> again = step_by_step(lstm, seq)
>>> out, _ = lstm(seq)
>>> bool(torch.allclose(again.output.float(), out, atol=1e-6))
True
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.errors import LayerNotFoundError, NotApplicableError, UsageError, did_you_mean

RECURRENT_TYPES: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.RNN)
#: gate names in the order PyTorch stacks them in ``weight_ih_l{k}`` (rows chunked so)
GATES: dict[str, tuple[str, ...]] = {"LSTM": ("input", "forget", "cell", "output"),
                                     "GRU": ("reset", "update", "new"), "RNN": ()}
#: the sigmoid gates whose saturation is measured (LSTM: i, f; GRU: r, z); an RNN has none
SATURATING: dict[str, tuple[str, ...]] = {"LSTM": ("input", "forget"),
                                          "GRU": ("reset", "update"), "RNN": ()}
#: the check's tolerance per dtype the module ran in, times max(1, max |output|); cuDNN may
#: run float32 RNNs in TF32 on GPUs, which the CUDA entry allows for
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2,
             torch.bfloat16: 5e-2}
CUDA_FLOAT32_TOLERANCE = 1e-2
LOW, HIGH = 0.1, 0.9
REACH = 0.9


def percent_text(share: float) -> str:
    """A share as a percentage that never hides a small non-zero value as 0.0 %.

    >>> percent_text(0.2106), percent_text(3.2e-7), percent_text(0.0)
    ('21.1%', '3.2e-05%', '0%')
    """
    v = float(share)
    if v == 0:
        return "0%"
    return f"{100 * v:.2g}%" if v < 0.001 else f"{100 * v:.1f}%"


def _kind(module: nn.Module) -> str:
    for cls in RECURRENT_TYPES:
        if isinstance(module, cls):
            return cls.__name__
    raise UsageError(f"{type(module).__name__} is not an nn.LSTM, nn.GRU or nn.RNN")


# ---- finding the layer ---------------------------------------------------------------------
def recurrent_layers(model: nn.Module) -> dict[str, str]:
    """``{module name: 'LSTM' | 'GRU' | 'RNN'}`` for every recurrent module, in model order
    (``''`` when the model itself is one)."""
    return {name: _kind(m) for name, m in model.named_modules()
            if isinstance(m, RECURRENT_TYPES)}


def _what_it_has(model: nn.Module, limit: int = 12) -> str:
    layers = [f"{n} ({type(m).__name__})" for n, m in model.named_modules() if n
              and not any(True for _ in m.children())]
    shown = ", ".join(layers[:limit]) + (f" and {len(layers) - limit} more"
                                         if len(layers) > limit else "")
    return shown or "no submodules"


def find_recurrent_layer(model: nn.Module, layer: str | None = None
                         ) -> tuple[str, nn.RNNBase]:
    """``(name, module)`` of the recurrent layer to study: ``layer``, or the first one.

    A model without any is a :class:`NotApplicableError` naming what it has; a ``layer``
    that does not exist a :class:`LayerNotFoundError`; one that is not recurrent a
    :class:`UsageError` listing the recurrent ones.
    """
    found = recurrent_layers(model)
    if not found:
        raise NotApplicableError(
            f"recurrent: {type(model).__name__} has no nn.LSTM, nn.GRU or nn.RNN layer; its "
            f"layers are {_what_it_has(model)}")
    if layer is None:
        layer = next(iter(found))
    names = [n for n, _ in model.named_modules()]
    listed = ", ".join(repr(n) for n in found)
    if layer not in names:
        raise LayerNotFoundError(
            f"no layer {layer!r} in {type(model).__name__}."
            f"{did_you_mean(layer, [n for n in names if n])} Its recurrent layers: {listed} "
            "(see `shenjing layers RUN`)")
    if layer not in found:
        module = model.get_submodule(layer) if layer else model
        raise UsageError(f"layer {layer!r} is a {type(module).__name__}, not an nn.LSTM, "
                         f"nn.GRU or nn.RNN; its recurrent layers: {listed}, e.g. --layer "
                         f"{next(iter(found)) or repr('')}")
    module = model.get_submodule(layer) if layer else model
    assert isinstance(module, nn.RNNBase)
    return layer, module


# ---- step-by-step recomputation ------------------------------------------------------------
@dataclass(frozen=True)
class Recomputed:
    """One call of a recurrent module recomputed step by step, batch-first.

    ``states`` ``(layers, directions, batch, steps, hidden)``: ``h_t`` of every layer and
    direction (the backward direction's state at step ``t`` has read steps ``t … T``);
    ``gates`` name → ``(layers, directions, batch, steps, hidden_size)`` (LSTM: input,
    forget, cell, output; GRU: reset, update, new; none for an RNN); ``output`` ``(batch,
    steps, directions · hidden)``; ``h_n`` (and an LSTM's ``c_n``) as the module returns
    them, ``(layers · directions, batch, …)``.
    """

    states: torch.Tensor
    gates: dict[str, torch.Tensor]
    output: torch.Tensor
    h_n: torch.Tensor
    c_n: torch.Tensor | None


def _compute_dtype(device: torch.device) -> torch.dtype:
    # float64 makes the recomputation the reference the module's own rounding is measured
    # against; MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def _params(module: nn.Module, k: int, suffix: str, dtype: torch.dtype
            ) -> tuple[torch.Tensor, ...]:
    def get(name: str) -> torch.Tensor | None:
        p = getattr(module, f"{name}_l{k}{suffix}", None)
        return None if p is None else p.detach().to(dtype)

    w_ih, w_hh = get("weight_ih"), get("weight_hh")
    assert w_ih is not None and w_hh is not None
    b_ih, b_hh = get("bias_ih"), get("bias_hh")
    zeros = torch.zeros(w_ih.shape[0], dtype=dtype, device=w_ih.device)
    w_hr = get("weight_hr")
    return (w_ih, w_hh, zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh,
            *(() if w_hr is None else (w_hr,)))


def _direction(kind: str, module: nn.Module, x: torch.Tensor, h: torch.Tensor,
               c: torch.Tensor | None, params: tuple[torch.Tensor, ...], reverse: bool
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor,
                          torch.Tensor | None]:
    """One layer, one direction over ``x`` ``(batch, steps, features)``: the states
    ``(batch, steps, hidden)`` in step order, the gates, the final ``h`` and ``c``."""
    w_ih, w_hh, b_ih, b_hh = params[:4]
    w_hr = params[4] if len(params) > 4 else None
    steps = x.shape[1]
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    pre_in = x @ w_ih.T + b_ih  # the input part of every step at once
    states: list[torch.Tensor] = [h] * steps
    names = GATES[kind]
    gate_steps: dict[str, list[torch.Tensor]] = {g: [h] * steps for g in names}
    for t in order:
        a_in = pre_in[:, t]
        a_h = h @ w_hh.T + b_hh
        if kind == "LSTM":
            assert c is not None
            i, f, g, o = (a_in + a_h).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            if w_hr is not None:
                h = h @ w_hr.T
            values: tuple[torch.Tensor, ...] = (i, f, g, o)
        elif kind == "GRU":
            ir, iz, in_ = a_in.chunk(3, dim=1)
            hr, hz, hn = a_h.chunk(3, dim=1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(in_ + r * hn)
            h = (1 - z) * n + z * h
            values = (r, z, n)
        else:
            act = torch.relu if getattr(module, "nonlinearity", "tanh") == "relu" \
                else torch.tanh
            h = act(a_in + a_h)
            values = ()
        states[t] = h
        for name, v in zip(names, values, strict=True):
            gate_steps[name][t] = v
    gates = {g: torch.stack(v, dim=1) for g, v in gate_steps.items()}
    return torch.stack(states, dim=1), gates, h, c


def step_by_step(module: nn.Module, x: torch.Tensor, hx: Any = None) -> Recomputed:
    """Recompute ``module(x, hx)`` step by step from its weights (``W_ih``, ``W_hh``, the
    biases; an LSTM's ``W_hr``), in float64 (float32 on MPS), keeping every state and gate.

    ``x`` and ``hx`` are what the module was called with: ``(batch, steps, features)`` if
    ``batch_first`` else ``(steps, batch, features)``, or one unbatched ``(steps,
    features)`` sequence; ``hx`` ``(layers · directions, batch, hidden)`` (an LSTM's
    ``(h_0, c_0)``) or None for zeros. Dropout between layers is not applied (eval mode).
    """
    kind = _kind(module)
    assert isinstance(module, nn.RNNBase)
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise NotApplicableError("recurrent: packed sequences (nn.utils.rnn.PackedSequence) "
                                 "are not supported; call the layer with a padded tensor")
    dtype = _compute_dtype(x.device)
    unbatched = x.dim() == 2
    seq = x.unsqueeze(0) if unbatched else (x if module.batch_first else x.transpose(0, 1))
    seq = seq.detach().to(dtype)
    n, n_layers = seq.shape[0], int(module.num_layers)
    n_dirs = 2 if module.bidirectional else 1
    h_size = int(module.hidden_size)
    out_size = int(getattr(module, "proj_size", 0) or 0) or h_size

    def initial(value: Any, size: int) -> torch.Tensor:
        if value is None:
            return torch.zeros(n_layers * n_dirs, n, size, dtype=dtype, device=seq.device)
        v = value.detach().to(dtype)
        return v.unsqueeze(1) if unbatched else v

    h0_in, c0_in = (hx if isinstance(hx, (tuple, list)) else (hx, None))
    h0 = initial(h0_in, out_size)
    c0 = initial(c0_in, h_size) if kind == "LSTM" else None
    layer_in = seq
    all_states: list[torch.Tensor] = []
    h_n: list[torch.Tensor] = []
    c_n: list[torch.Tensor] = []
    all_gates: dict[str, list[torch.Tensor]] = {g: [] for g in GATES[kind]}
    for k in range(n_layers):
        dir_states: list[torch.Tensor] = []
        dir_gates: dict[str, list[torch.Tensor]] = {g: [] for g in GATES[kind]}
        for d in range(n_dirs):
            idx = k * n_dirs + d
            params = _params(module, k, "_reverse" if d else "", dtype)
            s, g, h_last, c_last = _direction(kind, module, layer_in, h0[idx],
                                              None if c0 is None else c0[idx], params, d == 1)
            dir_states.append(s)
            for name, value in g.items():
                dir_gates[name].append(value)
            h_n.append(h_last)
            if c_last is not None:
                c_n.append(c_last)
        all_states.append(torch.stack(dir_states))
        for name, values in dir_gates.items():
            all_gates[name].append(torch.stack(values))
        layer_in = torch.cat(dir_states, dim=-1)
    return Recomputed(states=torch.stack(all_states),
                      gates={g: torch.stack(v) for g, v in all_gates.items()}, output=layer_in,
                      h_n=torch.stack(h_n),
                      c_n=torch.stack(c_n) if c_n else None)


# ---- the check -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RecomputeCheck:
    """How closely the step-by-step recomputation reproduces the module's real output.

    ``max_abs_error`` = max |recomputed − real| over the output sequence and the final
    states it returns (``compared``); ``passed`` when it is ≤ ``tolerance`` (set by the dtype
    the module ran in, times max(1, max |output|)). A failed check means the lower layers'
    states and the gates are not the module's (a custom forward, an initial state passed as
    ``hx=`` keyword, which forward hooks do not see, dropout in train mode, …).
    """

    max_abs_error: float
    tolerance: float
    compared: str
    n_values: int

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)

    def text(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"max |recomputed − module output| {self.max_abs_error:.2g} over "
                f"{self.n_values:,} values ({self.compared}), tolerance {self.tolerance:.2g}: "
                f"{verdict}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_abs_error": self.max_abs_error, "tolerance": self.tolerance,
                "passed": self.passed, "compared": self.compared, "n_values": self.n_values}

    @staticmethod
    def merge(checks: Sequence[RecomputeCheck]) -> RecomputeCheck:
        """One check for several calls: the largest error against the smallest tolerance."""
        return RecomputeCheck(max(c.max_abs_error for c in checks),
                              min(c.tolerance for c in checks), checks[0].compared,
                              sum(c.n_values for c in checks))


def _tolerance(real: torch.Tensor) -> float:
    base = TOLERANCE.get(real.dtype, 1e-4)
    if real.device.type == "cuda" and real.dtype == torch.float32:
        base = CUDA_FLOAT32_TOLERANCE
    peak = float(real.detach().abs().max()) if real.numel() else 0.0
    return base * max(1.0, peak)


def _check(module: nn.Module, again: Recomputed, output: Any, x: torch.Tensor
           ) -> RecomputeCheck:
    seq, final = output[0], output[1]
    unbatched = x.dim() == 2
    real = seq.unsqueeze(0) if unbatched else (seq if module.batch_first
                                               else seq.transpose(0, 1))
    pairs = [(again.output, real)]
    compared = ["output"]
    h_n, c_n = (final if isinstance(final, (tuple, list)) else (final, None))
    if h_n is not None:
        pairs.append((again.h_n, h_n.unsqueeze(1) if unbatched else h_n))
        compared.append("h_n")
    if c_n is not None and again.c_n is not None:
        pairs.append((again.c_n, c_n.unsqueeze(1) if unbatched else c_n))
        compared.append("c_n")
    error = max(float((a - b.detach().to(a.dtype)).abs().max()) for a, b in pairs)
    return RecomputeCheck(max_abs_error=error, tolerance=_tolerance(real),
                          compared=", ".join(compared),
                          n_values=sum(int(b.numel()) for _, b in pairs))


# ---- states of a module inside a model -----------------------------------------------------
@dataclass(frozen=True, repr=False)
class RecurrentStates:
    """The hidden state of one recurrent module at every step, for ``samples`` inputs.

    ``states`` ``(layers, directions, samples, steps, hidden)`` float32: the top layer is the
    module's own output, the lower layers recomputed; ``gates`` name → ``(layers,
    directions, samples, steps, hidden_size)`` (recomputed; empty when not kept, and for an
    RNN); ``check`` says how well the recomputation reproduced the real output.
    """

    layer: str
    module_type: str
    num_layers: int
    bidirectional: bool
    hidden_size: int
    batch_first: bool
    states: np.ndarray
    gates: dict[str, np.ndarray]
    check: RecomputeCheck
    epoch: int | None = None
    n_calls: int = 1

    @property
    def n_samples(self) -> int:
        return int(self.states.shape[2])

    @property
    def n_steps(self) -> int:
        return int(self.states.shape[3])

    @property
    def n_directions(self) -> int:
        return int(self.states.shape[1])

    def top(self) -> np.ndarray:
        """The top layer's states, directions side by side: ``(samples, steps, D · hidden)``
        — the module's output sequence."""
        return np.concatenate(list(self.states[-1]), axis=-1)

    def __repr__(self) -> str:
        dirs = ", bidirectional" if self.bidirectional else ""
        return (f"RecurrentStates({self.layer!r}, {self.module_type}, {self.num_layers} "
                f"layer(s){dirs}, samples={self.n_samples}, steps={self.n_steps}, "
                f"hidden={self.states.shape[-1]}, check {self.check.max_abs_error:.2g} ≤ "
                f"{self.check.tolerance:.2g}: {'passed' if self.check.passed else 'FAILED'})")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``states``, each gate (``gate_<name>``) and the settings (``meta``, JSON)
        as one ``.npz``, atomically; :func:`load_recurrent_states` reads it."""
        from shenjing import _io

        meta = {"layer": self.layer, "module_type": self.module_type,
                "num_layers": self.num_layers, "bidirectional": self.bidirectional,
                "hidden_size": self.hidden_size, "batch_first": self.batch_first,
                "check": self.check.to_dict(), "epoch": self.epoch, "n_calls": self.n_calls}
        return _io.save_npz(path, states=self.states, meta=meta,
                            **{f"gate_{g}": v for g, v in self.gates.items()})


def load_recurrent_states(path: str | os.PathLike[str]) -> RecurrentStates:
    """The states :meth:`RecurrentStates.save` wrote."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        gates = {k.removeprefix("gate_"): z[k] for k in z.files if k.startswith("gate_")}
        check = meta["check"]
        return RecurrentStates(
            layer=meta["layer"], module_type=meta["module_type"],
            num_layers=int(meta["num_layers"]), bidirectional=bool(meta["bidirectional"]),
            hidden_size=int(meta["hidden_size"]), batch_first=bool(meta["batch_first"]),
            states=z["states"], gates=gates,
            check=RecomputeCheck(float(check["max_abs_error"]), float(check["tolerance"]),
                                 str(check["compared"]), int(check["n_values"])),
            epoch=meta["epoch"], n_calls=int(meta["n_calls"]))


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def recurrent_states(model: nn.Module, x: torch.Tensor, *, layer: str | None = None,
                     batch_size: int = 256, gates: bool = True, epoch: int | None = None,
                     device: str | torch.device | None = None) -> RecurrentStates:
    """The hidden states of recurrent ``layer`` (default: the first) while ``model`` reads
    ``x`` ``(samples, …)``, batch by batch, with every gate when ``gates``.

    The module is observed with :func:`shenjing.hooks.forward_hooks` (removed afterwards,
    also when forward raises); its input, its initial state when passed positionally, and
    its output are recorded at its first call in each forward (``n_calls`` says how often it
    ran). The model runs as it is (put it in ``eval()`` first) under ``torch.no_grad``.
    """
    from shenjing._checks import positive_int
    from shenjing.hooks import forward_hooks

    positive_int("batch_size", batch_size, example=256)
    name, module = find_recurrent_layer(model, layer)
    kind = _kind(module)
    dev = torch.device(device) if device is not None else _model_device(model)
    n = int(x.shape[0])
    if n == 0:
        raise UsageError("recurrent_states needs at least one input sample, got none")
    states: list[np.ndarray] = []
    gate_parts: dict[str, list[np.ndarray]] = {g: [] for g in GATES[kind]} if gates else {}
    checks: list[RecomputeCheck] = []
    n_calls = 0
    calls: list[tuple[tuple[Any, ...], Any]] = []

    def record(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        calls.append((args, out))

    with forward_hooks(model, {name: record}), torch.no_grad():
        for start in range(0, n, batch_size):
            calls.clear()
            batch = x[start:start + batch_size].to(dev)
            model(batch)
            if not calls:
                raise UsageError(f"layer {name!r} ({kind}) did not run in the model's forward "
                                 "pass, so it has no states for these inputs")
            n_calls = max(n_calls, len(calls))
            args, out = calls[0]
            seq = args[0]
            if isinstance(seq, nn.utils.rnn.PackedSequence):
                raise NotApplicableError(
                    f"recurrent: layer {name!r} is called with a PackedSequence; the view "
                    "reads padded tensors only")
            again = step_by_step(module, seq, args[1] if len(args) > 1 else None)
            if again.states.shape[2] != batch.shape[0]:
                raise UsageError(
                    f"layer {name!r} runs on a batch of {again.states.shape[2]} sequences "
                    f"for {batch.shape[0]} model inputs; the view needs one sequence per "
                    "input sample")
            checks.append(_check(module, again, out, seq))
            top = torch.as_tensor(out[0]).detach()
            top = top.unsqueeze(0) if seq.dim() == 2 else (
                top if module.batch_first else top.transpose(0, 1))
            s = again.states.clone()
            width = s.shape[-1]
            for d in range(s.shape[1]):  # the top layer is the module's real output
                s[-1, d] = top[..., d * width:(d + 1) * width].to(s.dtype)
            states.append(s.float().cpu().numpy())
            for g in gate_parts:
                gate_parts[g].append(again.gates[g].float().cpu().numpy())
    return RecurrentStates(
        layer=name, module_type=kind, num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional), hidden_size=int(module.hidden_size),
        batch_first=bool(module.batch_first), states=np.concatenate(states, axis=2),
        gates={g: np.concatenate(v, axis=2) for g, v in gate_parts.items()},
        check=RecomputeCheck.merge(checks), epoch=epoch, n_calls=n_calls)


# ---- probe, saturation, trajectories -------------------------------------------------------
@dataclass(frozen=True)
class StepProbe:
    """Linear-probe accuracy of ``h_t`` at every step: ``accuracy`` and ``train_accuracy``
    ``(layers, directions, steps)``; ``chance`` = the test share of the most frequent
    class."""

    accuracy: np.ndarray
    train_accuracy: np.ndarray
    chance: float
    n_train: int
    n_test: int


def chance_level(y: Any) -> float:
    """The accuracy of always answering the most frequent class of ``y``."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def probe_by_step(train: RecurrentStates, y_train: Any, test: RecurrentStates, y_test: Any,
                  *, max_iter: int = 300, random_state: int = 0) -> StepProbe:
    """Fit a linear probe on the train states of each layer, direction and step; score it on
    the test states of the same layer, direction and step."""
    from shenjing.analysis.separability import linear_probe

    if train.states.shape[:2] != test.states.shape[:2] or train.n_steps != test.n_steps:
        raise UsageError(f"train states {train.states.shape} and test states "
                         f"{test.states.shape} do not come from the same layer and steps")
    y_tr, y_te = np.asarray(y_train), np.asarray(y_test)
    shape = (*train.states.shape[:2], train.n_steps)
    acc, acc_train = np.zeros(shape), np.zeros(shape)
    for k, d, t in np.ndindex(*shape):
        acc[k, d, t], acc_train[k, d, t], _ = linear_probe(
            train.states[k, d, :, t], y_tr, test.states[k, d, :, t], y_te,
            max_iter=max_iter, random_state=random_state)
    return StepProbe(accuracy=acc, train_accuracy=acc_train, chance=chance_level(y_te),
                     n_train=train.n_samples, n_test=test.n_samples)


def first_step_reaching(accuracy: Sequence[float] | np.ndarray, fraction: float = REACH
                        ) -> int:
    """The first step (numbered from 1) whose accuracy is ≥ ``fraction`` × the last step's.

    >>> first_step_reaching([0.1, 0.5, 0.86, 0.9, 0.95])  # 0.9 × 0.95 = 0.855
    3
    """
    a = np.asarray(accuracy, dtype=float)
    return int(np.flatnonzero(a >= fraction * a[-1] - 1e-12)[0]) + 1


@dataclass(frozen=True)
class GateSaturation:
    """Fraction of gate values below ``low`` and above ``high``: ``fractions`` ``(gates,
    layers, 2)`` (``[..., 0]`` below, ``[..., 1]`` above), over directions, samples, steps
    and units."""

    gates: tuple[str, ...]
    fractions: np.ndarray
    low: float
    high: float
    n_values: int

    def total(self, gate: str) -> tuple[float, float]:
        """``(below, above)`` of ``gate`` over all layers."""
        return (float(self.fractions[self.gates.index(gate), :, 0].mean()),
                float(self.fractions[self.gates.index(gate), :, 1].mean()))


def gate_saturation(states: RecurrentStates, *, low: float = LOW, high: float = HIGH
                    ) -> GateSaturation | None:
    """How many of the sigmoid gate values are nearly shut (< ``low``) or nearly open
    (> ``high``): an LSTM's input and forget gates, a GRU's reset and update gates. None for
    an RNN (no gates)."""
    if not 0 <= low < high <= 1:
        raise UsageError(f"gate saturation needs 0 ≤ low < high ≤ 1, got low={low}, "
                         f"high={high}")
    names = SATURATING[states.module_type]
    if not names:
        return None
    missing = [g for g in names if g not in states.gates]
    if missing:
        raise UsageError(f"these states were recorded without gates ({', '.join(missing)} "
                         "missing); call recurrent_states(..., gates=True)")
    frac = np.zeros((len(names), states.num_layers, 2))
    for gi, g in enumerate(names):
        values = states.gates[g]
        for k in range(states.num_layers):
            frac[gi, k, 0] = float((values[k] < low).mean())
            frac[gi, k, 1] = float((values[k] > high).mean())
    return GateSaturation(gates=names, fractions=frac, low=low, high=high,
                          n_values=int(states.gates[names[0]][0].size))


@dataclass(frozen=True)
class Trajectories:
    """States of all steps projected on their first two principal components.

    ``coords`` ``(shown, steps, 2)`` for the trajectories chosen to draw (``per_class`` of
    each class, the first in sample order), their ``labels`` and ``samples`` (positions in
    the inputs); ``explained_variance`` the share of variance of each component.
    """

    coords: np.ndarray
    labels: np.ndarray
    samples: np.ndarray
    explained_variance: np.ndarray


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, components (2, features), explained variance ratio (2,))`` of ``x``
    ``(n, features)``; each component's sign fixed so its largest loading is positive."""
    data = np.asarray(x, dtype=np.float64)
    mean = data.mean(axis=0)
    centred = data - mean
    cov = centred.T @ centred / max(1, data.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:2]
    comps = vectors[:, order].T
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    total = float(values.clip(min=0).sum())
    ratio = values[order].clip(min=0) / total if total > 0 else np.zeros(len(order))
    if comps.shape[0] < 2:  # a single feature: pad the second axis with zeros
        comps = np.vstack([comps, np.zeros_like(comps)])
        ratio = np.append(ratio, 0.0)
    return mean, comps, ratio


def state_trajectories(states: RecurrentStates | np.ndarray, labels: Any, *,
                       per_class: int = 3) -> Trajectories:
    """2-D PCA of the top layer's states (fitted on every step of every sample), and the
    trajectories of the first ``per_class`` samples of each class."""
    from shenjing._checks import positive_int

    positive_int("per_class", per_class, example=3)
    top = states.top() if isinstance(states, RecurrentStates) else np.asarray(states)
    n, steps = top.shape[:2]
    y = np.asarray(labels)
    if y.shape != (n,):
        raise UsageError(f"labels must be (samples,) = ({n},), got {y.shape}")
    mean, comps, ratio = pca_2d(top.reshape(n * steps, -1))
    shown = np.array(sorted(int(i) for c in np.unique(y)
                            for i in np.flatnonzero(y == c)[:per_class]), dtype=np.int64)
    coords = (top[shown].astype(np.float64) - mean) @ comps.T
    return Trajectories(coords=coords.astype(np.float32), labels=y[shown], samples=shown,
                        explained_variance=ratio)


# ---- the whole view over epochs ------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class OverTime:
    """What a recurrent layer knows at each step, at several epochs.

    ``probe`` / ``probe_train`` ``(epochs, layers, directions, steps)`` test / train
    accuracy of a linear probe on ``h_t``; ``chance`` the most frequent test class's share;
    ``saturation`` ``(saturation_epochs, gates, layers, 2)`` fractions of gate values
    below ``low`` / above ``high`` (None for an RNN); ``trajectories`` one
    :class:`Trajectories` per epoch of ``epochs``; ``checks`` epoch → the recomputation
    check of every call at that epoch.
    """

    layer: str
    module_type: str
    num_layers: int
    bidirectional: bool
    hidden_size: int
    n_steps: int
    epochs: tuple[int, ...]
    probe: np.ndarray
    probe_train: np.ndarray
    chance: float
    n_train: int
    n_test: int
    saturation_epochs: tuple[int, ...]
    gates: tuple[str, ...]
    saturation: np.ndarray | None
    trajectories: tuple[Trajectories, ...]
    checks: dict[int, RecomputeCheck]
    low: float = LOW
    high: float = HIGH
    reach: float = REACH
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_directions(self) -> int:
        return int(self.probe.shape[2])

    @property
    def steps(self) -> np.ndarray:
        """Step numbers 1 … T."""
        return np.arange(1, self.n_steps + 1)

    def curve(self, epoch: int, layer: int = -1, direction: int = 0) -> np.ndarray:
        """Probe accuracy by step at ``epoch`` (default: the top layer, forward)."""
        return self.probe[self.epochs.index(epoch), layer, direction]

    def reach_step(self, epoch: int) -> int:
        """First step whose probe accuracy (top layer, forward) is ≥ ``reach`` × the last
        step's, at ``epoch``."""
        return first_step_reaching(self.curve(epoch), self.reach)

    def check(self) -> RecomputeCheck:
        """The recomputation check over every epoch."""
        return RecomputeCheck.merge(list(self.checks.values()))

    def marked_steps(self) -> list[int]:
        """The first, middle and last step (numbered from 1), without repeats."""
        return sorted({1, (self.n_steps + 1) // 2, self.n_steps})

    def summary_lines(self) -> list[str]:
        """The numbers, as lines for the CLI (also the report's captions' source)."""
        dirs = ", bidirectional" if self.bidirectional else ""
        lines = [f"recurrent layer {self.layer} ({self.module_type}, {self.num_layers} "
                 f"layer(s){dirs}, hidden {self.hidden_size}, {self.n_steps} steps); linear "
                 f"probe on h_t: {self.n_train} train → {self.n_test} test samples, chance "
                 f"{self.chance:.3f}"]
        marks = self.marked_steps()
        lines.append("probe accuracy of h_t (top layer" + (", forward" if self.bidirectional
                     else "") + ") at step " + " / ".join(map(str, marks)) + ":")
        for e in self.epochs:
            c = self.curve(e)
            lines.append(f"  epoch {e}: " + " / ".join(f"{c[s - 1]:.3f}" for s in marks)
                         + f"  (≥ {self.reach:.0%} of its last-step accuracy from step "
                         f"{self.reach_step(e)})")
        if self.saturation is not None:
            lines.append(f"gate saturation (share of gate values < {self.low:g} | > "
                         f"{self.high:g}, {self.n_test} test samples, all steps and units):")
            for i, e in enumerate(self.saturation_epochs):
                parts = [f"{g} {percent_text(self.saturation[i, gi, :, 0].mean())} | "
                         f"{percent_text(self.saturation[i, gi, :, 1].mean())}"
                         for gi, g in enumerate(self.gates)]
                lines.append(f"  epoch {e}: " + ", ".join(parts))
        else:
            lines.append(f"gate saturation: none ({self.module_type} has no gates)")
        verdict = self.check()
        lines.append(f"recomputation check: {verdict.text()}")
        if not verdict.passed:
            lines.append("WARNING: the recomputed states do not reproduce the module's output;"
                         " the lower layers' states and the gates are not the module's")
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def __repr__(self) -> str:
        last = self.epochs[-1]
        return (f"OverTime({self.layer!r}, {self.module_type}, steps={self.n_steps}, "
                f"epochs={list(self.epochs)}, probe at last step "
                f"{self.curve(self.epochs[0])[-1]:.3f} (epoch {self.epochs[0]}) → "
                f"{self.curve(last)[-1]:.3f} (epoch {last}), check "
                f"{self.check().max_abs_error:.2g})")

    def to_dict(self) -> dict[str, Any]:
        """The numbers as JSON (the arrays as nested lists; epochs as text keys)."""
        sat: dict[str, Any] | None = None
        if self.saturation is not None:
            sat = {"epochs": list(self.saturation_epochs), "gates": list(self.gates),
                   "low": self.low, "high": self.high,
                   "fractions": self.saturation.tolist(),
                   "total": {str(e): {g: {"below": float(self.saturation[i, gi, :, 0].mean()),
                                          "above": float(self.saturation[i, gi, :, 1].mean())}
                                      for gi, g in enumerate(self.gates)}
                             for i, e in enumerate(self.saturation_epochs)}}
        return {
            "layer": self.layer, "module_type": self.module_type,
            "num_layers": self.num_layers, "bidirectional": self.bidirectional,
            "hidden_size": self.hidden_size, "n_steps": self.n_steps,
            "epochs": list(self.epochs), "classes": list(self.classes),
            "probe": {"accuracy": self.probe.tolist(),
                      "train_accuracy": self.probe_train.tolist(), "chance": self.chance,
                      "n_train": self.n_train, "n_test": self.n_test, "reach": self.reach,
                      "reach_step": {str(e): self.reach_step(e) for e in self.epochs},
                      "marked_steps": self.marked_steps(),
                      "at_marked_steps": {str(e): [float(self.curve(e)[s - 1])
                                                   for s in self.marked_steps()]
                                          for e in self.epochs},
                      "axes": ["epoch", "layer", "direction", "step"]},
            "saturation": sat,
            "saturation_reason": None if sat else f"{self.module_type} has no gates",
            "trajectories": {"epochs": list(self.epochs),
                             "explained_variance": [t.explained_variance.tolist()
                                                    for t in self.trajectories],
                             "n_shown": int(self.trajectories[0].samples.size)
                             if self.trajectories else 0},
            "check": {"per_epoch": {str(e): c.to_dict() for e, c in self.checks.items()},
                      **self.check().to_dict()},
            "notes": list(self.notes),
        }

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
             ) -> list[Path]:
        """Write ``<path>.json`` (:meth:`to_dict` and ``extra``) and ``<path>.npz`` (the
        arrays), atomically; :func:`load_over_time` reads them back."""
        from shenjing import _io

        base = Path(path).with_suffix("")
        arrays: dict[str, Any] = {
            "epochs": np.array(self.epochs), "steps": self.steps, "probe": self.probe,
            "probe_train": self.probe_train,
            "saturation_epochs": np.array(self.saturation_epochs, dtype=np.int64),
            "trajectory_coords": np.stack([t.coords for t in self.trajectories]),
            "trajectory_labels": np.stack([t.labels for t in self.trajectories]),
            "trajectory_samples": np.stack([t.samples for t in self.trajectories]),
            "explained_variance": np.stack([t.explained_variance for t in self.trajectories])}
        if self.saturation is not None:
            arrays["saturation"] = self.saturation
        return [_io.write_json(base.with_suffix(".json"), {**self.to_dict(), **(extra or {})}),
                _io.save_npz(base.with_suffix(".npz"), **arrays)]


def load_over_time(path: str | os.PathLike[str]) -> OverTime:
    """The result :meth:`OverTime.save` wrote at ``path`` (``.json``, ``.npz`` or the stem)."""
    from shenjing import _io

    base = Path(path).with_suffix("")
    rec = _io.read_json(base.with_suffix(".json"))
    with np.load(base.with_suffix(".npz"), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    trajectories = tuple(Trajectories(coords=a["trajectory_coords"][i],
                                      labels=a["trajectory_labels"][i],
                                      samples=a["trajectory_samples"][i],
                                      explained_variance=a["explained_variance"][i])
                         for i in range(len(a["epochs"])))
    sat = rec.get("saturation")
    checks = {int(e): RecomputeCheck(float(c["max_abs_error"]), float(c["tolerance"]),
                                     str(c["compared"]), int(c["n_values"]))
              for e, c in rec["check"]["per_epoch"].items()}
    probe = rec["probe"]
    return OverTime(
        layer=rec["layer"], module_type=rec["module_type"], num_layers=int(rec["num_layers"]),
        bidirectional=bool(rec["bidirectional"]), hidden_size=int(rec["hidden_size"]),
        n_steps=int(rec["n_steps"]), epochs=tuple(int(e) for e in a["epochs"]),
        probe=a["probe"], probe_train=a["probe_train"], chance=float(probe["chance"]),
        n_train=int(probe["n_train"]), n_test=int(probe["n_test"]),
        saturation_epochs=tuple(int(e) for e in a["saturation_epochs"]),
        gates=tuple(sat["gates"]) if sat else (), saturation=a.get("saturation"),
        trajectories=trajectories, checks=checks,
        low=float(sat["low"]) if sat else LOW, high=float(sat["high"]) if sat else HIGH,
        reach=float(probe["reach"]), classes=tuple(rec.get("classes", ())),
        notes=tuple(rec.get("notes", ())))


ModelSource = Mapping[int, nn.Module] | Callable[[int], nn.Module]


def over_time(models: ModelSource, *, epochs: Sequence[int], x_train: torch.Tensor,
              y_train: Any, x_test: torch.Tensor, y_test: Any, layer: str | None = None,
              saturation_epochs: Sequence[int] | None = None, per_class: int = 3,
              low: float = LOW, high: float = HIGH, reach: float = REACH,
              batch_size: int = 256, device: str | torch.device | None = None,
              random_state: int = 0, classes: Sequence[str] = (),
              progress: Callable[[str], None] | None = None) -> OverTime:
    """The recurrent view at ``epochs``: probe accuracy of ``h_t`` by step (train inputs →
    test inputs), PCA trajectories of the test inputs, gate saturation at
    ``saturation_epochs`` (default: ``epochs``) on the test inputs, and the recomputation
    check of every call.

    ``models`` maps an epoch to its model (in eval mode), or is a function loading it: each
    epoch's model is asked for once and its states are dropped before the next one, so
    saturation over many epochs keeps one model's states in memory at a time.
    """
    from shenjing._checks import probability

    if not epochs:
        raise UsageError("over_time needs at least one epoch, e.g. epochs=[0, 5]")
    probability("reach", reach)
    if not 0 <= low < high <= 1:
        raise UsageError(f"gate saturation needs 0 ≤ low < high ≤ 1, got low={low}, "
                         f"high={high}")
    y_tr, y_te = np.asarray(y_train), np.asarray(y_test)
    sat_epochs = list(epochs if saturation_epochs is None else saturation_epochs)
    order = sorted(set(epochs) | set(sat_epochs))
    probes: dict[int, StepProbe] = {}
    paths: dict[int, Trajectories] = {}
    sats: dict[int, GateSaturation | None] = {}
    checks: dict[int, RecomputeCheck] = {}
    meta: RecurrentStates | None = None
    n_calls = 1
    for e in order:
        if progress is not None:
            progress(f"epoch {e}")
        model = models[e] if isinstance(models, Mapping) else models(e)
        test = recurrent_states(model, x_test, layer=layer, batch_size=batch_size,
                                gates=e in sat_epochs, epoch=e, device=device)
        meta = test
        n_calls = max(n_calls, test.n_calls)
        calls = [test.check]
        if e in sat_epochs:
            sats[e] = gate_saturation(test, low=low, high=high)
        if e in epochs:
            train = recurrent_states(model, x_train, layer=layer, batch_size=batch_size,
                                     gates=False, epoch=e, device=device)
            calls.append(train.check)
            probes[e] = probe_by_step(train, y_tr, test, y_te, random_state=random_state)
            paths[e] = state_trajectories(test, y_te, per_class=per_class)
            del train
        checks[e] = RecomputeCheck.merge(calls)
        del test, model
    assert meta is not None
    kept = [sats[e] for e in sat_epochs]
    first = next((s for s in kept if s is not None), None)
    notes = []
    if n_calls > 1:
        notes.append(f"layer {meta.layer!r} runs {n_calls} times per forward pass; its "
                     "first call is shown")
    ep = list(epochs)
    return OverTime(
        layer=meta.layer, module_type=meta.module_type, num_layers=meta.num_layers,
        bidirectional=meta.bidirectional, hidden_size=meta.hidden_size,
        n_steps=meta.n_steps, epochs=tuple(ep),
        probe=np.stack([probes[e].accuracy for e in ep]),
        probe_train=np.stack([probes[e].train_accuracy for e in ep]),
        chance=probes[ep[0]].chance, n_train=probes[ep[0]].n_train,
        n_test=probes[ep[0]].n_test, saturation_epochs=tuple(sat_epochs),
        gates=first.gates if first is not None else (),
        saturation=None if first is None else np.stack([s.fractions for s in kept
                                                        if s is not None]),
        trajectories=tuple(paths[e] for e in ep), checks=checks, low=low, high=high,
        reach=reach, classes=tuple(str(c) for c in classes), notes=tuple(notes))


__all__ = ["GATES", "SATURATING", "GateSaturation", "OverTime", "RecomputeCheck",
           "Recomputed", "RecurrentStates", "StepProbe", "Trajectories", "chance_level",
           "find_recurrent_layer", "first_step_reaching", "gate_saturation",
           "load_over_time", "load_recurrent_states", "over_time", "pca_2d", "percent_text",
           "probe_by_step",
           "recurrent_layers", "recurrent_states", "state_trajectories", "step_by_step"]
