"""Report section ``recurrent``: what a recurrent layer knows at each step, from the files
the ``recurrent`` stage wrote (``recurrent/recurrent-*.json`` and the figures it lists)."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Note, Section, Table, image_block
from shenjing.report.provenance import epoch0_label
from shenjing.report.sections._files import figure_names, json_files
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def _pct(value: Any) -> str:
    from shenjing.analysis.recurrent import percent_text

    return percent_text(float(value))


def _epochs(rec: dict[str, Any], key: str = "epochs") -> list[str]:
    """The epochs of ``rec[key]`` as the text keys of its tables, in the stage's order (the
    JSON's own keys are sorted as text: "10" before "2")."""
    values = rec.get(key) or []
    return [str(e) for e in values] if isinstance(values, list) else []


def _check_text(rec: dict[str, Any]) -> str:
    check = rec.get("check") or {}
    if "max_abs_error" not in check:
        return ""
    verdict = "reproduce" if check.get("passed") else "do NOT reproduce"
    return (f" The lower layers' states and the gates were recomputed step by step from the "
            f"layer's weights; the recomputation and the module's real output "
            f"({check.get('compared', 'output')}) differ by at most "
            f"{float(check['max_abs_error']):.2g} (tolerance {float(check['tolerance']):.2g}): "
            f"they {verdict} each other.")


def _what(rec: dict[str, Any]) -> str:
    dirs = ", bidirectional" if rec.get("bidirectional") else ""
    return (f"layer {rec.get('layer')} ({rec.get('module_type')}, {rec.get('num_layers')} "
            f"layer(s){dirs}, hidden {rec.get('hidden_size')}, {rec.get('n_steps')} steps)")


def _probe_caption(rec: dict[str, Any], epoch0: str) -> str:
    probe = rec.get("probe") or {}
    marks = probe.get("marked_steps", [])
    at = probe.get("at_marked_steps", {})
    reach = probe.get("reach_step", {})
    parts = [f"epoch {e}: " + " / ".join(f"{v:.3f}" for v in at[e])
             + f" (≥ {probe.get('reach', 0.9):.0%} of its last-step accuracy from step "
             f"{reach.get(e)})" for e in _epochs(rec) if e in at]
    return (f"What this shows: the test accuracy of a linear probe (logistic regression fit "
            f"on h_t of {probe.get('n_train')} train samples, scored on "
            f"{probe.get('n_test')} test samples) at every step t of {_what(rec)}, at "
            f"epochs {', '.join(map(str, rec.get('epochs', [])))} (epoch 0 = {epoch0}): "
            f"after which step the state holds the class. At steps "
            f"{' / '.join(map(str, marks))}: {'; '.join(parts)}. Chance (most frequent "
            f"class): {probe.get('chance', 0):.3f}." + _check_text(rec))


def _gates_caption(rec: dict[str, Any], epoch0: str) -> str:
    sat = rec.get("saturation") or {}
    total = sat.get("total", {})
    names = [g for g in sat.get("gates", []) if isinstance(g, str)]
    parts = [f"epoch {e}: " + ", ".join(f"{g} {_pct(total[e][g]['below'])} | "
                                        f"{_pct(total[e][g]['above'])}"
                                        for g in names if g in total[e])
             for e in _epochs(sat) if e in total]
    gates = " and ".join(names)
    probe = rec.get("probe") or {}
    return (f"What this shows: the share of the {gates} gate values of {_what(rec)} below "
            f"{sat.get('low', 0.1):g} (nearly shut) | above {sat.get('high', 0.9):g} (nearly "
            f"open), over {probe.get('n_test')} test samples, every step and unit, by epoch "
            f"(epoch 0 = {epoch0}): {'; '.join(parts)}." + _check_text(rec))


def _trajectories_caption(rec: dict[str, Any], epoch0: str) -> str:
    paths = rec.get("trajectories") or {}
    variance = paths.get("explained_variance", [])
    shares = ", ".join(f"{sum(v):.0%} of the variance at epoch {e}" for e, v in
                       zip(paths.get("epochs", []), variance, strict=False))
    return (f"What this shows: the top layer's hidden state h_t of {paths.get('n_shown')} "
            f"test samples (a few per class) as paths over the {rec.get('n_steps')} steps of "
            f"{_what(rec)}, in the 2-D PCA fitted on every step's state of "
            f"{(rec.get('probe') or {}).get('n_test')} test samples, one panel per epoch "
            f"(epoch 0 = {epoch0}); colour = class, ○ first step, ● last step. The two "
            f"components explain {shares}." + _check_text(rec))


def _table(rec: dict[str, Any]) -> Table | None:
    probe = rec.get("probe") or {}
    marks = probe.get("marked_steps", [])
    at = probe.get("at_marked_steps", {})
    if not at:
        return None
    sat = (rec.get("saturation") or {}).get("total", {})
    gates = (rec.get("saturation") or {}).get("gates", [])
    low, high = ((rec.get("saturation") or {}).get(k, d) for k, d in (("low", 0.1),
                                                                      ("high", 0.9)))
    columns = ["epoch", *[f"probe at step {s}" for s in marks], "90 % of last step from",
               *[f"{g} < {low:g} | > {high:g}" for g in gates]]
    rows = []
    for e in (e for e in _epochs(rec) if e in at):
        cells: list[Any] = [e, *[round(float(v), 3) for v in at[e]],
                            (probe.get("reach_step") or {}).get(e)]
        for g in gates:
            v = sat.get(e, {}).get(g)
            cells.append(f"{_pct(v['below'])} | {_pct(v['above'])}" if v else "–")
        rows.append(cells)
    return Table(columns, rows, caption=f"Probe accuracy of h_t and gate saturation of "
                 f"{rec.get('layer')} (top layer).")


def recurrent_section(run: Run) -> Section | None:
    """Probe accuracy by step, gate saturation by epoch and PCA trajectories of each
    recurrent layer the stage studied."""
    if not (run.path / "recurrent").is_dir():
        return None
    epoch0 = epoch0_label(run)
    records, notes = json_files(run, "recurrent", "recurrent-*.json")
    blocks: list[Any] = list(notes)
    captions = {"probe": _probe_caption, "gates": _gates_caption,
                "trajectories": _trajectories_caption}
    for _, rec in records:
        if not isinstance(rec, dict):
            continue
        check = rec.get("check") or {}
        if check and not check.get("passed", True):
            blocks.append(Note(f"The step-by-step recomputation of {rec.get('layer')} does "
                               "not reproduce its real output: the lower layers' states and "
                               "the gates shown are not the module's.", level="warning"))
        for fig in figure_names(rec):
            kind = str(fig).rsplit("-", 1)[-1].removesuffix(".png")
            make = captions.get(kind)
            text = make(rec, epoch0) if make else "What this shows: a figure of the " \
                "recurrent view."
            blocks.append(image_block(run, fig, text))
        blocks.append(_table(rec))
    blocks = [b for b in blocks if b is not None]
    return Section("recurrent", SECTION_TITLES["recurrent"], blocks) if blocks else None
