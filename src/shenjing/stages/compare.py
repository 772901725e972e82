"""``compare``: several runs side by side, on the same axes, samples and settings.

Reads each run's metrics and checkpoints, reuses what each run already has (landscapes,
Hessian files) where it was computed with the settings of the comparison, computes the rest
with the views' own stages and analysis functions — the same directions seed, grid and
samples for every run — and writes into ``OUT/``:

``compare.json``       the numbers of every view, per run, with the settings, what was reused,
                       what was computed and which views could not be compared (and why)
``figures/*.png``      one figure per view (curves, dynamics, lines, planes, sharpness, CKA,
                       probes)
``computed/<label>/``  what had to be computed but could not go into the run without
                       replacing a file of other settings there (a plane of another grid…)
``report.html``        the page (:func:`shenjing.report.compare.build_compare_report`)

What is missing from a run is computed through the stage that owns it when that stage
would write a new file (the run then holds it for its own report and the next comparison);
when the run already has a file of that name made with other settings, the comparison
computes with the same analysis function into ``computed/`` and leaves the run's file alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing._checks import bounded_int, finite_float
from shenjing._device import resolve_device
from shenjing.errors import RunError, UsageError
from shenjing.runs import Run, open_run
from shenjing.stages._inputs import fixed_samples, run_loss

__all__ = ["COMPARE_FILE", "CompareResult", "compare", "validate_compare_options"]

COMPARE_FILE = "compare.json"
#: the largest number of runs one page compares (each is a colour; CKA grows as runs²)
MAX_RUNS = 8
#: the CLI's spelling of each keyword, for error messages
COMPARE_FLAGS = {"steps": "--steps", "range_": "--range", "seed": "--seed",
                 "samples": "--samples", "sample_seed": "--sample-seed", "device": "--device",
                 "top_k": "--top", "trace_samples": "--trace-samples",
                 "line_steps": "--line-steps", "delta": "--delta",
                 "probe_train": "--probe-train"}


@dataclass(frozen=True)
class CompareResult:
    """What the comparison wrote and found: the page, the numbers, and what it had to do."""

    out: Path
    report: Path
    summary: dict[str, Any]
    figures: list[Path] = field(default_factory=list)

    @property
    def computed(self) -> list[str]:
        return list(self.summary.get("computed", []))

    @property
    def reused(self) -> list[str]:
        return list(self.summary.get("reused", []))

    @property
    def not_compared(self) -> dict[str, str]:
        return dict(self.summary.get("not_compared", {}))

    def lines(self) -> list[str]:
        """What a user wants to read first: the verdicts, in plain lines."""
        s = self.summary
        out = [f"compared {', '.join(r['label'] for r in s['runs'])} at their final epochs"]
        for key in ("sharper", "wider"):
            if s.get("verdict", {}).get(key):
                out.append(s["verdict"][key])
        for pair, value in s.get("cka", {}).get("corresponding_text", {}).items():
            out.append(f"CKA {pair}: {value}")
        for view, why in self.not_compared.items():
            out.append(f"not compared: {view}: {why}")
        return out

    def __repr__(self) -> str:
        return f"CompareResult({str(self.report)!r}, runs={len(self.summary['runs'])})"


def validate_compare_options(*, n_runs: int, steps: Any = 21, range_: Any = (-1.0, 1.0),
                             seed: Any = 0, samples: Any = 1000, sample_seed: Any = 0,
                             delta: Any = 0.5, line_steps: Any = 41, top_k: Any = 3,
                             trace_samples: Any = 30, probe_train: Any = 1000,
                             device: Any = "auto",
                             names: dict[str, str] | None = None) -> None:
    """Refuse bad options of a comparison before anything is read or written."""
    from shenjing.analysis.landscape.options import (
        validate_hessian_options,
        validate_line_options,
        validate_plane_options,
    )

    nm = {**COMPARE_FLAGS, **(names or {})}
    if n_runs < 2:
        raise UsageError(f"compare needs two runs or more, got {n_runs}; give e.g. "
                         "`shenjing compare runs/adam runs/sgd --out runs/compare`")
    if n_runs > MAX_RUNS:
        raise UsageError(f"compare takes at most {MAX_RUNS} runs, got {n_runs}; compare "
                         "fewer at a time")
    validate_plane_options(steps=steps, range_=range_, norm="filter", seed=seed,
                           samples=samples, sample_seed=sample_seed, split="test",
                           device=device, names=nm)
    validate_line_options(steps=line_steps, samples=samples, sample_seed=sample_seed,
                          split="test", device=device,
                          names={**nm, "steps": nm["line_steps"]})
    validate_hessian_options(top_k=top_k, trace=True, trace_samples=trace_samples,
                             samples=samples, sample_seed=sample_seed, split="test",
                             seed=seed, device=device, names=nm)
    finite_float(nm.get("delta", "delta"), delta, low=0.0, low_open=True)
    if probe_train is not None:
        bounded_int(nm.get("probe_train", "probe_train"), probe_train, low=10,
                    why="the probe is trained on them")


@dataclass
class _Member:
    """One run in the comparison and what it can take part in."""

    run: Run
    label: str
    epoch: int | None = None
    why_no_model: str = ""
    loss: str = ""
    samples_sha: str = ""
    idx: np.ndarray | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None


def _out_folder(out: str | os.PathLike[str]) -> Path:
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder}: that is a file; give a folder for the comparison's "
                         "page and figures, e.g. --out runs/compare")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {folder}: {parent} is a file, not a folder; choose "
                             "another place, e.g. --out runs/compare")
    return folder


def _labels(runs: Sequence[Run]) -> list[str]:
    """Run names, made unique with their parent folder's name (then a number)."""
    names = [r.name for r in runs]
    out = []
    for r, n in zip(runs, names, strict=True):
        out.append(n if names.count(n) == 1 else f"{r.path.resolve().parent.name}/{n}")
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        seen[n] = seen.get(n, 0) + 1
        if out.count(n) > 1:
            out[i] = f"{n} ({seen[n]})"
    return out


