"""Stage ``gan``: train seed 001's GAN on a labelled image dataset and measure, epoch by
epoch, what its generator learned.

The generator (z = 100 → 256 → image, tanh) and discriminator (image → 256, LeakyReLU(0.2)
→ 1, sigmoid) are the seed's, trained with Adam 2e-4 on images scaled to [−1, 1]. The seed
writes them for MNIST's 784 pixels; on scikit-learn's 8×8 digits (the default) the
generator's last layer is sized to the data's 64 pixels instead of upsampling the digits to
28×28 (upsampling would only add interpolated pixels for the generator to imitate).

Before the GAN trains, a classifier (zoo ``mlp``, trained by :func:`shenjing.train` on
the same data, with the same seed) is trained or reused; its test accuracy is recorded and
printed with every number it makes: the class histogram of generated samples, the classes
covered, the classifier's confidence, the Fréchet distance in its ``relu1`` features (not
FID), and each sample's nearest training image (:mod:`shenjing.analysis.gan`).

Files written (epochs as three digits):

``checkpoints/epoch-NNN.safetensors``   the generator after epoch NNN (000: untrained)
``gan/discriminator-epoch-NNN.safetensors``   the discriminator
``gan/state-NNN.pt``   both optimizers' state (the last two kept), for resuming
``gan/history.jsonl``   one line per epoch: losses, mean D(real) and D(fake), class counts,
    classes covered, confidence, Fréchet distance and its real-data floor, nearest-neighbour
    distances. Written last in each epoch: a line means the epoch is complete.
``gan/samples-eNNN.npy``   the fixed-z sample grid (64 images in [−1, 1])
``gan/interpolation.npz``, ``gan/gan.json``   the latent walk; the summary and figure list
``gan/classifier/``   the classifier's own run (``shenjing report`` works on it too)
``figures/gan-*.png|svg``   grids across epochs, final grid, histogram, curves, quality,
    interpolation, nearest training images

Resuming: ``resume=True`` continues a killed run after its last complete epoch, exactly
(every epoch reseeds shuffling and latent draws from ``(seed, epoch)``; weights and Adam
state are reloaded), and may extend it to more epochs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing import _io
from shenjing.analysis.gan import (
    GanHistory,
    Interpolation,
    RealReference,
    SampleEvaluation,
    evaluate_samples,
    latent_interpolation,
    real_reference,
)
from shenjing.data import Dataset
from shenjing.errors import CheckpointError, RunError, UsageError
from shenjing.models.gan import Discriminator, Generator
from shenjing.plot.save import save_figure
from shenjing.runs import Run, read_metrics, remove_run
from shenjing.stages._study import (
    check_same_settings,
    check_study_folder,
    demo_study_record,
    refuse_resume_with_force,
    write_layer_table,
)
from shenjing.training.epoch_files import (
    check_finite,
    keep_history,
    load_state,
    load_weights,
    save_state,
    state_path,
)
from shenjing.training.gan import GanConfig, adversarial_epoch, to_gan_range

#: the zoo model that judges the samples, and the layer whose features the Fréchet
#: distance is measured in
CLASSIFIER_MODEL = "mlp"
FEATURE_LAYER = "relu1"
#: generated samples evaluated per epoch, and the fixed-z grid drawn per epoch
N_EVAL = 1000
N_GRID = 64
MAX_N_EVAL = 100_000
#: grids shown in the "across epochs" figure, and epochs printed by the CLI's summary
GRID_EPOCHS_SHOWN = 6
SUMMARY_EPOCHS_SHOWN = 11
#: seeds of the fixed latent draws (grid, evaluation, interpolation), offset from --seed
_Z_SEEDS = {"grid": 101, "eval": 202, "walk": 303}
GAN_DATASETS = ("digits", "mnist", "fashion-mnist")
#: epochs when none are given: about 4,000 generator steps at batch 64 (the 1,347 training
#: digits give 22 steps an epoch, the 8,000 MNIST images 125), where the seed's GAN has
#: stopped collapsing onto a few classes on the digits (docs/views/gan.md)
DEFAULT_EPOCHS = {"digits": 200, "mnist": 30, "fashion-mnist": 30}


@dataclass(frozen=True)
class GanResult:
    """What the gan stage trained, measured and wrote."""

    run: Run
    history: GanHistory
    classifier_accuracy: float
    figures: tuple[Path, ...]
    resumed_from: int | None = None

    def summary(self) -> str:
        """Lines for the CLI: the classifier, then per epoch the numbers that matter."""
        h = self.history
        lines = [f"classifier: {CLASSIFIER_MODEL} trained on the same data, test accuracy "
                 f"{self.classifier_accuracy:.4f} (judges every number below)"]
        if self.resumed_from is not None:
            lines.append(f"resumed after epoch {self.resumed_from}")
        lines.append(f"Fréchet distance in the classifier's {FEATURE_LAYER} features (not "
                     f"FID); real train vs test floor {h.frechet_floor:.3f}")
        epochs = h.epochs.tolist()
        shown = _epochs_shown(len(epochs), SUMMARY_EPOCHS_SHOWN)
        if len(shown) < len(epochs):
            lines.append(f"{len(shown)} of {len(epochs)} epochs shown, evenly spaced; every "
                         "epoch is in gan/history.jsonl and the report")
        for i in shown:
            e = epochs[i]
            train = ("untrained" if np.isnan(h.loss_d[i]) else
                     f"loss_D {h.loss_d[i]:.3f} loss_G {h.loss_g[i]:.3f} "
                     f"D(real) {h.d_real[i]:.3f} D(fake) {h.d_fake[i]:.3f}")
            lines.append(f"epoch {e}: {train} | classes covered {h.n_covered[i]}/"
                         f"{h.n_classes} | Fréchet {h.frechet[i]:.3f} | confidence "
                         f"{h.confidence[i]:.3f} | nearest-train median {h.nn_median[i]:.3f} "
                         f"(test images {h.nn_median_test:.3f})")
        lines += [f"wrote {p}" for p in self.figures if p.suffix == ".png"]
        return "\n".join(lines)


# ---- options -----------------------------------------------------------------------------------
def check_gan_options(*, data: str | None, data_dir: str | os.PathLike[str] | None, epochs: int,
                      batch_size: int, lr: float, seed: int, n_eval: int, resume: bool,
                      force: bool, device: str | torch.device) -> GanConfig:
    """Refuse options that cannot work, before anything is loaded or written (``data``
    None: a dataset given in memory, checked when it is used)."""
    from shenjing._checks import bounded_int
    from shenjing._device import resolve_device

    if data is not None and data not in GAN_DATASETS:
        _refuse_non_image(data)
    if data_dir is not None and data not in ("mnist", "fashion-mnist"):
        raise UsageError(f"--data-dir is where the IDX files of mnist and fashion-mnist are; "
                         f"it does not apply to --data {data!r}: leave it out")
    cfg = GanConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    bounded_int("--n-eval", n_eval, low=2, high=MAX_N_EVAL, example=N_EVAL,
                why="generated samples measured per epoch; a covariance needs 2")
    refuse_resume_with_force(resume, force)
    resolve_device(device, option="--device")
    return cfg


def gan_dataset(data: str | Dataset, *, data_dir: str | os.PathLike[str] | None = None,
                seed: int = 0, progress: bool = False) -> Dataset:
    """The dataset a GAN learns: labelled images, pixels in [0, 1] (``normalize='unit'``).
    A dataset without class labels, or not made of images, is refused in one line."""
    from shenjing.data import load_dataset

    if isinstance(data, Dataset):
        dataset = data
    else:
        if data not in GAN_DATASETS:
            _refuse_non_image(data)
        dataset = load_dataset(data, data_dir=data_dir, seed=seed, normalize="unit",
                               progress=progress)
    check_gan_data(dataset)
    return dataset


def _refuse_non_image(name: str) -> None:
    from shenjing.data import DATASET_NAMES

    if name in DATASET_NAMES:
        kind = "regression data without class labels" if name == "curve" else \
            "2-D points, not images"
        raise UsageError(f"--data {name!r} is {kind}: the GAN study needs labelled images "
                         "(its classifier counts the classes of generated samples); choose "
                         f"one of {', '.join(GAN_DATASETS)}, e.g. --data digits")
    from shenjing._checks import choice

    choice("--data", name, GAN_DATASETS)


def check_gan_data(dataset: Dataset) -> None:
    """Refuse a dataset the study cannot use: no class labels, not images, pixels outside
    [0, 1]."""
    if dataset.task != "classification" or not dataset.classes:
        raise UsageError(f"dataset {dataset.name!r} has no class labels ({dataset.task}): the "
                         "GAN study needs them to train the classifier that counts the "
                         "classes of generated samples; use a labelled image dataset, e.g. "
                         "--data digits")
    if len(dataset.input_shape) != 3:
        raise UsageError(f"dataset {dataset.name!r} has inputs of shape "
                         f"{tuple(dataset.input_shape)}, not images (channels, height, "
                         "width); use an image dataset, e.g. --data digits")
    lo, hi = float(dataset.train.x.min()), float(dataset.train.x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(f"dataset {dataset.name!r} has pixels in [{lo:.3g}, {hi:.3g}]; the "
                         "GAN study needs them in [0, 1] (it maps them to the generator's "
                         "[−1, 1]): load it with normalize='unit'")


# ---- the stage ---------------------------------------------------------------------------------
def gan(run: str | os.PathLike[str] = "runs/gan", *, data: str | Dataset = "digits",
        data_dir: str | os.PathLike[str] | None = None, epochs: int | None = None,
        batch_size: int = 64, lr: float = 2e-4, seed: int = 0, n_eval: int = N_EVAL,
        device: str | torch.device = "auto", resume: bool = False, force: bool = False,
        report: bool = True, progress: bool = False,
        stop_after_epochs: int | None = None) -> GanResult:
    """Train seed 001's GAN into the run folder ``run`` and measure its generator each
    epoch; return the :class:`GanResult` (and write ``report.html`` unless ``report=False``).
    ``epochs`` None takes :data:`DEFAULT_EPOCHS` of the dataset.

    An existing run needs ``resume=True`` (continue after its last complete epoch, or extend
    it to more ``epochs``) or ``force=True`` (start over). ``stop_after_epochs`` stops the
    training after that many new epochs as a kill would (for tests of resuming).
    """
    from shenjing._device import resolve_device

    name = data if isinstance(data, str) else data.name
    if epochs is None:
        epochs = DEFAULT_EPOCHS.get(name, 30)
    cfg = check_gan_options(data=data if isinstance(data, str) else None,
                            data_dir=data_dir, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, n_eval=n_eval,
                            resume=resume, force=force, device=device)
    path = Path(run)
    existing = check_study_folder(path, resume=resume, force=force, check_resumable=lambda old:
                                  _check_same_config(old, cfg, n_eval))
    dataset = gan_dataset(data, data_dir=data_dir, seed=seed, progress=progress)
    dev = resolve_device(device, option="--device")
    if existing and force:
        remove_run(path)
        existing = False
    config = {**dataclasses.asdict(cfg), "optimizer": "adam", "n_eval": n_eval,
              "classifier": CLASSIFIER_MODEL, "feature_layer": FEATURE_LAYER,
              "pixels": "x in [0, 1] → 2x − 1 in [−1, 1]"}
    if not existing:
        Run.create(path, model=_model_spec(dataset, cfg), data=dict(dataset.spec),
                   seed=seed, task="generation", classes=dataset.classes, config=config)
    opened = Run(path)
    opened.attach_data(dataset)
    with opened.running_stage("gan", epochs=cfg.epochs, device=str(dev)):
        result = _train_and_measure(opened, dataset, cfg, n_eval, dev, stop_after_epochs)
    if report:
        from shenjing.report import build_report

        build_report(opened)
    return result


def _model_spec(dataset: Dataset, cfg: GanConfig) -> dict[str, Any]:
    shape = list(dataset.input_shape)
    return {"name": "gan", "class": "Generator", "rebuildable": False,
            "why": "is the generator of a GAN; `shenjing gan --resume` rebuilds both networks",
            "input_shape": [cfg.z_dim], "n_outputs": int(np.prod(shape)),
            "generator": f"z {cfg.z_dim} → Linear {cfg.hidden} → ReLU → Linear "
                         f"{int(np.prod(shape))} → tanh → {'×'.join(map(str, shape))}",
            "discriminator": f"{int(np.prod(shape))} → Linear {cfg.hidden} → LeakyReLU(0.2) "
                             "→ Linear 1 → sigmoid"}


def _check_same_config(run: Run, cfg: GanConfig, n_eval: int) -> None:
    check_same_settings(run, model="gan", what="GAN",
                        asked={**dataclasses.asdict(cfg), "n_eval": n_eval},
                        keys=("batch_size", "lr", "z_dim", "hidden", "seed", "n_eval"))


def _classifier(run: Run, dataset: Dataset, cfg: GanConfig, dev: torch.device
                ) -> tuple[nn.Module, float]:
    """The classifier that judges the samples: trained by :func:`shenjing.train` into
    ``gan/classifier`` (resumed if killed, reused when done); with its test accuracy."""
    from shenjing.training import train

    folder = run.subdir("gan") / "classifier"
    done = (folder / "run.json").is_file() and Run(folder).stage("train").get("status") == "done"
    trained = Run(folder) if done else train(
        CLASSIFIER_MODEL, dataset, run=folder, seed=cfg.seed, device=dev, progress=False,
        resume=(folder / "run.json").is_file())
    accuracy = trained.metrics()[-1].get("test_accuracy")
    if accuracy is None:
        raise RunError(f"{folder}: the classifier's run records no test accuracy; delete "
                       f"that folder to train it again, or start over with --force")
    return trained.model("final", device=dev), float(accuracy)


def _fixed_z(cfg: GanConfig, kind: str, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed * 1_000 + _Z_SEEDS[kind])
    return torch.randn(n, cfg.z_dim, generator=gen)


def _train_and_measure(run: Run, dataset: Dataset, cfg: GanConfig, n_eval: int,
                       dev: torch.device, stop_after_epochs: int | None) -> GanResult:
    classifier, accuracy = _classifier(run, dataset, cfg, dev)
    classifier.eval()
    train_x = to_gan_range(dataset.train.x)
    test_x = to_gan_range(dataset.test.x)
    reference = real_reference(classifier.cpu(), train_x, test_x, FEATURE_LAYER,
                               len(dataset.classes))
    torch.manual_seed(cfg.seed)
    generator = Generator(dataset.input_shape, cfg.z_dim, cfg.hidden)
    discriminator = Discriminator(dataset.input_shape, cfg.hidden)
    generator.to(dev)
    discriminator.to(dev)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr)
    folder = run.subdir("gan")
    history_path = folder / "history.jsonl"
    start = _resume_point(run, generator, discriminator, opt_g, opt_d)
    z_grid, z_eval = _fixed_z(cfg, "grid", N_GRID), _fixed_z(cfg, "eval", n_eval)
    if start is None:
        start = 0
        write_layer_table(run, generator, z_grid)
        _save_epoch(run, 0, generator, discriminator, None, None)
        _measure(run, 0, generator, classifier, reference, z_grid, z_eval, None, history_path)
        resumed = None
    else:
        resumed = start
    x_real = train_x.to(dev)
    started = time.perf_counter()
    for epoch in range(start + 1, cfg.epochs + 1):
        if stop_after_epochs is not None and epoch > start + stop_after_epochs:
            raise KeyboardInterrupt(f"stopped after epoch {epoch - 1} (test hook)")
        losses = adversarial_epoch(generator, discriminator, opt_g, opt_d, x_real, cfg, epoch)
        _save_epoch(run, epoch, generator, discriminator, opt_g, opt_d)
        _measure(run, epoch, generator, classifier, reference, z_grid, z_eval,
                 dataclasses.asdict(losses), history_path)
    records = [r for r in read_metrics(history_path) if r["epoch"] <= cfg.epochs]
    history = GanHistory.from_records(records)
    last = int(history.epochs[-1])
    generator.load_state_dict(run.state_dict(last))
    walk = _fixed_z(cfg, "walk", 2)
    interp = latent_interpolation(generator.cpu(), walk[0], walk[1], classifier.cpu(),
                                  n_steps=10, epoch=last)
    _io.save_npz(folder / "interpolation.npz", alphas=interp.alphas, images=interp.images,
                 predictions=interp.predictions, confidences=interp.confidences,
                 epoch=np.array(last))
    final = evaluate_samples(generator(z_grid).detach(), classifier, reference,
                             feature_layer=FEATURE_LAYER)
    figures = _draw(run, dataset, history, interp, final, generator, z_grid, accuracy)
    summary = {
        "classifier": {"model": CLASSIFIER_MODEL, "run": "gan/classifier",
                       "test_accuracy": accuracy, "feature_layer": FEATURE_LAYER},
        "final_epoch": last, "n_eval": n_eval, "n_grid": N_GRID,
        "min_fraction": history.min_fraction, "frechet_floor": history.frechet_floor,
        "nn_median_test": history.nn_median_test,
        "final": {k: v for k, v in records[-1].items()},
        "interpolation": {"predictions": interp.predictions.tolist(),
                          "confidences": [round(float(c), 4) for c in interp.confidences]},
        "figures": [str(p.relative_to(run.path)) for p in figures if p.suffix == ".png"],
        "classes": list(dataset.classes), "image_shape": list(dataset.input_shape)}
    _io.write_json(folder / "gan.json", summary)
    f = records[-1]
    run.update_stage("gan", "done", epochs=cfg.epochs, final_epoch=last,
                     classifier_accuracy=accuracy, n_covered=f["n_covered"],
                     n_classes=history.n_classes, frechet=f["frechet"],
                     frechet_floor=history.frechet_floor, confidence=f["confidence"],
                     seconds=round(time.perf_counter() - started, 2))
    return GanResult(run, history, accuracy, tuple(figures), resumed)


def _measure(run: Run, epoch: int, generator: nn.Module, classifier: nn.Module,
             reference: RealReference, z_grid: torch.Tensor, z_eval: torch.Tensor,
             losses: dict[str, Any] | None, history_path: Path) -> SampleEvaluation:
    """Evaluate the generator of ``epoch``, save its grid, append its history line (last:
    the line marks the epoch complete)."""
    dev = next(generator.parameters()).device
    generator.eval()
    with torch.inference_mode():
        grid = generator(z_grid.to(dev)).cpu()
        samples = torch.cat([generator(z_eval[i:i + 1024].to(dev)).cpu()
                             for i in range(0, len(z_eval), 1024)])
    evaluation = evaluate_samples(samples, classifier.cpu(), reference,
                                  feature_layer=FEATURE_LAYER)
    _io.save_npy(run.path / "gan" / f"samples-e{epoch:03d}.npy", grid.numpy())
    record: dict[str, Any] = {"epoch": epoch, **(losses or {
        "loss_d": None, "loss_g": None, "d_real": None, "d_fake": None, "n_steps": 0})}
    record.update({k: _rounded(v) for k, v in evaluation.record().items()})
    _io.append_jsonl(history_path, record)
    return evaluation


def _rounded(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _discriminator_path(run: Run, epoch: int) -> Path:
    return run.path / "gan" / f"discriminator-epoch-{epoch:03d}.safetensors"


def _save_epoch(run: Run, epoch: int, generator: nn.Module, discriminator: nn.Module,
                opt_g: torch.optim.Optimizer | None, opt_d: torch.optim.Optimizer | None
                ) -> None:
    """Both networks' weights and (after epoch 0) both optimizers' state, atomically."""
    check_finite([*generator.named_parameters(), *discriminator.named_parameters()],
                 what="GAN training", epoch=epoch)
    run.save_checkpoint(epoch, generator)
    state = {k: v.detach().cpu().contiguous() for k, v in discriminator.state_dict().items()}
    _io.save_safetensors(_discriminator_path(run, epoch), state,
                         metadata={"epoch": str(epoch), "format": "pt"})
    if opt_g is not None and opt_d is not None:
        save_state(run.path / "gan", epoch, {"optimizer_g": opt_g.state_dict(),
                                             "optimizer_d": opt_d.state_dict()})


def _resume_point(run: Run, generator: nn.Module, discriminator: nn.Module,
                  opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> int | None:
    """Reload the last epoch that has its history line, both checkpoints and (after epoch
    0) the optimizers' state; drop later history lines. None: nothing to resume."""
    history_path = run.path / "gan" / "history.jsonl"
    if not history_path.is_file():
        return None
    records = read_metrics(history_path)
    usable = [r["epoch"] for r in records
              if r["epoch"] in run.epochs and _discriminator_path(run, r["epoch"]).is_file()
              and (r["epoch"] == 0 or (run.path / "gan" / f"state-{r['epoch']:03d}.pt"
                                       ).is_file())]
    if not usable:
        return None
    epoch = max(usable)
    state = load_state(state_path(run.path / "gan", epoch), keys=("optimizer_g", "optimizer_d"),
                       what="GAN") if epoch else None
    try:
        generator.load_state_dict(run.state_dict(epoch))
        discriminator.load_state_dict(load_weights(_discriminator_path(run, epoch)))
        if state is not None:
            opt_g.load_state_dict(state["optimizer_g"])
            opt_d.load_state_dict(state["optimizer_d"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{run.path}: the checkpoints of epoch {epoch} do not fit this "
                              f"GAN ({exc}); resume with the run's own options, or start over "
                              "with --force") from None
    keep_history(history_path, records, [r for r in records if r["epoch"] <= epoch])
    return epoch


def _epochs_shown(n: int, most: int) -> list[int]:
    """Indices of at most ``most`` of ``n`` epochs, evenly spaced, the first and last
    included.

    >>> _epochs_shown(3, 6), _epochs_shown(201, 5)
    ([0, 1, 2], [0, 50, 100, 150, 200])
    """
    if n <= most:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, most).round().astype(int).tolist()))


