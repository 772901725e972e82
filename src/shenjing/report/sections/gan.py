"""Report section ``gan``: what a GAN's generator learned, from ``gan/gan.json``,
``gan/history.jsonl`` and the stage's figures — the classifier that judges the samples (its
test accuracy first), then the grids, the class histogram, classes covered and Fréchet
distance, losses and D(·), the latent walk and the nearest training images."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Note, Section, Table, image_block, skipped_note
from shenjing.report.run_files import run_file
from shenjing.report.sections._files import json_or_note, number
from shenjing.report.stage_status import SECTION_TITLES
from shenjing.runs import Run, read_metrics

#: the history table lists at most this many epochs (evenly spaced, last always)
TABLE_EPOCHS = 12

_CAPTIONS = {
    "gan-grids": "What this shows: the generator's images for the same 64 latent vectors at "
                 "several epochs (epoch 0 = untrained), each titled with the classes covered "
                 "and the Fréchet distance of that epoch.",
    "gan-samples-final": "What this shows: the final epoch's 64 fixed-z samples, each marked "
                         "with the classifier's predicted class and its confidence. Samples "
                         "that all look alike, or all carry one label, are mode collapse.",
    "gan-histogram": "What this shows: per epoch (rows), the share of {n} generated samples "
                     "the classifier puts in each class; × marks a class below {thr} of the "
                     "samples, i.e. not covered. The row label is the number of classes "
                     "covered.",
    "gan-quality": "What this shows: classes covered and the Fréchet distance between "
                   "Gaussians fitted to the classifier's {layer} features of generated and of "
                   "real test images, by epoch. This is not FID (Inception features); the "
                   "dashed line is the same distance between real train and test images "
                   "({floor}), what a perfect generator would reach.",
    "gan-curves": "What this shows: mean loss_D and loss_G over each epoch, and the mean "
                  "discriminator output on real and on generated batches (0.5: it cannot "
                  "tell them apart).",
    "gan-interpolation": "What this shows: images along a straight line between two latent "
                         "vectors, with the classifier's predicted class and confidence under "
                         "each. A smooth walk through a few classes means the generator maps "
                         "nearby latents to nearby images.",
    "gan-nearest": "What this shows (memorisation check): generated samples above their "
                   "nearest training images, with the L2 pixel distance of each pair (pixels "
                   "in [−1, 1]). Real test images lie at a median {test} from their nearest "
                   "training image; samples much closer than that would be copies.",
}


def _n(value: Any, fmt: str = ".3f") -> str:
    """A number of the history, or "—" where the epoch has none (epoch 0 did not train)."""
    return "—" if value is None else number(value, fmt)


def _history_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    if len(records) > TABLE_EPOCHS:
        step = (len(records) - 1) / (TABLE_EPOCHS - 1)
        records = [records[round(i * step)] for i in range(TABLE_EPOCHS)]
    rows = []
    for r in records:
        rows.append([r.get("epoch"), _n(r.get("loss_d")), _n(r.get("loss_g")),
                     _n(r.get("d_real")), _n(r.get("d_fake")),
                     f"{r.get('n_covered')}/{len(r.get('class_counts') or [])}",
                     _n(r.get("frechet")), _n(r.get("confidence")), _n(r.get("nn_median")),
                     _n(r.get("nn_fraction_close"))])
    return rows


def gan_section(run: Run) -> Section | None:
    """The GAN study: the classifier's accuracy, then every figure with its numbers."""
    if not (run.path / "gan").is_dir():
        return None
    blocks: list[Any] = []
    summary = json_or_note(run, "gan/gan.json", blocks)
    if not isinstance(summary, dict):
        return Section("gan", SECTION_TITLES["gan"], blocks) if blocks else None
    clf = summary.get("classifier") or {}
    blocks.append(Note(
        f"Every number here is measured with a classifier ({clf.get('model')}, trained by "
        f"shenjing on the same data, its own run in {clf.get('run')}) whose test accuracy is "
        f"{number(clf.get('test_accuracy'), '.4f')}. A class counts as covered when at least "
        f"{number(summary.get('min_fraction'), '.1%')} of the {summary.get('n_eval')} "
        "generated samples of an epoch are predicted as it (a fifth of the uniform share)."))
    records: list[dict[str, Any]] = []
    checked = run_file(run, "gan/history.jsonl")
    if checked.refused:
        blocks.append(skipped_note(checked))
    elif checked.readable and checked.path is not None:
        records = read_metrics(checked.path)
    fill = {"n": summary.get("n_eval"), "thr": number(summary.get("min_fraction"), ".1%"),
            "layer": clf.get("feature_layer"),
            "floor": number(summary.get("frechet_floor"), ".3f"),
            "test": number(summary.get("nn_median_test"), ".2f")}
    for name in summary.get("figures", []):
        stem = str(name).rsplit("/", 1)[-1].removesuffix(".png")
        caption = _CAPTIONS.get(stem, "").format(**fill)
        block = image_block(run, name, caption)
        if block is not None:
            blocks.append(block)
    if records:
        blocks.append(Table(
            ["epoch", "loss_D", "loss_G", "D(real)", "D(fake)", "classes covered",
             "Fréchet", "confidence", "nearest-train median", "share closer than 5 % of test"],
            _history_rows(records),
            caption=f"The numbers by epoch (Fréchet floor real train vs test "
                    f"{fill['floor']}; real test images' nearest-train median "
                    f"{fill['test']})."))
    return Section("gan", SECTION_TITLES["gan"], blocks) if blocks else None
