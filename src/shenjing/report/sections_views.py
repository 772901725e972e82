"""Report sections for the analysis views, each reading the files its stage wrote."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from shenjing.errors import DataError
from shenjing.report.blocks import Note, Section, Table, image_block, plotly_block, skipped_note
from shenjing.report.provenance import epoch0_label
from shenjing.report.run_files import RunFile, read_run_json, run_glob
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run


def _fig(run: Run, stem: str, caption: str) -> Any:
    return image_block(run, f"figures/{stem}.png", caption)


def _json_files(run: Run, folder: str, pattern: str
                ) -> tuple[list[tuple[RunFile, Any]], list[Note]]:
    """The readable JSON files matching ``pattern`` in ``folder`` with their contents, and a
    warning note for each one refused (outside the run, not a file) or not JSON."""
    found, refused = run_glob(run, folder, pattern)
    notes = [skipped_note(r) for r in refused]
    records: list[tuple[RunFile, Any]] = []
    for checked in found:
        try:
            records.append((checked, read_run_json(run, checked.name)))
        except DataError as exc:
            notes.append(Note(str(exc), level="warning"))
    return records, notes


def _json_or_note(run: Run, name: str, blocks: list[Any]) -> Any:
    """The JSON of the run file ``name`` (None if absent); a refused or unreadable file adds
    a warning note to ``blocks`` instead of failing the whole section."""
    try:
        return read_run_json(run, name)
    except DataError as exc:
        blocks.append(Note(str(exc), level="warning"))
        return None


def dynamics_section(run: Run) -> Section | None:
    """How the weights moved: per-layer norms, update ratios, gradients, dead units."""
    data = read_run_json(run, "dynamics/dynamics.json")
    if data is None:
        return None
    status = data.get("status", {})
    moving, settled = status.get("moving", []), status.get("settled", [])
    ratios = status.get("last_update_ratio", {}) or {}
    known = sorted(((v, k) for k, v in ratios.items() if v is not None), reverse=True)
    ratio_text = ", ".join(f"{k} {v:.2g}" for v, k in known[:_LISTED])
    if len(known) > _LISTED:
        ratio_text = f"largest {ratio_text} ({len(known)} layers in all, in the figure)"
    coverage = _coverage_note(data.get("coverage"))
    blocks: list[Any] = [
        coverage,
        _fig(run, "dynamics-layers",
             "What this shows: per layer and epoch, the weight norm, the relative update "
             "‖Δw‖/‖w‖ (how far an epoch moved the weights, relative to their size; log "
             "scale), the gradient norm, the distance and cosine to the weights of epoch 0 "
             f"(epoch 0 = {epoch0_label(run)}), and the fraction of dead ReLU units. Last "
             f"relative updates: {ratio_text or 'n/a'}."),
        _fig(run, "dynamics-status",
             "What this shows: which layers still move and which have settled (log10 of "
             f"‖Δw‖/‖w‖ per layer and epoch). Still moving: {_names(moving)}; "
             f"settled: {_names(settled)}."),
        _fig(run, "weights-histograms",
             "What this shows: each layer's weight distribution at every saved epoch "
             "(one line per epoch); training widens or reshapes it."),
        _fig(run, "weights-stats",
             "What this shows: weight norm, standard deviation and fraction of weights near "
             "zero, per layer and epoch."),
    ]
    for w in status.get("warnings", []):
        blocks.append(Note(str(w.get("message", w)), level="warning"))
    return Section("dynamics", SECTION_TITLES["dynamics"], [b for b in blocks if b is not None])


_LISTED = 8  # names listed in a caption before "and N more": captions stay short at 100 layers


def _names(names: list[str]) -> str:
    """``"fc1, fc2"``; ``"a, b, … h and 54 more"`` for a long list; ``"none"`` for none."""
    if not names:
        return "none"
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


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
        text += f" Not tracked: {_names(untracked)}."
    return Note(text, level="info" if share >= 0.999 else "warning")


_MAP_FILE = re.compile(r"^(?P<key>.+)-(?P<method>tsne|pca|umap)-epoch-(?P<epoch>\d{3,})$")
MAX_POINTS = 5000  # per scatter in the page; larger maps are subsampled (stated)


def _map_caption(key: str, method: str, epoch: int, metrics: dict[str, Any], n: int,
                 shown: int, *, epoch0: str, no_thumbnails: str = "") -> str:
    def num(name: str) -> str:
        v = metrics.get(name)
        return "n/a" if v is None else f"{v:.3f}"

    hover = ("hover a point for its input image" if not no_thumbnails else
             f"hover a point for its class and sample index (no input images: "
             f"{no_thumbnails})")
    text = (f"What this shows: {n} test samples as the {key} layer sees them at epoch {epoch}"
            f"{f' (epoch 0 = {epoch0})' if epoch == 0 else ''}, mapped to 2-D with {method}, "
            f"coloured by class; {hover}. Separability in the layer's own "
            f"feature space: linear-probe accuracy {num('probe_accuracy')}, kNN accuracy "
            f"{num('knn_accuracy')}. Faithfulness of this map: trustworthiness "
            f"{num('trustworthiness')}, kNN recall {num('knn_recall')}.")
    if shown < n:
        text += f" {shown} of the {n} points are drawn."
    return text


def embedding_section(run: Run) -> Section | None:
    """Maps of the hidden features per layer and epoch, with the numbers that keep them
    honest (probe and kNN accuracy in feature space; trustworthiness of the 2-D map)."""
    import json

    from shenjing.plot.interactive import embedding_scatter
    from shenjing.report.blocks import Asset, png_bytes_uri
    from shenjing.report.thumbnails import TILE, sprite_png, thumbnail_inputs

    found, refused = run_glob(run, "embeddings", "*.npz")
    files = [f for f in found if _MAP_FILE.match(Path(f.name).stem)]
    if not files and not refused:
        return None
    blocks: list[Any] = [skipped_note(r) for r in refused]
    inputs = thumbnail_inputs(run)
    classes = run.classes or tuple(str(i) for i in range(10))
    sprite_for: dict[tuple[int, ...], dict[str, Any] | None] = {}
    epoch0 = epoch0_label(run)
    for file in files:
        path = Path(file.name)
        m = _MAP_FILE.match(path.stem)
        assert m is not None and file.path is not None
        with np.load(file.path, allow_pickle=False) as z:
            coords, indices = z["coords"], z["indices"]
            labels = z["labels"] if "labels" in z.files else np.zeros(len(coords), int)
            metrics = json.loads(str(z["metrics"])) if "metrics" in z.files else {}
        keep = np.arange(len(coords))
        if len(keep) > MAX_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(keep), MAX_POINTS, False))
        ids = tuple(int(i) for i in indices[keep])  # sample ids in the source files
        if ids not in sprite_for:
            sheet = sprite_png(inputs, ids)
            sprite_for[ids] = None
            if sheet is not None:
                asset_id = f"sprite-{sum(1 for b in blocks if b.kind == 'asset')}"
                blocks.append(Asset(asset_id, png_bytes_uri(sheet[0])))
                sprite_for[ids] = {"asset": asset_id, "tile": TILE, "cols": sheet[1], "zoom": 2}
        sprite = sprite_for[ids]
        missing = "" if sprite is not None else (
            inputs.missing or "the map's samples are not in the run's test split")
        epoch = int(m["epoch"])
        fig = embedding_scatter(coords[keep], labels[keep], classes, np.asarray(ids),
                                title=f"{m['key']} · {m['method']} · epoch {epoch}")
        blocks.append(plotly_block(
            fig, f"emb-{path.stem}", _map_caption(m["key"], m["method"], epoch, metrics,
                                                  len(coords), len(keep), epoch0=epoch0,
                                                  no_thumbnails=missing),
            height=520, hover_sprite=sprite, tag="embedding"))
    sep = _json_or_note(run, "embeddings/separability.json", blocks)
    if sep is not None:
        base = sep.get("input", {})
        rows = [["input pixels", "—", base.get("probe_accuracy"), base.get("knn_accuracy")]]
        rows += [[r["layer"], r["epoch"], r.get("probe_accuracy"), r.get("knn_accuracy")]
                 for r in sep.get("records", [])]
        blocks.append(Table(["features", "epoch", "linear-probe accuracy", "kNN accuracy"],
                            rows, caption="What this shows: how separable the classes are in "
                            "each layer's own feature space (probe trained on the train split, "
                            "scored on the test split), against the raw input pixels. "
                            + str(sep.get("note", ""))))
        blocks.append(_fig(run, "separability-probe", "What this shows: linear-probe accuracy "
                           "by layer and epoch, with the input pixels as the baseline."))
    cka_found, cka_refused = run_glob(run, "figures", "cka-*.png")
    grid_found, grid_refused = run_glob(run, "figures", "embedding-grid-*.png")
    blocks += [skipped_note(r) for r in (*cka_refused, *grid_refused)]
    for cka_png in cka_found:
        blocks.append(image_block(run, cka_png.name, _cka_caption(Path(cka_png.name).stem)))
    for grid_png in grid_found:
        blocks.append(image_block(run, grid_png.name, "What this shows: every layer × epoch "
                                  "map side by side (maps aligned across epochs, so clusters "
                                  "can be followed)."))
    return Section("embeddings", SECTION_TITLES["embeddings"],
                   [b for b in blocks if b is not None],
                   intro="Separability is measured in the layer's full feature space; the 2-D "
                         "maps are pictures whose faithfulness is measured separately.")


_CKA_FILE = re.compile(r"^cka-(?P<kind>layers|epochs|runs)-(?P<rest>.+)$")


def _cka_caption(stem: str) -> str:
    """The caption of a CKA figure, from the kind of file the embed stage wrote
    (``cka-layers-epoch-NNN``, ``cka-epochs-<layer>``, ``cka-runs-<other run>``) — never from
    a substring of a layer name (``cka-epochs-encoder.layers.0`` compares epochs)."""
    head = ("What this shows: linear CKA similarity (1 = the same representation up to "
            "rotation and scale) ")
    m = _CKA_FILE.match(stem)
    if m is None:
        return head + f"({stem})."
    kind, rest = m["kind"], m["rest"]
    if kind == "layers":
        epoch = rest.removeprefix("epoch-")
        return head + (f"between layers at epoch {int(epoch)}." if epoch.isdigit()
                       else "between layers.")
    if kind == "epochs":
        return head + f"of the {rest} layer between epochs."
    return head + f"between the layers of this run and of the run {rest}."


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


def _figure_names(rec: Any) -> list[Any]:
    """The PNG figures a view's JSON lists (``"figures"``), relative to the run folder; a
    name that is not text is kept, so that :func:`image_block` says it skipped it."""
    names = rec.get("figures", []) if isinstance(rec, dict) else []
    if not isinstance(names, list):
        return [names]
    return [f for f in names if not isinstance(f, str) or f.endswith(".png")]


def maps_section(run: Run) -> Section | None:
    """Feature maps (epoch 0 next to trained) and filters."""
    if not (run.path / "maps").is_dir():
        return None
    epoch0 = epoch0_label(run)
    maps, maps_notes = _json_files(run, "maps", "maps-*.json")
    filters, filters_notes = _json_files(run, "maps", "filters-*.json")
    blocks: list[Any] = [*maps_notes, *filters_notes]
    for _, rec in maps:
        for fig in _figure_names(rec):
            blocks.append(image_block(run, fig, _maps_caption(rec, epoch0)))
    for _, rec in filters:
        for fig in _figure_names(rec):
            blocks.append(image_block(run, fig, _filters_caption(rec, str(fig), epoch0)))
    blocks = [b for b in blocks if b is not None]
    return Section("maps", SECTION_TITLES["maps"], blocks) if blocks else None


def _line_caption(ls: Any, epoch0: str) -> str:
    from shenjing.plot.landscape import caption

    axis = ls.axes[0]
    loss = np.where(ls.done & np.isfinite(ls.loss), ls.loss, np.nan)
    i0, i1 = int(np.argmin(np.abs(axis))), int(np.argmin(np.abs(axis - 1.0)))
    inside = loss[(axis >= 0) & (axis <= 1)]
    steps = np.diff(inside[np.isfinite(inside)])
    monotone = bool(steps.size) and bool(np.all(steps <= 1e-9))
    return (f"What this shows: the loss along the straight line from the weights of epoch 0, "
            f"θ₀ (α = 0; epoch 0 = {epoch0}), to the trained θ* (α = 1), and beyond. Loss "
            f"{loss[i0]:.4g} at θ₀, "
            f"{loss[i1]:.4g} at θ*; between them it "
            + ("decreases monotonically (Goodfellow et al.'s observation holds here). "
               if monotone else "does not decrease monotonically (it has a bump). ")
            + f"Details: {caption(ls)}.")


def _plane_caption(ls: Any) -> str:
    from shenjing.plot.landscape import caption

    (a_min, b_min), l_min = ls.minimum()
    centre = float(ls.loss[ls.center_index])
    return (f"What this shows: the loss on a plane through θ* along two random directions, "
            f"each filter scaled to the norm of θ*'s matching filter (Li et al., 2018), so "
            f"distances are comparable between layers and nets. Loss at θ* (centre) "
            f"{centre:.4g}; lowest grid value {l_min:.4g} at (α, β) = ({a_min:.2g}, {b_min:.2g})."
            f" Details: {caption(ls)}.")


def landscape_section(run: Run) -> Section | None:
    """1-D lines, 2-D planes (contour + interactive 3-D surface) and the trajectory plane."""
    from shenjing.analysis.landscape import load_landscape
    from shenjing.plot.landscape import surface_plotly

    kinds = ("line-", "plane-", "trajectory-")
    found, refused = run_glob(run, "landscapes", "*.npz")
    files = [f for f in found if Path(f.name).name.startswith(kinds)
             and not f.name.endswith(".directions.npz")]
    refused = [r for r in refused if Path(r.name).name.startswith(kinds)
               and not r.name.endswith(".directions.npz")]
    if not files and not refused:
        return None
    blocks: list[Any] = [skipped_note(r) for r in refused]
    for file in files:
        assert file.path is not None
        ls = load_landscape(file.path)
        stem = Path(file.name).stem
        if ls.kind == "line" or len(ls.axes) == 1:
            blocks.append(image_block(run, f"figures/landscape-{stem}.png",
                                      _line_caption(ls, epoch0_label(run))))
        elif ls.trajectory is not None:
            ev = ls.meta.get("directions", {}).get("explained_variance_ratio", [])
            share = f" They explain {sum(ev):.0%} of the trajectory's variance." if ev else ""
            blocks.append(image_block(
                run, f"figures/landscape-{stem}.png",
                "What this shows: the training trajectory (one point per saved epoch) "
                "projected on the plane of its two main PCA directions, over the loss there."
                + share))
        else:
            blocks.append(image_block(run, f"figures/landscape-{stem}-contour.png",
                                      _plane_caption(ls)))
            blocks.append(plotly_block(
                surface_plotly(ls, title=f"loss surface around θ* ({stem})"),
                f"surface-{stem}", "Drag to rotate, scroll to zoom. The same grid as the "
                "contour above, as a surface: a wide, flat bowl suggests a flat minimum.",
                height=560, tag="surface"))
    return Section("landscape", SECTION_TITLES["landscape"], [b for b in blocks if b is not None],
                   intro="Evaluated in eval mode (dropout off, BatchNorm running statistics), "
                         "on the test split.")


def hessian_section(run: Run) -> Section | None:
    """Top Hessian eigenvalues, trace, spectral density, sharpness across epochs."""
    files, notes = _json_files(run, "landscapes", "hessian-e*.json")
    if not files and not notes:
        return None
    blocks: list[Any] = list(notes)
    for file, summary in files:
        path = Path(file.name)
        tops = summary.get("top_eigenvalues", [])
        rows = [[f"λ{i + 1}", float(v)] for i, v in enumerate(tops)]
        trace = summary.get("trace")
        text = ""
        if isinstance(trace, dict) and "mean" in trace:
            lo, hi = trace.get("ci95", [None, None]) if "ci95" in trace else (None, None)
            rows.append(["trace (Hutchinson)", float(trace["mean"])])
            if lo is not None:
                text = f" Trace {trace['mean']:.4g} (95% interval {lo:.4g} to {hi:.4g})."
        epoch = path.stem.split("-e")[-1]
        lead = f"{tops[0]:.4g}" if tops else "?"
        blocks.append(Table(["quantity", "value"], rows,
                            caption=f"What this shows: the curvature of the loss at epoch "
                                    f"{int(epoch)}: the largest Hessian eigenvalue ({lead}) "
                                    f"measures sharpness; larger means a sharper minimum."
                                    + text))
        blocks.append(image_block(run, f"figures/hessian-density-e{epoch}.png",
                                  "What this shows: the estimated eigenvalue density of the "
                                  "Hessian (stochastic Lanczos quadrature); mass far from 0 "
                                  "means strongly curved directions."))
    data = _json_or_note(run, "landscapes/sharpness-epochs.json", blocks)
    if data is not None:
        blocks.append(image_block(run, "figures/sharpness-epochs.png",
                                  "What this shows: the top Hessian eigenvalue at every saved "
                                  f"epoch (from {data['top_eigenvalue'][0]:.3g} to "
                                  f"{data['top_eigenvalue'][-1]:.3g})."))
    return Section("hessian", SECTION_TITLES["hessian"], [b for b in blocks if b is not None])


def fit_section(run: Run) -> Section | None:
    """Seed 001's study: the net's fit vs polynomial interpolation, and its ReLU pieces."""
    summary = read_run_json(run, "fit/summary.json")
    if summary is None:
        return None
    errors = summary.get("errors", {})
    rows = [[label, *(e.get(k) if e.get(k) is not None else float("inf")
                      for k in ("rmse_in", "max_in", "rmse_out", "max_out"))]
            for label, e in errors.items()]
    net = errors.get("net", {})
    dec = summary.get("decomposition") or {}
    regions = summary.get("regions") or {}
    blocks: list[Any] = [
        _fig(run, "fit-curve",
             "What this shows: the net's fit (trained on the points inside the shaded range "
             "only) against the true function and polynomials through the same points, in "
             f"the range and beyond it. Net RMSE in range {net.get('rmse_in', float('nan')):.3g}"
             f", beyond it {net.get('rmse_out', float('nan')):.3g}."),
        Table(["approximation", "RMSE in range", "max error in range", "RMSE beyond",
               "max error beyond"], rows,
              caption="Errors of each approximation in the training range and beyond it "
                      "(extrapolation); inf = overflow."),
        _fig(run, "fit-errors", "What this shows: the absolute error of each approximation "
             "along x (log scale); polynomials oscillate at the edges of the range."),
        _fig(run, "fit-decomposition",
             "What this shows: the output as the sum of its hidden units, "
             "y(x) = b + Σ vᵢ·relu(wᵢx + bᵢ): each unit is a hinge with its kink at "
             f"−bᵢ/wᵢ. {dec.get('n_active', '?')} of {dec.get('n_units', '?')} units are "
             f"active; the sum equals the net's output to "
             f"{dec.get('max_abs_diff_float32', float('nan')):.1e}." if dec else ""),
        _fig(run, "fit-regions",
             f"What this shows: the linear pieces of the net along x "
             f"({regions.get('n_regions', '?')} regions, {regions.get('n_in_range', '?')} "
             "inside the training range): a ReLU net is piecewise linear."),
        _fig(run, "fit-epochs", "What this shows: how the fit took shape, epoch by epoch."),
    ]
    return Section("fit", SECTION_TITLES["fit"], [b for b in blocks if b is not None])


def warp_section(run: Run) -> Section | None:
    """How each layer bends a 2-D grid, and the linear separability at each layer."""
    files, notes = _json_files(run, "warp", "warp-e*.json")
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
        _fig(run, f"warp-layers-e{epoch}",
             "What this shows: a regular grid of the input plane and the data, as each layer "
             "transforms them (linear layers rotate, stretch and shift; ReLUs fold); layers "
             "wider than 2 are projected on their first two principal components (stated in "
             "each panel)."),
        _fig(run, f"warp-probes-e{epoch}",
             "What this shows: how linearly separable the classes are at each layer "
             "(accuracy of a logistic-regression probe on held-out points): "
             f"{first if first is None else round(first, 3)} at the input, "
             f"{last if last is None else round(last, 3)} at the last hidden layer "
             f"(chance {data.get('chance', 0.5):.2f})."),
        Table(["layer", "kind", "features", "2-D view", "probe accuracy (test)"], rows),
        _fig(run, f"warp-boundary-e{epoch}",
             "What this shows: the decision boundary the net draws in the input plane."),
        *notes,
    ]
    return Section("warp", SECTION_TITLES["warp"], [b for b in blocks if b is not None])
