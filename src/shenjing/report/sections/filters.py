"""Report blocks of the ``filters`` view: kernels and first-layer units as images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shenjing.report.blocks import Note, image_block
from shenjing.report.sections._files import figure_names, json_files
from shenjing.runs import Run


def _filters_caption(rec: dict[str, Any], fig: str, epoch0: str) -> str:
    kind = str(rec.get("kind", ""))
    reference = rec.get("reference_epoch", 0)
    what = {"linear": "each first-layer unit's weights drawn as an image of the input: what "
                      "that hidden unit looks at",
            "conv1d": f"the Conv1d kernels as line plots (dashed: epoch {reference})"}.get(
        kind, "the layer's convolution kernels as small images")
    text = f"What this shows: {what} (layer {rec['layer']}, {Path(fig).stem})."
    change = rec.get("change") or {}
    if change.get("relative_change") is not None:
        since = f"epoch 0 (epoch 0 = {epoch0})" if not reference else f"epoch {reference}"
        text += f" Relative change since {since}: {change['relative_change']:.1%}."
    return text


def filters_blocks(run: Run, epoch0: str) -> tuple[list[Note], list[Any]]:
    """The filters view's warnings and figures (``maps/filters-*.json``), shown in the maps
    section after the feature maps."""
    filters, notes = json_files(run, "maps", "filters-*.json")
    blocks: list[Any] = []
    for _, rec in filters:
        for fig in figure_names(rec):
            blocks.append(image_block(run, fig, _filters_caption(rec, str(fig), epoch0)))
    return notes, blocks
