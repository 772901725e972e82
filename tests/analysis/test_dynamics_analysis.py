"""Training dynamics: metrics records → arrays, settled/moving layers, warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shenjing.analysis.dynamics import layer_status, read_dynamics
from shenjing.errors import RunError, UsageError


def record(epoch, *, ratios, grads, dead=None, loss=None, norms=None):
    """A metrics.jsonl record in the trainer's format (epoch 0 has null ratio/grad)."""
    layers = {}
    for i, name in enumerate(["conv1", "conv2", "fc1"]):
        layers[name] = {"weight_norm": (norms or [1.0, 2.0, 3.0])[i],
                        "update_ratio": None if epoch == 0 else ratios[i],
                        "dist_from_init": 0.1 * epoch, "cos_to_init": 1 - 0.01 * epoch,
                        "grad_norm": None if epoch == 0 else grads[i]}
    return {"epoch": epoch, "train_loss": None if epoch == 0 else 1.0 / epoch,
            "train_accuracy": None if epoch == 0 else 0.9, "test_loss": loss or 2.3 / (epoch + 1),
            "test_accuracy": 0.1 + 0.2 * epoch, "lr": 1e-3, "steps": 10 * epoch,
            "layers": layers, "dead_units": dead or {"relu1": 0.0, "relu3": 0.1}}


def healthy():
    return [record(e, ratios=[0.5 / e ** 3, 0.3 / e, 0.2], grads=[0.1, 0.2, 0.3])
            if e else record(0, ratios=None, grads=None) for e in range(4)]


def test_records_become_arrays_with_nan_for_null():
    d = read_dynamics(healthy())
    assert d.epochs.tolist() == [0, 1, 2, 3]
    assert d.layers == ("conv1", "conv2", "fc1")
    ratio = d.layer_metric("update_ratio")
    assert ratio.shape == (3, 4)
    assert math.isnan(ratio[0, 0])
    np.testing.assert_allclose(ratio[:, 3], [0.5 / 27, 0.1, 0.2])
    assert math.isnan(d.scalars["train_loss"][0])
    np.testing.assert_allclose(d.scalars["test_accuracy"], [0.1, 0.3, 0.5, 0.7])
    np.testing.assert_allclose(d.dead_units["relu3"], 0.1)
    assert d.has("grad_norm") and not d.has("nothing")
    js = d.to_dict()
    assert js["layer_metrics"]["update_ratio"]["conv1"][0] is None
    with pytest.raises(UsageError, match="no per-layer metric 'x'"):
        d.layer_metric("x")


def test_resumed_epochs_and_step_records():
    recs = healthy()
    recs.insert(2, {"step": 5, "epoch": 1, "loss": 9.0})   # a per-step record is skipped
    recs.append(dict(recs[-1], test_loss=0.01))            # epoch 3 again: last wins
    d = read_dynamics(recs)
    assert d.epochs.tolist() == [0, 1, 2, 3]
    assert d.scalars["test_loss"][-1] == 0.01
    with pytest.raises(RunError, match="no per-epoch records"):
        read_dynamics([])


def test_settled_and_moving():
    s = layer_status(read_dynamics(healthy()))
    # conv1: 0.5 → 0.0185, below 0.1 × its peak 0.5 → settled; conv2 0.3 → 0.1 still moving
    assert s.status == {"conv1": "settled", "conv2": "moving", "fc1": "moving"}
    assert s.moving == ["conv2", "fc1"] and s.settled == ["conv1"]
    assert s.last_update["conv1"] == pytest.approx(0.5 / 27)
    assert s.peak_update["conv1"] == pytest.approx(0.5)
    assert s.warnings == ()
    assert s.to_dict()["status"]["conv1"] == "settled"
    absolute = layer_status(read_dynamics(healthy()), settled_below=0.25)
    assert absolute.status["fc1"] == "settled"