def _open(runs: Sequence[Run | str | os.PathLike[str]], trust_code: bool) -> list[Run]:
    opened = [r if isinstance(r, Run) else open_run(r, trust_code=trust_code) for r in runs]
    paths = [r.path.resolve() for r in opened]
    for p in paths:
        if paths.count(p) > 1:
            raise UsageError(f"run {p} is given twice; give each run once")
    return opened


def _same(a: np.ndarray | None, b: Any) -> bool:
    return a is not None and b is not None and np.array_equal(np.asarray(a), np.asarray(b))


def _n(values: Any) -> int:
    return 0 if values is None else len(values)


def _labelled(members: Sequence[_Member]) -> str:
    return ", ".join(m.label for m in members)


def compare(runs: Sequence[Run | str | os.PathLike[str]], out: str | os.PathLike[str], *,
            epoch: int | str = "final", steps: int = 21,
            range_: tuple[float, float] = (-1.0, 1.0), seed: int = 0,
            samples: int | None = 1000, sample_seed: int = 0, delta: float = 0.5,
            line_steps: int = 41, hessian: bool = True, across_epochs: bool = True,
            top_k: int = 3, trace_samples: int = 30, probes: bool = True,
            probe_train: int = 1000, device: str | torch.device = "auto",
            trust_code: bool = False,
            progress: Callable[[str], None] | None = None) -> CompareResult:
    """Put ``runs`` side by side and write ``out/report.html`` (see the module docs).

    Every run is measured with the same settings: the plane is ``steps × steps`` over
    ``range_`` on both filter-normalized directions drawn from ``seed``, lines have
    ``line_steps`` points, and the loss, the Hessian, CKA and the probes' test features use
    the same ``samples`` test samples (subset seed ``sample_seed``). A minimum's width is the
    area of its plane at or below ``loss(θ*) + delta`` (connected to θ*), also given at one
    common level (the highest loss at θ* among the runs + ``delta``); its depth is the mean
    loss on the plane's border minus ``loss(θ*)``.

    Views that cannot be compared (CKA of runs on different data, surfaces of runs trained
    on different losses, anything that needs a checkpoint a run lacks) are left out and
    said so (``summary['not_compared']``); the rest is done. Bad options, fewer than two
    runs, a run given twice, or an ``out`` that is a file are refused before anything is
    written. Rerunning reuses what is there: the runs' own files, and the grids in
    ``computed/`` resume.
    """
    validate_compare_options(n_runs=len(runs), steps=steps, range_=range_, seed=seed,
                             samples=samples, sample_seed=sample_seed, delta=delta,
                             line_steps=line_steps, top_k=top_k, trace_samples=trace_samples,
                             probe_train=probe_train, device=device)
    folder = _out_folder(out)
    opened = _open(runs, trust_code)
    dev = resolve_device(device, option="--device")
    say = progress or (lambda _msg: None)
    members = [_Member(r, label) for r, label in zip(opened, _labels(opened), strict=True)]
    errors: list[RunError] = []
    for m in members:
        m.run.require_trust()  # before anything is written: one line naming the code
        try:
            m.epoch = m.run.resolve_epoch(epoch)
        except RunError as exc:
            m.why_no_model = str(exc)
            errors.append(exc)
            continue
        m.loss = run_loss(m.run)
        m.x, m.y, m.idx = fixed_samples(m.run, samples, sample_seed, "test")
        from shenjing.analysis.landscape import tensor_sha256

        m.samples_sha = tensor_sha256(m.x, m.y)
    if len(errors) == len(members):  # no run has it: a bad --epoch, nothing to compare
        raise errors[0]
    _io.make_folder(folder)
    ctx = _Context(folder=folder, dev=dev, say=say,
                   settings=dict(epoch=epoch, steps=steps, range=list(range_), seed=seed,
                                 norm="filter", samples=samples, sample_seed=sample_seed,
                                 delta=delta, line_steps=line_steps, top_k=top_k,
                                 trace_samples=trace_samples, probe_train=probe_train,
                                 split="test", device=str(device)))
    with_model = [m for m in members if m.epoch is not None]
    for m in members:
        if m.epoch is None:
            ctx.not_compared[f"weights of {m.label}"] = (
                f"{m.why_no_model}; its curves are shown, the views that need its weights "
                "(landscape, sharpness, CKA, probes) leave it out")
    _curves(ctx, members)
    if len(with_model) < 2:
        for view in ("landscape", "sharpness", "cka", "probes"):
            ctx.not_compared[view] = ("needs the weights of two runs or more; only "
                                      f"{_labelled(with_model) or 'none'} has a checkpoint at "
                                      f"epoch {epoch!r}")
    else:
        losses = {m.loss for m in with_model}
        same_samples = len({m.samples_sha for m in with_model}) == 1
        if not same_samples:
            ctx.notes.append("The runs were measured on different data ("
                             + "; ".join(f"{m.label}: {_data_label(m.run)}" for m in with_model)
                             + "): each run's numbers are on its own test samples.")
        if len(losses) > 1:
            why = ("the loss surfaces and their Hessians need the same loss; the runs use "
                   + ", ".join(f"{m.label}: {m.loss}" for m in with_model))
            ctx.not_compared["landscape"] = why
            ctx.not_compared["sharpness"] = why
        else:
            _attempt(ctx, "landscape", lambda: _landscapes(
                ctx, with_model, steps=steps, range_=range_, seed=seed, samples=samples,
                sample_seed=sample_seed, delta=delta, line_steps=line_steps))
            if hessian:
                _attempt(ctx, "sharpness", lambda: _sharpness(
                    ctx, with_model, top_k=top_k, trace_samples=trace_samples,
                    samples=samples, sample_seed=sample_seed, seed=seed,
                    across_epochs=across_epochs))
        if not same_samples:
            ctx.not_compared["cka"] = ("CKA compares representations of the same samples; "
                                       "the runs' test samples differ ("
                                       + "; ".join(f"{m.label}: {_data_label(m.run)}"
                                                   for m in with_model) + ")")
        _attempt(ctx, "cka and probes", lambda: _representations(
            ctx, with_model, cka=same_samples, probes=probes, probe_train=probe_train,
            sample_seed=sample_seed))
    summary = ctx.summary(members)
    _io.write_json(folder / COMPARE_FILE, summary)
    from shenjing.report.compare import build_compare_report

    report = build_compare_report(folder)
    say(f"wrote {report}")
    return CompareResult(folder, report, summary, ctx.figures)


