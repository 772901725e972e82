"""Which layers to look at when the user names none: block outputs, penultimate, logits.

The rule, for any model (the zoo's, a ResNet, an LSTM, a transformer):

1. **The classifier** is the last ``nn.Linear`` that runs (else the last weighted layer);
   its output is the **logits**.
2. **The penultimate layer** is what the classifier reads: its input, taken with a hook
   (through :mod:`shenjing.hooks`), matched against every module output that ran before it.
   Pass-through modules (dropout, flatten, identity) are skipped and the outermost module
   wins (``body`` rather than ``body.2``). An LSTM head reading ``seq[:, -1]`` matches
   ``lstm.1.0`` (``h_n``, the last step's hidden state); a head reading the last step of a
   multi-layer LSTM matches ``lstm.0``. When the input is computed in ``forward`` (say
   ``F.adaptive_avg_pool2d``) and no module returns it, the nearest block output before
   the classifier stands for it, and the reason says so.
3. **Block outputs**: the children of the module that holds the classifier (the model's
   top-level children, usually) that have weights, normalisation layers and shortcuts
   excluded: the last three when they are blocks (containers such as ``layer1``…``layer3``
   of a ResNet, ``encoder``), the last two when every child is a single layer (the zoo's
   ``conv2``, ``fc1``: the choice shenjing always made for them). A recurrent block gives
   its sequence output (``lstm.0``); a block called twice its last call (``block#1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shenjing.capture.core import DryOutput, DryRun, dry_run
from shenjing.errors import LayerNotFoundError

_NORMS: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                getattr(nn, "RMSNorm", None), nn.LocalResponseNorm) if t is not None)
_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                 nn.Flatten, nn.Unflatten, nn.Identity)
#: samples used for the dry runs: enough to tell the batch dimension from others
_N_SAMPLES = 3


@dataclass(frozen=True)
class DefaultLayers:
    """The layers chosen for a model, why each, and how to choose others.

    ``names`` are capture keys in the order they run (ending with the logits);
    ``penultimate`` is the key of the features the classifier reads; ``reasons[name]``
    says why each was chosen.
    """

    names: tuple[str, ...]
    penultimate: str
    reasons: dict[str, str] = field(compare=False)
    logits: str | None = None
    model_name: str = ""

    def describe(self) -> str:
        """One paragraph: which layers, why, and how to choose others."""
        chosen = "; ".join(f"{n} ({self.reasons.get(n, 'chosen')})" for n in self.names)
        return (f"Layers shown for {self.model_name or 'the model'} (chosen by default): "
                f"{chosen}. Choose others with --layers NAME,NAME (layers=[...] in Python), "
                "using any name or key that `shenjing layers RUN` lists (e.g. a module "
                "name, lstm.1.0 or block#1).")


def default_layers(model: nn.Module, example: Any) -> DefaultLayers:
    """Choose the layers to show for ``model`` (see the module docstring for the rule).

    ``example`` is one batch of inputs (only its first samples are used). The model runs
    in ``eval()`` under ``inference_mode`` (restored afterwards) and no hook is left.

    >>> from torch import nn
    >>> import torch
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> d = default_layers(net, torch.zeros(2, 4))
    >>> d.names, d.penultimate
    (('0', '1', '2'), '1')
    """
    example = _first_samples(example, _N_SAMPLES)
    structure = dry_run(model, example)
    head = _classifier(model, structure)
    model_name = type(model).__name__
    if head is None:
        ran = [o for o in structure.outputs if o.per_sample]
        picked = list(dict.fromkeys(o.key for o in ran))[-2:]
        if not picked:
            raise _nothing_to_show(model_name)
        reasons = dict.fromkeys(picked, "one of the last outputs (the model has no weighted "
                                        "layer to take as its classifier)")
        return DefaultLayers(tuple(picked), picked[0], reasons, None, model_name)
    values = dry_run(model, example, values=True, inputs_of=[head])
    head_out = _main_output(values, head)
    logits = head_out.key if head_out is not None else head
    before = [o for o in values.outputs if head_out is None or o.order < head_out.order]
    blocks = _blocks(model, values, head, before)
    reasons = {k: why for k, why in blocks}
    penultimate, why = _penultimate(model, values, head, before, blocks)
    reasons[penultimate] = f"{reasons[penultimate]}; also {why}" if penultimate in reasons \
        else why
    reasons[logits] = (f"the logits: output of the final classifier layer {head!r} "
                       f"({type(model.get_submodule(head)).__name__})")
    order = {o.key: o.order for o in values.outputs}
    names = sorted(reasons, key=lambda k: order.get(k, len(order)))
    return DefaultLayers(tuple(names), penultimate, {n: reasons[n] for n in names}, logits,
                         model_name)


def _nothing_to_show(model_name: str) -> LayerNotFoundError:
    return LayerNotFoundError(
        f"{model_name} has no layer with a per-sample tensor output to show; name one with "
        "--layers (see `shenjing layers RUN`)")


def _first_samples(example: Any, n: int) -> Any:
    """The first ``n`` samples of a batch (a tensor, a tuple/list of inputs, or kwargs)."""
    if isinstance(example, torch.Tensor):
        return example[:n] if example.ndim else example
    if isinstance(example, tuple):
        return tuple(_first_samples(v, n) for v in example)
    if isinstance(example, list):
        return [_first_samples(v, n) for v in example]
    if isinstance(example, Mapping):
        return {k: _first_samples(v, n) for k, v in example.items()}
    return example


def _weighted(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) and not isinstance(module, _NORMS)


def _classifier(model: nn.Module, run: DryRun) -> str | None:
    """The last ``nn.Linear`` to finish; else the last weighted, non-norm module to finish."""
    ran = [o.module for o in run.outputs]
    linear = [m for m in ran if isinstance(model.get_submodule(m), nn.Linear)]
    if linear:
        return linear[-1]
    weighted = [m for m in ran if _weighted(model.get_submodule(m))]
    return weighted[-1] if weighted else None


def _main_output(run: DryRun, module: str) -> DryOutput | None:
    """A module's main output: the first per-sample tensor of its last call."""
    outs = [o for o in run.of(module) if o.per_sample]
    if not outs:
        return None
    last = max(o.call for o in outs)
    return next(o for o in outs if o.call == last)


