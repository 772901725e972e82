"""Hessian (sharpness) stage: read a run's checkpoint and data, write ``landscapes/hessian-*``.

Files written into ``<run>/landscapes/``:

``hessian-e<NNN>.json``               top eigenvalues, trace ± CI, per-layer blocks
``hessian-e<NNN>.npz``                ``eigenvalues``, ``trace_samples``, and with a density
                                      ``density_grid``, ``density``, ``slq_nodes``,
                                      ``slq_weights``
``sharpness-epochs.json``             ``epochs``, ``top_eigenvalue``, ``n_hvp`` per checkpoint,
                                      with ``samples``, ``sample_seed``, ``split``, ``seed``,
                                      ``tol`` and ``loss_name``
``hessian-e<NNN>.progress.npz``       while a Hessian runs: its saved progress
                                      (:mod:`shenjing.analysis.landscape.resume`), keyed by
                                      its settings; a rerun continues it and gets the same
                                      numbers; deleted once the results are written

Figures go to ``<run>/figures/`` as ``hessian-density-e<NNN>`` and ``sharpness-epochs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shenjing import _io
from shenjing._device import resolve_device
from shenjing.analysis.hessian import (
    HessianOperator,
    check_hessian_memory,
    hessian_settings_key,
    lanczos_top,
    layers_with_parameters,
    sharpness,
)
from shenjing.analysis.landscape import model_sha256
from shenjing.analysis.landscape.options import validate_hessian_options
from shenjing.analysis.landscape.resume import ResumeFile
from shenjing.backend import Backend
from shenjing.errors import LayerNotFoundError, did_you_mean
from shenjing.runs import Run, versions
from shenjing.stages._backend import backend_session, stage_backend
from shenjing.stages._inputs import fixed_samples, run_loss
from shenjing.stages._progress import StepBar

__all__ = ["HessianResult", "hessian", "validate_hessian_options"]


@dataclass(frozen=True)
class HessianResult:
    """What the hessian stage produced: the summary dict and the files written."""

    summary: dict[str, Any]
    paths: list[Path]
    figures: list[Path] = field(default_factory=list)


def _check_layers(model: torch.nn.Module, names: list[str]) -> None:
    """Refuse layer names that own no parameters in ``model`` (before anything is written)."""
    known = layers_with_parameters(model)
    for name in names:
        if name not in known:
            raise LayerNotFoundError(f"no layer {name!r} with parameters in "
                                     f"{type(model).__name__}.{did_you_mean(name, known)} "
                                     f"Layers with parameters: {', '.join(known)}")


def hessian(run: Run, *, epoch: int | str = "final", top_k: int = 5, trace: bool = True,
            density: bool = False, layers: list[str] | None = None, per_layer: bool = True,
            across_epochs: bool = False, trace_samples: int = 50, density_runs: int = 3,
            density_steps: int = 40, samples: int | None = 1000, sample_seed: int = 0,
            split: str = "test", seed: int = 0, device: str | torch.device = "auto",
            tol: float = 1e-3, figures: bool = True, progress: bool = True,
            save_every: float = 2.0, backend: str | Backend = "local",
            ray_address: str | None = None) -> HessianResult:
    """Sharpness of the loss at ``epoch``: top-k eigenvalues (Lanczos), Hutchinson trace
    with a 95 % CI, SLQ density, the same per layer, and optionally λ_max at every epoch.

    Uses a fixed subset of ``samples`` (1,000 by default; None = the whole split). Every
    option is checked first (:func:`validate_hessian_options`; layer names against the
    model; the Lanczos basis against the memory available): bad input writes nothing.

    Resumes: the progress of every loop is saved to ``hessian-e<NNN>.progress.npz`` at
    most every ``save_every`` seconds; a rerun with the same settings after a kill
    continues from it and writes the same numbers as an uninterrupted run. The file is
    deleted once the results are written.

    ``backend='ray'`` (``ray_address``; docs/scale.md) computes λ_max at every epoch
    (``across_epochs``) as one Ray task per checkpoint; each finished epoch goes into the
    progress file as it arrives, so a rerun after a kill submits only the missing ones.
    """
    validate_hessian_options(top_k=top_k, trace=trace, trace_samples=trace_samples,
                             density=density, density_runs=density_runs,
                             density_steps=density_steps, samples=samples,
                             sample_seed=sample_seed, split=split, seed=seed, tol=tol,
                             device=device, layers=layers)
    be = stage_backend(backend, ray_address)
    # connected before anything is read or written: a cluster that cannot be
    # reached or lacks the resources asked for is refused with the run untouched
    with backend_session(be):
        dev = resolve_device(device, option="--device")
        e = run.resolve_epoch(epoch)
        x, y, idx = fixed_samples(run, samples, sample_seed, split)
        loss = run_loss(run)
        model = run.model(e, device=dev)
        names = (layers_with_parameters(model) if layers is None else list(layers)) \
            if per_layer else []
        _check_layers(model, names)
        check_hessian_memory(sum(p.numel() for p in model.parameters()),
                             density_steps=density_steps if density else 0)
        folder = run.landscapes_dir
        steps = (["top eigenvalues"] + (["trace"] if trace else [])
                 + (["density"] if density else []) + [f"layer {n}" for n in names]
                 + ([f"λ_max at epoch {ep}" for ep in run.epochs] if across_epochs else []))
        bar = StepBar(f"hessian epoch {e}", len(steps)) if progress else None

        def note(msg: str) -> None:
            if bar is not None:
                bar.step(msg)

        with run.running_stage("hessian", epoch=e):
            key = hessian_settings_key(model, x, y, loss=loss, top_k=top_k, trace=trace,
                                       trace_samples=trace_samples, density=density,
                                       density_runs=density_runs, density_steps=density_steps,
                                       layers=names, tol=tol, seed=seed, device=str(dev),
                                       dtype="float32", batch_size=512)
            resume = ResumeFile(folder / f"hessian-e{e:03d}.progress.npz", key,
                                save_every=save_every)
            try:
                rep = sharpness(model, x, y, loss=loss, top_k=top_k, trace=trace, density=density,
                                layers=names, trace_samples=trace_samples,
                                density_runs=density_runs, density_steps=density_steps, tol=tol,
                                seed=seed, device=dev, progress=note, resume=resume)
                extra = dict(epoch=e, loss_name=loss, samples=len(idx), sample_seed=sample_seed,
                             seed=seed, split=split, tol=tol, model_sha256=model_sha256(model),
                             versions=versions(), mode="eval (dropout off, BN running statistics)")
                paths = rep.save(folder / f"hessian-e{e:03d}", extra=extra,
                                 arrays={"sample_indices": idx})
                summary = {**rep.to_json(), **extra}
                curve: dict[str, Any] | None = None
                distributed: dict[str, Any] | None = None
                if across_epochs and be.is_ray:
                    from shenjing.analysis.hessian_ray import epoch_tops_on_ray

                    states = {ep: run.state_dict(ep) for ep in run.epochs}
                    keys = {ep: model_sha256(run.model(ep, device="cpu")) for ep in run.epochs}
                    distributed = epoch_tops_on_ray(model, states, keys, x, y, loss=loss,
                                                    tol=tol, seed=seed, backend=be,
                                                    resume=resume, note=note)
                if across_epochs:
                    eps, vals, hvps = [], [], []
                    for ep in run.epochs:
                        note(f"λ_max at epoch {ep}")
                        at_epoch = run.model(ep, device=dev)
                        op = HessianOperator(at_epoch, x, y, loss=loss, device=dev)
                        top = lanczos_top(op, op.dim, 1, tol=tol, seed=seed, resume=resume,
                                          name=f"epoch {ep} top", key=model_sha256(at_epoch))
                        eps.append(ep)
                        vals.append(float(top.values[0]))
                        hvps.append(top.n_hvp)
                    curve = {"epochs": eps, "top_eigenvalue": vals, "n_hvp": hvps,
                             "samples": len(idx), "sample_seed": sample_seed, "split": split,
                             "seed": seed, "tol": tol, "loss_name": loss,
                             "backend": distributed or {"name": "local"}}
                    paths.append(_io.write_json(folder / "sharpness-epochs.json", curve))
                resume.discard()  # every result is written: nothing left to resume
            finally:
                if bar is not None:
                    bar.close()
            figs: list[Path] = []
            if figures:  # inside the block: a failure while drawing ends the stage as failed
                from shenjing.plot.hessian import plot_hessian_density, plot_sharpness_epochs
                from shenjing.plot.save import save_figure

                if rep.density is not None:
                    figs += save_figure(plot_hessian_density(rep.density.grid,
                                                             rep.density.density,
                                                             top=rep.top.values.tolist()),
                                        run.figures_dir, f"hessian-density-e{e:03d}")
                if curve is not None:
                    figs += save_figure(plot_sharpness_epochs(curve["epochs"],
                                                              curve["top_eigenvalue"]),
                                        run.figures_dir, "sharpness-epochs")
            info: dict[str, Any] = {"epoch": e, "top_eigenvalues": summary["top_eigenvalues"],
                                    "file": f"landscapes/hessian-e{e:03d}.json"}
            if "trace" in summary:
                info["trace"] = summary["trace"]["mean"]
            info["backend"] = be.name
            run.update_stage("hessian", "done", **info)
            return HessianResult(summary, paths, figs)
