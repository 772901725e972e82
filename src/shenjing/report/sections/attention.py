"""Report section ``attention``: what every head looks at, from the files the ``attention``
stage wrote (``attention/summary.json`` and the figures it lists)."""

from __future__ import annotations

import re
from typing import Any

from shenjing.report.blocks import Note, Section, Table, image_block
from shenjing.report.provenance import epoch0_label
from shenjing.report.sections._files import (
    figure_names,
    json_or_note,
    listed_names,
    number,
)
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

_MAPS = re.compile(r"attention-maps-test(\d+)-e(\d+)\.png$")
_ROLLOUT = re.compile(r"attention-rollout-test(\d+)\.png$")
_MATRIX = re.compile(r"attention-matrix-test(\d+)-e(\d+)\.png$")



def _layer_means(values: Any, fmt: str = ".2f") -> list[str]:
    """Per-layer means of a ``(layers, heads)`` list of lists."""
    if not isinstance(values, list):
        return []
    out = []
    for row in values:
        nums = [float(v) for v in row if isinstance(v, (int, float))] \
            if isinstance(row, list) else []
        out.append(format(sum(nums) / len(nums), fmt) if nums else "?")
    return out


def _check_text(rec: dict[str, Any]) -> str:
    check = rec.get("check") or {}
    if "max_error" not in check:
        return ""
    verdict = "reproduces" if check.get("passed") else "does NOT reproduce"
    return (f" Check: each pattern was recomputed from the tensors that fed the attention, "
            f"and pattern @ V {verdict} every layer's real output (largest difference "
            f"{number(check['max_error'], '.2e')}, tolerance "
            f"{number(check.get('tolerance'), '.1e')} times the layer's magnitude).")


def _label(rec: dict[str, Any], index: int) -> str:
    samples, labels = rec.get("samples") or [], rec.get("labels") or []
    if index in samples and samples.index(index) < len(labels):
        return f" (label {labels[samples.index(index)]})"
    return ""


def _stats_text(rec: dict[str, Any], epoch: str) -> str:
    stats = (rec.get("stats") or {}).get(epoch) or {}
    layers = rec.get("layers") or []
    parts = []
    dist = _layer_means(stats.get("distance"))
    ent = _layer_means(stats.get("entropy"))
    for i, name in enumerate(layers):
        bits = []
        if i < len(dist):
            bits.append(f"{dist[i]} px")
        if i < len(ent):
            bits.append(f"{ent[i]} nats")
        if bits:
            parts.append(f"{name} {' / '.join(bits)}")
    return "; ".join(parts)


def _changed_text(rec: dict[str, Any]) -> str:
    change = rec.get("change") or {}
    top = change.get("top_changed") or []
    if not top:
        return ""
    heads = []
    for t in top[:5]:
        text = f"{t.get('layer')} head {t.get('head')} "
        if "distance_before" in t:
            text += (f"{number(t['distance_before'])} → {number(t['distance_after'])} px "
                     f"({t.get('became')}), ")
        heads.append(text + f"entropy {number(t.get('entropy_before'))} → "
                            f"{number(t.get('entropy_after'))} nats ({t.get('focus')})")
    a, b = (change.get("epochs") or ["?", "?"])[:2]
    return (f" From epoch {a} to {b}, heads: {change.get('counts_text', '')}. The heads "
            f"that changed most (by {change.get('ranked_by', '?')}): "
            + "; ".join(heads) + ".")


def _probe_text(rec: dict[str, Any]) -> str:
    probes = rec.get("probe") or {}
    layers = rec.get("layers") or []
    names = {"cls": "CLS token" if (rec.get("layout") or {}).get("n_prefix") else "token 0",
             "mean": "mean patch token"}
    parts = []
    for epoch, p in probes.items():
        if not isinstance(p, dict):
            continue
        for f, acc in (p.get("accuracy") or {}).items():
            if isinstance(acc, list):
                parts.append(f"epoch {epoch}, {names.get(f, f)}: " + ", ".join(
                    f"{name} {number(a, '.1%')}" for name, a in zip(layers, acc, strict=False)))
    if not parts:
        return ""
    first = next(iter(probes.values()))
    return (f"Probe accuracy by layer (logistic regression on {first.get('n_train')} train "
            f"→ {first.get('n_test')} test inputs; chance {number(first.get('chance'), '.1%')}):"
            f" " + "; ".join(parts) + ".")


