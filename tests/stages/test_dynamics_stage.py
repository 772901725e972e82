"""The ``dynamics`` and ``weights`` stages read a run folder as data: metrics, checkpoints
and ``layers.json`` — never the model's code. Coverage of the model's parameters, the
"nothing changed" warning, and runs recorded before every parameter was tracked."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shenjing import _io
from shenjing.runs import Run
from shenjing.stages.dynamics import dynamics_stage
from shenjing.stages.weights import weights_stage
from shenjing.training import Recorder

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: user_models
from user_models import RowLSTM, TinyResNet  # noqa: E402


@pytest.fixture(scope="module")
def small(digits):
    return dataclasses.replace(digits, train=digits.train.subset(200, seed=0),
                               test=digits.test.subset(100, seed=0))


def record_run(path: Path, model: torch.nn.Module, data, *, epochs: int = 2,
               lr: float = 0.05, **recorder_kwargs) -> Run:
    """A user's loop: SGD over fixed batches, recorded with the Recorder."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rec = Recorder(path, model, data=data, **recorder_kwargs)
    rec.start()
    for _ in range(epochs):
        for x, y in data.train.loader(100):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            rec.after_backward(loss, output=out, target=y)
            opt.step()
        rec.end_epoch(optimizer=opt)
    return Run(path)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory, small):
    torch.manual_seed(0)
    return record_run(tmp_path_factory.mktemp("lstm") / "run", RowLSTM(), small)


def test_lstm_coverage_is_every_parameter(lstm_run):
    result = dynamics_stage(lstm_run)
    n_total = sum(p.numel() for p in RowLSTM().parameters())
    data = _io.read_json(lstm_run.path / "dynamics" / "dynamics.json")
    assert data["coverage"] == {"n_tracked": n_total, "n_total": n_total, "share": 1.0,
                                "untracked": []}
    assert f"tracks {n_total:,} of {n_total:,} parameters (100%)" in result.summary()
    assert data["dynamics"]["layers"] == ["lstm", "lstm.bias", "fc", "fc.bias"]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_weights_stage_covers_the_lstm_with_numbers_from_the_checkpoint(lstm_run):
    result = weights_stage(lstm_run)
    assert result.history.layers == ("lstm", "lstm.bias", "fc", "fc.bias")
    stats = _io.read_json(lstm_run.path / "dynamics" / "weights.json")["stats"]
    state = lstm_run.state_dict(2)
    w = torch.cat([state["lstm.weight_ih_l0"].reshape(-1),
                   state["lstm.weight_hh_l0"].reshape(-1)]).double().numpy()
    assert stats["lstm"]["norm"][-1] == pytest.approx(np.linalg.norm(w), rel=1e-12)
    assert stats["lstm"]["std"][-1] == pytest.approx(w.std(), rel=1e-12)
    assert stats["fc.bias"]["mean"][-1] == pytest.approx(float(state["fc.bias"].double().mean()))
    npz = np.load(lstm_run.path / "dynamics" / "weights.npz")
    assert npz["lstm__counts"].sum(axis=1).tolist() == [w.size] * 3
    assert "tracks 100% of the model's parameters" in result.summary()


HOSTILE = textwrap.dedent('''
    from pathlib import Path
    Path({marker!r}).write_text("code ran")
    from torch import nn

    def Net():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
''')


def test_stages_never_build_or_import_the_model(tmp_path, small, monkeypatch):
    """A run folder is data: dynamics and weights read files only (no model built, no
    factory file imported, even when its code would be trusted)."""
    marker = tmp_path / "marker"
    source = tmp_path / "evil.py"
    source.write_text(HOSTILE.format(marker=str(marker)))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    run = record_run(tmp_path / "run", model, small, epochs=1)
    run.update_manifest(model={"factory": f"{source}:Net", "kwargs": {}})
    calls: list[str] = []
    monkeypatch.setattr(Run, "build_model", lambda self: calls.append("build_model"))
    monkeypatch.setattr(Run, "model", lambda self, *a, **k: calls.append("model"))
    result = dynamics_stage(Run(run.path))
    assert result.weights is not None
    weights_stage(Run(run.path))
    assert calls == [] and not marker.exists()
    assert Run(run.path).stage("dynamics")["status"] == "done"


def old_record(epoch: int, layers: list[str]) -> dict:
    """A metrics line as shenjing wrote it before every parameter was tracked: module
    names with a ``.weight`` only, keys sorted as text, no parameter listing."""
    return {"epoch": epoch, "test_loss": 2.0 / (epoch + 1), "train_loss": None,
            "layers": {n: {"weight_norm": 1.0 + epoch, "update_ratio":
                           None if epoch == 0 else 0.1, "dist_from_init": 0.1 * epoch,
                           "cos_to_init": 1.0, "grad_norm": None if epoch == 0 else 0.2}
                       for n in sorted(layers)}}