def _attempt(ctx: _Context, view: str, work: Callable[[], None]) -> None:
    """Do one view; a shenjing error in it (a stage that failed, a view that does not apply
    to these models) is said on the page and the other views are still done."""
    from shenjing.errors import ShenjingError

    try:
        work()
    except ShenjingError as exc:
        ctx.not_compared[view] = f"could not be computed: {type(exc).__name__}: {exc}"


# ---- the work, view by view --------------------------------------------------------------
@dataclass
class _Context:
    folder: Path
    dev: torch.device
    say: Callable[[str], None]
    settings: dict[str, Any]
    views: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    not_compared: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def figure(self, fig: Any, stem: str) -> str:
        from shenjing.plot.save import save_figure

        paths = save_figure(fig, self.folder / "figures", stem, formats=("png",))
        self.figures += paths
        return f"figures/{stem}.png"

    def computed_dir(self, label: str) -> Path:
        from shenjing.filenames import safe_name

        return _io.make_folder(self.folder / "computed" / safe_name(label))

    def summary(self, members: Sequence[_Member]) -> dict[str, Any]:
        from shenjing.runs import versions

        return {"format": 1, "settings": self.settings,
                "runs": [_run_row(m) for m in members], "views": self.views,
                "verdict": _verdict(self.views), "computed": self.computed,
                "reused": self.reused, "not_compared": self.not_compared,
                "notes": self.notes, "versions": versions(),
                "cka": self.views.get("cka", {})}


