"""Safe weights loading: formats, wrappers, prefixes, mismatch tables, refused pickles."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from shenjing.errors import CheckpointError
from shenjing.models.weights import (
    TrustPickleWarning,
    align_keys,
    load_weights,
    read_weights,
    save_safetensors,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class MarkerPayload:
    """Unpickling this calls os.mkdir(marker): it would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_safetensors_round_trip_loads_exact_values(tmp_path):
    src, dst = _net(1), _net(2)
    src[1].running_mean.uniform_()
    path = save_safetensors(src.state_dict(), tmp_path / "w.safetensors")
    report = load_weights(dst, path)
    assert report.file.format == "safetensors" and report.match.ok
    assert _same(src, dst)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "model_state_dict"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module.module."])
def test_torch_files_wrappers_and_prefixes(tmp_path, wrap, prefix):
    src, dst = _net(1), _net(2)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    obj = state if wrap == "plain" else {wrap: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "w.pth")
    report = load_weights(dst, tmp_path / "w.pth")
    assert _same(src, dst)
    assert report.file.format == "torch"
    if wrap != "plain":
        assert f"took the {wrap!r} entry" in " ".join(report.notes)
    if prefix:
        assert f"stripped the prefix {prefix!r}" in report.match.prefix_note


def test_legacy_non_zip_torch_file_is_read_safely(tmp_path):
    src, dst = _net(1), _net(2)
    torch.save(src.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert load_weights(dst, tmp_path / "old.pt").file.format == "torch"
    assert _same(src, dst)


def test_extension_does_not_decide_the_format(tmp_path):
    src, dst = _net(1), _net(2)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, tmp_path / "w.bin")
    assert load_weights(dst, tmp_path / "w.bin").file.format == "safetensors"
    assert _same(src, dst)


def test_full_model_pickle_is_refused_with_conversion_recipe(tmp_path):
    torch.save(_net(1), tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*full\.pt: it is a pickle "
                       r"that needs more than tensors.*Sequential.*arbitrary code") as err:
        load_weights(_net(2), tmp_path / "full.pt")
    text = str(err.value)
    assert "weights_only=True" in text and "save_file(" in text and "--trust-pickle" in text
    assert 'torch.load("' + str(tmp_path / "full.pt") + '"' in text


def test_trust_pickle_loads_a_full_model_with_a_warning(tmp_path):
    src = _net(1)
    torch.save(src, tmp_path / "full.pt")
    dst = _net(2)
    with pytest.warns(TrustPickleWarning, match="runs whatever code the file contains"):
        report = load_weights(dst, tmp_path / "full.pt", trust_pickle=True)
    assert report.file.format == "torch-pickle" and _same(src, dst)
    assert "took state_dict() of the pickled Sequential module" in report.notes


@pytest.mark.parametrize("container", ["raw-pickle", "torch-save-zip", "inside-state-dict"])
def test_code_executing_pickle_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "PWNED"
    payload = MarkerPayload(marker)
    path = tmp_path / "evil.pt"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    elif container == "torch-save-zip":
        torch.save(payload, path)
    else:
        state = dict(_net(1).state_dict())
        state["fc.extra"] = payload  # type: ignore[assignment]
        torch.save({"state_dict": state}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load .*arbitrary code"):
        load_weights(_net(2), path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_weights(path)
    assert not marker.exists(), "the pickle's code ran"


def test_the_marker_test_can_fail_trust_pickle_does_run_the_code(tmp_path):
    """Control: with --trust-pickle the same file DOES create the marker, so the test
    above would notice if shenjing unpickled it."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save(MarkerPayload(marker), path)
    with pytest.warns(TrustPickleWarning), pytest.raises(CheckpointError,
                                                        match="holds a NoneType, not a state "
                                                              "dict"):
        load_weights(_net(2), path, trust_pickle=True)
    assert marker.exists()


def test_shape_mismatch_is_a_table_of_key_and_both_shapes(tmp_path):
    src = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    dst = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    save_safetensors(src.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_weights(dst, tmp_path / "w.safetensors")
    text = str(err.value)
    assert re.search(r"does not fit Sequential: 3 tensor\(s\) match, 1 differ in shape\. "
                     r"Check that --model and --model-arg build", text)
    assert re.search(r"^shape mismatch\s+0\.weight\s+\(3, 4\)\s+\(3, 5\)$", text, re.M)
    assert re.search(r"^problem\s+key\s+in model\s+in file$", text, re.M)
    assert "Error(s) in loading state_dict" not in text  # not PyTorch's wall of text


def test_missing_and_unexpected_keys_are_listed_and_non_strict_loads_the_rest(tmp_path):
    src = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    state = dict(src.state_dict())
    state.pop("2.bias")
    state["3.weight"] = torch.zeros(7, 2)
    dst = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    before = dst[2].bias.detach().clone()
    with pytest.raises(CheckpointError, match=r"1 missing from the file, 1 in the file but "
                       r"not in the model.*--no-strict") as err:
        load_weights(dst, state)
    assert re.search(r"^missing in file\s+2\.bias\s+\(2,\)\s+-$", str(err.value), re.M)
    assert re.search(r"^not in model\s+3\.weight\s+-\s+\(7, 2\)$", str(err.value), re.M)
    report = load_weights(dst, state, strict=False)
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[2].bias, before)
    assert "non-strict load" in report.notes[-1]


def test_weights_of_another_model_say_so(tmp_path):
    with pytest.raises(CheckpointError, match="none of its 2 tensors fits Sequential"):
        load_weights(nn.Sequential(nn.Linear(2, 2)), {"enc.w": torch.zeros(1),
                                                      "enc.b": torch.zeros(1)})


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_torchscript_archive_gives_its_weights_without_running_python(tmp_path):
    src, dst = _net(1), _net(2)
    torch.jit.script(src.eval()).save(str(tmp_path / "ts.pt"))
    report = load_weights(dst, tmp_path / "ts.pt")
    assert report.file.format == "torchscript" and _same(src, dst)


def test_torch_export_program_gives_its_weights(tmp_path):
    src, dst = _net(1).eval(), _net(2)
    src[1].running_var.uniform_(0.5, 2.0)
    program = torch.export.export(src, (torch.zeros(2, 1, 8, 8),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    report = load_weights(dst, tmp_path / "m.pt2")
    assert report.file.format == "torch-export"
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[3].bias, src[3].bias)
    assert torch.equal(dst[1].running_var, src[1].running_var)


@pytest.mark.parametrize("content,match", [
    (b"hello world, not weights", "not a weights file shenjing can read safely"),
    (b"", "not a weights file"),
])
def test_garbage_files_are_refused(tmp_path, content, match):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_weights(tmp_path / "x.pt")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_weights(tmp_path)


def test_checkpoint_dict_without_a_state_dict_lists_its_keys(tmp_path):
    torch.save({"epoch": 3, "config": {"lr": 1}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"keys 'epoch', 'config' but none of them is a "
                       r"state dict"):
        read_weights(tmp_path / "c.pt")


def test_align_adds_a_model_prefix_when_the_model_is_wrapped():
    inner = nn.Linear(2, 2)
    wrapped = nn.Sequential()
    wrapped.add_module("net", inner)
    state, match = align_keys(wrapped, {"weight": torch.ones(2, 2), "bias": torch.ones(2)})
    assert match.ok and set(state) == {"net.weight", "net.bias"}
