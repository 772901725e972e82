"""Report section ``embedding`` (the ``embed`` view): 2-D maps, probe and kNN numbers, CKA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shenjing.filenames import parse_cka_stem, parse_embedding_stem
from shenjing.report.blocks import Section, Table, image_block, plotly_block, skipped_note
from shenjing.report.provenance import epoch0_label
from shenjing.report.run_files import run_glob
from shenjing.report.sections._files import figure_block, json_or_note
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

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


def embed_section(run: Run) -> Section | None:
    """Maps of the hidden features per layer and epoch, with the numbers that keep them
    honest (probe and kNN accuracy in feature space; trustworthiness of the 2-D map)."""
    import json

    from shenjing.plot.interactive import embedding_scatter
    from shenjing.report.blocks import Asset, png_bytes_uri
    from shenjing.report.thumbnails import TILE, sprite_png, thumbnail_inputs

    found, refused = run_glob(run, "embeddings", "*.npz")
    files = [f for f in found if parse_embedding_stem(Path(f.name).stem)]
    if not files and not refused:
        return None
    blocks: list[Any] = [skipped_note(r) for r in refused]
    inputs = thumbnail_inputs(run)
    classes = run.classes or tuple(str(i) for i in range(10))
    sprite_for: dict[tuple[int, ...], dict[str, Any] | None] = {}
    epoch0 = epoch0_label(run)
    for file in files:
        path = Path(file.name)
        m = parse_embedding_stem(path.stem)
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
        epoch = m.epoch
        fig = embedding_scatter(coords[keep], labels[keep], classes, np.asarray(ids),
                                title=f"{m.key} · {m.method} · epoch {epoch}")
        blocks.append(plotly_block(
            fig, f"emb-{path.stem}", _map_caption(m.key, m.method, epoch, metrics,
                                                  len(coords), len(keep), epoch0=epoch0,
                                                  no_thumbnails=missing),
            height=520, hover_sprite=sprite, tag="embedding"))
    sep = json_or_note(run, "embeddings/separability.json", blocks)
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
        blocks.append(figure_block(run, "separability-probe",
                                   "What this shows: linear-probe accuracy by layer and epoch, "
                                   "with the input pixels as the baseline."))
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


def _cka_caption(stem: str) -> str:
    """The caption of a CKA figure, from the kind of file the embed stage wrote
    (``cka-layers-epoch-NNN``, ``cka-epochs-<layer>``, ``cka-runs-<other run>``) — never from
    a substring of a layer name (``cka-epochs-encoder.layers.0`` compares epochs)."""
    head = ("What this shows: linear CKA similarity (1 = the same representation up to "
            "rotation and scale) ")
    parsed = parse_cka_stem(stem)
    if parsed is None:
        return head + f"({stem})."
    kind, rest = parsed
    if kind == "layers":
        epoch = rest.removeprefix("epoch-")
        return head + (f"between layers at epoch {int(epoch)}." if epoch.isdigit()
                       else "between layers.")
    if kind == "epochs":
        return head + f"of the {rest} layer between epochs."
    return head + f"between the layers of this run and of the run {rest}."
