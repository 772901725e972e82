"""Report section ``fit``: the net against polynomials, in and beyond the training range."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Section, Table
from shenjing.report.run_files import read_run_json
from shenjing.report.sections._files import figure_block
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def fit_section(run: Run) -> Section | None:
    """Seed 001's study: the net's fit vs polynomial interpolation, and its ReLU pieces."""
    summary = read_run_json(run, "fit/summary.json")
    if summary is None:
        return None
    errors = summary.get("errors", {})
    rows = [[label, *(e.get(k) if e.get(k) is not None else float("inf")
                      for k in ("rmse_in", "max_in", "rmse_out", "max_out"))]
            for label, e in errors.items()]
    net = errors.get("net", {})
    dec = summary.get("decomposition") or {}
    regions = summary.get("regions") or {}
    blocks: list[Any] = [
        figure_block(run, "fit-curve",
             "What this shows: the net's fit (trained on the points inside the shaded range "
             "only) against the true function and polynomials through the same points, in "
             f"the range and beyond it. Net RMSE in range {net.get('rmse_in', float('nan')):.3g}"
             f", beyond it {net.get('rmse_out', float('nan')):.3g}."),
        Table(["approximation", "RMSE in range", "max error in range", "RMSE beyond",
               "max error beyond"], rows,
              caption="Errors of each approximation in the training range and beyond it "
                      "(extrapolation); inf = overflow."),
        figure_block(run, "fit-errors", "What this shows: the absolute error of each approximation "
             "along x (log scale); polynomials oscillate at the edges of the range."),
        figure_block(run, "fit-decomposition",
             "What this shows: the output as the sum of its hidden units, "
             "y(x) = b + Σ vᵢ·relu(wᵢx + bᵢ): each unit is a hinge with its kink at "
             f"−bᵢ/wᵢ. {dec.get('n_active', '?')} of {dec.get('n_units', '?')} units are "
             f"active; the sum equals the net's output to "
             f"{dec.get('max_abs_diff_float32', float('nan')):.1e}." if dec else ""),
        figure_block(run, "fit-regions",
             f"What this shows: the linear pieces of the net along x "
             f"({regions.get('n_regions', '?')} regions, {regions.get('n_in_range', '?')} "
             "inside the training range): a ReLU net is piecewise linear."),
        figure_block(run, "fit-epochs", "What this shows: how the fit took shape, epoch by epoch."),
    ]
    return Section("fit", SECTION_TITLES["fit"], [b for b in blocks if b is not None])