def _data_label(run: Run) -> str:
    d = run.manifest.get("data", {}) or {}
    return str(d.get("name") or d.get("factory") or d.get("path") or "data")


def _run_row(m: _Member) -> dict[str, Any]:
    man = m.run.manifest
    cfg = man.get("config", {}) or {}
    metrics = m.run.metrics()
    last = metrics[-1] if metrics else {}
    model = man.get("model", {}) or {}
    name = str(model.get("name") or model.get("factory") or "model")
    return {"label": m.label, "path": str(m.run.path), "model": name,
            "data": _data_label(m.run), "optimizer": cfg.get("optimizer"), "lr": cfg.get("lr"),
            "momentum": cfg.get("momentum") if cfg.get("optimizer") == "sgd" else None,
            "batch_size": cfg.get("batch_size"), "loss": m.loss or cfg.get("loss"),
            "epoch": m.epoch, "epochs": m.run.epochs,
            "test_loss": last.get("test_loss"), "test_accuracy": last.get("test_accuracy"),
            "missing": m.why_no_model}


def _curves(ctx: _Context, members: Sequence[_Member]) -> None:
    """Training curves and per-layer dynamics from each run's metrics.jsonl."""
    from shenjing.plot.compare import plot_compared_curves, plot_compared_dynamics

    curves: dict[str, dict[str, list[Any]]] = {}
    dynamics: dict[str, dict[str, dict[str, list[Any]]]] = {}
    order: list[str] = []
    for m in members:
        rows = m.run.metrics()
        curves[m.label] = {k: [r.get(k) for r in rows] for k in
                           ("epoch", "train_loss", "test_loss", "test_accuracy")}
        per: dict[str, dict[str, list[Any]]] = {}
        for r in rows:
            for group, vals in (r.get("layers") or {}).items():
                if group.endswith(".bias"):
                    continue
                d = per.setdefault(group, {"epoch": [], "update_ratio": [], "grad_norm": [],
                                           "dist_from_init": []})
                d["epoch"].append(r.get("epoch"))
                for key in ("update_ratio", "grad_norm", "dist_from_init"):
                    d[key].append(vals.get(key))
        dynamics[m.label] = per
        order += [g for g in per if g not in order]
    if not any(c["epoch"] for c in curves.values()):
        ctx.not_compared["training curves"] = "no run has a metrics.jsonl line"
        return
    ctx.views["curves"] = {"figure": ctx.figure(plot_compared_curves(curves), "curves"),
                           "runs": curves}
    shared = [g for g in order if all(g in d for d in dynamics.values())]
    layers = (shared or order)[:6]
    if layers:
        ctx.views["dynamics"] = {
            "figure": ctx.figure(plot_compared_dynamics(dynamics, layers), "dynamics"),
            "layers": layers, "shared": bool(shared), "runs": dynamics}
        if not shared:
            ctx.notes.append("The runs share no parameter group name: the dynamics show each "
                             "run's own first layers.")


def _plane_fits(ls: Any, m: _Member, axis: np.ndarray, seed: int) -> bool:
    info = ls.meta.get("directions", {}) or {}
    return (ls.complete and len(ls.axes) == 2 and all(
        len(a) == len(axis) and np.allclose(a, axis) for a in ls.axes)
        and _same(m.idx, ls.sample_indices) and info.get("seed", seed) == seed)


