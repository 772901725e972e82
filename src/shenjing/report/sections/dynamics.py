"""Report section ``dynamics``: how the weights moved, from ``dynamics/dynamics.json``."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Note, Section
from shenjing.report.provenance import epoch0_label
from shenjing.report.run_files import read_run_json
from shenjing.report.sections._files import LISTED, figure_block, listed_names
from shenjing.report.sections.weights import weights_blocks
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def dynamics_section(run: Run) -> Section | None:
    """How the weights moved: per-layer norms, update ratios, gradients, dead units."""
    data = read_run_json(run, "dynamics/dynamics.json")
    if data is None:
        return None
    status = data.get("status", {})
    moving, settled = status.get("moving", []), status.get("settled", [])
    ratios = status.get("last_update_ratio", {}) or {}
    known = sorted(((v, k) for k, v in ratios.items() if v is not None), reverse=True)
    ratio_text = ", ".join(f"{k} {v:.2g}" for v, k in known[:LISTED])
    if len(known) > LISTED:
        ratio_text = f"largest {ratio_text} ({len(known)} layers in all, in the figure)"
    coverage = _coverage_note(data.get("coverage"))
    blocks: list[Any] = [
        coverage,
        figure_block(run, "dynamics-layers",
             "What this shows: per layer and epoch, the weight norm, the relative update "
             "‖Δw‖/‖w‖ (how far an epoch moved the weights, relative to their size; log "
             "scale), the gradient norm, the distance and cosine to the weights of epoch 0 "
             f"(epoch 0 = {epoch0_label(run)}), and the fraction of dead ReLU units. Last "
             f"relative updates: {ratio_text or 'n/a'}."),
        figure_block(run, "dynamics-status",
             "What this shows: which layers still move and which have settled (log10 of "
             f"‖Δw‖/‖w‖ per layer and epoch). Still moving: {listed_names(moving)}; "
             f"settled: {listed_names(settled)}."),
        *weights_blocks(run),
    ]
    for w in status.get("warnings", []):
        blocks.append(Note(str(w.get("message", w)), level="warning"))
    return Section("dynamics", SECTION_TITLES["dynamics"], [b for b in blocks if b is not None])


def _coverage_note(coverage: Any) -> Note | None:
    """What share of the model's parameters the per-layer dynamics track (and which not)."""
    if not isinstance(coverage, dict) or not coverage.get("n_total"):
        return None
    n_tracked, n_total = int(coverage.get("n_tracked", 0)), int(coverage["n_total"])
    share = float(coverage.get("share", n_tracked / n_total))
    text = (f"The per-layer dynamics cover {n_tracked:,} of the model's {n_total:,} "
            f"parameters ({share:.1%}).")
    untracked = [str(u) for u in coverage.get("untracked", []) or []]
    if untracked:
        text += f" Not tracked: {listed_names(untracked)}."
    return Note(text, level="info" if share >= 0.999 else "warning")
