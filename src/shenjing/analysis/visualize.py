"""Feature visualization by optimisation: the input each unit would like to see.

Olah, Mordvintsev & Schubert, "Feature Visualization" (Distill, 2017): start from a random
image and follow the gradient of one unit's activation with respect to the image. Plain
pixel gradients give high-frequency noise the network happens to respond to; two things
from that article make the images readable, and both are used here:

- **a Fourier-space parametrisation** with each frequency's amplitude scaled by
  ``1 / frequency`` (natural images have roughly that spectrum), so that every frequency
  gets a comparable learning rate and low frequencies are not starved; for 3-channel
  inputs the colour channels are **decorrelated** with the square root of the channel
  covariance of the run's own training images (not constants from elsewhere); a 1-channel
  input has nothing to decorrelate.
- **robustness transforms** applied at every step: a random jitter (shift), scale and
  rotation (an affine warp through ``torch.nn.functional.affine_grid`` / ``grid_sample``,
  seeded), so that the image must excite the unit wherever and however it is placed.

The image lives in the data's own pixel range: ``sigmoid`` → [0, 1] → ``black + (white −
black) · v``, the values black and white pixels take under the run's scaling
(:attr:`shenjing.data.types.Dataset.pixel_range`), so the model is shown inputs like its
data. Objective: the mean activation of a conv channel over its positions, a hidden unit's
activation, or a class logit (layer ``"output"``). All asked units are optimised at once,
one image each in one batch. The result reports the activation the final, untransformed
image reaches next to a seeded noise image's and, when data is given, the best real
input's (via :func:`shenjing.analysis.units.top_activations` with ``k=1``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.errors import UsageError

#: defaults: enough steps for 8×8 and 28×28 images to converge (measured, see the docs)
STEPS = 256
LR = 0.05
JITTER = 1          # pixels (each way)
SCALES = (0.95, 1.05)  # uniform range of the scale factor
ROTATE = 10.0       # degrees (each way)
OUTPUT = "output"


class _LayerSeenError(Exception):
    """Raised from the hook once the layer's output is seen: later layers do not run."""


# ---- parametrisation ----------------------------------------------------------------------
def frequency_scale(height: int, width: int) -> torch.Tensor:
    """``(height, width // 2 + 1)`` amplitudes ``1 / max(f, 1 / max(h, w))`` of the real
    2-D FFT's frequencies ``f`` (cycles per pixel), normalised to mean 1: the 1/f spectrum
    the image's Fourier coefficients are multiplied by."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    freq = torch.sqrt(fy ** 2 + fx ** 2)
    scale = 1.0 / torch.clamp(freq, min=1.0 / max(height, width))
    return scale / scale.mean()


def colour_matrix(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """The ``(C, C)`` square root of the channel covariance of ``images`` ``(N, C, H, W)``
    (eigen-decomposition ``U diag(sqrt(s)) Uᵀ``), scaled so its largest column norm is 1:
    multiplying independent per-channel noise by it gives colours correlated like the
    data's."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    flat = x.movedim(1, 0).reshape(x.shape[1], -1)
    cov = torch.cov(flat)
    s, u = torch.linalg.eigh(cov)
    root = u @ torch.diag(torch.sqrt(torch.clamp(s, min=0.0))) @ u.T
    norm = float(torch.linalg.norm(root, dim=0).max())
    if not norm > 0:
        return np.eye(x.shape[1])
    return (root / norm).numpy()