def _grid_epochs(epochs: list[int]) -> list[int]:
    return [epochs[i] for i in _epochs_shown(len(epochs), GRID_EPOCHS_SHOWN)]


def _draw(run: Run, dataset: Dataset, history: GanHistory, interp: Interpolation,
          final: SampleEvaluation, generator: nn.Module, z_grid: torch.Tensor,
          accuracy: float) -> list[Path]:
    from shenjing.plot.gan import (
        plot_class_histogram,
        plot_gan_curves,
        plot_gan_quality,
        plot_interpolation,
        plot_nearest_training,
        plot_sample_grid,
        plot_samples_over_epochs,
    )

    figs = run.figures_dir
    epochs = history.epochs.tolist()
    last = epochs[-1]
    classes = tuple(dataset.classes)
    grids = {e: np.load(run.path / "gan" / f"samples-e{e:03d}.npy") for e in
             _grid_epochs(epochs)}
    out: list[Path] = []
    out += save_figure(plot_samples_over_epochs(grids, history), figs, "gan-grids")
    i = len(epochs) - 1
    title = (f"epoch {last}: {history.n_covered[i]}/{history.n_classes} classes covered, "
             f"Fréchet {history.frechet[i]:.2f} (floor {history.frechet_floor:.2f})")
    out += save_figure(plot_sample_grid(grids[last], predictions=final.predictions,
                                        confidences=final.confidences, classes=classes,
                                        title=title), figs, "gan-samples-final")
    out += save_figure(plot_class_histogram(history, classes=classes,
                                            accuracy=accuracy), figs, "gan-histogram")
    out += save_figure(plot_gan_curves(history), figs, "gan-curves")
    out += save_figure(plot_gan_quality(history, accuracy=accuracy), figs, "gan-quality")
    out += save_figure(plot_interpolation(interp, classes=classes), figs, "gan-interpolation")
    train = to_gan_range(dataset.train.x).numpy()
    show = np.arange(min(8, len(final.nearest_index)))
    out += save_figure(plot_nearest_training(
        grids[last][show], train[final.nearest_index[show]], final.nearest_distance[show],
        test_median=history.nn_median_test), figs, "gan-nearest")
    return out


