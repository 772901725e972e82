"""Stage ``dann``: train seed 001's DANN three ways on a real domain shift (MNIST and
scikit-learn's digits upsampled to 28×28) and measure, epoch by epoch, whether the feature
extractor stopped encoding the domain.

The three trainings start from the same initial weights (one seed): source only, DANN (the
seed's loss through the gradient-reversal layer, λ = 0.1), and the cross-entropy plus an
MMD² or CORAL penalty on the 128-wide feature layer (:mod:`shenjing.training.dann`). After
every epoch of each (epoch 0: the untrained net, the same for all three), on the held-out
eval splits: source and target accuracy (target labels read only for this), and per
feature layer (``hidden``, 256 wide; ``feature``, 128 wide, where the domain classifier
sits) the unbiased multi-kernel MMD² with its bandwidths, the CORAL distance, and a linear
domain classifier's held-out accuracy with the proxy A-distance
(:mod:`shenjing.analysis.domain`). At the end: an MMD permutation test at the feature layer
(untrained and each training's last epoch) and, per feature layer, t-SNE maps of both
domains' features (untrained and each training's last epoch), coloured by domain and by
class.

Files written (epochs as three digits; ``<method>``: source_only, dann, mmd or coral):

``dann/<method>/epoch-NNN.safetensors``   the whole network after epoch NNN (000: untrained)
``dann/<method>/state-NNN.pt``   its optimizer's state (the last two kept), for resuming
``dann/history.jsonl``   one line per (method, epoch): losses, accuracies, per-layer gap.
    Written last in each epoch: a line means the epoch is complete.
``dann/maps/<layer>-<name>.npz``   t-SNE maps (coords, domain, labels, params); ``<name>``:
    untrained or a method
``dann/dann.json``   the summary: settings, notes on the data, final and untrained numbers,
    permutation tests, figure list
``figures/dann-*.png|svg``   accuracy, domain gap, untrained vs trained bars, t-SNE maps
    per layer (``dann-maps-<layer>``)

Resuming: ``resume=True`` continues a killed study after the last complete epoch of each
training, exactly (every epoch reseeds shuffling and target draws from ``(seed, method,
epoch)``; weights and Adam state are reloaded), and may extend it to more epochs.
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
from shenjing.analysis.dann import (
    DannHistory,
    DomainMap,
    DomainSamples,
    domain_map,
    layer_features,
    measure_epoch,
)
from shenjing.analysis.domain import mmd_permutation_test
from shenjing.data.domains import DIRECTIONS, DomainPair, load_domain_pair
from shenjing.errors import CheckpointError, UsageError
from shenjing.models.dann import DANN, FEATURE_LAYERS
from shenjing.plot.save import save_figure
from shenjing.runs import Run, remove_run
from shenjing.stages._study import (
    check_same_settings,
    check_study_folder,
    demo_study_record,
    refuse_resume_with_force,
    write_layer_table,
)
from shenjing.training.dann import DannConfig, EpochLosses, train_epoch
from shenjing.training.epoch_files import (
    check_finite,
    keep_history,
    load_state,
    load_weights,
    save_state,
)

#: the layer the domain classifier (and the penalties) see
FEATURE_LAYER = "feature"
DEFAULT_EPOCHS = 5
#: held-out samples per domain for the gap measures and the maps
N_GAP = 500
MAX_N_GAP = 2_000
N_PERMUTATIONS = 200


@dataclass(frozen=True)
class DannResult:
    """What the dann stage trained, measured and wrote."""

    run: Run
    history: DannHistory
    summary: dict[str, Any]
    figures: tuple[Path, ...]
    resumed: bool = False

    def summary_lines(self) -> str:
        """Lines for the CLI: per training, target accuracy and the gap at the feature
        layer, untrained first."""
        s = self.summary
        lines = [f"{s['direction']}: source {s['source']} ({s['n_source_train']} train / "
                 f"{s['n_source_eval']} eval), target {s['target']} ({s['n_target_train']} "
                 f"unlabelled train / {s['n_target_eval']} eval)"]
        lines += [f"note: {n}" for n in s["notes"]]
        if self.resumed:
            lines.append("resumed after the last complete epoch of each training")
        lines.append(f"at the {FEATURE_LAYER} layer ({s['n_gap']} eval samples per domain; "
                     "MMD² unbiased, Gaussian kernels σ = σ_med × 0.25…4):")
        rows = [("untrained", s["untrained"]), *list(s["final"].items())]
        for name, r in rows:
            g = r["layers"][FEATURE_LAYER]
            lines.append(f"  {name:<12} epoch {r['epoch']}: target acc {r['target_accuracy']:.4f}"
                         f" (source {r['source_accuracy']:.4f}) | MMD² {g['mmd2']:.4f} | "
                         f"CORAL {g['coral']:.3g} | domain clf acc {g['domain_accuracy']:.3f} "
                         f"(proxy A {g['proxy_a']:.2f})")
        lines += [f"wrote {p}" for p in self.figures if p.suffix == ".png"]
        return "\n".join(lines)


# ---- options -----------------------------------------------------------------------------------
def check_dann_options(*, direction: str, data_dir: str | os.PathLike[str] | None,
                       epochs: int, batch_size: int, lr: float, lambda_: float, align: str,
                       align_weight: float | None, seed: int, n_gap: int, resume: bool,
                       force: bool, device: str | torch.device) -> DannConfig:
    """Refuse options that cannot work, before anything is loaded or written."""
    from shenjing._checks import bounded_int, choice
    from shenjing._device import resolve_device

    choice("--direction", direction, DIRECTIONS)
    if data_dir is not None:
        folder = Path(data_dir)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--data-dir {folder} is a file, not a folder; pass the folder "
                             "that holds MNIST's IDX files, e.g. --data-dir "
                             "/work/shared/data/mnist")
        if not folder.exists():
            raise UsageError(f"--data-dir {folder} does not exist; pass the folder that holds "
                             "MNIST's IDX files (the two t10k files are enough), e.g. "
                             "--data-dir /work/shared/data/mnist")
    cfg = DannConfig(epochs=epochs, batch_size=batch_size, lr=lr, lambda_=lambda_,
                     align=align, align_weight=align_weight, seed=seed)
    bounded_int("--n-gap", n_gap, low=10, high=MAX_N_GAP, example=N_GAP,
                why="eval samples per domain; the domain classifier needs some of each")
    refuse_resume_with_force(resume, force)
    resolve_device(device, option="--device")
    return cfg


# ---- the stage ---------------------------------------------------------------------------------
def dann(run: str | os.PathLike[str] = "runs/dann", *, direction: str = "mnist-to-digits",
         data_dir: str | os.PathLike[str] | None = None, epochs: int = DEFAULT_EPOCHS,
         batch_size: int = 64, lr: float = 1e-3, lambda_: float = 0.1, align: str = "mmd",
         align_weight: float | None = None, seed: int = 0, n_gap: int = N_GAP,
         tsne: bool = True, device: str | torch.device = "auto", resume: bool = False,
         force: bool = False, report: bool = True, pair: DomainPair | None = None,
         stop_after_epochs: int | None = None) -> DannResult:
    """Train the DANN study into the run folder ``run``; return the :class:`DannResult` (and
    write ``report.html`` unless ``report=False``).

    ``pair`` gives the two domains in memory (e.g. from
    :func:`shenjing.data.domains.match_domains`) instead of loading ``direction``. An
    existing run needs ``resume=True`` or ``force=True``. ``tsne=False`` skips the maps.
    ``stop_after_epochs`` stops after that many new epochs, as a kill would (tests).
    """
    from shenjing._device import resolve_device

    cfg = check_dann_options(direction=direction, data_dir=data_dir, epochs=epochs,
                             batch_size=batch_size, lr=lr, lambda_=lambda_, align=align,
                             align_weight=align_weight, seed=seed, n_gap=n_gap,
                             resume=resume, force=force, device=device)
    path = Path(run)
    existing = check_study_folder(
        path, resume=resume, force=force, check_resumable=lambda old: _check_same_config(
            old, cfg, n_gap, pair.direction if pair else direction))
    if pair is None:
        pair = load_domain_pair(direction, data_dir=data_dir, seed=seed)
    dev = resolve_device(device, option="--device")
    if existing and force:
        remove_run(path)
        existing = False
    config = {**dataclasses.asdict(cfg), "align_weight": cfg.weight, "optimizer": "adam",
              "direction": pair.direction, "n_gap": n_gap, "methods": list(cfg.methods),
              "feature_layers": list(FEATURE_LAYERS)}
    if not existing:
        Run.create(path, model=_model_spec(pair), data=pair.spec(), seed=seed,
                   classes=pair.source.classes, config=config)
    opened = Run(path)
    with opened.running_stage("dann", epochs=cfg.epochs, device=str(dev)):
        result = _train_and_measure(opened, pair, cfg, n_gap, dev, tsne, stop_after_epochs,
                                    resumed=existing)
    if report:
        from shenjing.report import build_report

        build_report(opened)
    return result


def _model_spec(pair: DomainPair) -> dict[str, Any]:
    shape = list(pair.image_shape)
    return {"name": "dann", "class": "DANN", "rebuildable": False,
            "why": "is the seed's DANN (three trainings in dann/); `shenjing dann --resume` "
                   "rebuilds it",
            "input_shape": shape, "n_outputs": len(pair.source.classes),
            "feature": f"{int(np.prod(shape))} → Linear 256 → ReLU → Linear 128 → ReLU",
            "label_classifier": "128 → Linear 100 → ReLU → Linear 10",
            "domain_classifier": "gradient reversal (−λ) → 128 → Linear 100 → ReLU → Linear 2"}


def _check_same_config(run: Run, cfg: DannConfig, n_gap: int, direction: str) -> None:
    check_same_settings(run, model="dann", what="DANN",
                        asked={**dataclasses.asdict(cfg), "align_weight": cfg.weight,
                               "n_gap": n_gap, "direction": direction},
                        keys=("batch_size", "lr", "lambda_", "align", "align_weight", "seed",
                              "n_gap", "direction"))


def _folder(run: Run, method: str) -> Path:
    return run.subdir("dann") / method


def _checkpoint(run: Run, method: str, epoch: int) -> Path:
    return run.path / "dann" / method / f"epoch-{epoch:03d}.safetensors"


def _state(run: Run, method: str, epoch: int) -> Path:
    return run.path / "dann" / method / f"state-{epoch:03d}.pt"


def _train_and_measure(run: Run, pair: DomainPair, cfg: DannConfig, n_gap: int,
                       dev: torch.device, tsne: bool, stop_after_epochs: int | None, *,
                       resumed: bool) -> DannResult:
    src, tgt = pair.source, pair.target
    samples = DomainSamples.build(src.test.x, src.test.y, tgt.test.x, tgt.test.y,
                                  n_gap=n_gap, seed=cfg.seed)
    history_path = run.subdir("dann") / "history.jsonl"
    xs, ys, xt = src.train.x.to(dev), src.train.y.to(dev), tgt.train.x.to(dev)
    started = time.perf_counter()
    new_epochs = 0
    for method in cfg.methods:
        torch.manual_seed(cfg.seed)  # the same initial weights for every training
        model = DANN(pair.image_shape, len(src.classes)).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        start = _resume_point(run, method, model, optimizer, history_path)
        if start is None:
            if method == cfg.methods[0]:
                write_layer_table(run, model, xs)
            start = 0
            _save_epoch(run, method, 0, model, None)
            _append(history_path, method, 0, None, measure_epoch(model, samples,
                                                                 random_state=cfg.seed))
        for epoch in range(start + 1, cfg.epochs + 1):
            if stop_after_epochs is not None and new_epochs >= stop_after_epochs:
                raise KeyboardInterrupt(f"stopped after {new_epochs} new epochs (test hook)")
            losses = train_epoch(model, optimizer, method, xs, ys, xt, cfg, epoch)
            _save_epoch(run, method, epoch, model, optimizer)
            _append(history_path, method, epoch, losses,
                    measure_epoch(model, samples, random_state=cfg.seed))
            new_epochs += 1
    records = [r for r in _io.read_jsonl(history_path) if r["epoch"] <= cfg.epochs
               and r["method"] in cfg.methods]
    history = DannHistory.from_records(records)
    untrained = dict(history.untrained())
    untrained["method"] = "untrained"
    final = {m: history.final(m) for m in cfg.methods}
    tests, maps = _final_views(run, pair, samples, cfg, history, tsne, dev)
    figures = _draw(run, pair, history, untrained, final, maps)
    summary = {
        "direction": pair.direction, "source": src.name, "target": tgt.name,
        "n_source_train": len(src.train), "n_source_eval": len(src.test),
        "n_target_train": len(tgt.train), "n_target_eval": len(tgt.test),
        "n_gap": samples.n_gap, "notes": list(pair.notes),
        "image_shape": list(pair.image_shape), "feature_layer": FEATURE_LAYER,
        "layers": {k: {"hidden": 256, "feature": 128}[k] for k in FEATURE_LAYERS},
        "lambda": cfg.lambda_, "align": cfg.align, "align_weight": cfg.weight,
        "epochs": cfg.epochs, "methods": list(cfg.methods),
        "untrained": untrained, "final": final, "permutation_tests": tests,
        "maps": {layer: {k: {"file": _map_file(layer, k),
                             "knn_domain_mixing": m.knn_domain_mixing}
                         for k, m in by_name.items()} for layer, by_name in maps.items()},
        "figures": [str(p.relative_to(run.path)) for p in figures if p.suffix == ".png"],
        "classes": list(src.classes)}
    _io.write_json(run.path / "dann" / "dann.json", summary)
    g = {m: final[m]["layers"][FEATURE_LAYER] for m in cfg.methods}
    run.update_stage("dann", "done", epochs=cfg.epochs, direction=pair.direction,
                     target_accuracy={m: final[m]["target_accuracy"] for m in cfg.methods},
                     untrained_target_accuracy=untrained["target_accuracy"],
                     domain_accuracy={m: g[m]["domain_accuracy"] for m in cfg.methods},
                     mmd2={m: g[m]["mmd2"] for m in cfg.methods},
                     seconds=round(time.perf_counter() - started, 2))
    return DannResult(run, history, summary, tuple(figures), resumed)


def _append(path: Path, method: str, epoch: int, losses: EpochLosses | None,
            measure: Any) -> None:
    record: dict[str, Any] = {"method": method, "epoch": epoch,
                              **(dataclasses.asdict(losses) if losses else {
                                  "loss_class": None, "loss_domain": None,
                                  "domain_accuracy": None, "penalty": None, "n_steps": 0})}
    record["train_domain_accuracy"] = record.pop("domain_accuracy")
    record.update(measure.record())
    _io.append_jsonl(path, record)


def _map_file(layer: str, name: str) -> str:
    return f"dann/maps/{layer}-{name}.npz"


def _final_views(run: Run, pair: DomainPair, samples: DomainSamples, cfg: DannConfig,
                 history: DannHistory, tsne: bool, dev: torch.device
                 ) -> tuple[dict[str, Any], dict[str, dict[str, DomainMap]]]:
    """For the untrained net and each training's last epoch: the permutation test at the
    feature layer, and t-SNE maps at every feature layer (``maps[layer][name]``)."""
    tests: dict[str, Any] = {}
    maps: dict[str, dict[str, DomainMap]] = {}
    model = DANN(pair.image_shape, len(pair.source.classes)).to(dev)
    which = [("untrained", cfg.methods[0], 0)] + [
        (m, m, int(history.final(m)["epoch"])) for m in cfg.methods]
    ys = samples.source_y[samples.gap_source].numpy()
    yt = samples.target_y[samples.gap_target].numpy()
    for name, method, epoch in which:
        model.load_state_dict(load_weights(_checkpoint(run, method, epoch)))
        fs = layer_features(model, samples.source_x[samples.gap_source])
        ft = layer_features(model, samples.target_x[samples.gap_target])
        test = mmd_permutation_test(fs[FEATURE_LAYER], ft[FEATURE_LAYER],
                                    n_permutations=N_PERMUTATIONS, random_state=cfg.seed)
        tests[name] = {"epoch": epoch, **dataclasses.asdict(test)}
        if not tsne:
            continue
        run.subdir("dann/maps")
        for layer in FEATURE_LAYERS:
            m = domain_map(fs[layer], ft[layer], ys, yt, random_state=cfg.seed, layer=layer,
                           epoch=epoch, training=name)
            m.save(run.path / _map_file(layer, name))
            maps.setdefault(layer, {})[name] = m
    return tests, maps


def _save_epoch(run: Run, method: str, epoch: int, model: nn.Module,
                optimizer: torch.optim.Optimizer | None) -> None:
    """The network's weights and (after epoch 0) its optimizer's state, atomically."""
    check_finite(model.named_parameters(), what=f"DANN training ({method})", epoch=epoch)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _io.save_safetensors(_checkpoint(run, method, epoch), state,
                         metadata={"epoch": str(epoch), "method": method, "format": "pt"})
    if optimizer is not None:
        save_state(_folder(run, method), epoch, {"optimizer": optimizer.state_dict()})


def _resume_point(run: Run, method: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                  history_path: Path) -> int | None:
    """Reload ``method``'s last epoch that has its history line, checkpoint and (after
    epoch 0) optimizer state; drop its later history lines. None: nothing to resume."""
    if not history_path.is_file():
        return None
    records = _io.read_jsonl(history_path)
    usable = [r["epoch"] for r in records if r["method"] == method
              and _checkpoint(run, method, r["epoch"]).is_file()
              and (r["epoch"] == 0 or _state(run, method, r["epoch"]).is_file())]
    if not usable:
        return None
    epoch = max(usable)
    try:
        model.load_state_dict(load_weights(_checkpoint(run, method, epoch)))
        if epoch:
            optimizer.load_state_dict(load_state(_state(run, method, epoch),
                                                 keys=("optimizer",), what="DANN")["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{run.path}: the {method} checkpoints of epoch {epoch} do not "
                              f"fit this DANN ({exc}); resume with the run's own options, or "
                              "start over with --force") from None
    keep_history(history_path, records,
                 [r for r in records if r["method"] != method or r["epoch"] <= epoch])
    return epoch


def _draw(run: Run, pair: DomainPair, history: DannHistory, untrained: dict[str, Any],
          final: dict[str, dict[str, Any]], maps: dict[str, dict[str, DomainMap]]
          ) -> list[Path]:
    from shenjing.plot.dann import (
        plot_domain_gap,
        plot_domain_maps,
        plot_gap_bars,
        plot_target_accuracy,
    )

    figs = run.figures_dir
    out: list[Path] = []
    out += save_figure(plot_target_accuracy(history), figs, "dann-accuracy")
    out += save_figure(plot_domain_gap(history), figs, "dann-gap")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14.0, 3.4))
    before = untrained["layers"][FEATURE_LAYER]
    after = {m: r["layers"][FEATURE_LAYER] for m, r in final.items()}
    for ax, measure in zip(axes, ("mmd2", "coral", "domain_accuracy"), strict=True):
        plot_gap_bars(before, after, measure=measure, layer=FEATURE_LAYER, ax=ax)
    fig.tight_layout()
    out += save_figure(fig, figs, "dann-gap-bars")
    for layer, by_name in maps.items():
        titles = {}
        for name, m in by_name.items():
            r = untrained if name == "untrained" else final[name]
            g = r["layers"][layer]
            titles[name] = (f" ({layer})\nMMD² {g['mmd2']:.3f}, domain clf "
                            f"{g['domain_accuracy']:.2f}, kNN mixing "
                            f"{m.knn_domain_mixing:.2f}, target acc {r['target_accuracy']:.3f}")
        out += save_figure(plot_domain_maps(by_name, domains=(pair.source.name,
                                                              pair.target.name),
                                            titles=titles), figs, f"dann-maps-{layer}")
    return out


# ---- the demo's study ----------------------------------------------------------------------------
DEMO_EPOCHS = 3


def demo_study(folder: Path, *, data: str = "digits",
               data_dir: str | os.PathLike[str] | None = None,
               device: str | torch.device = "auto", force: bool = False) -> dict[str, str]:
    """The DANN study of ``shenjing demo --full``: MNIST → digits (``data='mnist'``: the
    reverse, digits → MNIST) in ``folder/dann-<direction>``, trained or reused, with its
    report; return the demo index's entry for it. MNIST comes from ``data_dir`` (None:
    shenjing's data folder, downloaded when missing)."""
    direction = "digits-to-mnist" if data == "mnist" else "mnist-to-digits"
    sub = f"dann-{direction}"
    rec = demo_study_record(Path(folder) / sub, stage="dann", epochs=DEMO_EPOCHS, force=force,
                            train=functools.partial(dann, direction=direction,
                                                    data_dir=data_dir, device=device))
    acc = rec.get("target_accuracy") or {}
    dom = rec.get("domain_accuracy") or {}
    number = ("target accuracy " + ", ".join(f"{k} {float(v):.3f}" for k, v in acc.items())
              + "; domain classifier " + ", ".join(f"{k} {float(v):.2f}"
                                                   for k, v in dom.items()))
    return {"href": f"{sub}/report.html", "name": sub, "model": "dann (seed 001)",
            "data": direction, "shows": "whether DANN's features forget the domain: target "
            "accuracy, MMD², CORAL, domain classifier, t-SNE", "number": number}


__all__ = ["DannResult", "check_dann_options", "dann", "demo_study"]
