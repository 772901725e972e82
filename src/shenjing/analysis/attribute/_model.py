"""What the attribution methods need from a model: eval mode for the call, its classifier
outputs, its spatial layers, and a temporary token → patch-grid reshape."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from shenjing.errors import NotApplicableError, ShapeMismatchError, UsageError


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block (dropout off, BatchNorm frozen), each
    module's own ``training`` flag restored after, also when the block raises."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def class_outputs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(N, classes)`` logits in batches; a non-classifier output is refused in one line."""
    outs = []
    for start in range(0, len(x), batch_size):
        out = model(x[start:start + batch_size])
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise NotApplicableError(
                f"attribution to a class needs a classifier whose output is (samples, "
                f"classes); {type(model).__name__} returns {shape}. Wrap the model so it "
                "returns class scores")
        outs.append(out.float())
    return torch.cat(outs)


def _tensor_out(out: Any) -> torch.Tensor | None:
    return out if isinstance(out, torch.Tensor) else None


def layer_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Every named submodule's (first) tensor output on ``x``, in forward-execution order,
    with gradients kept (one forward + the caller's backward)."""
    seen: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {id(m): n for n, m in model.named_modules() if n}
    handles = []

    def keep(mod: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
        t = _tensor_out(out)
        if t is not None and id(mod) in names and all(mod is not s[1] for s in seen):
            if t.requires_grad:
                t.retain_grad()
            seen.append((names[id(mod)], mod, t))

    try:
        for m in model.modules():
            if id(m) in names:
                handles.append(m.register_forward_hook(keep))
        out = model(x)
        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.requires_grad:
            out.max(dim=1).values.sum().backward()
    finally:
        for h in handles:
            h.remove()
    return seen


def spatial_kind(t: torch.Tensor, image_shape: tuple[int, ...]) -> str | None:
    """``'map'`` for (N, C, h, w) with more than one position, ``'tokens'`` for (N, T, D)
    tokens with a patch grid, else None."""
    from shenjing.analysis.attention import token_layout

    if t.ndim == 4:
        # a 1×1 map (after global pooling) has no spatial layout to show
        return "map" if t.shape[2] * t.shape[3] > 1 else None
    if t.ndim == 3 and token_layout(t.shape[1], image_shape).grid:
        return "tokens"
    return None


def layer_shapes(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Every named submodule's output shape on one input of ``x`` (batch dimension kept),
    in forward order; one forward in eval mode, no gradient, hooks removed."""
    with eval_mode(model), torch.no_grad():
        return {n: tuple(t.shape) for n, _m, t in layer_outputs(model, x[:1])}


def spatial_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """The layers Grad-CAM can use on inputs like ``x`` ``(N, C, H, W)``: ``(name, output
    shape of one sample)`` in forward order — 4-D outputs, and (N, T, D) tokens whose
    count forms a patch grid of the input."""
    with eval_mode(model):
        found = layer_outputs(model, x[:1])
    shape = tuple(x.shape[1:])
    return [(n, tuple(t.shape[1:])) for n, _m, t in found if spatial_kind(t, shape)]


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Grad-CAM's layer when none is chosen: the last spatial layer whose output the class
    score depends on (a nonzero gradient on one sample). For a CNN that is the last 4-D
    layer; for a ViT whose head reads only the CLS token, the last block's patch tokens
    have no gradient, so this is the last layer inside that block where they still matter
    (the tokens entering its attention); sub-layers of another width (qkv, the MLP's
    hidden layer) are passed over for the residual stream's tokens."""
    from shenjing.analysis.attention import token_layout

    shape = tuple(x.shape[1:])
    with eval_mode(model), torch.enable_grad():
        found = layer_outputs(model, x[:1].detach().clone().requires_grad_(False))
    kinds = [(name, t, spatial_kind(t, shape)) for name, _m, t in found]
    tokens = [t for _n, t, k in kinds if k == "tokens"]
    stream = tuple(tokens[-1].shape) if tokens else None  # the residual stream's shape
    best = None
    for name, t, kind in kinds:
        if kind is None or (kind == "tokens" and tuple(t.shape) != stream):
            continue
        g = t.grad
        if kind == "tokens" and g is not None:
            g = g[:, token_layout(t.shape[1], shape).n_prefix:]
        if g is not None and bool(g.abs().sum() > 0):
            best = name
    if best is None:
        raise NotApplicableError(
            f"{type(model).__name__} has no spatial layer for Grad-CAM (no 4-D output and no "
            "tokens forming a patch grid of the input); use method='saliency' or "
            "'integrated_gradients'")
    return best


def check_layer(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[nn.Module, str]:
    """The module named ``layer`` and its kind (``'map'``/``'tokens'``), or one line saying
    its output shape and listing the spatial layers."""
    from shenjing.errors import LayerNotFoundError, did_you_mean

    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        raise LayerNotFoundError(f"no layer {layer!r} in {type(model).__name__}."
                                 f"{did_you_mean(layer, names)} Layers: {', '.join(names)}")
    with eval_mode(model), torch.no_grad():
        found = {n: t for n, _m, t in layer_outputs(model, x[:1])}
    if layer not in found:
        raise NotApplicableError(f"layer {layer!r} did not run (or returned no tensor) in "
                                 f"{type(model).__name__}'s forward; choose another layer")
    kind = spatial_kind(found[layer], tuple(x.shape[1:]))
    if kind is None:
        spatial = spatial_layers(model, x)
        raise NotApplicableError(
            f"Grad-CAM needs a spatial layer (output (N, C, h, w), or tokens on a patch grid);"
            f" layer {layer!r} outputs {tuple(found[layer].shape[1:])} per sample. Spatial "
            f"layers: {', '.join(n for n, _ in spatial) or 'none'}")
    return model.get_submodule(layer), kind


class _Grid(nn.Identity):
    """An identity the token reshape passes patch tokens through as (N, D, rows, cols), so a
    layer method's hooks see a spatial map."""


@contextlib.contextmanager
def tokens_as_grid(module: nn.Module, image_shape: tuple[int, ...]) -> Iterator[nn.Module]:
    """While the block runs, ``module``'s (N, T, D) output passes (unchanged in value)
    through a :class:`_Grid` that sees the patch tokens as (N, D, rows, cols); yields that
    grid module for Captum's layer hooks. The hook is removed after, also on errors."""
    from shenjing.analysis.attention import token_layout

    grid = _Grid()

    def reshape(_mod: nn.Module, _args: tuple[Any, ...], out: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 3:
            raise ShapeMismatchError("the token layer's output is not (N, T, D)")
        layout = token_layout(out.shape[1], image_shape)
        p = layout.n_prefix
        n, _t, d = out.shape
        patches = out[:, p:].transpose(1, 2).reshape(n, d, layout.rows, layout.cols)
        patches = grid(patches)
        return torch.cat([out[:, :p], patches.reshape(n, d, -1).transpose(1, 2)], dim=1)

    handle = module.register_forward_hook(reshape)
    try:
        yield grid
    finally:
        handle.remove()


def check_targets(targets: torch.Tensor, n_classes: int) -> None:
    bad = targets[(targets < 0) | (targets >= n_classes)]
    if len(bad):
        raise UsageError(f"target class {int(bad[0])} is out of range: the model has "
                         f"{n_classes} classes (0–{n_classes - 1}), e.g. target=0")