def _children(model: nn.Module, parent: str) -> list[str]:
    holder = model.get_submodule(parent) if parent else model
    return [f"{parent}.{n}" if parent else n for n, _ in holder.named_children()]


def _blocks(model: nn.Module, run: DryRun, head: str, before: list[DryOutput]
            ) -> list[tuple[str, str]]:
    """(key, reason) of the block outputs: see rule 3 of the module docstring."""
    parent = head.rpartition(".")[0]
    finished = {o.module: o.order for o in before}
    candidates = []
    for child in _children(model, parent):
        module = model.get_submodule(child)
        if child == head or child not in finished or isinstance(module, _NORMS + _PASS_THROUGH):
            continue
        if not any(True for _ in module.parameters()):
            continue
        candidates.append(child)
    candidates.sort(key=lambda c: finished[c])
    nested = any(any(True for _ in model.get_submodule(c).children()) for c in candidates)
    chosen = []
    for child in candidates[-3:] if nested else candidates[-2:]:
        out = _main_output(run, child)
        if out is None:
            continue
        module = model.get_submodule(child)
        kind = type(module).__name__
        if out.path:
            what = (f"{kind} {child!r}: its sequence output (batch, steps, features)"
                    if isinstance(module, nn.RNNBase) else
                    f"{kind} {child!r}: output [{']['.join(out.path)}] of its tuple")
        else:
            what = f"{kind} {child!r}"
        if run.calls.get(child, 0) > 1:
            what += f", its last call of {run.calls[child]}"
        level = ("block output" if nested else
                 "recurrent layer" if isinstance(module, nn.RNNBase) else "weighted layer")
        chosen.append((out.key, f"{level}: {what}"))
    return chosen


def _penultimate(model: nn.Module, run: DryRun, head: str, before: list[DryOutput],
                 blocks: list[tuple[str, str]]) -> tuple[str, str]:
    """(key, reason) of the features the classifier reads: see rule 2."""
    reads = run.inputs.get(head)
    kind = type(model.get_submodule(head)).__name__
    if reads is not None and reads.ndim > 0:
        n = reads.shape[0]
        target = reads.reshape(n, -1)
        tiers: dict[str, list[DryOutput]] = {"all": [], "last": [], "first": []}
        for o in before:
            if o.value is None or o.module == head or o.module.startswith(head + "."):
                continue
            v = o.value
            if v.shape[0] != n:
                continue
            if _same(v.reshape(n, -1), target):
                tiers["all"].append(o)
            elif v.ndim == 3 and _same(v[:, -1], target):
                tiers["last"].append(o)
            elif v.ndim == 3 and _same(v[:, 0], target):
                tiers["first"].append(o)
        for tier, found in tiers.items():
            best = _prefer(model, found)
            if best is not None:
                how = _how_read(model, best, tier)
                size = "×".join(map(str, reads.shape[1:])) or "1"
                return best.key, (f"penultimate: the features the classifier {head!r} ({kind}) "
                                  f"reads ({how}, {size} per sample)")
    if blocks:
        key = blocks[-1][0]
    else:
        outs = [o for o in before if o.per_sample and o.module != head]
        if not outs:
            raise _nothing_to_show(type(model).__name__)
        key = outs[-1].key
    return key, (f"penultimate: nearest module output before the classifier {head!r}: "
                 f"{head!r} reads a tensor computed in forward() that no module returns")


def _how_read(model: nn.Module, out: DryOutput, tier: str) -> str:
    """How the classifier's input relates to the chosen output, in words."""
    h_n = out.path[:1] == ("1",) and isinstance(model.get_submodule(out.module), nn.RNNBase)
    if tier == "all":
        return "its input; h_n, the hidden state after the last step" if h_n else "its input"
    if h_n:
        return "its input is the last layer of h_n, the hidden state after the last step"
    if tier == "last":
        return "its input is the last position along dim 1 (the last time step or token)"
    return "its input is the first position along dim 1 (a CLS token)"


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        torch.allclose(a, b, rtol=1e-5, atol=1e-6))


def _prefer(model: nn.Module, found: list[DryOutput]) -> DryOutput | None:
    """Among outputs equal to the classifier's input: not a pass-through module, then the
    outermost module (fewest dots), then the latest."""
    if not found:
        return None
    real = [o for o in found if not isinstance(model.get_submodule(o.module), _PASS_THROUGH)]
    pool = real or found
    return min(pool, key=lambda o: (o.module.count("."), -o.order))
