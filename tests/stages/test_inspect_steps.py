"""``inspect``'s typed table of steps: each step calls its stage function directly, with
every size ``InspectOptions`` holds and the device ``inspect`` resolved (issue 14)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from shenjing.runs import Run
from shenjing.stages.inspect import (
    ANALYSIS_STEPS,
    STEP_NAMES,
    InspectContext,
    InspectOptions,
    run_analysis,
)

#: a value no default has, for every size: each must reach the stage it sizes
OPTIONS = InspectOptions(line_steps=7, plane_steps=4, samples=33, embed_method="pca",
                         embed_samples=44, embed_train_samples=55, hessian_top=3,
                         hessian_samples=66)
DEVICE = torch.device("cpu")

#: the stage functions the steps call: module, name, what each returns to its step
STAGE_FUNCTIONS = [
    ("shenjing.stages.embed", "embed_stage", None),
    ("shenjing.stages.maps", "maps_stage", None),
    ("shenjing.stages.filters", "filters_stage", SimpleNamespace(layer="fc1")),
    ("shenjing.stages.attention", "attention_stage", SimpleNamespace(summary=lambda: "2 layers")),
    ("shenjing.stages.recurrent", "recurrent_stage", SimpleNamespace(summary=lambda: "lstm")),
    ("shenjing.stages.attribute", "attribute_stage", SimpleNamespace(summary=lambda: "ig")),
    ("shenjing.stages.units", "units_stage", None),
    ("shenjing.stages.visualize", "visualize_stage", SimpleNamespace(summary=lambda: "x")),
    ("shenjing.stages.dynamics", "dynamics_stage", None),
    ("shenjing.stages.landscape", "landscape_line", None),
    ("shenjing.stages.landscape", "landscape_plane", None),
    ("shenjing.stages.landscape", "landscape_trajectory", None),
    ("shenjing.stages.hessian", "hessian", SimpleNamespace(summary={"top_eigenvalues": [2.0]})),
    ("shenjing.report", "build_report", None),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """An MLP with checkpoints 0, 1, 2: the trajectory and per-epoch sharpness apply."""
    from shenjing.training import train

    return train("mlp", "digits", epochs=2, run=tmp_path_factory.mktemp("steps") / "mlp",
                 progress=False)


@pytest.fixture
def calls(run, monkeypatch) -> dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Each stage function replaced by one that records how it was called."""
    import importlib

    seen: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}

    def recorder(name: str, returns: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.setdefault(name, []).append((args, kwargs))
            return returns
        return call

    for module, name, returns in STAGE_FUNCTIONS:
        monkeypatch.setattr(importlib.import_module(module), name, recorder(name, returns))
    ctx = InspectContext(model=run.model(), layers=("relu1", "fc2"), penultimate="relu1",
                         options=OPTIONS, device=DEVICE, n_test=len(run.data.test),
                         n_train=len(run.data.train))
    results = run_analysis(run, ctx)
    assert [(r.name, r.status) for r in results] == [(n, "done") for n in STEP_NAMES]
    return seen


def test_every_step_calls_its_stage_once_per_view(calls, run):
    assert sorted(calls) == sorted(name for _, name, _ in STAGE_FUNCTIONS)
    assert all(args[0] is run for name in calls for args, _ in calls[name])
    # maps: the first default layer and the penultimate one, here the same layer once
    assert [args[1] for args, _ in calls["maps_stage"]] == ["relu1"]


def test_every_size_inspect_holds_reaches_the_stage_it_sizes(calls):
    def kwargs(name: str) -> dict[str, Any]:
        [(_, given)] = calls[name]
        return given

    assert kwargs("embed_stage")["method"] == OPTIONS.embed_method
    assert kwargs("embed_stage")["n"] == OPTIONS.embed_samples
    assert kwargs("embed_stage")["n_train"] == OPTIONS.embed_train_samples
    assert kwargs("landscape_line")["steps"] == OPTIONS.line_steps
    assert kwargs("landscape_plane")["steps"] == OPTIONS.plane_steps
    assert kwargs("landscape_trajectory")["steps"] == OPTIONS.plane_steps
    for name in ("landscape_line", "landscape_plane", "landscape_trajectory"):
        assert kwargs(name)["samples"] == OPTIONS.samples
    assert kwargs("hessian")["top_k"] == OPTIONS.hessian_top
    assert kwargs("hessian")["samples"] == OPTIONS.hessian_samples
    assert kwargs("hessian")["across_epochs"] is True  # 3 checkpoints
    # attention and recurrent: sized by the embedding's sample counts (capped)
    assert kwargs("attention_stage")["n"] == OPTIONS.embed_samples
    assert kwargs("attention_stage")["n_probe"] == OPTIONS.embed_train_samples
    assert kwargs("recurrent_stage")["n"] == OPTIONS.embed_samples
    # attribution, units, visualization: the MLP has no convolution, so no Grad-CAM; the
    # units of the features the head reads; every class of the output
    assert kwargs("attribute_stage")["methods"] == ("ig", "saliency")
    assert kwargs("units_stage")["layer"] == "relu1"
    assert kwargs("visualize_stage")["layer"] == "output"
    assert kwargs("visualize_stage")["channels"] == list(range(10))
    sizes = {f.name for f in dataclasses.fields(InspectOptions)} - {"skip"}
    handed = {"embed_method", "embed_samples", "embed_train_samples", "line_steps",
              "plane_steps", "samples", "hessian_top", "hessian_samples"}
    assert handed == sizes, "a new InspectOptions field must reach its stage (and this test)"


def test_the_device_inspect_resolved_is_handed_on_as_a_torch_device(calls):
    for name in ("embed_stage", "maps_stage", "landscape_line", "landscape_plane",
                 "landscape_trajectory", "hessian", "attention_stage", "recurrent_stage",
                 "attribute_stage", "units_stage", "visualize_stage"):
        for _, given in calls[name]:
            assert given["device"] == DEVICE and isinstance(given["device"], torch.device)


def test_the_table_names_each_step_and_the_stages_it_records():
    assert STEP_NAMES == ("embed", "maps", "filters", "attention", "recurrent", "attribute",
                          "units", "visualize", "dynamics",
                          "landscape_line", "landscape_plane", "landscape_trajectory",
                          "hessian", "report")
    assert {s.name: s.stages for s in ANALYSIS_STEPS}["dynamics"] == ("dynamics", "weights")
