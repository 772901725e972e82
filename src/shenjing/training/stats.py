"""Per-layer weight statistics that show how a network's weights move while it trains."""

from __future__ import annotations

import torch
from torch import nn


def weighted_layers(model: nn.Module) -> dict[str, nn.Parameter]:
    """Each module that owns a ``weight`` parameter, by module name (fc1, conv1, bn1 …)."""
    out = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name and isinstance(weight, nn.Parameter):
            out[name] = weight
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A float64 CPU copy of every layer's weight (for later differences)."""
    return {k: w.detach().to("cpu", torch.float64).clone()
            for k, w in weighted_layers(model).items()}


def layer_stats(current: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None,
                initial: dict[str, torch.Tensor],
                grad_norms: dict[str, float] | None) -> dict[str, dict[str, float | None]]:
    """Weight norm, relative update, distance and cosine to init, mean gradient norm.

    ``update_ratio`` = ‖w − w_prev‖ / ‖w_prev‖ (None without a previous epoch);
    ``dist_from_init`` = ‖w − w₀‖ / ‖w₀‖; ``cos_to_init`` = ⟨w, w₀⟩ / (‖w‖‖w₀‖).
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
