"""``inspect``: every option checked before anything is written; a checkpoint series; steps
that fail or do not apply are recorded as such."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from shenjing.errors import NotApplicableError, UsageError
from shenjing.models.weights import save_safetensors
from shenjing.runs import Run
from shenjing.stages.inspect import (
    ANALYSIS_STEPS,
    AnalysisStep,
    checkpoint_series,
    inspect_model,
)

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
import inspect_models as im  # noqa: E402
from cli_invoke import invoke  # noqa: E402

FAST = {"line_steps": 5, "plane_steps": 3, "samples": 64, "embed_method": "pca",
        "embed_samples": 150, "embed_train_samples": 300, "hessian_top": 2,
        "hessian_samples": 64}


@pytest.fixture(scope="module")
def series(tmp_path_factory, digits):
    """Three checkpoints of a small MLP trained on digits: epoch-0 (init), -1, -2 … -10."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    net = im.Shared(hidden=16)
    save_safetensors(net.state_dict(), folder / "epoch-0.safetensors")
    for epoch in (1, 2, 10):  # 10 sorts after 2 only in natural order
        net = im.quick_train(net, digits.train.x, digits.train.y, steps=10)
        save_safetensors(net.state_dict(), folder / f"epoch-{epoch}.safetensors")
    return folder


def _invoke(capsys, *args: str) -> tuple[int, str, str]:
    return invoke(capsys, "inspect", *args)


