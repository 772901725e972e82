"""Report section ``units``: each unit's top real inputs (crops under its receptive field),
epoch 0 next to trained, with the activation, label and class purity next to every picture."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Section, Table, image_block
from shenjing.report.provenance import epoch0_label
from shenjing.report.sections._files import figure_names, json_files
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

#: units listed in a table per layer and epoch
TABLE_UNITS = 16


def _caption(rec: dict[str, Any], epoch0: str) -> str:
    rf = rec.get("receptive_field")
    where = (f"the crop of each input under the unit's receptive field "
             f"({'×'.join(map(str, rf['size']))} px, stride {'×'.join(map(str, rf['stride']))};"
             " measured from the gradient, clipped at the image border)"
             if rf else "the whole inputs (this layer's units have no spatial map)")
    epoch = rec.get("epoch")
    when = f"epoch {epoch}" + (f" (epoch 0 = {epoch0})" if epoch == 0 else "")
    units = rec.get("units", [])
    purity = [u["purity"] for u in units if isinstance(u, dict) and "purity" in u]
    pure = (f" Mean class purity of the top {rec.get('k')}: "
            f"{sum(purity) / len(purity):.2f} of {rec.get('k')}." if purity else "")
    return (f"What this shows: for each unit of layer {rec.get('layer')} at {when}, the "
            f"{rec.get('k')} of {rec.get('n_samples')} {rec.get('split', 'test')} inputs "
            f"with the largest {rec.get('reduce')} activation — {where}. Each picture's "
            "title is its activation and label; next to each unit, how many of its top "
            f"inputs share the most common label (purity).{pure}")


def _table(rec: dict[str, Any]) -> Table | None:
    units = [u for u in rec.get("units", []) if isinstance(u, dict)][:TABLE_UNITS]
    if not units:
        return None
    rows = [[u.get("unit"), f"{u['values'][0]:.4g}" if u.get("values") else "",
             u.get("purity", ""), u.get("majority", "")] for u in units]
    return Table(["unit", "best activation", f"purity (of {rec.get('k')})", "common label"],
                 rows, caption=f"{rec.get('layer')}, epoch {rec.get('epoch')}: the numbers "
                 "of the figure above (first units).")


def units_section(run: Run) -> Section | None:
    """What each unit responds to: top inputs per unit, epoch 0 next to trained."""
    if not (run.path / "units").is_dir():
        return None
    epoch0 = epoch0_label(run)
    found, notes = json_files(run, "units", "units-*.json")
    blocks: list[Any] = [*notes]
    for _, rec in sorted(found, key=lambda f: (str(f[1].get("layer")), f[1].get("epoch", 0))
                         if isinstance(f[1], dict) else ("", 0)):
        if not isinstance(rec, dict):
            continue
        for fig in figure_names(rec):
            blocks.append(image_block(run, fig, _caption(rec, epoch0)))
        blocks.append(_table(rec))
    blocks = [b for b in blocks if b is not None]
    return Section("units", SECTION_TITLES["units"], blocks) if blocks else None