# ---- the demo's study ----------------------------------------------------------------------------
#: epochs of the demo's GAN study, per dataset (each well under a minute on 2 cores)
DEMO_EPOCHS = {"digits": 200, "mnist": 20, "fashion-mnist": 20}


def demo_study(folder: Path, *, data: str = "digits",
               data_dir: str | os.PathLike[str] | None = None,
               device: str | torch.device = "auto", force: bool = False) -> dict[str, str]:
    """The GAN study of ``shenjing demo --full``: train (or reuse) ``folder/gan-<data>``
    and its report; return the demo index's entry for it."""
    sub = f"gan-{data}"
    rec = demo_study_record(Path(folder) / sub, stage="gan", epochs=DEMO_EPOCHS.get(data, 10),
                            force=force, train=functools.partial(
                                gan, data=data, data_dir=data_dir, device=device))
    number = (f"{rec.get('n_covered')}/{rec.get('n_classes')} classes covered, Fréchet "
              f"{float(rec.get('frechet', float('nan'))):.2f} (floor "
              f"{float(rec.get('frechet_floor', float('nan'))):.2f}), classifier accuracy "
              f"{float(rec.get('classifier_accuracy', float('nan'))):.3f}")
    return {"href": f"{sub}/report.html", "name": sub, "model": "gan (seed 001)",
            "data": data, "shows": "what a GAN's generator learned: classes covered, "
            "Fréchet distance, nearest training images", "number": number}


__all__ = ["GanResult", "check_gan_data", "check_gan_options", "demo_study", "gan",
           "gan_dataset"]
