"""``inspect_model``: runs from users' models + weights + data, checked against torch."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shenjing.errors import CheckpointError, RunError, ShapeMismatchError, UsageError
from shenjing.models.outputs import select_output
from shenjing.models.weights import save_safetensors
from shenjing.runs import Run
from shenjing.stages.inspect import ANALYSIS_STEPS, inspect_model

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
import inspect_models as im  # noqa: E402

FAST = {"line_steps": 5, "plane_steps": 3, "samples": 64, "embed_method": "pca",
        "embed_samples": 150, "embed_train_samples": 300}
OUTPUTS = {"resbn": None, "lstm": 0, "shared": None, "dict": "logits", "transformer": None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """Each test model trained a little on digits, saved as safetensors."""
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for key, cls in im.MODELS.items():
        torch.manual_seed(1)
        net = im.quick_train(cls(n_classes=10), digits.train.x, digits.train.y,
                             output=OUTPUTS[key])
        path = save_safetensors(net.state_dict(), folder / f"{key}.safetensors")
        out[key] = (net, path)
    return out


def _selected(net, x, key):
    with torch.no_grad():
        return select_output(net(x), OUTPUTS[key])


@pytest.mark.parametrize("key", list(im.MODELS))
def test_run_from_user_model_matches_torch(tmp_path, trained, digits, key):
    net, weights = trained[key]
    cls = im.MODELS[key]
    result = inspect_model(f"inspect_models:{cls.__name__}", weights, out=tmp_path / "r",
                           data="digits", analysis=False)
    run = Run(tmp_path / "r")
    assert run.epochs == [0, 1] and result.model_name == cls.__name__
    # the final metrics are the trained net's, computed here independently with torch
    x, y = digits.test.x, digits.test.y
    logits = _selected(net, x, key)
    final = result.metrics["final"]
    assert final["test_loss"] == pytest.approx(float(F.cross_entropy(logits, y)), abs=1e-5)
    assert final["test_accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    # Run.model() rebuilds the architecture from the factory and returns the prediction
    rebuilt = run.model("final")
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), logits, rtol=1e-5, atol=1e-5)
    # epoch 0 is the seeded fresh initialisation, stated in run.json
    torch.manual_seed(0)
    fresh = cls(n_classes=10).state_dict()
    init = run.state_dict(0)
    assert all(torch.equal(init[k], fresh[k]) for k in fresh)
    assert "fresh initialisation" in run.manifest["config"]["init"]
    assert "torch seed 0" in result.init
    assert result.metrics["init"]["test_accuracy"] < 0.3 < final["test_accuracy"]
    # the layers chosen exist and are captured as single tensors
    from shenjing.capture.layers import split_key

    model = run.model()
    assert result.layers and all(model.get_submodule(split_key(n, model)[0]) is not None
                                 for n in result.layers)


def test_output_selection_is_stated(tmp_path, trained):
    r = inspect_model("inspect_models:RowLSTM", trained["lstm"][1], out=tmp_path / "a",
                      analysis=False)
    assert r.output_note.startswith("the model returns tuple(0: Tensor(4, 10), 1: tuple(")
    assert "prediction = [0] (the default rule" in r.output_note
    assert Run(tmp_path / "a").manifest["model"]["output"] == 0
    r = inspect_model("inspect_models:DictNet", trained["dict"][1], out=tmp_path / "b",
                      analysis=False, output="logits")
    assert "prediction = ['logits'] (chosen with --output)" in r.output_note
    with pytest.raises(UsageError, match=r"--output 'logit': the model's output has no key "
                       r"'logit'; it returns dict\('features': Tensor\(4, 48\), 'logits'"):
        inspect_model("inspect_models:DictNet", trained["dict"][1], out=tmp_path / "c",
                      output="logit")
    assert not (tmp_path / "c").exists()


def test_default_layers_are_block_outputs_the_penultimate_and_the_logits(tmp_path, trained):
    from shenjing.capture.layers import default_layers
    from shenjing.models import build_model

    x = torch.zeros(2, 1, 8, 8)
    cnn = build_model("simple_cnn", (1, 8, 8), 10)
    assert default_layers(cnn, x).names == ("conv2", "fc1", "relu3", "fc2")  # as always
    assert default_layers(im.RowLSTM(), x).names == ("lstm.0", "lstm.1.0", "head")
    assert default_layers(im.Shared(), x).names == ("inp", "block#1", "out")  # last call
    # inspect uses them and says which were chosen and how to choose others
    r = inspect_model("inspect_models:RowLSTM", trained["lstm"][1], out=tmp_path / "r",
                      analysis=False)
    assert r.layers == ("lstm.0", "lstm.1.0", "head")
    note = Run(tmp_path / "r").manifest["config"]["layers_note"]
    assert "lstm.1.0" in note and "--layers" in note and "shenjing layers RUN" in note


def test_full_analysis_and_report_for_batchnorm_skip_model(tmp_path, trained):
    _full_analysis(tmp_path, trained, "resbn")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["lstm", "shared", "dict", "transformer"])
def test_full_analysis_and_report_for_each_model(tmp_path, trained, key):
    _full_analysis(tmp_path, trained, key)


def _full_analysis(tmp_path, trained, key):
    cls = im.MODELS[key]
    result = inspect_model(f"inspect_models:{cls.__name__}", trained[key][1],
                           out=tmp_path / key, data="digits", **FAST)
    assert not result.failed, result.summary()
    done = {s.name for s in result.steps if s.status == "done"}
    assert {"dynamics", "landscape_line", "landscape_plane"} <= done, result.summary()
    run = Run(tmp_path / key)
    assert run.stage("inspect")["status"] == "done"
    assert [s["status"] for s in run.stage("inspect")["steps"]] == [s.status
                                                                   for s in result.steps]
    if any(s.name == "report" and s.status == "done" for s in result.steps):
        html = (run.path / "report.html").read_text()
        assert cls.__name__ in html


def test_reproduces_a_trained_runs_numbers(tmp_path):
    import shenjing.training as training

    run = training.train("mlp", "digits", epochs=1, run=tmp_path / "trained", progress=False)
    ckpt = run.checkpoint_path("final")
    r = inspect_model("shenjing.models:mlp", ckpt, out=tmp_path / "insp", analysis=False,
                      init_weights=run.checkpoint_path(0))
    mine = Run(tmp_path / "insp").metrics()
    theirs = run.metrics()
    for a, b in ((mine[0], theirs[0]), (mine[-1], theirs[-1])):
        assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-6)
        assert a["test_accuracy"] == b["test_accuracy"]
    assert r.init.startswith("the weights of") and Run(tmp_path / "insp").model().fc1


@pytest.mark.slow
def test_reproduces_a_trained_mnist_cnn_run(tmp_path, mnist_dir):
    import shenjing.training as training

    run = training.train("simple_cnn", "mnist", epochs=1, run=tmp_path / "t",
                         data_dir=mnist_dir, progress=False)
    inspect_model("shenjing.models:simple_cnn", run.checkpoint_path("final"),
                  out=tmp_path / "i", data="mnist", data_dir=mnist_dir, analysis=False)
    a, b = Run(tmp_path / "i").metrics()[-1], run.metrics()[-1]
    assert a["test_loss"] == pytest.approx(b["test_loss"], abs=1e-6)
    assert a["test_accuracy"] == b["test_accuracy"]


# ---- errors: each one paragraph, and nothing written -----------------------------------------
def test_data_of_the_wrong_shape_says_what_the_model_expects(tmp_path, trained):
    with pytest.raises(ShapeMismatchError, match=r"the model Shared cannot run on the data "
                       r"'digits': one batch of shape \(4, 1, 8, 8\) .*raised RuntimeError: "
                       r"mat1 and mat2 shapes cannot be multiplied.* The model expects: its "
                       r"first weighted layer 'inp' \(Linear\) takes 784 features"):
        inspect_model("inspect_models:Shared", trained["shared"][1], out=tmp_path / "r",
                      model_args={"in_features": 784})
    with pytest.raises(ShapeMismatchError, match=r"returns 5 scores per sample but the data "
                       r"'digits' has 10 classes"):
        inspect_model("inspect_models:ResBN", trained["resbn"][1], out=tmp_path / "r",
                      model_args={"n_classes": 5})
    assert not (tmp_path / "r").exists()


def test_key_and_shape_mismatch_leave_no_run_behind(tmp_path, trained):
    with pytest.raises(CheckpointError, match=r"none of its \d+ tensors fits ResBN"):
        inspect_model("inspect_models:ResBN", trained["dict"][1], out=tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"does not fit ResBN: \d+ tensor\(s\) match, "
                       r"\d+ differ in shape[\s\S]*shape mismatch\s+stem\.weight\s+"
                       r"\(16, 1, 3, 3\)\s+\(8, 1, 3, 3\)"):
        inspect_model("inspect_models:ResBN", trained["resbn"][1], out=tmp_path / "r",
                      model_args={"width": 16})
    assert not (tmp_path / "r").exists()


def test_factory_problems(tmp_path, trained):
    w = trained["resbn"][1]
    with pytest.raises(UsageError, match=r"'inspect_models' has no attribute 'ResNet'.*It "
                       r"defines"):
        inspect_model("inspect_models:ResNet", w, out=tmp_path / "r")
    with pytest.raises(UsageError, match=r"model factory 'inspect_models:broken_factory' "
                       r"raised ValueError: cannot build with n_classes=10"):
        inspect_model("inspect_models:broken_factory", w, out=tmp_path / "r",
                      model_args={"n_classes": 10})
    assert not (tmp_path / "r").exists()


def test_malicious_weights_are_refused_before_anything_is_written(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        inspect_model("inspect_models:ResBN", tmp_path / "evil.pt", out=tmp_path / "r")
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_existing_output_folder_needs_force(tmp_path, trained):
    w = trained["shared"][1]
    inspect_model("inspect_models:Shared", w, out=tmp_path / "r", analysis=False)
    with pytest.raises(RunError, match="already holds a run; pass --force"):
        inspect_model("inspect_models:Shared", w, out=tmp_path / "r", analysis=False)
    inspect_model("inspect_models:Shared", w, out=tmp_path / "r", analysis=False, force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not a shenjing run; refusing"):
        inspect_model("inspect_models:Shared", w, out=tmp_path / "other")


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if skip not in p.parents and p != skip}


def test_user_files_only_read_and_nothing_written_outside_out(tmp_path, digits):
    src = tmp_path / "user"
    src.mkdir()
    (src / "mynet.py").write_text((TESTS / "inspect_models.py").read_text())
    idx = np.arange(300)
    np.savez(src / "data.npz", x=digits.train.x[idx].numpy(), y=digits.train.y[idx].numpy())
    torch.manual_seed(3)
    net = im.quick_train(im.Shared(), digits.train.x, digits.train.y, steps=20)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               src / "ckpt.pth")
    out = tmp_path / "out"
    before = _tree(tmp_path, out)
    steps = [s for s in ANALYSIS_STEPS if s.name != "landscape_plane"]  # time: line is enough
    result = inspect_model(f"{src / 'mynet.py'}:make_shared", src / "ckpt.pth", out=out,
                           data=str(src / "data.npz"), steps=steps, **FAST)
    assert not result.failed, result.summary()
    assert _tree(tmp_path, out) == before  # no __pycache__, no stray files
    assert "stripped the prefix 'module.' from the file's keys" in result.weights_notes
    assert "took the 'state_dict' entry of the checkpoint dict" in result.weights_notes
    run = Run(out)
    assert run.manifest["data"]["name"] == "npz" and len(run.data.test) == 75
    assert run.manifest["model"]["factory"] == f"{src / 'mynet.py'}:make_shared"


def test_custom_loss_function_and_regression_guard(tmp_path, trained):
    w = trained["shared"][1]
    r = inspect_model("inspect_models:Shared", w, out=tmp_path / "r", analysis=False,
                      loss="torch.nn.functional:cross_entropy")
    assert r.loss == "torch.nn.functional:cross_entropy"
    assert Run(tmp_path / "r").manifest["config"]["loss"] == r.loss
    with pytest.raises(UsageError, match="--loss mse is a regression loss but the data "
                       "'digits' is a classification task"):
        inspect_model("inspect_models:Shared", w, out=tmp_path / "q", loss="mse")


def test_report_escapes_layer_and_class_names(tmp_path):
    """A layer and class folders named as HTML/JS end up escaped in report.html."""
    from PIL import Image

    evil_layer, evil_class = "<img src=x onerror=alert(1)>", "<script>alert(1)</script>"
    (tmp_path / "evil_model.py").write_text(
        "from torch import nn\n"
        f"EVIL = {evil_layer!r}\n"
        "class Evil(nn.Module):\n"
        "    def __init__(self, n_classes=2):\n"
        "        super().__init__()\n"
        "        self.add_module(EVIL, nn.Linear(16, 8))\n"
        "        self.relu = nn.ReLU()\n"
        "        self.fc = nn.Linear(8, n_classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.relu(getattr(self, EVIL)(x.flatten(1))))\n")
    rng = np.random.default_rng(0)
    for name in (evil_class, 'plain&"quote'):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(14):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8), mode="L").save(
                tmp_path / "imgs" / name / f"{i}.png")
    torch.manual_seed(5)
    from shenjing.models.spec import resolve_factory

    net = resolve_factory(f"{tmp_path / 'evil_model.py'}:Evil")()
    save_safetensors(net.state_dict(), tmp_path / "w.safetensors")
    result = inspect_model(f"{tmp_path / 'evil_model.py'}:Evil", tmp_path / "w.safetensors",
                           out=tmp_path / "run", data=str(tmp_path / "imgs"), **FAST)
    assert evil_layer in result.layers and not result.failed, result.summary()
    html = (tmp_path / "run" / "report.html").read_text()
    assert evil_layer not in html and evil_class not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or \
        "\\u003cscript\\u003e" in html  # escaped in HTML text or in inlined JSON


# ---- messages that do not mislead, values that are not ignored (issue 13, items 8-10) ------
MISBEHAVING = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class OwnBug(Net):
    def forward(self, x):
        return {"a": 1}["missing key"]


class NaNs(Net):
    def forward(self, x):
        return super().forward(x) * float("nan")


class FailsOnTheTestSet(Net):
    """Runs on the 4-sample batches of the checks, fails on the full test split."""

    def forward(self, x):
        if x.shape[0] > 4:
            raise RuntimeError("too many samples for me")
        return super().forward(x)
'''


@pytest.fixture()
def misbehaving(tmp_path):
    (tmp_path / "misbehaving.py").write_text(MISBEHAVING)
    torch.manual_seed(0)
    state = {**{f"fc1.{k}": v for k, v in torch.nn.Linear(64, 16).state_dict().items()},
             **{f"fc2.{k}": v for k, v in torch.nn.Linear(16, 10).state_dict().items()}}
    return tmp_path, save_safetensors(state, tmp_path / "w.safetensors")


def test_a_forward_that_raises_its_own_error_is_not_called_a_shape_mismatch(misbehaving):
    """The data fits; the model's own bug used to be reported as ShapeMismatchError, 'Check
    --data', hiding what to fix."""
    folder, weights = misbehaving
    with pytest.raises(UsageError) as info:
        inspect_model(f"{folder}/misbehaving.py:OwnBug", weights, out=folder / "r")
    message = str(info.value)
    assert not isinstance(info.value, ShapeMismatchError)
    assert message.startswith("the model OwnBug raised KeyError: 'missing key' (at "
                              "misbehaving.py:18) on one batch of shape (4, 1, 8, 8) from "
                              "--data 'digits'; the error is the model's own, not a shape "
                              "mismatch: fix the model's forward")
    assert "Check --data" not in message
    assert not (folder / "r").exists()


