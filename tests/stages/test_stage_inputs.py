"""What stages take: one layer name given as a string, a device resolved once as the stage
starts, the run's data handed over in memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shenjing.errors import UsageError
from shenjing.models.weights import save_safetensors
from shenjing.runs import Run
from shenjing.stages.capture import capture_stage

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
import inspect_models as im  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    from shenjing.training import train

    return train("mlp", "digits", epochs=1, run=tmp_path_factory.mktemp("inputs") / "mlp",
                 progress=False)


# ---- one layer as a string ------------------------------------------------------------------
@pytest.mark.parametrize("layers", ["relu1", ["relu1"], ("relu1",)])
def test_capture_records_the_layers_asked_for_never_their_characters(run, layers):
    """Issue 14: ``capture_stage(run, layers="relu1")`` recorded ['r','e','l','u','1']."""
    capture_stage(run, layers, n=10)
    assert run.stage("capture")["layers"] == ["relu1"]
    assert run.stage("capture")["keys"] == ["relu1"]


def test_weights_of_one_layer_named_by_a_string_are_those_of_the_list(run):
    from shenjing.stages.weights import weights_stage

    one = weights_stage(run, layers="fc1").history
    listed = weights_stage(run, layers=["fc1"]).history
    assert one.layers == listed.layers == ("fc1",)
    np.testing.assert_array_equal(one.counts["fc1"], listed.counts["fc1"])


def test_warp_records_the_layers_asked_for(tmp_path):
    from shenjing.stages.warp import warp

    result = warp(tmp_path / "warp", data="moons", layers="relu1", hidden=(6,), epochs=1,
                  n_lines=2, resolution=8, progress=False)
    summary = json.loads((result.run.path / "warp" / "warp-e001.json").read_text())
    assert summary["layers_asked"] == ["relu1"]
    assert result.run.stage("warp")["status"] == "done"


def test_inspect_takes_one_layer_as_a_string(tmp_path, digits):
    from shenjing.stages.inspect import inspect_model

    torch.manual_seed(0)
    save_safetensors(im.Shared(hidden=16).state_dict(), tmp_path / "w.safetensors")
    result = inspect_model("inspect_models:Shared", tmp_path / "w.safetensors",
                           out=tmp_path / "run", model_args={"hidden": 16}, layers="inp",
                           analysis=False)
    assert result.layers == ("inp",)
    assert result.run.manifest["config"]["layers"] == ["inp"]


# ---- the device -----------------------------------------------------------------------------
def test_a_bad_device_is_refused_naming_the_option_as_the_checks_do():
    from shenjing._checks import device as check_device
    from shenjing._device import resolve_device

    with pytest.raises(UsageError) as checked:
        check_device("--device", "tpu")
    with pytest.raises(UsageError, match=r"^--device 'tpu': unknown device 'tpu'; use auto"):
        resolve_device("tpu", option="--device")
    with pytest.raises(UsageError, match=r"^unknown device 'tpu'"):
        resolve_device("tpu")
    try:
        resolve_device("tpu", option="--device")
    except UsageError as exc:
        assert str(exc) == str(checked.value)


@pytest.mark.parametrize("stage", ["capture", "embed", "maps"])
def test_a_stage_resolves_auto_once_and_passes_the_device_on(run, monkeypatch, stage):
    import shenjing._device as device_module

    real = device_module._resolve
    asked: list[object] = []

    def counted(device):
        asked.append(device)
        return real(device)

    monkeypatch.setattr(device_module, "_resolve", counted)
    if stage == "capture":
        capture_stage(run, ["relu1"], n=10, device="auto")
    elif stage == "embed":
        from shenjing.stages.embed import embed_stage

        embed_stage(run, ["relu1"], method="pca", n=30, n_train=40, cka=False,
                    figures=False, device="auto")
    else:
        from shenjing.stages.maps import maps_stage

        maps_stage(run, "relu1", device="auto")
    assert asked == ["auto"]
    assert run.stage(stage)["status"] == "done"


def test_a_stage_takes_a_torch_device(run):
    result = capture_stage(run, ["fc2"], n=10, device=torch.device("cpu"))
    assert result.shapes["fc2"] == (10, 10)


# ---- the run's data -------------------------------------------------------------------------
def test_attach_data_hands_the_run_its_dataset_and_nothing_is_loaded(run, digits,
                                                                     monkeypatch):
    def no_loading(spec):
        raise AssertionError(f"the data was loaded again from its spec {spec}")

    monkeypatch.setattr("shenjing.data.load_from_spec", no_loading)
    given = Run(run.path)
    assert not given.data_loaded
    given.attach_data(digits)
    assert given.data_loaded and given.data is digits
    fresh = Run(run.path)
    assert not fresh.data_loaded  # asking loads nothing
    with pytest.raises(AssertionError, match="loaded again"):
        _ = fresh.data
    monkeypatch.undo()
    assert len(fresh.data.test) == len(digits.test) and fresh.data_loaded
