"""Every stage records how it ended in run.json the same way (``Run.running_stage``).

Issue 14: a failure anywhere after a stage started ends ``failed`` with the error, a view
that does not apply ends ``skipped`` with the reason, and nothing is ever left saying
``running``. Each stage kind is made to fail at run time by replacing a function it calls
with one that raises, then run.json is read back.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from shenjing.errors import LayerNotFoundError, NotApplicableError
from shenjing.models.weights import save_safetensors
from shenjing.runs import Run

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
import inspect_models as im  # noqa: E402

MESSAGE = "injected failure"
ERROR = f"RuntimeError: {MESSAGE}"

#: the stage modules that import ``save_figure`` themselves (the others import it from
#: shenjing.plot.save when they draw)
FIGURE_MODULES = ("maps", "filters", "weights", "dynamics", "fit", "warp", "attribute", "units",
                  "visualize")


def _raise(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(MESSAGE)


def _raise_error(error: Exception) -> Any:
    raise error


def _break_figures(patch: pytest.MonkeyPatch) -> None:
    """Every figure a stage saves raises."""
    # imported before anything is patched: a module first imported under the patch would
    # bind the broken function for good (and break the tests that run after this one)
    stages = [importlib.import_module(f"shenjing.stages.{name}") for name in FIGURE_MODULES]
    patch.setattr("shenjing.plot.save.save_figure", _raise)
    for module in stages:
        patch.setattr(module, "save_figure", _raise)


def _break_full_captures(patch: pytest.MonkeyPatch, error: Exception,
                         before: Callable[[], None] = lambda: None) -> None:
    """Captures of a whole split raise ``error`` (after calling ``before``); the two-sample
    probe a stage runs before it starts still works."""
    import shenjing.capture as capture

    real = capture.capture_dataset

    def capture_dataset(model: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(data, torch.Tensor):  # the probe: a tensor of two samples
            return real(model, data, *args, **kwargs)
        before()
        raise error

    patch.setattr(capture, "capture_dataset", capture_dataset)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """An MLP trained 2 epochs on digits: checkpoints 0, 1, 2 (a trajectory needs 3)."""
    from shenjing.training import train

    return train("mlp", "digits", epochs=2, run=tmp_path_factory.mktemp("status") / "mlp",
                 progress=False)


def _capture(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.capture import capture_stage

    _break_full_captures(patch, RuntimeError(MESSAGE))
    capture_stage(run, ["relu1"], n=20)


def _embed(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.embed import embed_stage

    _break_figures(patch)
    embed_stage(run, ["relu1"], method="pca", n=30, n_train=40, cka=False)


def _cka(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.embed import cka_runs_stage

    patch.setattr("shenjing.analysis.cka.cka_matrix", _raise)
    cka_runs_stage(run, run, ["relu1"], n=30, figures=False)


def _maps(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.maps import maps_stage

    _break_figures(patch)
    maps_stage(run, "relu1", device="cpu")


def _filters(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.filters import filters_stage

    _break_figures(patch)
    filters_stage(run)


def _weights(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.weights import weights_stage

    _break_figures(patch)
    weights_stage(run)


def _dynamics(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.dynamics import dynamics_stage

    _break_figures(patch)
    dynamics_stage(run, weights=False)


SMALL_LANDSCAPE = {"steps": 3, "samples": 20, "engine": "loop", "progress": False}


def _line(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.landscape import landscape_line

    _break_figures(patch)
    landscape_line(run, **SMALL_LANDSCAPE)


def _plane(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.landscape import landscape_plane

    _break_figures(patch)
    landscape_plane(run, **SMALL_LANDSCAPE)


def _trajectory(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.landscape import landscape_trajectory

    _break_figures(patch)
    landscape_trajectory(run, **SMALL_LANDSCAPE)


def _hessian(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    import shenjing.stages.hessian as stage

    patch.setattr(stage, "sharpness", _raise)
    stage.hessian(run, top_k=1, trace=False, per_layer=False, samples=20, progress=False)


def _fit(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    from shenjing.stages.fit import fit

    _break_figures(patch)
    fit(tmp_path, hidden=8, epochs=1, passes_per_epoch=2, n_points=20, gif=False,
        progress=False, n_eval=101)


def _warp(run: Run, tmp_path: Path, patch: pytest.MonkeyPatch) -> None:
    import shenjing.stages.warp as stage

    patch.setattr(stage, "warp_layers", _raise)
    stage.warp(tmp_path, data="moons", hidden=[8], epochs=1, n_lines=2,
               resolution=8, progress=False)


#: each stage kind and a call that makes it fail at run time (``fit`` and ``warp`` make
#: their own run, in the test's folder)
STAGES: list[tuple[str, Callable[[Run, Path, pytest.MonkeyPatch], None]]] = [
    ("capture", _capture), ("embed", _embed), ("cka", _cka), ("maps", _maps),
    ("filters", _filters),
    ("weights", _weights), ("dynamics", _dynamics), ("landscape_line", _line),
    ("landscape_plane", _plane), ("landscape_trajectory", _trajectory),
    ("hessian", _hessian), ("fit", _fit), ("warp", _warp),
]


@pytest.mark.parametrize(("stage", "call"), STAGES, ids=[name for name, _ in STAGES])
def test_a_failure_at_run_time_ends_the_stage_failed_with_the_error(
        stage, call, run, tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match=MESSAGE):
        call(run, tmp_path, monkeypatch)
    studied = Run(tmp_path) if (tmp_path / "run.json").exists() else run
    record = studied.stage(stage)
    assert record["status"] == "failed", record
    assert record["error"] == ERROR


def test_a_view_that_does_not_apply_ends_skipped_with_the_reason(run):
    from shenjing.stages.filters import filters_stage

    with pytest.raises(NotApplicableError, match="'fc2' reads 128 features"):
        filters_stage(run, "fc2")  # a hidden Linear layer: it has no image-shaped kernels
    record = run.stage("filters")
    assert record["status"] == "skipped" and "error" not in record
    assert record["reason"].startswith("filters: layer 'fc2' reads 128 features")


@pytest.mark.parametrize("run_json_written_meanwhile", [False, True],
                         ids=["alone", "after-another-write"])
def test_a_layer_not_found_inside_embed_never_leaves_it_running(run, monkeypatch,
                                                                run_json_written_meanwhile):
    """Issue 14: a LayerNotFoundError in ``embed_stage`` left the run saying ``running``.
    A usage error inside a stage puts its record back as it was; when run.json was
    written meanwhile, that cannot be undone, and the stage ends ``failed`` instead."""
    from shenjing.stages.embed import embed_stage

    def write_run_json() -> None:
        if run_json_written_meanwhile:
            run.update_stage("capture", "done", note="written while embed ran")

    error = LayerNotFoundError("no layer 'relu9' in MLP")
    before = run.stage("embed")
    _break_full_captures(monkeypatch, error, before=write_run_json)
    with pytest.raises(LayerNotFoundError, match="relu9"):
        embed_stage(run, ["relu1"], method="pca", n=30, n_train=40, cka=False,
                    figures=False)
    record = run.stage("embed")
    if run_json_written_meanwhile:
        assert record["status"] == "failed"
        assert record["error"] == "LayerNotFoundError: no layer 'relu9' in MLP"
    else:
        assert record == before


# ---- inspect ------------------------------------------------------------------------------
INSPECT_OPTIONS = {"line_steps": 3, "plane_steps": 3, "samples": 32, "embed_method": "pca",
                   "embed_samples": 60, "embed_train_samples": 80, "hessian_top": 1,
                   "hessian_samples": 32}


@pytest.fixture(scope="module")
def series(tmp_path_factory, digits) -> Path:
    """Four checkpoints of a small MLP (epochs 0 … 3: every step of inspect applies)."""
    folder = tmp_path_factory.mktemp("series")
    torch.manual_seed(0)
    net = im.Shared(hidden=16)
    save_safetensors(net.state_dict(), folder / "epoch-0.safetensors")
    for epoch in (1, 2, 3):
        net = im.quick_train(net, digits.train.x, digits.train.y, steps=5)
        save_safetensors(net.state_dict(), folder / f"epoch-{epoch}.safetensors")
    return folder


@pytest.fixture(scope="module")
def inspected(tmp_path_factory, series) -> Any:
    """``inspect`` on the series, every step made to fail at run time: its figures, the
    Hessian and the report raise."""
    from shenjing.stages.inspect import inspect_model

    with pytest.MonkeyPatch.context() as patch:
        _break_figures(patch)
        patch.setattr("shenjing.stages.hessian.sharpness", _raise)
        patch.setattr("shenjing.report.build_report", _raise)
        return inspect_model("inspect_models:Shared", checkpoints=series,
                             out=tmp_path_factory.mktemp("inspected") / "run",
                             model_args={"hidden": 16}, **INSPECT_OPTIONS)


def test_inspect_ends_its_own_record_and_lists_every_failed_step(inspected):
    from shenjing.stages.inspect import STEP_NAMES

    record = inspected.run.stage("inspect")
    assert record["status"] == "done"
    assert [s["name"] for s in record["steps"]] == list(STEP_NAMES)
    # an MLP has no attention and no recurrent layer: those two steps do not apply
    assert {s["name"]: s["status"] for s in record["steps"]} == {
        name: "skipped" if name in ("attention", "recurrent") else "failed"
        for name in STEP_NAMES}


@pytest.mark.parametrize("step", ["embed", "maps", "filters", "attribute", "units",
                                  "visualize", "dynamics", "landscape_line",
                                  "landscape_plane", "landscape_trajectory", "hessian",
                                  "report"])
def test_each_inspect_step_that_fails_at_run_time_ends_failed_with_the_error(inspected, step):
    result = {s.name: s for s in inspected.steps}[step]
    assert result.status == "failed"
    assert ERROR in result.detail
    record = inspected.run.stage(step)
    assert record["status"] == "failed", record
    assert ERROR in record["error"]


@pytest.mark.parametrize("where", ["evaluating the epochs", "between the steps"])
def test_inspect_that_dies_ends_its_own_record_failed_and_keeps_the_run(tmp_path, series,
                                                                       monkeypatch, where):
    """Before, inspect set ``running`` by hand and left it so when a full disk stopped the
    evaluation of its epochs, or anything stopped the analysis."""
    import shenjing.stages.inspect as stage
    from shenjing.errors import ResourceError
    from shenjing.training import Recorder

    if where == "evaluating the epochs":
        error: Exception = ResourceError("cannot write metrics.jsonl: no space left")
        monkeypatch.setattr(Recorder, "end_epoch", lambda *_a, **_k: _raise_error(error))
    else:
        error = RuntimeError(MESSAGE)
        monkeypatch.setattr(stage, "run_analysis", lambda *_a, **_k: _raise_error(error))
    with pytest.raises(type(error), match=str(error)):
        stage.inspect_model("inspect_models:Shared", checkpoints=series, out=tmp_path / "run",
                            model_args={"hidden": 16}, **INSPECT_OPTIONS)
    record = Run(tmp_path / "run").stage("inspect")
    assert record["status"] == "failed"
    assert record["error"] == f"{type(error).__name__}: {error}"
    assert not (tmp_path / "run" / ".lock").exists()