def test_a_shape_error_is_still_a_shape_mismatch(misbehaving, digits):
    from shenjing.stages.inspect import is_shape_error

    folder, weights = misbehaving
    with pytest.raises(ShapeMismatchError, match=r"raised RuntimeError: mat1 and mat2 shapes "
                       r"cannot be multiplied.*Check --data"):
        inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r",
                      data=_wide_data(folder))
    assert is_shape_error(RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected "
                                       "input[4, 1, 8, 8] to have 3 channels"))
    assert is_shape_error(ValueError("Expected input batch_size (4) to match target batch_size"))
    assert not is_shape_error(RuntimeError("my own failure"))
    assert not is_shape_error(KeyError("size"))  # not an error torch raises for shapes


def _wide_data(folder):
    rng = np.random.default_rng(0)
    np.savez(folder / "wide.npz", x=rng.normal(size=(40, 3, 5)).astype(np.float32),
             y=np.arange(40) % 4)
    return str(folder / "wide.npz")


def test_a_model_that_predicts_nan_is_refused_before_anything_is_written(misbehaving):
    """Used to make a run whose every number was NaN, exit 0."""
    folder, weights = misbehaving
    with pytest.raises(UsageError, match=r"the model NaNs with its fresh initialisation "
                       r"predicts NaN or infinite values for one batch of --data 'digits' "
                       r"\(40 of 40 values\)"):
        inspect_model(f"{folder}/misbehaving.py:NaNs", weights, out=folder / "r")
    assert not (folder / "r").exists()