def _landscapes(ctx: _Context, members: Sequence[_Member], *, steps: int,
                range_: tuple[float, float], seed: int, samples: int | None, sample_seed: int,
                delta: float, line_steps: int) -> None:
    """θ₀→θ* lines and filter-normalized planes of every run: reused, or computed."""
    from shenjing.analysis.compare import (
        basin_summary,
        common_color_range,
        common_level,
        line_barrier,
    )
    from shenjing.analysis.landscape import line, load_landscape, make_axis, plane
    from shenjing.plot.compare import plot_compared_lines, plot_compared_planes
    from shenjing.stages import landscape as stage

    axis = make_axis(range_[0], range_[1], steps, anchors=(0.0,))
    lines: dict[str, tuple[list[float], list[float]]] = {}
    line_rows: dict[str, dict[str, Any]] = {}
    planes: dict[str, Any] = {}
    for m in members:
        assert m.epoch is not None and m.x is not None and m.y is not None
        e = m.epoch
        # ---- the line θ₀ → θ*
        name = f"line-e000-e{e:03d}.npz"
        own = m.run.landscapes_dir / name
        ls = None
        if 0 not in m.run.epochs:
            ctx.notes.append(f"{m.label} has no epoch-0 checkpoint: no θ₀→θ* line")
        else:
            if own.is_file():
                try:
                    old = load_landscape(own)
                    if old.complete and _same(m.idx, old.sample_indices):
                        ls = old
                        ctx.reused.append(f"{m.label}: line θ₀→θ* ({own})")
                except Exception:  # an unreadable file is recomputed elsewhere, not trusted
                    ls = None
            if ls is None and not own.exists():
                ctx.say(f"{m.label}: line θ₀→θ*, {line_steps} points")
                ls = stage.landscape_line(m.run, start="init", end=e, steps=line_steps,
                                          samples=samples, sample_seed=sample_seed,
                                          device=ctx.dev, figures=False,
                                          progress=False).landscape
                ctx.computed.append(f"{m.label}: line θ₀→θ*, {line_steps} points, stage "
                                    f"landscape_line → {own}")
            elif ls is None:
                path = ctx.computed_dir(m.label) / name
                ctx.say(f"{m.label}: line θ₀→θ* (its own {own.name} has other samples)")
                ls = line(m.run.state_dict(0), m.run.model(e, device=ctx.dev), m.x, m.y,
                          loss=m.loss, steps=line_steps, path=path, sample_indices=m.idx)
                ctx.computed.append(f"{m.label}: line θ₀→θ*, {line_steps} points → {path} "
                                    f"(the run's {own.name} was made with other samples)")
        if ls is not None:
            alpha = [float(v) for v in ls.axes[0]]
            loss = [float(v) for v in ls.loss]
            lines[m.label] = (alpha, loss)
            line_rows[m.label] = {**line_barrier(alpha, loss), "alpha": alpha, "loss": loss}
        # ---- the plane around θ*
        name = f"plane-filter-s{seed}-e{e:03d}.npz"
        own = m.run.landscapes_dir / name
        ps = None
        if own.is_file():
            try:
                old = load_landscape(own)
                if _plane_fits(old, m, axis, seed):
                    ps = old
                    ctx.reused.append(f"{m.label}: plane {steps}×{steps} ({own})")
            except Exception:
                ps = None
        if ps is None and not own.exists():
            ctx.say(f"{m.label}: plane {steps}×{steps}")
            ps = stage.landscape_plane(m.run, epoch=e, steps=steps, range_=range_,
                                       norm="filter", seed=seed, samples=samples,
                                       sample_seed=sample_seed, device=ctx.dev, figures=False,
                                       progress=False).landscape
            ctx.computed.append(f"{m.label}: plane {steps}×{steps}, stage landscape_plane → "
                                f"{own}")
        elif ps is None:
            path = ctx.computed_dir(m.label) / name
            ctx.say(f"{m.label}: plane {steps}×{steps} (its own {own.name} has other settings)")
            ps = plane(m.run.model(e, device=ctx.dev), m.x, m.y, loss=m.loss, steps=steps,
                       range_=range_, seed=seed, norm="filter", path=path,
                       sample_indices=m.idx)
            ctx.computed.append(f"{m.label}: plane {steps}×{steps} → {path} (the run's "
                                f"{own.name} was made with another grid or samples)")
        planes[m.label] = ps
    if lines:
        ctx.views["lines"] = {"figure": ctx.figure(plot_compared_lines(lines), "lines"),
                              "runs": line_rows}
    centers = {k: float(p.loss[p.center_index]) for k, p in planes.items()}
    level = common_level(list(centers.values()), delta)
    basins = {k: basin_summary(p.loss, p.axes, delta=delta, common_level=level).to_dict()
              for k, p in planes.items()}
    vmin, vmax = common_color_range([p.loss for p in planes.values()])
    drawn = {k: {"axes": p.axes, "loss": p.loss, "level": basins[k]["level"]}
             for k, p in planes.items()}
    fig = plot_compared_planes(drawn, vmin=vmin, vmax=vmax)
    ctx.views["planes"] = {
        "figure": ctx.figure(fig, "planes"), "color_scale": {"vmin": vmin, "vmax": vmax,
                                                              "scale": "log"},
        "axes": [float(axis[0]), float(axis[-1]), int(steps)], "common_level": level,
        "delta": delta, "runs": basins,
        "grids": {k: {"axes": [np.asarray(a).tolist() for a in p.axes],
                      "loss": np.asarray(p.loss).tolist()} for k, p in planes.items()},
        "level_rule": (f"width = area of the plane at or below loss(θ*) + Δ, Δ = {delta:g} "
                       "(the same rise for every run), in the region connected to θ*; "
                       f"also at one common absolute level {level:.4g} (the highest "
                       f"loss(θ*) among the runs + Δ). Depth = mean loss on the plane's "
                       "border − loss(θ*). Areas in squared filter-normalized units; the "
                       f"whole plane is {(axis[-1] - axis[0]) ** 2:g}.")}


