"""Report section ``hessian``: top eigenvalues, trace, density and sharpness across epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shenjing.report.blocks import Section, Table, image_block
from shenjing.report.sections._files import json_files, json_or_note
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def hessian_section(run: Run) -> Section | None:
    """Top Hessian eigenvalues, trace, spectral density, sharpness across epochs."""
    files, notes = json_files(run, "landscapes", "hessian-e*.json")
    if not files and not notes:
        return None
    blocks: list[Any] = list(notes)
    for file, summary in files:
        path = Path(file.name)
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
        blocks.append(image_block(run, f"figures/hessian-density-e{epoch}.png",
                                  "What this shows: the estimated eigenvalue density of the "
                                  "Hessian (stochastic Lanczos quadrature); mass far from 0 "
                                  "means strongly curved directions."))
    data = json_or_note(run, "landscapes/sharpness-epochs.json", blocks)
    if data is not None:
        blocks.append(image_block(run, "figures/sharpness-epochs.png",
                                  "What this shows: the top Hessian eigenvalue at every saved "
                                  f"epoch (from {data['top_eigenvalue'][0]:.3g} to "
                                  f"{data['top_eigenvalue'][-1]:.3g})."))
    return Section("hessian", SECTION_TITLES["hessian"], [b for b in blocks if b is not None])
