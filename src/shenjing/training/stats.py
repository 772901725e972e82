"""Per-group parameter statistics that show how a network's weights move while it trains.

Every parameter of the model is tracked, grouped by the module that owns it
(:func:`group_name` is the rule, shared with the views that read checkpoints):

- a module's own parameters that are not biases form the group named
  after the module: ``fc1`` = ``fc1.weight``; ``lstm`` = ``weight_ih_l0`` + ``weight_hh_l0``;
  ``encoder.layers.0.self_attn`` = ``in_proj_weight``;
- its biases (a name with a ``bias`` word: ``bias``, ``bias_ih_l0``, ``in_proj_bias``) form
  ``<module>.bias``: ``fc1.bias``; ``lstm.bias`` = ``bias_ih_l0`` + ``bias_hh_l0``;
- parameters the root module owns (a CLS token, a position embedding) are each their own
  group, named by the parameter's name (``cls_token``).

A group's numbers are those of its parameters concatenated into one vector. Why weights and
biases apart: a layer entry keeps meaning what it meant before every parameter was tracked
(``fc1`` is ‖fc1.weight‖, so runs recorded earlier compare number for number), and a bias —
small, often initialised at zero — would otherwise hide in its weight's norm.

>>> from torch import nn
>>> [g.name for g in group_parameters(nn.Sequential(nn.Linear(2, 3), nn.ReLU())).groups]
['0', '0.bias']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def _is_bias(leaf: str) -> bool:
    return "bias" in leaf.split("_")


def group_name(param: str) -> str:
    """The group a parameter belongs to, from its full name (``lstm.bias_hh_l0`` →
    ``lstm.bias``; ``fc1.weight`` → ``fc1``; a root parameter ``cls_token`` → itself).

    >>> group_name("encoder.layers.0.self_attn.in_proj_bias")
    'encoder.layers.0.self_attn.bias'
    """
    module, _, leaf = param.rpartition(".")
    if not module:
        return leaf
    return f"{module}.bias" if _is_bias(leaf) else module


def is_bias_group(name: str, params: Sequence[str] = ()) -> bool:
    """Whether a group holds biases only (their gradient and update scale differ from
    weights' by construction, so the vanishing/exploding rules leave them out)."""
    if params:
        return all(_is_bias(p.rpartition(".")[2]) for p in params)
    return name.endswith(".bias") or name == "bias"


@dataclass(frozen=True)
class ParamGroup:
    """One tracked group: its name, the full names of its parameters, and their count."""

    name: str
    params: tuple[str, ...]
    n: int


@dataclass(frozen=True)
class ParameterGroups:
    """Every parameter of a model, grouped (model order); ``untracked`` lists parameters that
    cannot be tracked (not floating point), ``n_total`` counts all parameters."""

    groups: tuple[ParamGroup, ...]
    n_total: int
    untracked: tuple[str, ...] = ()

    @property
    def n_tracked(self) -> int:
        return sum(g.n for g in self.groups)

    def mapping(self) -> dict[str, list[str]]:
        """``{group: [parameter names]}`` in model order."""
        return {g.name: list(g.params) for g in self.groups}

    def to_record(self) -> dict[str, Any]:
        """The ``params`` entry of metrics.jsonl's epoch-0 line (groups as a list, so the
        model order survives key-sorted JSON)."""
        return {"n_total": self.n_total, "n_tracked": self.n_tracked,
                "untracked": list(self.untracked),
                "groups": [{"name": g.name, "params": list(g.params), "n": g.n}
                           for g in self.groups]}


def group_parameters(model: nn.Module) -> ParameterGroups:
    """Group every parameter of ``model`` by its owning module (see the module docstring).

    A parameter shared by two modules (tied weights) is counted once, under the first
    module that owns it, as ``model.parameters()`` does.
    """
    seen: set[int] = set()
    params: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    untracked: list[str] = []
    n_total = 0
    for module_name, module in model.named_modules():
        for leaf, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{module_name}.{leaf}" if module_name else leaf
            n_total += p.numel()
            if not torch.is_floating_point(p):
                untracked.append(full)
                continue
            group = group_name(full)
            params.setdefault(group, []).append(full)
            sizes[group] = sizes.get(group, 0) + p.numel()
    groups = tuple(ParamGroup(name, tuple(names), sizes[name]) for name, names in params.items())
    return ParameterGroups(groups=groups, n_total=n_total, untracked=tuple(untracked))


def group_tensors(model: nn.Module, groups: ParameterGroups) -> dict[str, list[torch.Tensor]]:
    """The live parameter tensors of each group (for gradients and snapshots)."""
    by_name = dict(model.named_parameters())
    return {g.name: [by_name[p] for p in g.params] for g in groups.groups}


def _flat64(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A float64 CPU copy of a group: the tensor itself when alone (so a one-tensor group's
    numbers are exactly those of that tensor), else the flattened tensors concatenated."""
    if len(tensors) == 1:
        return tensors[0].detach().to("cpu", torch.float64).clone()
    return torch.cat([t.detach().to("cpu", torch.float64).reshape(-1) for t in tensors])


def snapshot(tensors: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A float64 CPU copy of every group (for later differences)."""
    return {name: _flat64(ts) for name, ts in tensors.items()}


def grad_norms(tensors: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, float]:
    """‖∂L/∂θ‖₂ of each group whose parameters hold gradients (the norm of the concatenated
    gradients; groups with no gradient at all, e.g. frozen ones, are left out)."""
    names: list[str] = []
    grads: list[torch.Tensor] = []
    for name, ts in tensors.items():
        for t in ts:
            if t.grad is not None:
                names.append(name)
                grads.append(t.grad)
    if not grads:
        return {}
    with torch.no_grad():
        norms = [float(n) for n in torch._foreach_norm(grads)]
    squares: dict[str, list[float]] = {}
    for name, value in zip(names, norms, strict=True):
        squares.setdefault(name, []).append(value)
    return {name: vals[0] if len(vals) == 1 else sum(v * v for v in vals) ** 0.5
            for name, vals in squares.items()}


def layer_stats(current: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None,
                initial: dict[str, torch.Tensor],
                grad_norms: dict[str, float] | None) -> dict[str, dict[str, float | None]]:
    """Weight norm, relative update, distance and cosine to init, mean gradient norm.

    ``update_ratio`` = ‖w − w_prev‖ / ‖w_prev‖ (None without a previous epoch);
    ``dist_from_init`` = ‖w − w₀‖ / ‖w₀‖; ``cos_to_init`` = ⟨w, w₀⟩ / (‖w‖‖w₀‖); ``w`` is
    the group's parameters as one vector. A ratio whose denominator is zero is None.
    """
    out: dict[str, dict[str, float | None]] = {}
    for name, w in current.items():
        w0 = initial[name]
        norm = float(w.norm())
        norm0 = float(w0.norm())
        rec: dict[str, float | None] = {"weight_norm": norm}
        if previous is not None and name in previous:
            prev_norm = float(previous[name].norm())
            rec["update_ratio"] = float((w - previous[name]).norm()) / prev_norm if prev_norm \
                else None
        else:
            rec["update_ratio"] = None
        rec["dist_from_init"] = float((w - w0).norm()) / norm0 if norm0 else None
        rec["cos_to_init"] = float((w * w0).sum()) / (norm * norm0) if norm and norm0 else None
        rec["grad_norm"] = None if grad_norms is None else grad_norms.get(name)
        out[name] = rec
    return out
