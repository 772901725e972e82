"""Report section ``landscape``: loss lines, planes and the trajectory plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shenjing.report.blocks import Section, image_block, plotly_block, skipped_note
from shenjing.report.provenance import epoch0_label
from shenjing.report.run_files import run_glob
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def _line_caption(ls: Any, epoch0: str) -> str:
    from shenjing.plot.landscape import caption

    axis = ls.axes[0]
    loss = np.where(ls.done & np.isfinite(ls.loss), ls.loss, np.nan)
    i0, i1 = int(np.argmin(np.abs(axis))), int(np.argmin(np.abs(axis - 1.0)))
    inside = loss[(axis >= 0) & (axis <= 1)]
    steps = np.diff(inside[np.isfinite(inside)])
    monotone = bool(steps.size) and bool(np.all(steps <= 1e-9))
    return (f"What this shows: the loss along the straight line from the weights of epoch 0, "
            f"θ₀ (α = 0; epoch 0 = {epoch0}), to the trained θ* (α = 1), and beyond. Loss "
            f"{loss[i0]:.4g} at θ₀, "
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

    kinds = ("line-", "plane-", "trajectory-")
    found, refused = run_glob(run, "landscapes", "*.npz")
    files = [f for f in found if Path(f.name).name.startswith(kinds)
             and not f.name.endswith(".directions.npz")]
    refused = [r for r in refused if Path(r.name).name.startswith(kinds)
               and not r.name.endswith(".directions.npz")]
    if not files and not refused:
        return None
    blocks: list[Any] = [skipped_note(r) for r in refused]
    for file in files:
        assert file.path is not None
        ls = load_landscape(file.path)
        stem = Path(file.name).stem
        if ls.kind == "line" or len(ls.axes) == 1:
            blocks.append(image_block(run, f"figures/landscape-{stem}.png",
                                      _line_caption(ls, epoch0_label(run))))
        elif ls.trajectory is not None:
            ev = ls.meta.get("directions", {}).get("explained_variance_ratio", [])
            share = f" They explain {sum(ev):.0%} of the trajectory's variance." if ev else ""
            blocks.append(image_block(
                run, f"figures/landscape-{stem}.png",
                "What this shows: the training trajectory (one point per saved epoch) "
                "projected on the plane of its two main PCA directions, over the loss there."
                + share))
        else:
            blocks.append(image_block(run, f"figures/landscape-{stem}-contour.png",
                                      _plane_caption(ls)))
            blocks.append(plotly_block(
                surface_plotly(ls, title=f"loss surface around θ* ({stem})"),
                f"surface-{stem}", "Drag to rotate, scroll to zoom. The same grid as the "
                "contour above, as a surface: a wide, flat bowl suggests a flat minimum.",
                height=560, tag="surface"))
    return Section("landscape", SECTION_TITLES["landscape"], [b for b in blocks if b is not None],
                   intro="Evaluated in eval mode (dropout off, BatchNorm running statistics), "
                         "on the test split.")