def _hessian_fits(summary: dict[str, Any], idx: Any, m: _Member, seed: int) -> bool:
    return (summary.get("seed") == seed and summary.get("split", "test") == "test"
            and "trace" in summary and bool(summary.get("top_eigenvalues"))
            and _same(m.idx, idx) and summary.get("loss_name", m.loss) == m.loss)


def _curve_fits(curve: dict[str, Any], m: _Member, sample_seed: int, seed: int,
                n_split: int) -> bool:
    assert m.idx is not None
    return (curve.get("samples") == len(m.idx) and curve.get("seed") == seed
            and curve.get("split", "test") == "test"
            and (curve.get("sample_seed") == sample_seed or len(m.idx) == n_split)
            and list(curve.get("epochs", [])) == m.run.epochs)


def _sharpness(ctx: _Context, members: Sequence[_Member], *, top_k: int, trace_samples: int,
               samples: int | None, sample_seed: int, seed: int, across_epochs: bool) -> None:
    """λ_max and trace at the compared epoch, and λ_max at every epoch: reused or computed."""
    from shenjing.analysis.hessian import HessianOperator, lanczos_top, sharpness
    from shenjing.plot.compare import plot_compared_sharpness
    from shenjing.stages import hessian as stage

    rows: dict[str, dict[str, Any]] = {}
    for m in members:
        assert m.epoch is not None and m.x is not None and m.y is not None
        e = m.epoch
        folder = m.run.landscapes_dir
        own, own_npz = folder / f"hessian-e{e:03d}.json", folder / f"hessian-e{e:03d}.npz"
        own_curve = folder / "sharpness-epochs.json"
        n_split = len(m.run.data.test)
        summary: dict[str, Any] | None = None
        curve: dict[str, Any] | None = None
        if own.is_file() and own_npz.is_file():
            try:
                old = _io.read_json(own)
                with np.load(own_npz, allow_pickle=False) as z:
                    idx = z.get("sample_indices", None)
                if _hessian_fits(old, idx, m, seed):
                    summary = old
                    ctx.reused.append(f"{m.label}: Hessian at epoch {e} ({own})")
            except Exception:
                summary = None
        if across_epochs and own_curve.is_file():
            try:
                old_curve = _io.read_json(own_curve)
                if _curve_fits(old_curve, m, sample_seed, seed, n_split):
                    curve = old_curve
                    ctx.reused.append(f"{m.label}: λ_max across epochs ({own_curve})")
            except Exception:
                curve = None
        fresh = not own.exists() and not own_npz.exists() and \
            (not across_epochs or not own_curve.exists())
        if summary is None and fresh:
            ctx.say(f"{m.label}: Hessian (top {top_k}, trace"
                    + (", λ_max at every epoch)" if across_epochs else ")"))
            res = stage.hessian(m.run, epoch=e, top_k=top_k, trace=True, per_layer=False,
                                across_epochs=across_epochs, trace_samples=trace_samples,
                                samples=samples, sample_seed=sample_seed, seed=seed,
                                device=ctx.dev, figures=False, progress=False)
            summary = res.summary
            ctx.computed.append(f"{m.label}: Hessian top {top_k} + trace"
                                + (" + λ_max at every epoch" if across_epochs else "")
                                + f", stage hessian → {own}")
            if across_epochs:
                curve = _io.read_json(own_curve)
        if summary is None:
            ctx.say(f"{m.label}: Hessian at epoch {e} (its own file has other settings)")
            model = m.run.model(e, device=ctx.dev)
            rep = sharpness(model, m.x, m.y, loss=m.loss, top_k=top_k, trace=True, layers=(),
                            trace_samples=trace_samples, seed=seed, device=ctx.dev)
            target = ctx.computed_dir(m.label) / f"hessian-e{e:03d}"
            extra = dict(epoch=e, loss_name=m.loss, samples=_n(m.idx),
                         sample_seed=sample_seed, seed=seed, split="test")
            rep.save(target, extra=extra, arrays={"sample_indices": np.asarray(m.idx)})
            summary = {**rep.to_json(), **extra}
            ctx.computed.append(f"{m.label}: Hessian top {top_k} + trace → {target}.json")
        if across_epochs and curve is None:
            ctx.say(f"{m.label}: λ_max at every epoch")
            eps, vals = [], []
            for ep in m.run.epochs:
                op = HessianOperator(m.run.model(ep, device=ctx.dev), m.x, m.y, loss=m.loss,
                                     device=ctx.dev)
                pair = lanczos_top(op, op.dim, 1, tol=1e-3, seed=seed)
                eps.append(ep)
                vals.append(float(pair.values[0]))
            curve = {"epochs": eps, "top_eigenvalue": vals, "samples": _n(m.idx),
                     "sample_seed": sample_seed, "split": "test", "seed": seed, "tol": 1e-3,
                     "loss_name": m.loss}
            target = ctx.computed_dir(m.label) / "sharpness-epochs.json"
            _io.write_json(target, curve)
            ctx.computed.append(f"{m.label}: λ_max at {len(eps)} epochs → {target}")
        trace = summary.get("trace") or {}
        rows[m.label] = {
            "epoch": e, "top_eigenvalue": float(summary["top_eigenvalues"][0]),
            "top_eigenvalues": [float(v) for v in summary["top_eigenvalues"]],
            "trace": trace.get("mean"), "trace_ci95": trace.get("ci95"),
            "trace_probes": trace.get("n_samples"), "samples": summary.get("samples"),
            "epochs": curve.get("epochs") if curve else None,
            "top_eigenvalue_by_epoch": curve.get("top_eigenvalue") if curve else None}
    top = {k: r["top_eigenvalue"] for k, r in rows.items()}
    trace_bars = {k: (float(r["trace"]), float(r["trace"] - r["trace_ci95"][0]))
                  for k, r in rows.items() if r["trace"] is not None and r["trace_ci95"]}
    by_epoch = {k: (r["epochs"], r["top_eigenvalue_by_epoch"]) for k, r in rows.items()
                if r["epochs"]}
    fig = plot_compared_sharpness(top, trace_bars or None, by_epoch or None)
    ctx.views["sharpness"] = {"figure": ctx.figure(fig, "sharpness"), "runs": rows}