BAD = [
    (["--samples", "0"], r"--samples 0: expected a whole number ≥ 1, e\.g\. --samples 1"),
    (["--plane-steps", "1"], r"--plane-steps 1: expected a whole number ≥ 3 \(a plane needs a "
                             r"point on each side of θ\*\)"),
    (["--line-steps", "1"], r"--line-steps 1: expected a whole number ≥ 2"),
    (["--method", "bogus"], r"--method 'bogus': expected one of tsne, pca, umap"),
    (["--embed-samples", "3"], r"--embed-samples 3: expected a whole number ≥ 10"),
    (["--embed-train-samples", "-1"], r"--embed-train-samples -1: expected a whole number ≥ 10"),
    (["--hessian-top", "0"], r"--hessian-top 0: expected a whole number ≥ 1"),
    (["--hessian-samples", "0"], r"--hessian-samples 0: expected a whole number ≥ 1"),
    (["--skip", "hesian"], r"--skip 'hesian': expected one of .*Did you mean 'hessian'"),
    (["--seed", "-1"], r"--seed -1: expected a whole number from 0 to 4294967295"),
    (["--layers", ","], r"--layers ',' names nothing; give names separated by commas"),
    (["--device", "cuda:7"], r"CUDA is not available|unknown device"),
    (["--normalize", "bogus"], r"normalize.*bogus.*standard, unit, none"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_is_refused_before_anything_is_written(tmp_path, capsys, series, extra,
                                                          message):
    out = tmp_path / "r"
    code, stdout, err = _invoke(capsys, "--model", "inspect_models:Shared", "--model-arg",
                                "hidden=16", "--weights", str(series / "epoch-2.safetensors"),
                                "--out", str(out), *extra)
    assert code == 2, (stdout, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_weights_and_checkpoints_are_exclusive_and_one_is_needed(tmp_path, series):
    with pytest.raises(UsageError, match="either --weights .* or --checkpoints"):
        inspect_model("inspect_models:Shared", series / "epoch-1.safetensors",
                      checkpoints=str(series), out=tmp_path / "r", model_args={"hidden": 16})
    with pytest.raises(UsageError, match="needs --weights FILE"):
        inspect_model("inspect_models:Shared", out=tmp_path / "r", model_args={"hidden": 16})
    with pytest.raises(UsageError, match="matches no weights file"):
        inspect_model("inspect_models:Shared", checkpoints=str(tmp_path / "none-*.pt"),
                      out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_checkpoint_series_is_in_natural_order(series):
    names = [p.name for p in checkpoint_series(str(series / "epoch-*.safetensors"))]
    assert names == ["epoch-0.safetensors", "epoch-1.safetensors", "epoch-2.safetensors",
                     "epoch-10.safetensors"]
    assert [p.name for p in checkpoint_series(series)] == names  # a folder works too


def test_a_checkpoint_series_gives_trajectory_and_per_epoch_sharpness(tmp_path, series,
                                                                      digits):
    import torch.nn.functional as F

    from shenjing.models.weights import load_weights

    steps = [s for s in ANALYSIS_STEPS if s.name in ("landscape_trajectory", "hessian")]
    result = inspect_model("inspect_models:Shared", checkpoints=str(series / "epoch-*"),
                           out=tmp_path / "r", model_args={"hidden": 16}, steps=steps, **FAST)
    run = Run(tmp_path / "r")
    assert run.epochs == [0, 1, 2, 3]
    assert run.manifest["config"]["init_kind"] == "checkpoints"
    assert [c["file"].rsplit("/", 1)[-1] for c in run.manifest["config"]["checkpoints"]] == [
        "epoch-0.safetensors", "epoch-1.safetensors", "epoch-2.safetensors",
        "epoch-10.safetensors"]
    # every epoch's metrics are those of its file, computed here independently
    for epoch, name in enumerate(("epoch-0", "epoch-1", "epoch-2", "epoch-10")):
        net = im.Shared(hidden=16)
        load_weights(net, series / f"{name}.safetensors")
        with torch.no_grad():
            loss = float(F.cross_entropy(net.eval()(digits.test.x), digits.test.y))
        assert run.metrics()[epoch]["test_loss"] == pytest.approx(loss, abs=1e-5)
    status = {s.name: s.status for s in result.steps}
    assert status == {"landscape_trajectory": "done", "hessian": "done"}, result.summary()
    assert run.stage("hessian")["status"] == "done"
    import json

    curve = json.loads((run.path / "landscapes" / "sharpness-epochs.json").read_text())
    assert curve["epochs"] == [0, 1, 2, 3] and len(curve["top_eigenvalue"]) == 4
    assert curve["top_eigenvalue"][-1] == pytest.approx(run.stage("hessian")[
        "top_eigenvalues"][0], rel=1e-2)  # λ_max of the final epoch, two ways
    assert "the first file of --checkpoints" in result.init


def test_fresh_init_is_named_for_what_it_is(tmp_path, series):
    result = inspect_model("inspect_models:Shared", series / "epoch-2.safetensors",
                           out=tmp_path / "r", model_args={"hidden": 16}, analysis=False)
    config = Run(tmp_path / "r").manifest["config"]
    assert config["init_kind"] == "fresh"
    assert "not your model's real initial weights" in result.init
    assert "--init-weights" in result.init


def test_failing_and_inapplicable_steps_are_recorded(tmp_path, series):
    def boom(run, ctx):
        run.update_stage("maps", "running")  # a stage that dies before it can record it
        raise RuntimeError("forward failed on batch 3")

    def not_here(run, ctx):
        raise NotApplicableError("filters: 'lstm' is an LSTM")

    steps = (AnalysisStep("maps", boom, ("maps",)), AnalysisStep("filters", not_here,
                                                                ("filters",)))
    result = inspect_model("inspect_models:Shared", series / "epoch-2.safetensors",
                           out=tmp_path / "r", model_args={"hidden": 16}, steps=steps)
    run = Run(tmp_path / "r")
    assert [(s.name, s.status) for s in result.steps] == [("maps", "failed"),
                                                          ("filters", "skipped")]
    assert run.stage("maps") | {"updated": None} == {
        "status": "failed", "error": "RuntimeError: forward failed on batch 3",
        "updated": None}
    assert run.stage("filters")["status"] == "skipped"
    assert run.stage("filters")["reason"] == "filters: 'lstm' is an LSTM"
    recorded = {s["name"]: s["status"] for s in run.stage("inspect")["steps"]}
    assert recorded == {"maps": "failed", "filters": "skipped"}


def test_figures_never_call_a_fresh_initialisation_untrained(tmp_path, series, monkeypatch):
    import shenjing.stages.dynamics as dynamics_stage_module
    import shenjing.stages.maps as maps_stage_module

    inspect_model("inspect_models:Shared", series / "epoch-2.safetensors", out=tmp_path / "r",
                  model_args={"hidden": 16}, analysis=False)
    run = Run(tmp_path / "r")
    assert run.init_kind == "fresh" and run.epoch0_words == "fresh init"
    titles: list[str] = []

    def spy(module):
        original = module.save_figure

        def save(fig, *args, **kwargs):
            texts = [ax.get_title() for ax in fig.axes] + [ax.get_xlabel() for ax in fig.axes]
            if fig._suptitle is not None:
                texts.append(fig._suptitle.get_text())
            titles.extend(texts)
            return original(fig, *args, **kwargs)

        monkeypatch.setattr(module, "save_figure", save)

    spy(maps_stage_module)
    spy(dynamics_stage_module)
    maps_stage_module.maps_stage(run, "inp", epochs=("init", "final"))
    dynamics_stage_module.dynamics_stage(run)
    text = " | ".join(titles)
    assert "fresh init" in text, text
    assert "untrained" not in text, text