class FourierImage(nn.Module):
    """A batch of images ``(n, C, H, W)`` parametrised by their real-FFT coefficients times
    the 1/f :func:`frequency_scale`, optionally colour-decorrelated, squashed by a sigmoid
    into [0, 1]. Calling it returns the [0, 1] images."""

    def __init__(self, n: int, shape: Sequence[int], *, generator: torch.Generator,
                 colour: np.ndarray | None = None, init_std: float = 0.01) -> None:
        super().__init__()
        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        self.spectrum = nn.Parameter(
            torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * init_std)
        self.register_buffer("scale", frequency_scale(h, w))
        self.colour = None if colour is None else torch.as_tensor(colour, dtype=torch.float32)

    def raw(self) -> torch.Tensor:
        """The pre-sigmoid image: real by construction (inverse real FFT)."""
        scale: torch.Tensor = self.scale  # type: ignore[assignment]  # a buffer
        coeffs = torch.view_as_complex(self.spectrum) * scale
        img = torch.fft.irfft2(coeffs, s=self.shape[1:], norm="ortho")
        if self.colour is not None:
            img = torch.einsum("dc,nchw->ndhw", self.colour.to(img.device), img)
        return img

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.raw())


class PixelImage(nn.Module):
    """Inputs that are no image (a vector): one parameter per value, through a sigmoid."""

    def __init__(self, n: int, shape: Sequence[int], *, generator: torch.Generator,
                 init_std: float = 0.01) -> None:
        super().__init__()
        self.values = nn.Parameter(torch.randn(n, *shape, generator=generator) * init_std)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.values)


# ---- robustness transforms ---------------------------------------------------------------
def affine_transform(images: torch.Tensor, *, angle: torch.Tensor | float = 0.0,
                     scale: torch.Tensor | float = 1.0, shift: torch.Tensor | Sequence[float]
                     = (0.0, 0.0), mode: str = "bilinear") -> torch.Tensor:
    """Rotate ``images`` ``(n, C, H, W)`` by ``angle`` degrees counter-clockwise (as
    ``torch.rot90`` turns for positive angles), zoom by ``scale`` (>1 enlarges) and shift by
    ``shift`` = (dx, dy) pixels (right, down), about the centre; per image when the
    arguments are ``(n,)`` / ``(n, 2)`` tensors. Outside the image the border pixel is
    repeated."""
    import torch.nn.functional as F

    n, _, h, w = images.shape
    dev = images.device
    a = torch.as_tensor(angle, dtype=torch.float32, device=dev).expand(n) * (math.pi / 180)
    s = torch.as_tensor(scale, dtype=torch.float32, device=dev).expand(n)
    t = torch.as_tensor(shift, dtype=torch.float32, device=dev).expand(n, 2)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # the grid maps each output pixel to where it samples the input (normalised coords);
    # a counter-clockwise turn of the picture samples at the clockwise-turned point
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    theta[:, 0, 2] = -2.0 * t[:, 0] / w
    theta[:, 1, 2] = -2.0 * t[:, 1] / h
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


@dataclass(frozen=True)
class Transforms:
    """The random robustness transforms drawn at every step: shift up to ``jitter`` pixels
    each way, scale uniform in ``scales``, rotation uniform in ±``rotate`` degrees."""

    jitter: int = JITTER
    scales: tuple[float, float] = SCALES
    rotate: float = ROTATE

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        shift = torch.randint(-self.jitter, self.jitter + 1, (n, 2), generator=generator)
        lo, hi = self.scales
        scale = lo + (hi - lo) * torch.rand(n, generator=generator)
        angle = self.rotate * (2 * torch.rand(n, generator=generator) - 1)
        return affine_transform(images, angle=angle, scale=scale, shift=shift.float())

    def describe(self) -> dict[str, Any]:
        return {"jitter_px": self.jitter, "scale": list(self.scales),
                "rotate_deg": self.rotate}


# ---- the objective ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    module: str | None   # None: the model's output (logits)
    call: int
    path: tuple[str, ...]
    unit_axis: int
    n_units: int


def _target(model: nn.Module, example: torch.Tensor, layer: str) -> _Target:
    from shenjing.analysis.units import unit_layout

    found = unit_layout(model, example, layer)
    if found.module is None:
        return _Target(None, 0, (), found.unit_axis, found.n_units)
    return _Target(found.module, found.call or 0, tuple(found.path), found.unit_axis,
                   found.n_units)


