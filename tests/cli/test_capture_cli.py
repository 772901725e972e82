"""``shenjing layers``, ``capture`` and ``embed`` invoked in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from shenjing.cli import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the CLI helper
from cli_invoke import invoke

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from shenjing.training import train

    return train("mlp", "digits", epochs=1, run=tmp_path_factory.mktemp("r") / "mlp",
                 progress=False).path


def test_layers_lists_post_activation(run_dir):
    result = runner.invoke(app, ["layers", str(run_dir)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("relu1"))
    assert "ReLU" in row and "(2, 128)" in row and "post-activation" in row


def test_capture_writes_npy(run_dir):
    result = runner.invoke(app, ["capture", str(run_dir), "--layers", "relu1,fc2", "--epoch",
                                 "1", "--n", "50"])
    assert result.exit_code == 0, result.output
    assert "captured 50 test samples at epoch 1" in result.output
    arr = np.load(run_dir / "activations" / "fc2" / "epoch-001-n50.npy", mmap_mode="r")
    assert arr.shape == (50, 10)


def test_embed_prints_the_numbers(run_dir):
    result = runner.invoke(app, ["embed", str(run_dir), "--layers", "relu1", "--method", "pca",
                                 "--epochs", "0,1", "--n", "120", "--n-train", "300"])
    assert result.exit_code == 0, result.output
    assert "pca maps of relu1 at epochs 0, 1" in result.output
    assert any(line.strip().startswith("input") for line in result.output.splitlines())
    assert (run_dir / "embeddings" / "relu1-pca-epoch-001.npz").is_file()


def _listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_captures_of_the_same_epoch_with_other_settings_are_all_kept(run_dir, capsys):
    """Issue 13 item 5, through the CLI: `--split train` after `--split test` (and a
    subset, and float16) write files of their own, each with its own rows."""
    out = ""
    for args in ([], ["--split", "train"], ["--n", "25"], ["--dtype", "float16"]):
        code, printed, err = invoke(capsys, "capture", str(run_dir), "--layers", "relu1",
                                    "--epoch", "1", *args)
        assert code == 0, err
        out += printed
    folder = run_dir / "activations" / "relu1"
    shapes = {name: np.load(folder / name, mmap_mode="r").shape
              for name in ("epoch-001.npy", "epoch-001-train.npy", "epoch-001-n25.npy",
                           "epoch-001-float16.npy")}
    assert shapes == {"epoch-001.npy": (450, 128), "epoch-001-train.npy": (1347, 128),
                      "epoch-001-n25.npy": (25, 128), "epoch-001-float16.npy": (450, 128)}
    assert "epoch-001-train.npy" in out.replace("\n", "")


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    from shenjing.training import train

    return train("simple_cnn", "digits", epochs=1, run=tmp_path_factory.mktemp("c") / "cnn",
                 progress=False).path


def test_pool_larger_than_the_maps_is_one_line_exit_2_creating_nothing(cnn_dir, capsys):
    """Issue 13 item 7: `capture --pool 1000` tried to allocate 32 GB; now a usage error
    naming the layer's map size and the largest k, before anything is pooled or written."""
    from shenjing.cli import main

    before = _listing(cnn_dir)
    with pytest.raises(SystemExit) as exc:
        main(["capture", str(cnn_dir), "--layers", "relu1", "--pool", "1000"])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("PoolTooLargeError: pool=1000 (--pool 1000) would enlarge "
                          "'relu1''s 8×8 maps to 1000×1000"), err
    assert "k must be at most 8" in err and "Traceback" not in err
    assert _listing(cnn_dir) == before
    code, _, err = invoke(capsys, "capture", str(cnn_dir), "--layers", "relu1", "--pool", "4",
                          "--n", "20")
    assert code == 0, err
    assert np.load(cnn_dir / "activations" / "relu1" / "epoch-001-n20-pool-4.npy").shape == \
        (20, 32, 4, 4)