def old_run(path: Path, model: torch.nn.Module, layers: list[str], *, rows: list[str] | None
            ) -> Run:
    run = Run.create(path, model={"name": "custom", "class": "x.Net", "rebuildable": False},
                     data={"name": "digits", "seed": 0})
    for epoch in (0, 1):
        run.save_checkpoint(epoch, model)
        _io.append_jsonl(run.metrics_path, old_record(epoch, layers))
    if rows is not None:
        n = sum(p.numel() for p in model.parameters())
        _io.write_json(path / "layers.json", {
            "format": 1, "model_name": "Net", "input_shape": [1, 8, 8], "n_params": n,
            "n_trainable": n, "rows": [{"name": r, "type": "Linear", "output_shapes": {},
                                        "n_params": 0, "is_leaf": True, "calls": 1}
                                       for r in rows]})
    return Run(path)


class HeadFirst(torch.nn.Module):
    """Module order head, body.0, body.1: not the natural (text) order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4, 4)
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))


def test_layer_order_comes_from_layers_json_not_the_model(tmp_path):
    run = old_run(tmp_path / "r", HeadFirst(), ["head", "body.0", "body.1"],
                  rows=["head", "body", "body.0", "body.1"])
    result = dynamics_stage(run, weights=True)
    assert result.dynamics.layers == ("head", "body.0", "body.1")
    assert result.weights is not None
    assert result.weights.history.layers == ("head", "head.bias", "body.0", "body.0.bias",
                                             "body.1", "body.1.bias")
    without = old_run(tmp_path / "natural", HeadFirst(), ["head", "body.0", "body.1"],
                      rows=None)
    assert dynamics_stage(without, weights=False).dynamics.layers == ("body.0", "body.1",
                                                                      "head")


def test_an_old_lstm_run_states_its_low_coverage(tmp_path):
    """The issue's case: only ``fc`` was tracked; coverage is counted from the checkpoint."""
    torch.manual_seed(0)
    model = RowLSTM()
    run = old_run(tmp_path / "old", model, ["fc"], rows=None)
    result = dynamics_stage(run, weights=False)
    cov = _io.read_json(run.path / "dynamics" / "dynamics.json")["coverage"]
    n_total = sum(p.numel() for p in model.parameters())
    assert cov["n_total"] == n_total and cov["n_tracked"] == model.fc.weight.numel()
    assert cov["share"] == pytest.approx(model.fc.weight.numel() / n_total)
    assert set(cov["untracked"]) == {"lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                     "lstm.bias_ih_l0", "lstm.bias_hh_l0", "fc.bias"}
    assert f"tracks {model.fc.weight.numel():,} of {n_total:,} parameters" in result.summary()


def test_old_runs_infer_parameters_from_checkpoints_without_batchnorm_statistics(tmp_path):
    torch.manual_seed(0)
    model = TinyResNet()
    run = old_run(tmp_path / "res", model, ["fc"], rows=None)
    layers = weights_stage(run).history.layers
    assert "stem.1" in layers and "stem.1.bias" in layers and "fc.bias" in layers
    assert not any("running" in name or "num_batches" in name for name in layers)
    cov = dynamics_stage(run, weights=False).coverage
    assert cov is not None and cov.n_total == sum(p.numel() for p in model.parameters())


def test_weights_equal_to_the_init_are_said_to_be_unchanged(tmp_path, small):
    """Item 16: an inspect-like run whose epoch 1 equals epoch 0 gives flat lines, and the
    view says why instead of showing them silently."""
    torch.manual_seed(0)
    model = RowLSTM()
    rec = Recorder(tmp_path / "same", model, data=small)
    rec.start()
    rec.end_epoch()            # "trained" without a single step: the weights file = init
    result = dynamics_stage(rec.run)
    data = _io.read_json(rec.run.path / "dynamics" / "dynamics.json")
    kinds = [w["kind"] for w in data["status"]["warnings"]]
    assert kinds[0] == "unchanged"
    assert "identical to epoch 0" in data["status"]["warnings"][0]["message"]
    assert "WARNING every tracked parameter is identical to epoch 0" in result.summary()
    assert set(data["status"]["status"].values()) == {"unchanged"}
    import matplotlib.image as mpimg

    assert mpimg.imread(rec.run.figures_dir / "dynamics-layers.png").shape[0] > 0


def test_a_trained_run_has_no_unchanged_warning(lstm_run):
    status = dynamics_stage(lstm_run, weights=False).status
    assert not {"unchanged", "frozen"} & {w.kind for w in status.warnings}


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda run: weights_stage(run, layers=["lstm.bais"]), "LayerNotFoundError",
     r"no parameters for 'lstm\.bais'\. Did you mean 'lstm\.bias'"),
    (lambda run: weights_stage(run, bins=0), "UsageError",
     "--bins 0: expected a whole number from 1 to 10000"),
    (lambda run: weights_stage(run, epochs=[7]), "EpochNotFoundError", "no checkpoint for "
     "epoch 7"),
    (lambda run: dynamics_stage(run, settled_fraction=2), "UsageError",
     r"settled_fraction must be in \(0, 1\)"),
    (lambda run: dynamics_stage(run, settled=0.1), "UsageError", "unknown threshold 'settled'"),
])
def test_bad_arguments_are_refused_before_anything_is_written(lstm_run, call, error, message):
    before = {p: p.stat().st_mtime_ns for p in lstm_run.path.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match=message) as info:
        call(lstm_run)
    assert type(info.value).__name__ == error
    after = {p: p.stat().st_mtime_ns for p in lstm_run.path.rglob("*") if p.is_file()}
    assert after == before
