"""Report section ``attribute``: what the network looks at, from the files the ``attribute``
stage wrote (``attribute/summary.json`` and the figures it lists), with the checks' numbers
next to every figure and the randomization verdict of each method in words."""

from __future__ import annotations

import re
from typing import Any

from shenjing.report.blocks import Note, Section, Table, image_block
from shenjing.report.sections._files import figure_names, json_or_note, number
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

_MAPS = re.compile(r"attribute-maps-test(\d+)\.png$")
_RANDOM = re.compile(r"attribute-randomization-(.+)\.png$")
_NAMES = {"integrated_gradients": "IG", "gradcam": "Grad-CAM", "saliency": "Saliency",
          "smoothgrad": "SmoothGrad", "occlusion": "Occlusion"}



def method_name(method: Any) -> str:
    """``'integrated_gradients'`` → ``'IG'``; unknown names shown as given."""
    return _NAMES.get(str(method), str(method))


def _first_number(values: Any) -> Any:
    """The first stage's value that is a number (a constant map's Spearman is undefined)."""
    for v in values if isinstance(values, list) else []:
        if isinstance(v, (int, float)):
            return v
    return None


def verdict_text(method: Any, rec: Any) -> str:
    """The randomization verdict in words: ``"IG's maps change as layers are randomized:
    Spearman 0.90 → 0.10"`` or ``"IG FAILS: the maps do not depend on the model …"``."""
    if not isinstance(rec, dict):
        return f"{method_name(method)}: no randomization record."
    sp, ss = rec.get("spearman") or [], rec.get("ssim") or []
    numbers = (f"Spearman {number(_first_number(sp))} → {number(sp[-1] if sp else None)}, SSIM "
               f"{number(_first_number(ss))} → {number(ss[-1] if ss else None)} as "
               f"{len(rec.get('layers') or [])} layers are re-initialised from the output "
               f"down (pass: final Spearman and SSIM both < {number(rec.get('threshold'))}; "
               "partial: one of them)")
    if rec.get("outcome") == "partial":
        return (f"{method_name(method)} passes only in part: as layers are randomized its "
                f"maps change in one measure but keep the other — part of what they show "
                f"is the input, not the model: {numbers}.")
    if rec.get("passed"):
        return f"{method_name(method)}'s maps change as layers are randomized: {numbers}."
    return (f"{method_name(method)} FAILS: the maps do not depend on the model — they stay "
            f"alike when its weights are destroyed: {numbers}.")


def _maps_caption(index: int, rec: dict[str, Any]) -> str:
    samples = (rec.get("options") or {}).get("samples") or []
    pos = samples.index(index) if index in samples else None
    labels = rec.get("labels") or []
    label = f" (label {labels[pos]})" if pos is not None and pos < len(labels) else ""
    parts = []
    for method, by_epoch in (rec.get("maps") or {}).items():
        if not isinstance(by_epoch, dict):
            continue
        for epoch, entry in by_epoch.items():
            if not isinstance(entry, dict) or pos is None:
                continue
            probs = entry.get("probabilities") or []
            targets = entry.get("targets") or []
            bit = (f"{method_name(method)} epoch {epoch}: target "
                   f"{targets[pos] if pos < len(targets) else '?'}, p "
                   f"{number(probs[pos] if pos < len(probs) else None)}")
            comp = entry.get("completeness") or []
            if pos < len(comp):
                bit += f", completeness error {number(comp[pos], '.2%')}"
            parts.append(bit)
    return (f"What this shows: where the network looks for test input {index}{label}: each "
            "method's map on the input (rows: methods, columns: epochs; epoch 0 = the "
            "untrained net). " + "; ".join(parts) + ".")


def _faith_caption(rec: dict[str, Any]) -> str:
    parts = []
    for method, f in (rec.get("faithfulness") or {}).items():
        if isinstance(f, dict):
            parts.append(f"{method_name(method)} deletion AUC "
                         f"{number(f.get('deletion_auc'), '.3f')}"
                         f" (random {number(f.get('deletion_auc_random'), '.3f')}), insertion "
                         f"AUC {number(f.get('insertion_auc'), '.3f')} (random "
                         f"{number(f.get('insertion_auc_random'), '.3f')}) over {f.get('n')} "
                         "inputs")
    return ("What this shows: the target probability as the most-attributed pixels are "
            "removed (deletion: lower area = more faithful) or inserted (insertion: higher = "
            "more faithful), against a random pixel order (Petsiuk et al., 2018). "
            + "; ".join(parts) + ".")


def _caption(name: str, rec: dict[str, Any]) -> str:
    if m := _MAPS.search(name):
        return _maps_caption(int(m.group(1)), rec)
    if m := _RANDOM.search(name):
        method = m.group(1)
        return ("What this shows: the cascading randomization test (Adebayo et al., 2018): "
                "the map as layers are re-initialised, and its Spearman / SSIM to the "
                "trained map. " + verdict_text(method, (rec.get("randomization") or {})
                                              .get(method)))
    if name.endswith("attribute-faithfulness.png"):
        return _faith_caption(rec)
    return "What this shows: an attribution figure."


def _auc_table(rec: dict[str, Any]) -> Table | None:
    faith = rec.get("faithfulness") or {}
    rows = [[method_name(m), number(f.get("deletion_auc"), ".3f"),
             number(f.get("deletion_auc_random"), ".3f"), number(f.get("insertion_auc"), ".3f"),
             number(f.get("insertion_auc_random"), ".3f"), f.get("n")]
            for m, f in faith.items() if isinstance(f, dict)]
    if not rows:
        return None
    return Table(["method", "deletion AUC", "random", "insertion AUC", "random", "inputs"],
                 rows, caption="Deletion / insertion AUCs against a random pixel order: a "
                               "faithful map deletes below random and inserts above it.")


def attribute_section(run: Run) -> Section | None:
    """The maps, the randomization verdicts and the deletion / insertion AUCs of the
    attribute stage."""
    if not (run.path / "attribute").is_dir():
        return None
    blocks: list[Any] = []
    rec = json_or_note(run, "attribute/summary.json", blocks)
    if isinstance(rec, dict) and isinstance(rec.get("extra"), dict):
        rec = rec["extra"]  # the stage's record inside the study's summary
    if not isinstance(rec, dict):
        return Section("attribute", SECTION_TITLES["attribute"], blocks) if blocks else None
    options = rec.get("options") or {}
    methods = [method_name(m) for m in options.get("methods") or []]
    intro = (f"Attribution by {', '.join(methods) or 'no method'} for test inputs "
             f"{', '.join(str(s) for s in options.get('samples') or [])} at epochs "
             f"{', '.join(str(e) for e in rec.get('epochs') or [])}; target: "
             f"{options.get('target')}, baseline: {options.get('baseline')}, IG steps "
             f"{options.get('steps')}, Grad-CAM layer {options.get('layer') or 'none'}.")
    for method, r in (rec.get("randomization") or {}).items():
        passed = isinstance(r, dict) and r.get("outcome", "pass" if r.get("passed") else
                                              "fail") == "pass"
        blocks.append(Note(verdict_text(method, r), level="info" if passed else "warning"))
    for fig in figure_names(rec):
        blocks.append(image_block(run, fig, _caption(str(fig), rec)))
    table = _auc_table(rec)
    if table is not None:
        blocks.append(table)
    blocks = [b for b in blocks if b is not None]
    return Section("attribute", SECTION_TITLES["attribute"], blocks,
                   intro=intro) if blocks else None


__all__ = ["attribute_section", "method_name", "verdict_text"]