def _caption(name: str, rec: dict[str, Any], epoch0: str) -> str:
    layout = rec.get("layout") or {}
    n = (rec.get("options") or {}).get("n")
    query = rec.get("map_query") or "CLS"
    grid = layout.get("text", "")
    if m := _MAPS.search(name):
        index, epoch = int(m.group(1)), str(int(m.group(2)))
        check = ((rec.get("check") or {}).get("per_epoch") or {}).get(epoch) or {}
        err = max((float(v) for v in (check.get("error") or {}).values()
                   if isinstance(v, (int, float))), default=float("nan"))
        return (f"What this shows: the attention of the {query} token to every patch, for "
                f"each layer (rows) and head (columns; the first column is the heads' mean), "
                f"over test input {index}{_label(rec, index)} at epoch {epoch} (epoch 0 = "
                f"{epoch0}); colour 0 → each row's maximum. {grid}. Mean distance / entropy "
                f"by layer over {n} test inputs: {_stats_text(rec, epoch)}. Check at this "
                f"epoch: max |pattern @ V − output| {number(err, '.2e')} (tolerance "
                f"{number(check.get('tolerance'), '.1e')}).")
    if m := _ROLLOUT.search(name):
        index = int(m.group(1))
        return (f"What this shows: attention rollout (Abnar & Zuidema, 2020: heads averaged, "
                f"0.5·A + 0.5·I for the residual, rows renormalised, multiplied through all "
                f"{len(rec.get('layers') or [])} layers) — how much each patch reaches the "
                f"{query} token at the last layer — over test input {index}"
                f"{_label(rec, index)}, one panel per epoch "
                f"({', '.join(map(str, rec.get('epochs') or []))}; epoch 0 = {epoch0}).")
    if m := _MATRIX.search(name):
        index, epoch = int(m.group(1)), str(int(m.group(2)))
        why = ("" if layout.get("grid", True) else
               f" The tokens form no patch grid, so this matrix replaces the maps: "
               f"{layout.get('reason')}.")
        return (f"What this shows: the full query × key attention (rows: queries, columns: "
                f"keys, each row sums to 1) of every layer and head for test input {index}"
                f"{_label(rec, index)} at epoch {epoch} (epoch 0 = {epoch0}), "
                f"{layout.get('n_tokens')} tokens.{why}")
    if name.endswith("attention-distance.png"):
        parts = [f"epoch {e}: {_stats_distance(rec, str(e))}" for e in rec.get("epochs") or []]
        return (f"What this shows: the mean attention distance of every head (one dot each) "
                f"by layer, as in Dosovitskiy et al. (2021, Fig. 7): for each query patch, "
                f"the distance in pixels to the patches it attends to, weighted by the "
                f"attention (attention to prefix tokens left out, the rest renormalised), "
                f"averaged over query patches and {n} test inputs. Small = local heads, "
                f"large = global. Layer means: {'; '.join(parts)}." + _changed_text(rec))
    if name.endswith("attention-entropy.png"):
        stats = (rec.get("stats") or {})
        last = stats.get(str((rec.get("epochs") or [""])[-1])) or {}
        parts = [f"epoch {e}: " + ", ".join(_layer_means(
            (stats.get(str(e)) or {}).get("entropy"))) for e in rec.get("epochs") or []]
        return (f"What this shows: the entropy (nats) of every head's attention rows by "
                f"layer, averaged over all queries and {n} test inputs: 0 = each query looks "
                f"at one key, {number(last.get('max_entropy'))} = uniform over "
                f"{last.get('n_keys')} keys (dotted). Layer means: {'; '.join(parts)}."
                + ("" if layout.get("grid", True) else _changed_text(rec)))
    if name.endswith("attention-probe.png"):
        return ("What this shows: how well a linear probe reads the class from each "
                "attention layer's input tokens. " + _probe_text(rec))
    return "What this shows: an attention figure."


def _stats_distance(rec: dict[str, Any], epoch: str) -> str:
    stats = (rec.get("stats") or {}).get(epoch) or {}
    return ", ".join(_layer_means(stats.get("distance"))) + " px"


def _changed_table(rec: dict[str, Any]) -> Table | None:
    change = rec.get("change") or {}
    top = change.get("top_changed") or []
    if not top:
        return None
    a, b = (change.get("epochs") or ["?", "?"])[:2]
    with_distance = "distance_before" in top[0]
    columns = ["layer", "head"] + ([f"distance e{a} (px)", f"distance e{b} (px)"]
                                   if with_distance else []) + \
        [f"entropy e{a} (nats)", f"entropy e{b} (nats)"] + \
        (["distance", "entropy"] if with_distance else ["entropy"])
    rows = []
    for t in top:
        row: list[Any] = [t.get("layer"), t.get("head")]
        if with_distance:
            row += [number(t.get("distance_before")), number(t.get("distance_after"))]
        row += [number(t.get("entropy_before")), number(t.get("entropy_after"))]
        row += [t.get("became"), t.get("focus")] if with_distance else [t.get("focus")]
        rows.append(row)
    return Table(columns, rows, caption=f"The heads that changed most from epoch {a} to {b} "
                                        f"(by {change.get('ranked_by', '?')}): "
                                        f"{change.get('counts_text', '')}.")


def attention_section(run: Run) -> Section | None:
    """Maps, rollout, matrices, distance, entropy and probe of the attention stage."""
    if not (run.path / "attention").is_dir():
        return None
    blocks: list[Any] = []
    rec = json_or_note(run, "attention/summary.json", blocks)
    if not isinstance(rec, dict):
        return Section("attention", SECTION_TITLES["attention"], blocks) if blocks else None
    epoch0 = epoch0_label(run)
    layout = rec.get("layout") or {}
    layers = [str(x) for x in rec.get("layers") or []]
    intro = (f"{len(layers)} attention layer(s) × {rec.get('heads')} heads "
             f"({listed_names(layers)}); {layout.get('text', '')}.")
    if layout and not layout.get("grid", True):
        blocks.append(Note(f"The tokens form no patch grid, so the query × key matrices are "
                           f"shown instead of maps over the image, and no attention distance "
                           f"is measured: {layout.get('reason')}.", level="warning"))
    check = rec.get("check") or {}
    if check and not check.get("passed", True):
        blocks.append(Note("The capture's check failed: pattern @ V does not reproduce some "
                           "layer's real output, so these patterns may not be what the model "
                           "used." + _check_text(rec), level="warning"))
    for fig in figure_names(rec):
        blocks.append(image_block(run, fig, _caption(str(fig), rec, epoch0)))
    table = _changed_table(rec)
    if table is not None:
        blocks.append(table)
    if check:
        blocks.append(Note(_check_text(rec).strip()))
    blocks = [b for b in blocks if b is not None]
    return Section("attention", SECTION_TITLES["attention"], blocks,
                   intro=intro) if blocks else None
