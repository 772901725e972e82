"""``shenjing inspect`` in-process: output lines, exit codes, refused pickles."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from shenjing.cli.app import main
from shenjing.models.weights import save_safetensors
from shenjing.runs import Run

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
import inspect_models as im  # noqa: E402


def _invoke(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["inspect", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def shared_weights(tmp_path_factory, digits):
    torch.manual_seed(0)
    net = im.quick_train(im.Shared(hidden=16), digits.train.x, digits.train.y, steps=20)
    folder = tmp_path_factory.mktemp("w")
    torch.save(net, folder / "full.pt")
    return net, save_safetensors(net.state_dict(), folder / "shared.safetensors"), folder


def test_inspect_prints_both_epochs_and_writes_the_run(tmp_path, capsys, shared_weights):
    _, weights, _ = shared_weights
    code, out, err = _invoke(capsys, "--model", "inspect_models:make_shared", "--model-arg",
                             "hidden=16", "--weights", str(weights), "--out",
                             str(tmp_path / "r"), "--no-analysis")
    assert code == 0, err
    run = Run(tmp_path / "r")
    final = run.metrics()[-1]
    assert f"final (epoch 1): test loss {final['test_loss']:.6f}, test accuracy " \
           f"{final['test_accuracy']:.4f}" in out
    assert "epoch 0 = a fresh initialisation of Shared with torch seed 0" in out
    assert run.manifest["model"]["kwargs"] == {"hidden": 16}


def test_malicious_pickle_exit_1_and_code_not_run(tmp_path, capsys):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Payload(), protocol=2))
    code, _, err = _invoke(capsys, "--model", "inspect_models:Shared", "--weights",
                           str(tmp_path / "evil.pth"), "--out", str(tmp_path / "r"))
    assert code == 1
    assert err.startswith("CheckpointError: refusing to load")
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_full_model_pickle_needs_trust_pickle_and_warns(tmp_path, capsys, shared_weights):
    _, _, folder = shared_weights
    args = ["--model", "inspect_models:Shared", "--model-arg", "hidden=16", "--weights",
            str(folder / "full.pt"), "--out", str(tmp_path / "r"), "--no-analysis"]
    code, _, err = _invoke(capsys, *args)
    assert code == 1 and "CheckpointError: refusing to load" in err and "save_file(" in err
    code, out, err = _invoke(capsys, *args, "--trust-pickle")
    assert code == 0, err
    assert "WARNING unpickling" in out and "runs whatever code the file contains" in out
    assert "took state_dict() of the pickled Shared module" in out


@pytest.mark.parametrize("override,message", [
    ({"--model-arg": "hidden"}, "UsageError: --model-arg 'hidden' must look like key=value"),
    ({"--model": "inspect_models:Nope"}, "UsageError: 'inspect_models' has no attribute "
                                         "'Nope'"),
    ({"--data": "no/such/file.npz"}, "UsageError: --data 'no/such/file.npz': no such file or "
                                     "folder, and not a built-in dataset"),
    # --output on a single-tensor model used to be "ignored" with a note and exit 0
    ({"--output": "logits"}, "UsageError: --output 'logits': the model Shared returns one "
                             "tensor (4, 10), with nothing to select from; leave --output out"),
    ({"--model-arg": "hidden=[16"}, "UsageError: --model-arg 'hidden=[16': '[16' is not a "
                                    "Python literal"),
])
def test_usage_errors_exit_2(tmp_path, capsys, shared_weights, override, message):
    _, weights, _ = shared_weights
    options = {"--model": "inspect_models:Shared", "--weights": str(weights),
               "--out": str(tmp_path / "r"), "--model-arg": "hidden=16", **override}
    code, out, err = _invoke(capsys, *[x for kv in options.items() for x in kv],
                             "--no-analysis")
    assert code == 2, (out, err)
    assert err.startswith(message)
    assert not (tmp_path / "r").exists()