def _unit_means(t: torch.Tensor, axis: int) -> torch.Tensor:
    """``(batch, units)``: each unit's mean over its positions (keeps the gradient)."""
    if t.ndim == 1:
        return t[:, None]
    if t.ndim == 2:
        return t
    return t.movedim(axis, 1).flatten(2).mean(dim=-1)


def layer_activation(model: nn.Module, x: torch.Tensor, target: _Target) -> torch.Tensor:
    """``(batch, units)`` mean activation of the target layer for inputs ``x`` (with
    gradient); the forward stops right after the layer, and the hooks are removed also
    when forward raises."""
    from shenjing.capture.recorder import ModuleCall, Recorder
    from shenjing.models.outputs import select_output

    if target.module is None:
        return _unit_means(select_output(model(x)), target.unit_axis)
    found: list[torch.Tensor] = []

    def sink(call: ModuleCall) -> None:
        if call.call != target.call:
            return
        for path, t in call.outputs:
            if tuple(path) == target.path:
                found.append(t)
                raise _LayerSeenError

    with Recorder(model, [target.module], sink).observing(), \
            contextlib.suppress(_LayerSeenError):
        model(x)
    if not found:
        raise UsageError(f"layer {target.module!r} did not run in the forward pass; choose "
                         "a layer that does (see `shenjing layers RUN`)")
    return _unit_means(found[0], target.unit_axis)


# ---- the result ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureVisualization:
    """What :func:`visualize_units` made: one image per unit and the activations.

    ``images``: ``(n, *input_shape)`` float32 in the model's input scale; ``pixels``: the
    same in [0, 1] (0 = black); ``reached``: each unit's activation on its final,
    untransformed image; ``noise``: on a seeded uniform-noise image; ``best_real`` /
    ``best_index``: the best real input's activation and its position in the data (None
    without data); ``trace``: ``(n, steps)`` the objective (on transformed images) at
    every step.
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    pixels: np.ndarray
    reached: np.ndarray
    noise: np.ndarray
    trace: np.ndarray
    steps: int
    lr: float
    seed: int
    transforms: dict[str, Any]
    parametrisation: str
    pixel_range: tuple[float, float]
    best_real: np.ndarray | None = None
    best_index: np.ndarray | None = None
    colour: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ratio(self) -> np.ndarray | None:
        """``reached / best_real`` per unit (NaN where the best real activation is ≤ 0)."""
        if self.best_real is None:
            return None
        best = self.best_real.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(best > 0, self.reached / best, np.nan)

    def per_unit(self) -> list[dict[str, Any]]:
        """One JSON-able record per unit."""
        ratio = self.ratio()
        rows = []
        for i, u in enumerate(self.units.tolist()):
            row: dict[str, Any] = {"unit": int(u), "reached": float(self.reached[i]),
                                   "noise": float(self.noise[i])}
            if self.best_real is not None and self.best_index is not None and ratio is not None:
                row.update(best_real=float(self.best_real[i]),
                           best_index=int(self.best_index[i]),
                           ratio=None if not np.isfinite(ratio[i]) else float(ratio[i]))
            rows.append(row)
        return rows

    def describe(self) -> dict[str, Any]:
        """The numbers and options, JSON-able."""
        return {"layer": self.layer, "units": self.per_unit(), "steps": self.steps,
                "lr": self.lr, "seed": self.seed, "transforms": self.transforms,
                "parametrisation": self.parametrisation,
                "pixel_range": list(self.pixel_range),
                "colour_decorrelation": None if self.colour is None else self.colour.tolist(),
                **self.extra}

    def summary_lines(self) -> list[str]:
        lines = [f"feature visualization of {self.layer}: {len(self.units)} unit(s), "
                 f"{self.steps} steps, lr {self.lr:g}, seed {self.seed}; "
                 f"{self.parametrisation}"]
        for row in self.per_unit():
            text = f"  unit {row['unit']}: reached {row['reached']:.3g} (noise {row['noise']:.3g}"
            if "best_real" in row:
                ratio = "?" if row["ratio"] is None else f"×{row['ratio']:.2f}"
                text += (f", best real {row['best_real']:.3g} = test input "
                         f"{row['best_index']}, {ratio}")
            lines.append(text + ")")
        return lines

    def save(self, folder: str | Path, stem: str) -> list[Path]:
        """``folder/stem.json`` (numbers) and ``folder/stem.npz`` (images), atomically."""
        from shenjing._io import save_npz, write_json

        folder = Path(folder)
        arrays: dict[str, Any] = {"units": self.units, "images": self.images,
                                  "pixels": self.pixels, "reached": self.reached,
                                  "noise": self.noise, "trace": self.trace}
        if self.best_real is not None and self.best_index is not None:
            arrays.update(best_real=self.best_real, best_index=self.best_index)
        if self.colour is not None:
            arrays["colour"] = self.colour
        return [write_json(folder / f"{stem}.json", self.describe()),
                save_npz(folder / f"{stem}.npz", **arrays)]


def load_feature_visualization(json_path: str | Path) -> FeatureVisualization:
    """Read back what :meth:`FeatureVisualization.save` wrote (the json and its npz)."""
    from shenjing._io import read_json

    path = Path(json_path)
    rec = read_json(path)
    with np.load(path.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    known = {"layer", "units", "steps", "lr", "seed", "transforms", "parametrisation",
             "pixel_range", "colour_decorrelation"}
    return FeatureVisualization(
        layer=rec["layer"], units=arrays["units"], images=arrays["images"],
        pixels=arrays["pixels"], reached=arrays["reached"], noise=arrays["noise"],
        trace=arrays["trace"], steps=int(rec["steps"]), lr=float(rec["lr"]),
        seed=int(rec["seed"]), transforms=rec["transforms"],
        parametrisation=rec["parametrisation"],
        pixel_range=(float(rec["pixel_range"][0]), float(rec["pixel_range"][1])),
        best_real=arrays.get("best_real"), best_index=arrays.get("best_index"),
        colour=arrays.get("colour"), extra={k: v for k, v in rec.items() if k not in known})


# ---- the optimisation ---------------------------------------------------------------------
def check_units(model: nn.Module, layer: str, units: Sequence[int], *,
                input_shape: Sequence[int], device: str | torch.device | None = None
                ) -> int:
    """Refuse a layer the model does not have (the error lists the layers) or a unit it
    does not have, before anything runs; return the layer's number of units."""
    from shenjing.capture.core import device_for

    dev = device_for(model, device)
    was_training = model.training
    model.eval()
    try:
        target = _target(model, torch.zeros(1, *input_shape, device=dev), layer)
    finally:
        model.train(was_training)
    from shenjing.analysis.units import check_unit_numbers

    check_unit_numbers(units, target.n_units, layer, example=8)
    return target.n_units


