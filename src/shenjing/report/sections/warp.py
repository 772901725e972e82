"""Report section ``warp``: how each layer bends 2-D space, probes and the decision boundary."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Section, Table
from shenjing.report.sections._files import figure_block, json_files
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def warp_section(run: Run) -> Section | None:
    """How each layer bends a 2-D grid, and the linear separability at each layer."""
    files, notes = json_files(run, "warp", "warp-e*.json")
    if not files:
        return Section("warp", SECTION_TITLES["warp"], list(notes)) if notes else None
    data = files[-1][1]
    epoch = f"{int(data['epoch']):03d}"
    layers = data.get("layers", [])
    probes = [(layer["layer"], layer.get("probe_test_accuracy")) for layer in layers]
    first = probes[0][1] if probes else None
    last_hidden = data.get("last_hidden")
    last = dict(probes).get(last_hidden) if last_hidden else None
    rows = [[layer["layer"], layer["kind"], layer["features"], layer["projection"],
             layer.get("probe_test_accuracy")] for layer in layers]
    blocks: list[Any] = [
        figure_block(run, f"warp-layers-e{epoch}",
             "What this shows: a regular grid of the input plane and the data, as each layer "
             "transforms them (linear layers rotate, stretch and shift; ReLUs fold); layers "
             "wider than 2 are projected on their first two principal components (stated in "
             "each panel)."),
        figure_block(run, f"warp-probes-e{epoch}",
             "What this shows: how linearly separable the classes are at each layer "
             "(accuracy of a logistic-regression probe on held-out points): "
             f"{first if first is None else round(first, 3)} at the input, "
             f"{last if last is None else round(last, 3)} at the last hidden layer "
             f"(chance {data.get('chance', 0.5):.2f})."),
        Table(["layer", "kind", "features", "2-D view", "probe accuracy (test)"], rows),
        figure_block(run, f"warp-boundary-e{epoch}",
             "What this shows: the decision boundary the net draws in the input plane."),
        *notes,
    ]
    return Section("warp", SECTION_TITLES["warp"], [b for b in blocks if b is not None])
