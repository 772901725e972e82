"""The hostile-file suite (issue 13): files made to run code or to leak other files.

Every file slot a user or a run folder fills is tried with a hostile file, and each test
asserts the three guarantees:

- **0 payloads run**: every payload would create a marker file if it ran; it never exists;
- **0 files outside the run read into the report**: a secret string is planted outside the
  run, reached through ``../`` and absolute paths in every JSON the report reads and through
  symbolic links in its folders; the page never holds it, also not base64-encoded (every
  ``data:`` URI of the page is decoded and searched);
- **one line from the CLI**: a refusal is exit code 1 or 2, one line on stderr naming the
  file, no traceback, and no run folder created.

Controls show that each check can fail: the same secret *inside* the run is found by the
leak detector, and torch.jit.load / a full unpickle of the same files does write the marker.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pickle
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shenjing import _io
from shenjing.models.weights import save_safetensors
from shenjing.report import build_report
from shenjing.runs import Run

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # tests/: cli_invoke, inspect_models
import inspect_models as im  # noqa: E402
from cli_invoke import invoke  # noqa: E402

SECRET = "shenjing-hostile-secret-4f1c9e"


# ---- detectors ----------------------------------------------------------------------------
def leaks(html: str, secret: str = SECRET) -> list[str]:
    """Where ``secret`` appears in the page: as text, or inside a decoded data: URI."""
    found = ["page text"] if secret in html else []
    for i, m in enumerate(re.finditer(r"data:[\w/+.-]+;base64,([A-Za-z0-9+/=]+)", html)):
        if secret.encode() in base64.b64decode(m[1]):
            found.append(f"data URI #{i}")
    return found


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def one_line_refusal(code: int, err: str) -> str:
    """The single stderr line of a refusal (asserting exit 1 or 2 and no traceback)."""
    assert code in (1, 2), (code, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


class MarkerPayload:
    """Unpickling this calls os.mkdir(marker)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---- a TorchScript archive with code ------------------------------------------------------
class _Scale(nn.Module):
    """Its TorchScript ``__setstate__`` creates ``path`` when the archive is loaded."""

    def __init__(self, path: str, width: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, torch.Tensor]:
        return (self.path, self.training, self.gain)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, torch.Tensor]) -> None:
        self.path = state[0]
        self.training = state[1]
        written = torch.from_file(self.path, shared=True, size=4)
        self.gain = state[2] + written.sum() * 0


class _Evil(nn.Module):
    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.scale = _Scale(str(marker), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.fc(x.flatten(1)))


