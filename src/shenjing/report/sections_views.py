"""Report sections for the analysis views, each reading the files its stage wrote."""

from __future__ import annotations

from typing import Any

import numpy as np

from shenjing.report.blocks import Section, Table, image_block, plotly_block
from shenjing.runs import Run


def dynamics_section(run: Run) -> Section | None:
    return None


def embedding_section(run: Run) -> Section | None:
    return None


def maps_section(run: Run) -> Section | None:
    return None


def _line_caption(ls: Any) -> str:
    from shenjing.plot.landscape import caption

    axis = ls.axes[0]
    loss = np.where(ls.done & np.isfinite(ls.loss), ls.loss, np.nan)
    i0, i1 = int(np.argmin(np.abs(axis))), int(np.argmin(np.abs(axis - 1.0)))
    inside = loss[(axis >= 0) & (axis <= 1)]
    steps = np.diff(inside[np.isfinite(inside)])
    monotone = bool(steps.size) and bool(np.all(steps <= 1e-9))
    return (f"What this shows: the loss along the straight line from the start weights θ₀ "
            f"(α = 0) to the trained θ* (α = 1), and beyond. Loss {loss[i0]:.4g} at θ₀, "
            f"{loss[i1]:.4g} at θ*; between them it "
            + ("decreases monotonically (Goodfellow et al.'s observation holds here). "
               if monotone else "does not decrease monotonically (it has a bump). ")
            + f"Details: {caption(ls)}.")


def _plane_caption(ls: Any) -> str:
    from shenjing.plot.landscape import caption

    (a_min, b_min), l_min = ls.minimum()
    centre = float(ls.loss[ls.center_index])
    return (f"What this shows: the loss on a plane through θ* along two random directions, "
            f"each filter scaled to the norm of θ*'s matching filter (Li et al., 2018), so "
            f"distances are comparable between layers and nets. Loss at θ* (centre) "
            f"{centre:.4g}; lowest grid value {l_min:.4g} at (α, β) = ({a_min:.2g}, {b_min:.2g})."
            f" Details: {caption(ls)}.")


def landscape_section(run: Run) -> Section | None:
    """1-D lines, 2-D planes (contour + interactive 3-D surface) and the trajectory plane."""
    from shenjing.analysis.landscape import load_landscape
    from shenjing.plot.landscape import surface_plotly

    folder = run.path / "landscapes"
    files = sorted(p for p in folder.glob("*.npz") if p.name.startswith(("line-", "plane-", "trajectory-"))
                   and not p.name.endswith(".directions.npz"))
    if not files:
        return None
    blocks: list[Any] = []
    figures = run.path / "figures"
    for path in files:
        ls = load_landscape(path)
        stem = path.stem
        if ls.kind == "line" or len(ls.axes) == 1:
            blocks.append(image_block(figures / f"landscape-{stem}.png", _line_caption(ls)))
        elif ls.trajectory is not None:
            ev = ls.meta.get("directions", {}).get("explained_variance_ratio", [])
            share = f" They explain {sum(ev):.0%} of the trajectory's variance." if ev else ""
            blocks.append(image_block(
                figures / f"landscape-{stem}.png",
                "What this shows: the training trajectory (one point per saved epoch) "
                "projected on the plane of its two main PCA directions, over the loss there."
                + share))
        else:
            blocks.append(image_block(figures / f"landscape-{stem}-contour.png",
                                      _plane_caption(ls)))
            blocks.append(plotly_block(
                surface_plotly(ls, title=f"loss surface around θ* ({stem})"),
                f"surface-{stem}", "Drag to rotate, scroll to zoom. The same grid as the "
                "contour above, as a surface: a wide, flat bowl suggests a flat minimum.",
                height=560, tag="surface"))
    return Section("landscape", "Loss landscape", [b for b in blocks if b is not None],
                   intro="Evaluated in eval mode (dropout off, BatchNorm running statistics), "
                         "on the test split.")


def hessian_section(run: Run) -> Section | None:
    """Top Hessian eigenvalues, trace, spectral density, sharpness across epochs."""
    from shenjing import _io

    folder = run.path / "landscapes"
    files = sorted(folder.glob("hessian-e*.json"))
    if not files:
        return None
    blocks: list[Any] = []
    for path in files:
        summary = _io.read_json(path)
        tops = summary.get("top_eigenvalues", [])
        rows = [[f"λ{i + 1}", float(v)] for i, v in enumerate(tops)]
        trace = summary.get("trace")
        text = ""
        if isinstance(trace, dict) and "mean" in trace:
            lo, hi = trace.get("ci95", [None, None]) if "ci95" in trace else (None, None)
            rows.append(["trace (Hutchinson)", float(trace["mean"])])
            if lo is not None:
                text = f" Trace {trace['mean']:.4g} (95% interval {lo:.4g} to {hi:.4g})."
        epoch = path.stem.split("-e")[-1]
        lead = f"{tops[0]:.4g}" if tops else "?"
        blocks.append(Table(["quantity", "value"], rows,
                            caption=f"What this shows: the curvature of the loss at epoch "
                                    f"{int(epoch)}: the largest Hessian eigenvalue ({lead}) "
                                    f"measures sharpness; larger means a sharper minimum."
                                    + text))
        blocks.append(image_block(run.path / "figures" / f"hessian-density-e{epoch}.png",
                                  "What this shows: the estimated eigenvalue density of the "
                                  "Hessian (stochastic Lanczos quadrature); mass far from 0 "
                                  "means strongly curved directions."))
    curve = folder / "sharpness-epochs.json"
    if curve.exists():
        data = _io.read_json(curve)
        blocks.append(image_block(run.path / "figures" / "sharpness-epochs.png",
                                  "What this shows: the top Hessian eigenvalue at every saved "
                                  f"epoch (from {data['top_eigenvalue'][0]:.3g} to "
                                  f"{data['top_eigenvalue'][-1]:.3g})."))
    return Section("hessian", "Sharpness (Hessian)", [b for b in blocks if b is not None])


def fit_section(run: Run) -> Section | None:
    return None


def warp_section(run: Run) -> Section | None:
    return None
