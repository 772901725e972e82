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


# ---- TorchScript archives are read without running them (issue 13, item 1) -----------------
def _scripted(module: nn.Module):
    import warnings

    with warnings.catch_warnings():  # "torch.jit.script is deprecated" in torch ≥ 2.10
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


class _Scale(nn.Module):
    """A module whose TorchScript ``__setstate__`` creates the file ``path`` on load
    (``torch.from_file(…, shared=True)`` opens it for writing): code in a weights file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor([1.5, -2.0]))
        self.register_buffer("count", torch.tensor([5.0]))
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, torch.Tensor, torch.Tensor]:
        return (self.path, self.training, self.gain, self.count)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, torch.Tensor, torch.Tensor]) -> None:
        self.path = state[0]
        self.training = state[1]
        written = torch.from_file(self.path, shared=True, size=4)
        self.gain = state[2]
        self.count = state[3] + written.sum() * 0


class _WithPayload(nn.Module):
    """A small net with a _Scale inside: its archive runs code when torch.jit loads it."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = _Scale(str(marker))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.fc(x))


class _Plain(nn.Module):
    """Parameters, buffers, nested and listed submodules, and a tensor attribute that is
    neither (it must not appear in the state dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 3))])
        self.register_buffer("steps", torch.arange(4))
        self.note = torch.ones(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x)).mean((2, 3)).repeat(1, 2)
        for block in self.blocks:
            h = block(h)
        return h + self.note.sum() + self.steps.sum()


def test_the_torchscript_marker_test_can_fail_torch_jit_load_runs_the_code(tmp_path):
    """Control: torch.jit.load of the archive below DOES create the marker, so the tests
    that assert it is never created would notice if shenjing let TorchScript load it."""
    import warnings

    marker = tmp_path / "PWNED"
    _scripted(_WithPayload(marker)).save(str(tmp_path / "ts.pt"))
    assert not marker.exists()
    with warnings.catch_warnings():  # "torch.jit.load is deprecated"
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(tmp_path / "ts.pt"))
    assert marker.exists()


def test_torchscript_with_code_in_setstate_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    _scripted(_WithPayload(marker)).save(str(tmp_path / "ts.pt"))
    with pytest.raises(CheckpointError, match=r"ts\.pt: a TorchScript archive whose class "
                       r"_Scale restores itself with its own __setstate__ code.*does not run"
                       r".*--trust-pickle"):
        read_weights(tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match="__setstate__"):
        load_weights(_WithPayload(tmp_path / "x"), tmp_path / "ts.pt")
    assert not marker.exists(), "the archive's TorchScript code ran"


def test_torchscript_with_code_loads_only_with_trust_pickle_and_warns_first(tmp_path):
    marker = tmp_path / "PWNED"
    src = _WithPayload(marker)
    _scripted(src).save(str(tmp_path / "ts.pt"))
    seen: list[bool] = []

    def record(message, category, *args, **kwargs):
        seen.append(marker.exists())  # the warning comes before the archive is loaded

    with pytest.MonkeyPatch.context() as mp:
        import warnings

        mp.setattr(warnings, "showwarning", record)
        with warnings.catch_warnings():
            warnings.simplefilter("always", TrustPickleWarning)
            wfile = read_weights(tmp_path / "ts.pt", trust_pickle=True)
    assert seen == [False] and marker.exists()
    assert wfile.format == "torchscript-loaded"
    expected = src.state_dict()
    assert wfile.state_dict.keys() == expected.keys()
    assert all(torch.equal(wfile.state_dict[k], expected[k]) for k in expected)


def test_torchscript_weights_are_read_from_the_archive_without_torch_jit(tmp_path, monkeypatch):
    torch.manual_seed(3)
    src = _Plain().eval()
    src.bn.running_mean.uniform_()
    src.bn.num_batches_tracked.fill_(7)
    _scripted(src).save(str(tmp_path / "ts.pt"))

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called: it runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", refuse)
    wfile = read_weights(tmp_path / "ts.pt")
    expected = src.state_dict()
    assert wfile.format == "torchscript"
    assert set(wfile.state_dict) == set(expected)  # not 'note': neither parameter nor buffer
    for key, tensor in expected.items():
        assert wfile.state_dict[key].dtype == tensor.dtype, key
        assert torch.equal(wfile.state_dict[key], tensor), key
    dst = _Plain()
    assert load_weights(dst, tmp_path / "ts.pt").match.ok and _same(src, dst)


def test_torchscript_archive_with_a_foreign_global_is_refused(tmp_path):
    """A data.pkl that names anything but tensors, storages and TorchScript classes (here
    os.system through a hand-made archive) is refused by name, and nothing is called."""
    import zipfile

    marker = tmp_path / "PWNED"
    _scripted(nn.Linear(2, 2)).save(str(tmp_path / "ts.pt"))
    with zipfile.ZipFile(tmp_path / "ts.pt") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in members if n.endswith("/data.pkl"))
    members[pkl] = pickle.dumps(MarkerPayload(marker), protocol=2)
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"evil\.pt: .*TorchScript archive.*names "
                       r"posix\.mkdir|evil\.pt: .*TorchScript archive.*names os\.mkdir"):
        read_weights(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "bad-storage-size"])
def test_damaged_torchscript_archive_is_one_clear_error(tmp_path, damage):
    import zipfile

    _scripted(nn.Linear(2, 2)).save(str(tmp_path / "ts.pt"))
    data = (tmp_path / "ts.pt").read_bytes()
    if damage == "truncated":
        (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
        match = r"bad\.pt: .*(truncated|not a complete zip)"
    else:
        with zipfile.ZipFile(tmp_path / "ts.pt") as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        record = sorted(n for n in members if "/data/" in n)[0]
        members[record] = members[record][:3]  # fewer bytes than the storage needs
        with zipfile.ZipFile(tmp_path / "bad.pt", "w") as zf:
            for name, blob in members.items():
                zf.writestr(name, blob)
        match = r"bad\.pt: .*tensor record .* holds 3 bytes"
    with pytest.raises(CheckpointError, match=match):
        read_weights(tmp_path / "bad.pt")


def test_torch_export_archive_with_a_broken_config_is_one_clear_error(tmp_path):
    import zipfile

    program = torch.export.export(nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    with zipfile.ZipFile(tmp_path / "m.pt2") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = next(n for n in members if n.endswith("model_weights_config.json"))
    members[config] = b'{"config": {"weight": {"path_name": "../../../etc/passwd"}}}'
    with zipfile.ZipFile(tmp_path / "bad.pt2", "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(CheckpointError, match=r"bad\.pt2: a torch\.export archive shenjing "
                       r"cannot read"):
        read_weights(tmp_path / "bad.pt2")


def test_trust_pickle_warns_before_the_file_is_unpickled(tmp_path):
    """The warning is issued before the full unpickle runs: turned into an error, it stops
    the load, and the file's code never runs."""
    import warnings

    marker = tmp_path / "PWNED"
    torch.save(MarkerPayload(marker), tmp_path / "evil.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrustPickleWarning)
        with pytest.raises(TrustPickleWarning, match="runs whatever code"):
            read_weights(tmp_path / "evil.pt", trust_pickle=True)
    assert not marker.exists()


def test_torch_state_files_are_read_with_weights_only_and_refusals_are_one_error(tmp_path):
    from shenjing.models.weights import read_torch_file

    marker = tmp_path / "PWNED"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "state-003.pt")
    assert read_torch_file(tmp_path / "state-003.pt", what="resume state")["epoch"] == 3
    torch.save(MarkerPayload(marker), tmp_path / "state-004.pt")
    with pytest.raises(CheckpointError, match=r"resume state .*state-004\.pt: refusing to "
                       r"unpickle it.*posix\.mkdir|resume state .*state-004\.pt: refusing"):
        read_torch_file(tmp_path / "state-004.pt", what="resume state")
    (tmp_path / "state-005.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"state-005\.pt: torch cannot read"):
        read_torch_file(tmp_path / "state-005.pt", what="resume state")
    assert not marker.exists()
