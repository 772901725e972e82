"""The page of a comparison: ``OUT/report.html`` from ``OUT/compare.json`` and its figures.

Built from the comparison folder's files alone (written by
:func:`shenjing.stages.compare.compare`), with the report's own pieces (sections, figures,
tables, notes; Jinja2 with autoescaping): every figure has its numbers in a table beside it,
and every string (run names, paths, layer names, messages) is escaped by the template.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shenjing import _io
from shenjing.errors import RunError
from shenjing.report.blocks import Image, Note, Section, Table, png_data_uri
from shenjing.report.render import render_report, write_html

COMPARE_FILE = "compare.json"


def _figure(folder: Path, name: Any, caption: str) -> Image | Note | None:
    """The comparison's own PNG ``name`` (relative, inside ``folder``), inlined; a warning
    Note for a path that leaves the folder or is not a regular file."""
    if not name:
        return None
    rel = Path(str(name))
    path = folder / rel
    inside = not rel.is_absolute() and ".." not in rel.parts
    if not inside or path.is_symlink() or not path.is_file() or path.suffix != ".png":
        return Note(f"figure {name!s} was not shown: it is not a PNG file inside {folder}",
                    level="warning")
    return Image(src=png_data_uri(path), caption=caption, alt=rel.stem)


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _runs_section(s: dict[str, Any]) -> Section:
    rows = [[r["label"], r["model"], r["data"], r.get("optimizer"), _num(r.get("lr")),
             _num(r.get("momentum")), r.get("loss"), r.get("epoch"),
             _num(r.get("test_loss")), _num(r.get("test_accuracy")), r["path"]]
            for r in s["runs"]]
    blocks: list[Any] = [Table(["run", "model", "data", "optimizer", "lr", "momentum", "loss",
                                "epoch compared", "final test loss", "final test accuracy",
                                "folder"], rows)]
    st = s["settings"]
    blocks.append(Note(
        f"Same settings for every run: plane {st['steps']}×{st['steps']} over "
        f"{st['range'][0]:g}…{st['range'][1]:g} along filter-normalized directions of seed "
        f"{st['seed']}; lines of {st['line_steps']} points; the loss, Hessian, CKA and probe "
        f"test features on {st['samples'] if st['samples'] is not None else 'all'} test "
        f"samples (subset seed {st['sample_seed']}); Δ = {st['delta']:g}."))
    for view, why in s.get("not_compared", {}).items():
        blocks.append(Note(f"Not compared — {view}: {why}", level="warning"))
    for text in s.get("notes", []):
        blocks.append(Note(text, level="warning"))
    if s.get("computed"):
        blocks.append(Table(["computed for this comparison"], [[c] for c in s["computed"]]))
    if s.get("reused"):
        blocks.append(Table(["reused from the runs"], [[c] for c in s["reused"]]))
    for text in s.get("verdict", {}).values():
        blocks.append(Note(text))
    return Section("runs", "Runs compared", blocks)


def _curves_section(folder: Path, s: dict[str, Any]) -> Section | None:
    views = s["views"]
    blocks: list[Any] = []
    if "curves" in views:
        blocks.append(_figure(folder, views["curves"]["figure"],
                              "Training curves overlaid: loss (train dashed, test solid, log "
                              "scale) and test accuracy per epoch."))
        rows = []
        for label, c in views["curves"]["runs"].items():
            for i, ep in enumerate(c["epoch"]):
                rows.append([label, ep, _num(c["train_loss"][i]), _num(c["test_loss"][i]),
                             _num(c["test_accuracy"][i])])
        blocks.append(Table(["run", "epoch", "train loss", "test loss", "test accuracy"], rows))
    if "dynamics" in views:
        d = views["dynamics"]
        blocks.append(_figure(folder, d["figure"],
                              "Per-layer dynamics overlaid: update ratio ‖w − w_prev‖/‖w_prev‖ "
                              "and mean gradient norm per epoch, one column per parameter "
                              "group."))
        rows = []
        for label, per in d["runs"].items():
            for layer in d["layers"]:
                v = per.get(layer)
                if v:
                    rows.append([label, layer, _num(_last(v["update_ratio"])),
                                 _num(_last(v["grad_norm"])), _num(_last(v["dist_from_init"]))])
        blocks.append(Table(["run", "layer", "update ratio (last epoch)",
                             "grad norm (last epoch)", "‖w − w₀‖/‖w₀‖ (last epoch)"], rows))
    blocks = [b for b in blocks if b is not None]
    return Section("training", "Training curves and per-layer dynamics", blocks) \
        if blocks else None


def _last(values: list[Any]) -> Any:
    found = [v for v in values if v is not None]
    return found[-1] if found else None


def _landscape_section(folder: Path, s: dict[str, Any]) -> Section | None:
    views = s["views"]
    blocks: list[Any] = []
    if "lines" in views:
        blocks.append(_figure(folder, views["lines"]["figure"],
                              "Loss along the straight line from the untrained weights θ₀ "
                              "(α = 0) to the trained θ* (α = 1), every run on one axis."))
        blocks.append(Table(["run", "loss at θ₀", "loss at θ*", "barrier between (max − "
                             "higher end)"],
                            [[k, _num(r["loss_start"]), _num(r["loss_end"]),
                              _num(r["barrier"])] for k, r in views["lines"]["runs"].items()]))
    if "planes" in views:
        p = views["planes"]
        cs = p["color_scale"]
        blocks.append(_figure(
            folder, p["figure"],
            f"Filter-normalized loss planes around each θ* (red star) on one log colour scale "
            f"({cs['vmin']:.4g} … {cs['vmax']:.4g}) and the same axes; the white contour is "
            "each run's level loss(θ*) + Δ, whose enclosed area is the minimum's width."))
        if p.get("grids") and cs["vmin"] is not None and cs["vmin"] > 0:
            from shenjing.plot.compare import planes_plotly
            from shenjing.report.blocks import plotly_block

            blocks.append(plotly_block(
                planes_plotly(p["grids"], vmin=cs["vmin"], vmax=cs["vmax"]), "compare-planes",
                "The same planes, interactive: hover for a point's loss; one colour axis "
                "(log10 loss) for all runs.", height=420, tag="planes"))
        rows = [[k, _num(b["center_loss"]), _num(b["min_loss"]), _num(b["level"]),
                 _num(b["area"]), _num(b["fraction"]), _num(b["common_level"]),
                 _num(b["area_common"]), _num(b["border_loss"]), _num(b["depth"])]
                for k, b in p["runs"].items()]
        blocks.append(Table(["run", "loss(θ*)", "min loss on plane", "level loss(θ*)+Δ",
                             "width: area ≤ level", "share of plane", "common level",
                             "area ≤ common level", "mean border loss",
                             "depth: border − loss(θ*)"], rows, caption=p["level_rule"]))
    return Section("landscape", "Loss landscapes side by side", blocks) if blocks else None


def _sharpness_section(folder: Path, s: dict[str, Any]) -> Section | None:
    view = s["views"].get("sharpness")
    if not view:
        return None
    blocks: list[Any] = [_figure(folder, view["figure"],
                                 "Sharpness: top Hessian eigenvalue λ_max and the Hutchinson "
                                 "trace (95 % CI) at the compared epoch; λ_max at every epoch "
                                 "checkpoint.")]
    rows = []
    for k, r in view["runs"].items():
        ci = r.get("trace_ci95") or [None, None]
        rows.append([k, r["epoch"], _num(r["top_eigenvalue"]),
                     ", ".join(f"{v:.4g}" for v in r["top_eigenvalues"]), _num(r["trace"]),
                     f"{ci[0]:.4g} … {ci[1]:.4g}" if ci[0] is not None else "—",
                     r.get("samples")])
    blocks.append(Table(["run", "epoch", "λ_max", "top eigenvalues", "trace", "trace 95 % CI",
                         "samples"], rows))
    per_epoch = [[k, ep, _num(v)] for k, r in view["runs"].items() if r.get("epochs")
                 for ep, v in zip(r["epochs"], r["top_eigenvalue_by_epoch"], strict=True)]
    if per_epoch:
        blocks.append(Table(["run", "epoch", "λ_max"], per_epoch))
    return Section("sharpness", "Sharpness side by side", [b for b in blocks if b is not None])


def _cka_section(folder: Path, s: dict[str, Any]) -> Section | None:
    view = s["views"].get("cka")
    if not view:
        return None
    blocks: list[Any] = []
    if view.get("figure_corresponding"):
        blocks.append(_figure(folder, view["figure_corresponding"],
                              f"Linear CKA between the runs' layers of the same name, on the "
                              f"same {view['n_samples']} test samples (1 = the same "
                              "representation up to rotation and scale)."))
        blocks.append(Table(["runs", *view["shared"]],
                            [[pair, *[_num(v[k]) for k in view["shared"]]]
                             for pair, v in view["corresponding"].items()]))
    if view.get("figure_pair"):
        pair = view["pair"]
        blocks.append(_figure(folder, view["figure_pair"],
                              f"Linear CKA of every layer of {pair['row_run']} (rows) with "
                              f"every layer of {pair['col_run']} (columns)."))
        blocks.append(Table([f"{pair['row_run']} \\ {pair['col_run']}", *pair["cols"]],
                            [[r, *[_num(v) for v in row]]
                             for r, row in zip(pair["rows"], pair["matrix"], strict=True)]))
    blocks = [b for b in blocks if b is not None]
    return Section("cka", "Representations: CKA between the runs", blocks) if blocks else None


def _probes_section(folder: Path, s: dict[str, Any]) -> Section | None:
    view = s["views"].get("probes")
    if not view:
        return None
    blocks: list[Any] = [_figure(
        folder, view["figure"],
        f"Linear-probe test accuracy by layer (logistic regression trained on "
        f"{view['n_train']} training samples' features, scored on {view['n_test']} test "
        "samples).")]
    layers = view["layers"]
    blocks.append(Table(["run", *layers], [[k, *[_num(acc.get(layer)) for layer in layers]]
                                           for k, acc in view["runs"].items()]))
    return Section("probes", "Probe accuracy by layer", [b for b in blocks if b is not None])


def compare_sections(folder: str | os.PathLike[str]) -> list[Section]:
    """The page's sections from ``folder/compare.json`` and ``folder/figures/``."""
    folder = Path(folder)
    path = folder / COMPARE_FILE
    if not path.is_file() or path.is_symlink():
        raise RunError(f"{path} is missing: run `shenjing compare RUN RUN --out {folder}` first")
    s = _io.read_json(path)
    built = [_runs_section(s), _curves_section(folder, s), _landscape_section(folder, s),
             _sharpness_section(folder, s), _cka_section(folder, s), _probes_section(folder, s)]
    return [b for b in built if b is not None and b.blocks]


def build_compare_report(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/report.html`` for the comparison in ``folder`` (atomically)."""
    folder = Path(folder)
    sections = compare_sections(folder)
    s = _io.read_json(folder / COMPARE_FILE)
    labels = [r["label"] for r in s["runs"]]
    html = render_report(sections, title="compared: " + " vs ".join(labels),
                         subtitle=" · ".join(f"{r['label']}: {r['model']} on {r['data']}"
                                             for r in s["runs"]) + f" · {folder}",
                         run_path=folder)
    return write_html(folder / "report.html", html)


__all__ = ["build_compare_report", "compare_sections"]
