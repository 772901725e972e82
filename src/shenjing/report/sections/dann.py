"""Report section ``dann``: whether a DANN's features forget the domain, from
``dann/dann.json``, ``dann/history.jsonl`` and the stage's figures — the domains and how
they were prepared, target accuracy of the three trainings, the domain gap untrained vs
trained at the feature layer, then the curves, maps and the numbers by epoch."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Note, Section, Table, image_block, skipped_note
from shenjing.report.run_files import run_file
from shenjing.report.sections._files import json_or_note, number
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run

_NAMES = {"untrained": "untrained", "source_only": "source only", "dann": "DANN (GRL)",
          "mmd": "MMD penalty", "coral": "CORAL penalty"}

_CAPTIONS = {
    "dann-accuracy": "What this shows: accuracy on the target domain's eval split (solid) "
                     "and the source's (dashed) after each epoch, for each training (epoch 0 "
                     "= the untrained net, the same for all). The target labels are used "
                     "only for this measurement.",
    "dann-gap": "What this shows: per feature layer (columns), the unbiased multi-kernel "
                "MMD², the CORAL distance and a held-out linear domain classifier's accuracy "
                "(dotted: 0.5, chance) between {n} source and {n} target eval samples, by "
                "epoch. Lower means the domains' features are closer.",
    "dann-gap-bars": "What this shows: the same three measures at the {layer} layer, the "
                     "untrained net vs each training's last epoch.",
    "dann-maps": "What this shows: t-SNE maps (openTSNE, seed {seed}) of the {map_layer} "
                 "layer's features of {n} source and {n} target eval samples, untrained and "
                 "after each training, coloured by domain (left) and by class (right). kNN "
                 "mixing is the share of each point's 10 nearest map neighbours from the "
                 "other domain (0.5 would be fully mixed).",
}


def _row(name: str, r: dict[str, Any], layer: str, tests: dict[str, Any]) -> list[Any]:
    g = (r.get("layers") or {}).get(layer) or {}
    t = tests.get(name) or {}
    return [_NAMES.get(name, name), r.get("epoch"), number(r.get("target_accuracy"), ".4f"),
            number(r.get("source_accuracy"), ".4f"), number(g.get("mmd2"), ".4f"),
            number(t.get("p_value"), ".3f"), number(g.get("coral"), ".3g"),
            number(g.get("domain_accuracy"), ".3f"), number(g.get("proxy_a"), ".2f")]


def dann_section(run: Run) -> Section | None:
    """The DANN study: the domains, then accuracy and the domain gap, figures and tables."""
    if not (run.path / "dann").is_dir():
        return None
    blocks: list[Any] = []
    summary = json_or_note(run, "dann/dann.json", blocks)
    if not isinstance(summary, dict):
        return Section("dann", SECTION_TITLES["dann"], blocks) if blocks else None
    layer = str(summary.get("feature_layer", "feature"))
    n = summary.get("n_gap")
    blocks.append(Note(
        f"Direction {summary.get('direction')}: source {summary.get('source')} "
        f"({summary.get('n_source_train')} labelled train / {summary.get('n_source_eval')} "
        f"eval images), target {summary.get('target')} ({summary.get('n_target_train')} "
        f"unlabelled train / {summary.get('n_target_eval')} eval). Three trainings from the "
        f"same initial weights, {summary.get('epochs')} epochs each: source only, DANN "
        f"(gradient reversal, λ = {summary.get('lambda')}), and a {summary.get('align')} "
        f"penalty (weight {summary.get('align_weight')}). Data: "
        + " ".join(f"{note}." for note in summary.get("notes") or [])))
    tests = summary.get("permutation_tests") or {}
    untrained = summary.get("untrained") or {}
    final = summary.get("final") or {}
    rows = [_row("untrained", untrained, layer, tests)]
    rows += [_row(m, r, layer, tests) for m, r in final.items()]
    some: dict[str, Any] = next(iter(tests.values()), {})
    blocks.append(Table(
        ["training", "epoch", "target acc.", "source acc.", "MMD²", "MMD² p (perm.)",
         "CORAL", "domain clf acc.", "proxy A"], rows,
        caption=f"At the {layer} layer, untrained vs each training's last epoch, on {n} eval "
                f"samples per domain. MMD²: unbiased, mean of Gaussian kernels at σ = σ_med × "
                f"(0.25, 0.5, 1, 2, 4), σ_med the pooled median distance (measured per row; "
                f"p from {some.get('n_permutations', '—')} permutations). CORAL: "
                f"‖C_s − C_t‖²_F / 4d². Domain classifier: logistic regression on standardised "
                f"features, trained on half of the samples, accuracy on the other half; "
                f"proxy A-distance = 2 (1 − 2·err) (Ben-David et al. 2010)."))
    fill = {"n": n, "layer": layer, "seed": (run.manifest.get("config") or {}).get("seed")}
    for name in summary.get("figures", []):
        stem = str(name).rsplit("/", 1)[-1].removesuffix(".png")
        map_layer = stem.removeprefix("dann-maps-") if stem.startswith("dann-maps-") else ""
        caption = _CAPTIONS["dann-maps"] if map_layer else _CAPTIONS.get(stem, "")
        block = image_block(run, name, caption.format(**fill, map_layer=map_layer or layer))
        if block is not None:
            blocks.append(block)
    checked = run_file(run, "dann/history.jsonl")
    if checked.refused:
        blocks.append(skipped_note(checked))
    elif checked.readable and checked.path is not None:
        from shenjing import _io

        records = _io.read_jsonl(checked.path)
        layers = list((records[0].get("layers") or {}) if records else [])
        head = ["training", "epoch", "loss (class)", "target acc.", "source acc."]
        for lay in layers:
            head += [f"{lay} MMD²", f"{lay} CORAL", f"{lay} domain acc."]
        body = []
        for r in records:
            row = [_NAMES.get(r.get("method", ""), r.get("method")), r.get("epoch"),
                   "—" if r.get("loss_class") is None else number(r.get("loss_class"), ".4f"),
                   number(r.get("target_accuracy"), ".4f"),
                   number(r.get("source_accuracy"), ".4f")]
            for lay in layers:
                g = (r.get("layers") or {}).get(lay) or {}
                row += [number(g.get("mmd2"), ".4f"), number(g.get("coral"), ".3g"),
                        number(g.get("domain_accuracy"), ".3f")]
            body.append(row)
        blocks.append(Table(head, body, caption="The numbers by training and epoch (epoch 0: "
                                                "untrained)."))
    return Section("dann", SECTION_TITLES["dann"], blocks) if blocks else None