def test_vanishing_exploding_dead_and_diverged():
    recs = [record(0, ratios=None, grads=None)]
    recs.append(record(1, ratios=[5.0, 0.1, 0.1], grads=[1e-7, 0.2, 0.3]))
    recs.append(record(2, ratios=[3.0, 0.1, 0.1], grads=[0.1, 0.2, 5e3],
                       dead={"relu1": 0.75, "relu3": 0.1}))
    recs.append(record(3, ratios=[0.1, 0.1, 0.1], grads=[0.1, 0.2, 0.3], loss=float("nan"),
                       norms=[float("inf"), 2.0, 3.0]))
    s = layer_status(read_dynamics(recs))
    kinds = {(w.kind, w.layer, e) for w in s.warnings for e in w.epochs}
    assert ("vanishing", "conv1", 1) in kinds
    assert ("exploding", "fc1", 2) in kinds          # gradient 5e3 vs median 0.2
    assert ("exploding", "conv1", 2) in kinds        # moved 3× its norm in a later epoch
    assert ("exploding", "conv1", 1) not in kinds    # the first training epoch is exempt
    assert ("dead_units", "relu1", 2) in kinds
    assert ("nonfinite", "test_loss", 3) in kinds
    assert ("nonfinite", "conv1", 3) in kinds
    # one warning per layer and rule, naming every epoch it was seen at
    vanishing = [w for w in s.warnings if w.kind == "vanishing" and w.layer == "conv1"]
    assert len(vanishing) == 1 and vanishing[0].epochs == (1, 2)
    assert vanishing[0].message.endswith("(also at epoch 1)")
    assert ("exploding", "fc1", 3) not in kinds     # back to normal
    msgs = {w.kind: w.message for w in s.warnings}
    assert "75% of units are dead" in msgs["dead_units"]
    assert "vanishing gradient" in msgs["vanishing"]
    assert s.to_dict()["warnings"][0]["kind"] in {"vanishing", "exploding"}
    with pytest.raises(UsageError, match="settled_fraction must be in"):
        layer_status(read_dynamics(recs), settled_fraction=2)


def test_real_trainer_records(tmp_path):
    """The trainer's own metrics.jsonl reads into arrays (tiny run on digits)."""
    from shenjing.training import train

    run = train(model="mlp", data="digits", epochs=1, run=tmp_path / "r", batch_size=256,
                model_kwargs={"hidden": [8]}, progress=False)
    d = read_dynamics(run.metrics())
    assert d.epochs.tolist() == [0, 1]
    assert "fc1" in d.layers and "fc2" in d.layers
    assert np.isnan(d.layer_metric("update_ratio")[:, 0]).all()
    assert np.isfinite(d.layer_metric("update_ratio")[:, 1]).all()
    assert "relu1" in d.dead_units


def test_layer_order_follows_the_model_then_natural_order():
    rec = {"epoch": 0, "test_loss": 1.0,
           "layers": {n: {"weight_norm": 1.0} for n in
                      ["classifier.0", "features.10", "features.2", "features.0"]},
           "dead_units": {"features.11": 0.1, "features.3": 0.2}}
    assert read_dynamics([rec]).layers == ("classifier.0", "features.0", "features.2",
                                           "features.10")
    d = read_dynamics([rec], layer_order=["features.0", "features.2", "features.3",
                                          "features.10", "features.11", "classifier.0"])
    assert d.layers == ("features.0", "features.2", "features.10", "classifier.0")
    assert list(d.dead_units) == ["features.3", "features.11"]
    np.testing.assert_allclose(d.layer_metric("weight_norm")[:, 0], 1.0)


def still(epoch, names=("fc", "fc.bias"), *, moved=()):
    """A record where the groups in ``moved`` moved and the others are exactly as at init."""
    return {"epoch": epoch, "test_loss": 1.0, "layers": {
        n: {"weight_norm": 1.0, "update_ratio": None if epoch == 0 else (0.1 if n in moved
                                                                          else 0.0),
            "dist_from_init": 0.1 * epoch if n in moved else 0.0, "cos_to_init": 1.0,
            "grad_norm": None if epoch == 0 else 0.1} for n in names}}


