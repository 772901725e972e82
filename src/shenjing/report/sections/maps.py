"""Report section ``maps``: feature maps (epoch 0 next to trained), then the filters view."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Section, image_block
from shenjing.report.provenance import epoch0_label
from shenjing.report.sections._files import figure_names, json_files
from shenjing.report.sections.filters import filters_blocks
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def _maps_caption(rec: dict[str, Any], epoch0: str) -> str:
    change = rec.get("change") or {}
    epochs = rec.get("epochs", [])
    view = rec.get("view", "spatial")
    axes = " × ".join(rec.get("axes") or [])
    n = len(rec.get("channels_shown", []))
    what = {"spatial": f"the {n} channel maps", "grid": f"the {n} channel maps",
            "signal": f"the {axes} signals (heat map, and traces of the most changed "
                      "channels)",
            "sequence": f"the {axes} heat map", "tokens": f"the {axes} heat map",
            "vector": "the activations (a vector)"}.get(view, "the activations")
    text = (f"What this shows: {what} of layer {rec['layer']} for {rec.get('split', 'test')} "
            f"image {rec.get('index')} (label {rec.get('label')}) at epochs "
            f"{', '.join(map(str, epochs))} (epoch 0 = {epoch0}), colour scale "
            f"{rec.get('scale', 'shared')}.")
    if change:
        rel = change.get("relative_change")
        rel_text = (f"{rel:.1%} of their mean magnitude" if rel is not None and rel <= 100
                    else "no relative change: the activations before were nearly zero")
        text += (f" Mean absolute change of the activations between epochs "
                 f"{change.get('epochs', epochs)}: {change.get('mean_abs_change', 0):.4g} "
                 f"({rel_text}).")
        top = change.get("top_changed", [])[:5]
        if top:
            unit = change.get("unit", "channel")
            text += f" The {unit}s that changed most: " + ", ".join(
                str(t.get(unit, t.get("channel"))) for t in top) + "."
    dead = rec.get("dead_channels", {})
    if dead:
        text += " Channels off for this input (no positive value): " + "; ".join(
            f"epoch {e}: {len(v)}" for e, v in dead.items()) + "."
    elif dead is None and rec.get("dead_channels_reason"):
        text += f" 'Off' channels are not counted here: {rec['dead_channels_reason']}."
    return text


def maps_section(run: Run) -> Section | None:
    """Feature maps (epoch 0 next to trained) and filters."""
    if not (run.path / "maps").is_dir():
        return None
    epoch0 = epoch0_label(run)
    maps, maps_notes = json_files(run, "maps", "maps-*.json")
    filters_notes, filters_figures = filters_blocks(run, epoch0)
    blocks: list[Any] = [*maps_notes, *filters_notes]
    for _, rec in maps:
        for fig in figure_names(rec):
            blocks.append(image_block(run, fig, _maps_caption(rec, epoch0)))
    blocks += filters_figures
    blocks = [b for b in blocks if b is not None]
    return Section("maps", SECTION_TITLES["maps"], blocks) if blocks else None