def test_output_on_a_single_tensor_model_is_refused(misbehaving):
    """``--output nosuchkey`` used to be 'ignored' with a note, the run made anyway."""
    folder, weights = misbehaving
    with pytest.raises(UsageError, match=r"--output 'nosuchkey': the model Net returns one "
                       r"tensor \(4, 10\), with nothing to select from; leave --output out"):
        inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r",
                      output="nosuchkey")
    assert not (folder / "r").exists()


def test_loss_errors_name_the_loss_option(misbehaving):
    """A missing loss file used to be called a 'model file' '(from --model …)'."""
    folder, weights = misbehaving
    with pytest.raises(UsageError, match=r"^--loss 'nosuch': expected one of cross_entropy, "
                       r"mse, nll or module:function"):
        inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r", loss="nosuch")
    with pytest.raises(UsageError, match=r"^--loss 'gone.py:f': the loss file gone.py does not "
                       r"exist; check the path"):
        inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r",
                      loss="gone.py:f")
    with pytest.raises(UsageError, match=r"^--device 'tpu': unknown device"):
        inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r",
                      device="tpu")
    assert not (folder / "r").exists()


def test_a_forward_failing_on_a_later_batch_leaves_no_half_made_run(misbehaving):
    """The one-batch check passes; evaluating the test split fails. That used to leave the
    run folder behind (a traceback before the Recorder said it in one line)."""
    folder, weights = misbehaving
    with pytest.raises(UsageError, match=r"FailsOnTheTestSet raised RuntimeError: too many "
                                         r"samples for me"):
        inspect_model(f"{folder}/misbehaving.py:FailsOnTheTestSet", weights, out=folder / "r")
    assert not (folder / "r").exists()
    (folder / "empty").mkdir()  # a folder the user made stays, empty
    with pytest.raises(UsageError, match="too many samples for me"):
        inspect_model(f"{folder}/misbehaving.py:FailsOnTheTestSet", weights,
                      out=folder / "empty")
    assert (folder / "empty").is_dir() and not any((folder / "empty").iterdir())


def test_a_sample_count_above_the_data_is_stated_as_capped(misbehaving):
    """``--samples 1000`` on the 450 test samples of digits used all 450 without a word."""
    folder, weights = misbehaving
    line = next(s for s in ANALYSIS_STEPS if s.name == "landscape_line")
    result = inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r",
                           steps=(line,), line_steps=3, samples=1000)
    (step,) = result.steps
    assert step.status == "done", step
    assert step.detail == "3 points; --samples 1000 capped to the 450 test samples"
    assert "landscape_line: done (3 points; --samples 1000 capped to the 450 test samples)" \
        in result.summary()
    exact = inspect_model(f"{folder}/misbehaving.py:Net", weights, out=folder / "r2",
                          steps=(line,), line_steps=3, samples=450)
    assert exact.steps[0].detail == "3 points"