def _representations(ctx: _Context, members: Sequence[_Member], *, cka: bool, probes: bool,
                     probe_train: int, sample_seed: int) -> None:
    """CKA between the runs' layers (same samples) and linear probes by layer."""
    from shenjing.analysis.cka import cka_matrix
    from shenjing.analysis.separability import linear_probe, reduce_features
    from shenjing.capture import capture_dataset
    from shenjing.capture.defaults import default_layers
    from shenjing.plot.compare import plot_cka_layers, plot_compared_probes

    classify = all(m.run.task == "classification" for m in members)
    if probes and not classify:
        ctx.not_compared["probes"] = "linear probes need classifiers; " + ", ".join(
            f"{m.label}: {m.run.task}" for m in members)
        probes = False
    if not cka and not probes:
        return
    layers: dict[str, list[str]] = {}
    feats: dict[str, dict[str, np.ndarray]] = {}
    accs: dict[str, dict[str, float]] = {}
    for m in members:
        assert m.epoch is not None and m.x is not None and m.y is not None
        model = m.run.model(m.epoch, device=ctx.dev)
        names = list(default_layers(model, m.x[:3].to(ctx.dev)).names)
        layers[m.label] = names
        shape = tuple(m.run.data.input_shape)
        ctx.say(f"{m.label}: capture {', '.join(names)} on {len(m.x)} test samples")
        acts = capture_dataset(model, (m.x, m.y), names, device=ctx.dev, input_shape=shape)
        feats[m.label] = {k: reduce_features(acts[k], 1024, random_state=sample_seed)[0]
                          for k in names}
        if probes:
            train = m.run.data.train.subset(probe_train, seed=sample_seed)
            tr = capture_dataset(model, train, names, device=ctx.dev, input_shape=shape)
            y_test = m.y.cpu().numpy()
            accs[m.label] = {}
            for k in names:
                xtr = reduce_features(tr[k], 1024, random_state=sample_seed)[0]
                accs[m.label][k] = linear_probe(xtr, train.y.cpu().numpy(), feats[m.label][k],
                                                y_test, max_features=None)[0]
            ctx.computed.append(f"{m.label}: linear probes of {len(names)} layers "
                                f"({len(train.y)} train → {len(y_test)} test samples)")
    if probes:
        order: list[str] = []
        for names in layers.values():
            order += [n for n in names if n not in order]
        chance = 1.0 / max(1, len(members[0].run.classes)) if members[0].run.classes else None
        fig = plot_compared_probes(accs, order, chance=chance)
        ctx.views["probes"] = {"figure": ctx.figure(fig, "probes"), "layers": order,
                               "runs": accs, "chance": chance,
                               "n_train": probe_train, "n_test": _n(members[0].x)}
    if not cka:
        return
    named = {f"{label}:{k}": v for label, per in feats.items() for k, v in per.items()}
    result = cka_matrix(named, max_features=None)
    labels = [m.label for m in members]
    shared = [k for k in layers[labels[0]] if all(k in layers[lab] for lab in labels)]
    corresponding: dict[str, dict[str, float]] = {}
    text: dict[str, str] = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            pair = f"{a} vs {b}"
            corresponding[pair] = {k: result[f"{a}:{k}", f"{b}:{k}"] for k in shared}
            text[pair] = ", ".join(f"{k} {v:.3f}" for k, v in corresponding[pair].items())
    view: dict[str, Any] = {"layers": layers, "shared": shared, "corresponding": corresponding,
                            "corresponding_text": text, "n_samples": result.n_samples,
                            "names": result.names, "matrix": result.matrix.tolist()}
    if shared:
        rows = [f"{a} vs {b}" for i, a in enumerate(labels) for b in labels[i + 1:]]
        grid = np.array([[corresponding[p][k] for k in shared] for p in rows])
        view["figure_corresponding"] = ctx.figure(plot_cka_layers(
            grid, rows, shared, title="linear CKA between corresponding layers",
            col_title="layer"), "cka-corresponding")
    else:
        ctx.not_compared["cka of corresponding layers"] = (
            "the runs have no layer name in common: see the layers × layers map")
    if len(labels) == 2:
        a, b = labels
        ra, rb = layers[a], layers[b]
        block = np.array([[result[f"{a}:{i}", f"{b}:{j}"] for j in rb] for i in ra])
        view["pair"] = {"rows": ra, "cols": rb, "matrix": block.tolist(), "row_run": a,
                        "col_run": b}
        view["figure_pair"] = ctx.figure(plot_cka_layers(
            block, ra, rb, title=f"linear CKA: layers of {a} × layers of {b}", row_title=a,
            col_title=b), "cka-layers")
    ctx.views["cka"] = view


def _verdict(views: dict[str, Any]) -> dict[str, str]:
    """Plain sentences: which minimum is sharper (λ_max), which wider (area below level)."""
    out: dict[str, str] = {}
    sharp = views.get("sharpness", {}).get("runs", {})
    if len(sharp) >= 2:
        order = sorted(sharp, key=lambda k: sharp[k]["top_eigenvalue"], reverse=True)
        out["sharper"] = (f"sharper minimum (top Hessian eigenvalue): {order[0]} "
                          + " > ".join(f"{sharp[k]['top_eigenvalue']:.4g}" for k in order)
                          + " (" + " > ".join(order) + ")")
    basins = views.get("planes", {}).get("runs", {})
    if len(basins) >= 2:
        order = sorted(basins, key=lambda k: basins[k]["area"], reverse=True)
        delta = basins[order[0]]["delta"]
        out["wider"] = (f"wider minimum (area at or below loss(θ*) + {delta:g}): {order[0]} "
                        + " > ".join(f"{basins[k]['area']:.4g}" for k in order)
                        + " (" + " > ".join(order) + ")")
    return out