def check_visualize_options(*, steps: int, lr: float, seed: int) -> None:
    """Refuse options that cannot work, in one line naming the option."""
    from shenjing._checks import bounded_int, finite_float, random_seed

    bounded_int("--steps", steps, low=1, high=100_000, example=STEPS,
                why="gradient steps on the image")
    finite_float("--lr", lr, low=0.0, low_open=True, example=LR)
    random_seed("--seed", seed)


def visualize_units(model: nn.Module, layer: str, units: Sequence[int], *,
                    input_shape: Sequence[int], steps: int = STEPS, lr: float = LR,
                    seed: int = 0, pixel_range: tuple[float, float] = (0.0, 1.0),
                    colour_from: torch.Tensor | np.ndarray | None = None,
                    transforms: Transforms | None = Transforms(),
                    data: Any = None, device: str | torch.device | None = None
                    ) -> FeatureVisualization:
    """Optimise one input per unit of ``layer`` (a layer ``shenjing layers`` lists, or
    ``"output"`` for the class logits) to maximise its mean activation, ``steps`` Adam
    steps of rate ``lr`` from a ``seed``-ed start, all units in one batch.

    ``input_shape``: one input's shape, ``(C, H, W)`` for images (Fourier parametrisation
    with transforms) or anything else (one parameter per value, no transforms).
    ``pixel_range``: the model-scale values of black and white. ``colour_from``: training
    images whose channel covariance decorrelates a 3-channel image (ignored otherwise).
    ``transforms``: the robustness transforms (None: none). ``data``: when given (a Split,
    tensor …), the best real input per unit is found in it with
    :func:`shenjing.analysis.units.top_activations`. The model runs in ``eval()`` (its mode
    is restored) and only the image is updated: the model's parameters and their ``.grad``
    are left as they were. Deterministic for a seed on CPU.
    """
    from shenjing.capture.core import device_for

    check_visualize_options(steps=steps, lr=lr, seed=seed)
    shape = tuple(int(s) for s in input_shape)
    units = [int(u) for u in units]
    if not units:
        raise UsageError("no units asked; give unit (channel) numbers, e.g. --channels 0:8")
    dev = device_for(model, device)
    model.to(dev)
    lo, hi = (float(pixel_range[0]), float(pixel_range[1]))
    was_training = model.training
    model.eval()
    try:
        target = _target(model, torch.zeros(1, *shape, device=dev), layer)
        from shenjing.analysis.units import check_unit_numbers

        check_unit_numbers(units, target.n_units, layer, example=8)
        gen = torch.Generator().manual_seed(seed)
        is_image = len(shape) == 3
        colour = None
        if is_image and shape[0] == 3 and colour_from is not None:
            colour = colour_matrix(colour_from)
        param: nn.Module
        if is_image:
            param = FourierImage(len(units), shape, generator=gen, colour=colour)
            how = ("Fourier-space image with 1/f amplitude scaling" +
                   (", colours decorrelated by the training images' channel covariance"
                    if colour is not None else
                    f"; {shape[0]} channel(s): no colour decorrelation"))
        else:
            param = PixelImage(len(units), shape, generator=gen)
            how = f"one parameter per input value (input shape {shape} is no image)"
        how += "; sigmoid → [0, 1] → the data's pixel range"
        param.to(dev)
        use = transforms if is_image else None
        params = list(param.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        rows = torch.arange(len(units), device=dev)
        picked = torch.tensor(units, device=dev)
        trace = np.zeros((len(units), steps), dtype=np.float32)
        for step in range(steps):
            x = lo + (hi - lo) * param()
            if use is not None:
                x = use(x, gen)
            act = layer_activation(model, x, target)[rows, picked]
            trace[:, step] = act.detach().cpu().numpy()
            grads = torch.autograd.grad(-act.sum(), params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()
        with torch.no_grad():
            pixels = param()
            images = lo + (hi - lo) * pixels
            reached = layer_activation(model, images, target)[rows, picked]
            noise_px = torch.rand(len(units), *shape, generator=gen).to(dev)
            noise = layer_activation(model, lo + (hi - lo) * noise_px, target)[rows, picked]
    finally:
        model.train(was_training)
    best_real = best_index = None
    if data is not None:
        from shenjing.analysis.units import top_activations

        top = top_activations(model, data, layer, k=1, reduce="mean", units=units,
                              device=dev)
        order = [top.row(u) for u in units]
        best_real = top.values[order, 0].astype(np.float32)
        best_index = top.indices[order, 0].astype(np.int64)
    return FeatureVisualization(
        layer=layer, units=np.asarray(units, dtype=np.int64),
        images=images.cpu().numpy().astype(np.float32),
        pixels=pixels.cpu().numpy().astype(np.float32),
        reached=reached.cpu().numpy().astype(np.float32),
        noise=noise.cpu().numpy().astype(np.float32), trace=trace, steps=steps, lr=lr,
        seed=seed, transforms=use.describe() if use is not None else {},
        parametrisation=how, pixel_range=(lo, hi), best_real=best_real,
        best_index=best_index, colour=colour)


__all__ = ["FeatureVisualization", "FourierImage", "Transforms", "affine_transform",
           "check_units", "check_visualize_options", "colour_matrix", "frequency_scale",
           "layer_activation", "load_feature_visualization", "visualize_units"]
