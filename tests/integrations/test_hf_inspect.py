"""``shenjing inspect --model hf:FOLDER``: a Hugging Face model saved with save_pretrained,
built offline from its config, its weights read with safetensors, its ``ModelOutput``
reduced to the logits; checked against transformers' own forward of the same folder."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason="the 'hf' extra is not installed")

import shenjing as sj  # noqa: E402
from cli_invoke import invoke  # noqa: E402
from shenjing.errors import UsageError  # noqa: E402
from shenjing.stages.inspect import inspect_model  # noqa: E402

VIT = {"image_size": 8, "patch_size": 4, "num_channels": 1, "hidden_size": 16,
       "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
       "num_labels": 10}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny ViT trained a few steps on digits, saved as save_pretrained writes it."""
    data = sj.load_dataset("digits")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(30):
        idx = torch.arange(step * 32, step * 32 + 32) % len(data.train)
        out = model(pixel_values=data.train.x[idx], labels=data.train.y[idx])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("hf") / "tiny-vit"
    model.save_pretrained(path)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path


def _reference(folder, split):
    """transformers' own reading of the folder: test loss and accuracy of its logits."""
    model = transformers.ViTForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = model(pixel_values=split.x).logits
    return float(F.cross_entropy(logits, split.y)), int((logits.argmax(1) == split.y)
                                                        .sum()) / len(split.y)


def test_inspect_hf_folder_matches_transformers(folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.chdir(folder.parent)  # a relative folder, as a user types it
    code, _stdout, err = invoke(capsys, "inspect", "--model", f"hf:{folder.name}", "--data",
                                "digits", "--out", str(out), "--no-analysis")
    assert code == 0, err
    run = sj.Run(out)
    spec = run.manifest["model"]
    assert spec["factory"] == "shenjing.integrations.hf:pretrained_folder"
    assert spec["kwargs"] == {"folder": str(folder.resolve())} and spec["output"] == "logits"
    assert "ImageClassifierOutput" in run.manifest["config"]["output_note"]
    final = run.metrics()[-1]
    loss, accuracy = _reference(folder, run.data.test)
    assert final["test_loss"] == pytest.approx(loss, rel=1e-5)
    assert final["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert accuracy > 0.2  # trained a little: not the untrained net's chance level
    # the trained epoch's weights are the folder's, tensor for tensor (as transformers
    # reads them: 5.x renames the file's keys to the model's while loading)
    saved = transformers.ViTForImageClassification.from_pretrained(folder).state_dict()
    assert run.state_dict(1).keys() == saved.keys()
    for key, value in run.state_dict(1).items():
        torch.testing.assert_close(value, saved[key])
    assert run.manifest["config"]["weights_format"].startswith("safetensors")
    # and the views work on the run: the model is rebuilt from the recorded spec
    code, _, err = invoke(capsys, "report", str(out))
    assert code == 0, err
    assert "ViTForImageClassification" in (out / "report.html").read_text(encoding="utf-8")


def test_a_model_built_from_a_config_by_a_factory(tmp_path):
    """``--model file.py:make``, where make builds a transformers model from a config: its
    ModelOutput gives the logits by default."""
    factory = tmp_path / "make_vit.py"
    factory.write_text("import transformers\n\n"
                       "def make():\n"
                       f"    return transformers.ViTForImageClassification("
                       f"transformers.ViTConfig(**{VIT!r}))\n", encoding="utf-8")
    torch.manual_seed(1)
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    model = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    result = inspect_model(f"{factory}:make", weights, out=tmp_path / "run", data="digits",
                           analysis=False)
    assert result.run.manifest["model"]["output"] == "logits"
    loss, _accuracy = _reference_module(model, result.run.data.test)
    assert result.metrics["final"]["test_loss"] == pytest.approx(loss, rel=1e-5)


def _reference_module(model, split):
    with torch.no_grad():
        logits = model.eval()(pixel_values=split.x).logits
    return float(F.cross_entropy(logits, split.y)), int((logits.argmax(1) == split.y)
                                                        .sum()) / len(split.y)


def test_remote_code_pickles_and_missing_files_are_refused(folder, tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    config = json.loads((folder / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps(
        {**config, "auto_map": {"AutoModel": "modeling_evil.Evil"}}))
    (remote / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (remote / "modeling_evil.py").write_text("raise SystemExit('ran code from the folder')\n")
    with pytest.raises(UsageError, match=r"names its own code \(auto_map.*trust_remote_code "
                                         "stays off"):
        inspect_model(f"hf:{remote}", out=tmp_path / "r1", data="digits", analysis=False)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps(config))
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UsageError, match=r"only pytorch_model.bin \(a pickle\).*safetensors"):
        inspect_model(f"hf:{pickled}", out=tmp_path / "r2", data="digits", analysis=False)
    with pytest.raises(UsageError, match="has no config.json; save the model"):
        inspect_model(f"hf:{tmp_path}", out=tmp_path / "r3", data="digits", analysis=False)
    with pytest.raises(UsageError, match="no folder"):
        inspect_model(f"hf:{tmp_path / 'absent'}", out=tmp_path / "r4", data="digits",
                      analysis=False)
    with pytest.raises(UsageError, match="leave --model-arg out"):
        inspect_model(f"hf:{folder}", out=tmp_path / "r5", data="digits", analysis=False,
                      model_args={"x": 1})
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))