def test_unknown_layer_is_one_line_exit_2(run_dir, capsys):
    from shenjing.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["capture", str(run_dir), "--layers", "relu2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "LayerNotFoundError: no layer 'relu2' in MLP. Did you mean 'relu1'" in err


def test_embed_umap_without_the_extra_prints_the_pip_line(run_dir, capsys, monkeypatch):
    import sys

    import shenjing.analysis.embed as mod
    from shenjing.cli import main

    monkeypatch.setitem(sys.modules, "umap", None)
    monkeypatch.setattr(mod, "_UMAP_CACHE_READY", False)
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(run_dir), "--layers", "relu1", "--method", "umap"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == ("MissingExtraError: method='umap' needs the 'umap' extra ('umap' is "
                           'not installed): pip install "shenjing[umap]"')


# ---- users' models: every key `layers` prints is selectable by `capture` and `embed` -------
@pytest.fixture(scope="module")
def user_run_dirs(tmp_path_factory):
    """inspect runs (epochs 0 and 1) of the test LSTM and shared-block models."""
    import sys
    from pathlib import Path

    import torch

    from shenjing.models.weights import save_safetensors
    from shenjing.stages.inspect import inspect_model

    tests = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(tests))
    import user_models as um

    folder = tmp_path_factory.mktemp("user")
    runs = {}
    for name, cls in (("lstm", um.RowLSTM), ("shared", um.SharedBlock)):
        torch.manual_seed(3)
        weights = save_safetensors(cls().state_dict(), folder / f"{name}.safetensors")
        inspect_model(f"{tests / 'user_models.py'}:{cls.__name__}", weights,
                      out=folder / name, analysis=False)
        runs[name] = folder / name
    return runs


@pytest.fixture
def user_runs(user_run_dirs):
    """The user runs, their code consented to in this test's own trust list."""
    from shenjing.runs import Run

    for path in user_run_dirs.values():
        Run(path, trust_code=True).require_trust()
    return user_run_dirs


def test_layers_prints_lstm_keys_batch_first_and_calls(user_runs):
    result = runner.invoke(app, ["layers", str(user_runs["lstm"])])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("lstm "))
    assert "lstm.0: (2, 8, 24); lstm.1.0: (2, 1, 24); lstm.1.1: (2, 1, 24)" in row
    result = runner.invoke(app, ["layers", str(user_runs["shared"])])
    row = next(line for line in result.output.splitlines() if line.startswith("block "))
    assert "block#0: (2, 32); block#1: (2, 32)" in row and "called 2× per forward" in row


def test_capture_a_listed_lstm_key_records_h_n(user_runs):
    import torch

    from shenjing.runs import Run

    run_dir = user_runs["lstm"]
    result = runner.invoke(app, ["capture", str(run_dir), "--layers", "lstm.1.0", "--n", "40"])
    assert result.exit_code == 0, result.output
    assert "captured 40 test samples at epoch 1" in result.output
    folder = run_dir / "activations"
    assert sorted(p.name for p in folder.iterdir()) == ["lstm.1.0"]
    arr = np.load(folder / "lstm.1.0" / "epoch-001-n40.npy")
    idx = np.load(folder / "lstm.1.0" / "epoch-001-n40.indices.npy")
    run = Run(run_dir)
    model = run.model(1)
    sub = run.data.test.subset(40, seed=0)  # the samples capture takes (fixed seed)
    np.testing.assert_array_equal(idx, sub.indices.numpy())
    x = sub.x
    with torch.no_grad():
        _, (h_n, _) = model.lstm(x.reshape(len(x), 8, 8))
    assert arr.shape == (40, 1, 24)
    np.testing.assert_allclose(arr, h_n.movedim(1, 0).numpy(), rtol=1e-5, atol=1e-6)


def test_capture_second_call_of_a_shared_block(user_runs):
    run_dir = user_runs["shared"]
    result = runner.invoke(app, ["capture", str(run_dir), "--layers", "block#1,block.0#0",
                                 "--n", "30"])
    assert result.exit_code == 0, result.output
    for key in ("block#1", "block.0#0"):
        assert np.load(run_dir / "activations" / key / "epoch-001-n30.npy").shape == (30, 32)


def test_embed_a_listed_lstm_key(user_runs):
    run_dir = user_runs["lstm"]
    result = runner.invoke(app, ["embed", str(run_dir), "--layers", "lstm.0", "--method", "pca",
                                 "--epochs", "0,1", "--n", "60", "--n-train", "120",
                                 "--no-cka"])
    assert result.exit_code == 0, result.output
    assert "pca maps of lstm.0 at epochs 0, 1" in result.output
    assert (run_dir / "embeddings" / "lstm.0-pca-epoch-001.npz").is_file()


def test_a_key_that_is_not_there_is_one_line_exit_2(user_runs, capsys):
    from shenjing.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["capture", str(user_runs["lstm"]), "--layers", "lstm.7"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("LayerNotFoundError: no output 'lstm.7' in RowLSTM: 'lstm' returned no tensor at "
            "that place. Its keys: lstm.0, lstm.1.0, lstm.1.1") in err


@pytest.mark.parametrize(("command", "says"), [
    ("capture", "Not resumable: one streaming pass"),
    ("embed", "Resumes: a map already on disk is reused"),
])
def test_help_says_whether_the_command_resumes(capsys, command, says):
    code, out, _ = invoke(capsys, command, "--help")
    assert code == 0 and says in " ".join(out.replace("│", " ").split()), out
