"""Report section ``visualize``: the images each unit would like to see, from the files the
``visualize`` stage wrote (``visualize/summary.json`` and the figures it lists), with the
activation each image reached next to the best real test input's."""

from __future__ import annotations

import re
from typing import Any

from shenjing.report.blocks import Section, Table, image_block
from shenjing.report.sections._files import figure_names, json_or_note, number
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

_FIGURE = re.compile(r"visualize-.+-e(\d+)\.png$")


def _num(value: Any, fmt: str = ".3g") -> str:
    """:func:`number` at three significant digits: activations span many magnitudes."""
    return number(value, fmt)


def _caption(rec: dict[str, Any], epoch: str) -> str:
    one = (rec.get("per_epoch") or {}).get(epoch) or {}
    t = one.get("transforms") or {}
    moves = (f"a random shift of up to {t.get('jitter_px')} px, scale "
             f"{'–'.join(_num(s) for s in t.get('scale') or [])} and rotation up to "
             f"±{_num(t.get('rotate_deg'))}° at every step" if t else "no transforms")
    units = one.get("units") or []
    parts = [f"unit {u.get('unit')}: {_num(u.get('reached'))} vs {_num(u.get('best_real'))}"
             for u in units]
    return (f"What this shows: for each unit of {rec.get('layer')} at epoch {epoch}, the "
            f"input optimised to maximise its mean activation ({one.get('steps')} Adam steps, "
            f"lr {_num(one.get('lr'))}, seed {one.get('seed')}; {one.get('parametrisation')};"
            f" {moves}; Olah et al., Distill 2017). Black and white are the data's black and "
            f"white pixels. Each title gives the activation the final image reached, the "
            f"best real test input's, and their ratio. Reached vs best real: "
            + "; ".join(parts) + ".")


def _table(rec: dict[str, Any]) -> Table | None:
    rows = []
    for epoch, one in (rec.get("per_epoch") or {}).items():
        for u in one.get("units") or []:
            rows.append([epoch, u.get("unit"), _num(u.get("reached")), _num(u.get("noise")),
                         _num(u.get("best_real")), u.get("best_index", "?"),
                         _num(u.get("ratio"), ".2f")])
    if not rows:
        return None
    return Table(["epoch", "unit", "reached", "noise image", "best real", "test input",
                  "ratio"], rows, caption="The activation each optimised image reached, a "
                 "uniform-noise image's, and the best real test input's (its position in "
                 "the test split); ratio = reached / best real (blank when best real ≤ 0).")


def visualize_section(run: Run) -> Section | None:
    """The visualize stage's figures with their numbers."""
    if not (run.path / "visualize").is_dir():
        return None
    blocks: list[Any] = []
    rec = json_or_note(run, "visualize/summary.json", blocks)
    if not isinstance(rec, dict):
        return Section("visualize", SECTION_TITLES["visualize"], blocks) if blocks else None
    for fig in figure_names(rec):
        m = _FIGURE.search(str(fig))
        epoch = str(int(m.group(1))) if m else ""
        blocks.append(image_block(run, fig, _caption(rec, epoch)))
    table = _table(rec)
    if table is not None:
        blocks.append(table)
    blocks = [b for b in blocks if b is not None]
    intro = (f"{len((rec.get('options') or {}).get('channels') or [])} unit(s) of layer "
             f"{rec.get('layer')}, epochs {', '.join(map(str, rec.get('epochs') or []))}.")
    return Section("visualize", SECTION_TITLES["visualize"], blocks,
                   intro=intro) if blocks else None