def test_weights_identical_to_the_init_are_called_unchanged():
    s = layer_status(read_dynamics([still(0), still(1)]))
    assert s.status == {"fc": "unchanged", "fc.bias": "unchanged"}
    assert s.warnings[0].kind == "unchanged" and s.warnings[0].layer == ""
    assert "every tracked parameter is identical to epoch 0" in s.warnings[0].message
    assert s.to_dict()["unchanged"] == ["fc", "fc.bias"]
    # a zero-initialised group (BatchNorm's bias) that stays zero is unchanged too
    zero = still(1)
    zero["layers"]["fc.bias"].update(weight_norm=0.0, dist_from_init=None, update_ratio=None)
    first = still(0)
    first["layers"]["fc.bias"]["weight_norm"] = 0.0
    assert layer_status(read_dynamics([first, zero])).warnings[0].kind == "unchanged"
    only_init = layer_status(read_dynamics([still(0)]))
    assert only_init.warnings[0].kind == "unchanged"
    assert "only epoch 0" in only_init.warnings[0].message


def test_some_groups_unchanged_are_named_once():
    s = layer_status(read_dynamics([still(0), still(1, moved=("fc",)), still(2, moved=("fc",))]))
    assert "unchanged" not in {w.kind for w in s.warnings}    # the model did train
    frozen = [w for w in s.warnings if w.kind == "frozen"]
    assert len(frozen) == 1 and "1 of 2 parameter groups" in frozen[0].message
    assert "fc.bias" in frozen[0].message
    assert s.status["fc"] != "unchanged" and s.status["fc.bias"] == "unchanged"
    moving = layer_status(read_dynamics([still(0), still(1, moved=("fc", "fc.bias"))]))
    assert not {"unchanged", "frozen"} & {w.kind for w in moving.warnings}


def test_bias_groups_are_not_judged_by_the_gradient_scale_of_weights():
    """A bias before BatchNorm has (almost) no gradient by construction: not 'vanishing'."""
    recs = healthy()
    for r in recs[1:]:
        r["layers"]["conv1.bias"] = {"weight_norm": 0.01, "update_ratio": 3.0,
                                     "grad_norm": 1e-9, "dist_from_init": 1.0}
    kinds = {(w.kind, w.layer) for w in layer_status(read_dynamics(recs)).warnings}
    assert not {k for k in kinds if k[1] == "conv1.bias"}


def test_coverage_and_order_from_the_recorders_parameter_listing():
    recs = healthy()
    recs[0]["params"] = {"n_total": 110, "n_tracked": 100, "untracked": ["extra"],
                         "groups": [{"name": "fc1", "params": ["fc1.weight"], "n": 40},
                                    {"name": "conv2", "params": ["conv2.weight"], "n": 30},
                                    {"name": "conv1", "params": ["conv1.weight"], "n": 30}]}
    d = read_dynamics(recs)
    assert d.layers == ("fc1", "conv2", "conv1")          # the recorded (model) order
    assert d.coverage is not None
    assert (d.coverage.n_tracked, d.coverage.n_total) == (100, 110)
    assert d.coverage.share == pytest.approx(100 / 110)
    assert d.coverage.to_dict() == {"n_tracked": 100, "n_total": 110,
                                    "share": pytest.approx(100 / 110), "untracked": ["extra"]}
    assert d.coverage.describe() == "tracks 100 of 110 parameters (91%)"
    assert d.groups["fc1"] == ("fc1.weight",)
    assert read_dynamics(healthy()).coverage is None     # an old run: unknown from records


def test_a_warning_seen_at_many_epochs_names_them_as_ranges():
    recs = [record(0, ratios=None, grads=None)]
    recs += [record(e, ratios=[0.1, 0.1, 0.1], grads=[1e-7, 0.2, 0.3]) for e in range(1, 31)]
    recs[12]["layers"]["conv1"]["grad_norm"] = 0.1     # epoch 12 is fine
    (w,) = [w for w in layer_status(read_dynamics(recs)).warnings if w.kind == "vanishing"]
    assert w.epoch == 30 and len(w.epochs) == 29
    assert w.message.endswith("(also at epochs 1–11, 13–29)")