def _script_save(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD-RAN"


@pytest.fixture(scope="module")
def shared_net(digits):
    torch.manual_seed(0)
    return im.quick_train(im.Shared(hidden=16), digits.train.x, digits.train.y, steps=5)


INSPECT = ("inspect", "--model", "inspect_models:make_shared", "--model-arg", "hidden=16",
           "--no-analysis")


def test_control_torch_jit_load_runs_the_archives_code(tmp_path, marker):
    path = _script_save(_Evil(marker), tmp_path / "ts.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(path))
    assert marker.exists()


def test_torchscript_with_code_given_to_inspect_runs_nothing(tmp_path, capsys, marker):
    path = _script_save(_Evil(marker), tmp_path / "ts.pt")
    code, _, err = invoke(capsys, *INSPECT, "--weights", str(path),
                          "--out", str(tmp_path / "r"))
    line = one_line_refusal(code, err)
    assert line.startswith(f"CheckpointError: {path}: a TorchScript archive whose class "
                           "_Scale restores itself with its own __setstate__ code")
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_a_plain_torchscript_archive_gives_inspect_its_weights(tmp_path, capsys, shared_net):
    path = _script_save(shared_net, tmp_path / "ts.pt")
    code, _, err = invoke(capsys, *INSPECT, "--weights", str(path),
                          "--out", str(tmp_path / "r"))
    assert code == 0, err
    run = Run(tmp_path / "r")
    assert run.manifest["config"]["weights_format"] == "torchscript"
    saved = run.state_dict(1)
    for key, tensor in shared_net.state_dict().items():
        assert torch.equal(saved[key], tensor), key


# ---- pickles in every file slot -----------------------------------------------------------
def _evil_pickles(folder: Path, marker: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pt"
    raw.write_bytes(pickle.dumps(MarkerPayload(marker), protocol=2))
    torch.save(MarkerPayload(marker), folder / "zip.pt")
    state = {"fc.weight": torch.zeros(2, 2), "fc.extra": MarkerPayload(marker)}
    torch.save({"state_dict": state}, folder / "inside.pt")
    return {"raw-pickle": raw, "torch-save": folder / "zip.pt", "inside-a-state-dict":
            folder / "inside.pt"}


def test_control_a_full_unpickle_runs_the_payload(tmp_path, marker):
    for path in _evil_pickles(tmp_path / "p", marker).values():
        # the raw pickle runs, then torch finds no magic number after it: RuntimeError
        with contextlib.suppress(RuntimeError):
            torch.load(path, weights_only=False)
        assert marker.exists(), path.name
        marker.rmdir()


@pytest.mark.parametrize("slot", ["--weights", "--init-weights", "--checkpoints"])
@pytest.mark.parametrize("kind", ["raw-pickle", "torch-save", "inside-a-state-dict"])
def test_pickles_in_every_weights_slot_are_refused_in_one_line(tmp_path, capsys, marker,
                                                               shared_net, slot, kind):
    evil = _evil_pickles(tmp_path / "p", marker)[kind]
    good = save_safetensors(shared_net.state_dict(), tmp_path / "good.safetensors")
    if slot == "--weights":
        args = ["--weights", str(evil)]
    elif slot == "--init-weights":
        args = ["--weights", str(good), "--init-weights", str(evil)]
    else:
        series = tmp_path / "ckpt"
        series.mkdir()
        shutil.copy(good, series / "epoch-000.safetensors")
        shutil.copy(evil, series / "epoch-001.pt")
        args = ["--checkpoints", str(series)]
    code, _, err = invoke(capsys, *INSPECT, *args, "--out", str(tmp_path / "r"))
    line = one_line_refusal(code, err)
    assert line.startswith("CheckpointError: refusing to load") and "arbitrary code" in line
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_a_pickle_as_the_resume_state_of_a_run_is_refused_in_one_line(tmp_path, capsys,
                                                                      marker):
    run_dir = tmp_path / "r"
    code, _, err = invoke(capsys, "train", "--model", "mlp", "--epochs", "1", "--run",
                          str(run_dir), "--device", "cpu")
    assert code == 0, err
    state = run_dir / "checkpoints" / "state-001.pt"
    assert state.is_file()
    torch.save({"epoch": 1, "optimizer": MarkerPayload(marker)}, state)
    code, _, err = invoke(capsys, "train", "--model", "mlp", "--epochs", "1", "--run",
                          str(run_dir), "--device", "cpu", "--resume")
    line = one_line_refusal(code, err)
    assert line.startswith("CheckpointError: ") and "state-001.pt" in line and "refus" in line
    assert not marker.exists()


def test_trust_pickle_warning_is_printed_even_when_a_later_step_fails(tmp_path, capsys,
                                                                     shared_net):
    torch.save(shared_net, tmp_path / "full.pt")
    code, out, err = invoke(capsys, "inspect", "--model", "inspect_models:make_shared",
                            "--model-arg", "hidden=8", "--weights", str(tmp_path / "full.pt"),
                            "--out", str(tmp_path / "r"), "--no-analysis", "--trust-pickle")
    assert code == 1 and "does not fit Shared" in err  # hidden=8: the weights do not fit
    assert "WARNING unpickling" in out + err


# ---- hostile data files ----------------------------------------------------------------
def _data_files(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "objects.npz", x=np.array([{"a": 1}] * 8, dtype=object),
             y=np.arange(8) % 2)
    np.savez(folder / "full.npz", x=np.zeros((40, 1, 8, 8), np.float32), y=np.arange(40) % 2)
    data = (folder / "full.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    (folder / "text.npz").write_text("x,y\n1,2\n")
    return {"objects": (folder / "objects.npz", "holds Python objects"),
            "truncated": (folder / "truncated.npz", "not a complete .npz archive"),
            "text": (folder / "text.npz", "is not a .npz archive")}


@pytest.mark.parametrize("kind", ["objects", "truncated", "text"])
def test_hostile_npz_data_is_refused_in_one_line(tmp_path, capsys, shared_net, kind):
    path, words = _data_files(tmp_path / "d")[kind]
    weights = save_safetensors(shared_net.state_dict(), tmp_path / "w.safetensors")
    code, _, err = invoke(capsys, *INSPECT, "--weights", str(weights), "--data", str(path),
                          "--out", str(tmp_path / "r"))
    line = one_line_refusal(code, err)
    assert line.startswith("DataError: ") and words in line and str(path) in line
    assert not (tmp_path / "r").exists()


# ---- the report reads only files inside the run --------------------------------------------
def _png(path: Path, text: str = "") -> Path:
    """A real PNG; ``text`` rides in a tEXt chunk (so a leak of this file is searchable)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text:
        info.add_text("secret", text)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (2, 2), 128).save(path, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, digits):
    """A real (tiny) run: one epoch of an mlp, a line landscape, an embedding map."""
    import shenjing as sj
    from shenjing.stages.landscape import landscape_line

    small = dataclasses.replace(digits, train=digits.train.subset(200, seed=0),
                                test=digits.test.subset(60, seed=0))
    run = sj.train("mlp", small, epochs=1, run=tmp_path_factory.mktemp("hostile") / "run",
                   progress=False)
    landscape_line(run, steps=5, progress=False)
    test = run.data.test
    _io.save_npz(run.path / "embeddings" / "relu1-pca-epoch-001.npz",
                 coords=np.random.default_rng(0).normal(size=(20, 2)).astype("f4"),
                 indices=test.indices[:20].numpy(), labels=test.y[:20].numpy(),
                 metrics=np.array(json.dumps({"probe_accuracy": 0.9})))
    return run


@pytest.fixture
def run(tmp_path, base_run) -> Run:
    """A fresh copy of the base run (each test plants its own hostile files)."""
    shutil.copytree(base_run.path, tmp_path / "run", symlinks=True)
    return Run(tmp_path / "run")


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder next to the run holding the secret, as a PNG and as plain text."""
    folder = tmp_path / "outside"
    _png(folder / "secret.png", SECRET)
    (folder / "secret.txt").write_text(f"password: {SECRET}\n")
    return folder


def _report(run: Run) -> str:
    return build_report(run).path.read_text()


def test_control_the_leak_detector_finds_a_secret_the_report_reads(run):
    _png(run.path / "figures" / "dynamics-layers.png", SECRET)
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    found = leaks(_report(run))
    assert found and "page text" not in found  # only a decoded data: URI holds it


@pytest.mark.parametrize("view", ["maps", "filters"])
@pytest.mark.parametrize("how", ["dotdot", "absolute", "figures-dotdot", "link-in-figures"])
def test_paths_in_a_views_json_never_leave_the_run(run, outside, view, how):
    names = {"dotdot": "../outside/secret.png",
             "absolute": str(outside / "secret.png"),
             "figures-dotdot": "figures/../../outside/secret.png",
             "link-in-figures": "figures/innocent.png"}
    (run.path / "figures" / "innocent.png").symlink_to(outside / "secret.png")
    ok = _png(run.path / "figures" / f"{view}-ok.png")
    record = {"layer": "relu1", "kind": "linear", "index": 0, "label": 3, "epochs": [0, 1],
              "figures": [names[how], f"figures/{ok.name}"]}
    _io.write_json(run.path / "maps" / f"{view}-relu1.json", record)
    html = _report(run)
    assert leaks(html) == []
    part = sections(html)["maps"]
    reason = ("a link that leads outside the run folder" if how == "link-in-figures"
              else "it names a place outside the run folder")
    assert f"Skipped {names[how]}: " in part and reason in part
    assert len(re.findall(r'<img src="data:image/png', part)) == 1  # the good one is shown


@pytest.mark.parametrize("name", ["figures/dynamics-layers.png", "figures/cka-layers-epoch-001.png",
                                  "figures/embedding-grid-relu1.png",
                                  "figures/landscape-line-e000-e001.png",
                                  "figures/hessian-density-e001.png"])
def test_links_at_the_figure_names_the_report_looks_for_are_refused(run, outside, name):
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    _io.write_json(run.path / "landscapes" / "hessian-e001.json", {"top_eigenvalues": [2.0]})
    target = run.path / name
    target.unlink(missing_ok=True)
    target.symlink_to(outside / "secret.png")
    html = _report(run)
    assert leaks(html) == []
    assert f"Skipped {name}: it is a link that leads outside the run folder" in html


def test_a_figures_folder_that_links_outside_is_refused(run, outside):
    _png(outside / "dynamics-layers.png", SECRET)
    _png(outside / "cka-layers-epoch-001.png", SECRET)
    shutil.rmtree(run.path / "figures")
    (run.path / "figures").symlink_to(outside, target_is_directory=True)
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    html = _report(run)
    assert leaks(html) == []
    assert "Skipped figures/dynamics-layers.png" in html
    assert "Skipped figures/cka-layers-epoch-001.png" in html


def test_a_link_that_stays_inside_the_run_is_followed(run):
    _png(run.path / "figures" / "real.png", "inside")
    (run.path / "figures" / "dynamics-layers.png").symlink_to("real.png")
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    html = _report(run)
    assert leaks(html, "inside") and "Skipped" not in sections(html)["dynamics"]


def test_a_fifo_where_a_figure_should_be_is_skipped_not_read(run):
    """Reading a pipe would hang the report: it is not a regular file, so it is skipped."""
    os.mkfifo(run.path / "figures" / "dynamics-layers.png")
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    assert ("Skipped figures/dynamics-layers.png: it is not a regular file"
            in _report(run))


# every JSON the report reads (grep '.json' in src/shenjing/report), with content that shows
# the secret in the page when the report reads it: (file, content, needle, section, helpers)
_JSONS = {
    "dynamics": ("dynamics/dynamics.json",
                 {"status": {"warnings": [{"message": SECRET}]}}, SECRET, "dynamics", {}),
    "separability": ("embeddings/separability.json",
                     {"input": {}, "records": [], "note": SECRET}, SECRET, "embeddings", {}),
    "maps": ("maps/maps-relu1-test0.json",
             {"layer": SECRET, "index": 0, "label": 3, "epochs": [0, 1],
              "figures": ["figures/m.png"]}, SECRET, "maps", {"figures/m.png": None}),
    "filters": ("maps/filters-fc1.json",
                {"layer": SECRET, "kind": "linear", "figures": ["figures/f.png"]},
                SECRET, "maps", {"figures/f.png": None}),
    "hessian": ("landscapes/hessian-e001.json", {"top_eigenvalues": [123456.789]},
                "1.235e+05", "hessian", {}),
    "sharpness": ("landscapes/sharpness-epochs.json", {"top_eigenvalue": [271828.0, 2.0]},
                  "2.72e+05", "hessian",
                  {"figures/sharpness-epochs.png": None,
                   "landscapes/hessian-e001.json": {"top_eigenvalues": [2.0]}}),
    "fit": ("fit/summary.json", {"errors": {SECRET: {"rmse_in": 1.0}}}, SECRET, "fit", {}),
    "warp": ("warp/warp-e001.json",
             {"epoch": 1, "layers": [{"layer": SECRET, "kind": "linear", "features": 2,
                                      "projection": "identity"}]}, SECRET, "warp", {}),
    "layers": ("layers.json", {"format": 1, "model_name": "M", "rows": [
        {"name": SECRET, "type": "Linear", "is_leaf": True, "calls": 1, "n_params": 4,
         "output_shapes": {}}]}, SECRET, "model", {}),
}


@pytest.mark.parametrize("where", ["inside", "link-out"])
@pytest.mark.parametrize("which", sorted(_JSONS))
def test_every_json_the_report_reads_is_read_only_inside_the_run(run, tmp_path, which, where):
    name, content, needle, section, helpers = _JSONS[which]
    for helper, value in helpers.items():
        if value is None:
            _png(run.path / helper)
        else:
            _io.write_json(run.path / helper, value)
    secret_file = tmp_path / "outside" / Path(name).name
    _io.write_json(secret_file, content)
    target = run.path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    if where == "inside":  # control: the same file inside the run IS shown
        shutil.copy(secret_file, target)
    else:
        target.symlink_to(secret_file)
    part = sections(_report(run)).get(section, "")
    if where == "inside":
        assert needle in part, f"control failed: {which} is not shown from {name}"
    else:
        assert needle not in part
        assert f"Skipped {name}: it is a link that leads outside the run folder" in part


@pytest.mark.parametrize("where", ["inside", "link-out"])
def test_metrics_jsonl_is_read_only_inside_the_run(run, tmp_path, where):
    lines = [{"epoch": 0, "test_loss": 0.31415926535, "test_accuracy": 0.5},
             {"epoch": 1, "test_loss": 0.27182818284, "test_accuracy": 0.6}]
    secret_file = tmp_path / "outside" / "metrics.jsonl"
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("".join(json.dumps(r) + "\n" for r in lines))
    run.metrics_path.unlink()
    if where == "inside":
        shutil.copy(secret_file, run.metrics_path)
    else:
        run.metrics_path.symlink_to(secret_file)
    part = sections(_report(run)).get("training", "")
    assert ("0.31415926535" in part) == (where == "inside")
    if where == "link-out":
        assert "Skipped metrics.jsonl: it is a link that leads outside the run folder" in part


@pytest.mark.parametrize("folder,name", [("embeddings", "relu1-pca-epoch-001.npz"),
                                         ("landscapes", "line-e000-e001.npz")])
def test_npz_links_out_of_the_run_are_refused(run, tmp_path, folder, name):
    original = run.path / folder / name
    assert original.is_file(), f"the base run has no {folder}/{name}"
    moved = tmp_path / "outside" / original.name
    moved.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(original, moved)
    original.symlink_to(moved)
    html = _report(run)
    rel = f"{folder}/{original.name}"
    assert f"Skipped {rel}: it is a link that leads outside the run folder" in html
    if folder == "embeddings":
        assert f"emb-{original.stem}" not in html
    else:  # its figure is inside the run, but the landscape it shows was not read
        assert "the straight line from the weights of epoch 0" not in html


def test_a_run_json_that_links_outside_is_refused(run, tmp_path):
    manifest = _io.read_json(run.path / "run.json")
    manifest["notes"] = [SECRET]
    _io.write_json(tmp_path / "outside" / "run.json", manifest)
    (run.path / "run.json").unlink()
    (run.path / "run.json").symlink_to(tmp_path / "outside" / "run.json")
    try:
        html = _report(Run(run.path))
    except Exception as exc:  # refused: that is what we want, with a clear error
        from shenjing.errors import ShenjingError

        assert isinstance(exc, ShenjingError) and "run.json" in str(exc)
        return
    assert leaks(html) == []


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_thumbnails_are_reloaded_only_from_data_inside_the_run(run, tmp_path, where):
    from shenjing.report.thumbnails import data_outside_run

    data = run.data
    folder = run.path if where == "inside" else tmp_path / "outside"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "private.npz", x=data.test.x.numpy(), y=data.test.y.numpy())
    manifest = _io.read_json(run.path / "run.json")
    manifest["data"] = {"name": "npz", "path": str(folder / "private.npz"), "seed": 0}
    _io.write_json(run.path / "run.json", manifest)
    fresh = Run(run.path)
    reason = data_outside_run(fresh)
    if where == "inside":
        assert reason == ""
    else:
        assert reason.startswith("the report reads only files inside the run folder, and the "
                                 "run's data is not there")
        html = _report(fresh)
        assert 'id="sprite-' not in html
        assert "reads only files inside the run folder" in sections(html)["embeddings"]


def test_report_cli_on_a_hostile_run_exits_0_and_leaks_nothing(run, outside, capsys):
    _io.write_json(run.path / "maps" / "maps-relu1.json",
                   {"layer": "relu1", "figures": ["../outside/secret.png",
                                                  str(outside / "secret.txt")]})
    (run.path / "figures" / "dynamics-layers.png").symlink_to(outside / "secret.txt")
    _io.write_json(run.path / "dynamics" / "dynamics.json", {"status": {}})
    code, _, err = invoke(capsys, "report", str(run.path))
    assert code == 0, err
    html = (run.path / "report.html").read_text()
    assert leaks(html) == [] and leaks(html, "password") == []
    assert html.count("Skipped ") >= 2


@pytest.mark.parametrize("name", ["embeddings/relu1-pca-epoch-001.npz",
                                  "landscapes/line-e000-e001.npz"])
def test_pickled_objects_in_a_runs_npz_files_never_run(run, marker, name):
    """An .npz of the run whose arrays are pickled objects (np.savez pickles them): the
    report refuses to unpickle them, says the section could not be built, and goes on."""
    payload = np.empty(3, dtype=object)
    payload[:] = [MarkerPayload(marker)] * 3
    (run.path / name).unlink()
    np.savez(run.path / name, coords=payload, indices=payload, loss=payload, meta=payload)
    with np.load(run.path / name, allow_pickle=True) as z:  # control: unpickling runs it
        z["coords"]
    assert marker.exists()
    marker.rmdir()
    html = _report(run)
    assert not marker.exists()
    assert "could not be built from the run&#39;s files: ValueError: Object arrays cannot " \
           "be loaded when allow_pickle=False" in html
