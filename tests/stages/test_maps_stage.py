"""Maps, filters, weights and dynamics stages on tiny runs (no training: hand-made
checkpoints), including a VGG-shaped user model whose layers are named like VGG16's, and
users' LSTM, ViT, Conv1d and shared-block models (sequence, token and signal views)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from shenjing import _io
from shenjing.capture import list_layers
from shenjing.errors import (
    EpochNotFoundError,
    LayerNotFoundError,
    NotApplicableError,
    ShapeMismatchError,
    UsageError,
)
from shenjing.hooks import count_hooks
from shenjing.models import build_model
from shenjing.runs import Run
from shenjing.stages.dynamics import dynamics_stage
from shenjing.stages.filters import filters_stage
from shenjing.stages.maps import maps_stage, select_input
from shenjing.stages.weights import weights_stage

VGG_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn
    import torch.nn.functional as F

    CFG = [4, 4, "M", 8, 8, "M", 8, 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M"]

    class TinyVGG(nn.Module):
        """VGG16's layout and layer names (features.0 … features.30), narrow channels.
        Grey 8×8 digits are upsampled to 32×32 and repeated to 3 channels."""

        def __init__(self, n_classes=10):
            super().__init__()
            layers, c = [], 3
            for v in CFG:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                    c = v
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Sequential(nn.Linear(c, 32), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(32, n_classes))

        def forward(self, x):
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
            x = self.avgpool(self.features(x)).flatten(1)
            return self.classifier(x)
''')


def perturbed(model: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen) * p.abs().mean())
    return model


def metrics_record(epoch: int, layers: list[str]) -> dict:
    return {"epoch": epoch, "train_loss": None if epoch == 0 else 1.0 / epoch,
            "train_accuracy": None, "test_loss": 2.3 / (epoch + 1), "test_accuracy": 0.1 * epoch,
            "lr": 1e-3, "steps": 5 * epoch,
            "layers": {n: {"weight_norm": 1.0 + 0.1 * epoch,
                           "update_ratio": None if epoch == 0 else 0.2 / epoch,
                           "dist_from_init": 0.1 * epoch, "cos_to_init": 1 - 0.01 * epoch,
                           "grad_norm": None if epoch == 0 else 0.3} for n in layers},
            "dead_units": {"relu1": 0.0}}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """simple_cnn on digits with checkpoints for epochs 0, 1, 2 and metrics records."""
    path = tmp_path_factory.mktemp("runs") / "cnn"
    run = Run.create(path, model={"name": "simple_cnn", "input_shape": [1, 8, 8],
                                  "n_outputs": 10, "kwargs": {}},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = build_model("simple_cnn", (1, 8, 8))
    for epoch in range(3):
        run.save_checkpoint(epoch, model)
        _io.append_jsonl(run.metrics_path, metrics_record(epoch, ["conv1", "conv2", "fc1",
                                                                  "fc2"]))
        model = perturbed(model, 0.5, epoch)
    return Run(path)


@pytest.fixture(scope="module")
def vgg_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vgg")
    source = folder / "vggish.py"
    source.write_text(VGG_SOURCE)
    run = Run.create(folder / "run", model={"factory": f"{source}:TinyVGG"},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    model = run.build_model()
    run.save_checkpoint(0, model)
    run.save_checkpoint(3, perturbed(model, 0.3, 1))
    return Run(run.path, trust_code=True)  # each test has its own trust list (conftest)


def test_maps_untrained_vs_trained_numbers_match_direct_computation(cnn_run):
    result = maps_stage(cnn_run, "conv1", index=4, epochs=("init", "final"), device="cpu")
    x = cnn_run.data.test.x[4:5]
    direct = []
    for e in (0, 2):
        with torch.no_grad():
            direct.append(cnn_run.model(e).conv1(x)[0].numpy())
    assert result.epochs == (0, 2) and result.view == "spatial" and result.index == 4
    assert result.change is not None
    assert result.change.mean_abs_change == pytest.approx(np.abs(direct[1] - direct[0]).mean(),
                                                          rel=1e-5)
    record = _io.read_json(result.json_path)
    assert result.json_path.name == "maps-conv1-test4-e000-e002.json"
    assert record["change"]["mean_abs_change"] == pytest.approx(result.change.mean_abs_change)
    assert record["label"] == str(int(cnn_run.data.test.y[4]))
    assert len(record["change"]["top_changed"]) == 10
    for rel in record["figures"]:
        assert (cnn_run.path / rel).is_file()
    assert (cnn_run.figures_dir / "maps-conv1-test4-e000-e002.png").is_file()
    assert (cnn_run.figures_dir / "maps-conv1-test4-e000-e002.svg").is_file()
    saved = np.load(cnn_run.path / "maps" / "maps-conv1-test4-e000-e002.npz")
    np.testing.assert_allclose(saved["values"], np.stack(direct), atol=1e-5)
    assert cnn_run.stage("maps")["status"] == "done"
    assert "mean |Δ activation| epoch 0→2" in result.summary()


def test_maps_by_class_vector_view_and_gif(cnn_run):
    result = maps_stage(cnn_run, "relu3", cls="3", epochs="all")
    assert result.view == "vector" and result.label == "3"
    record = _io.read_json(result.json_path)
    assert record["dead_channels_rule"] == "output of ReLU"
    assert set(record["dead_channels"]) == {"0", "1", "2"}
    assert int(cnn_run.data.test.y[result.index]) == 3
    gif = maps_stage(cnn_run, "relu1", index=0, epochs=[0, 1, 2], gif=True, top_k=6)
    from shenjing.plot.animate import read_gif

    assert gif.gif is not None and len(read_gif(gif.gif)) == 3
    assert any(p.name == "maps-relu1-test0-strip.png" for p in gif.figures)


def test_maps_bad_input_messages(cnn_run):
    with pytest.raises(ShapeMismatchError, match=r"'fc1' outputs a vector of 128 features.*"
                                                 r"--view vector"):
        maps_stage(cnn_run, "fc1", view="grid")
    with pytest.raises(UsageError, match=r"--index 450: input index 450 is out of range: the "
                                         r"test split of 'digits' has 450 samples; give one "
                                         r"from 0 to 449"):
        maps_stage(cnn_run, "conv1", index=450)
    with pytest.raises(EpochNotFoundError, match="no checkpoint for epoch 9; epochs there are: "
                                                 "0, 1, 2"):
        maps_stage(cnn_run, "conv1", epochs=[0, 9])
    with pytest.raises(LayerNotFoundError, match="no layer 'conv0' in SimpleCNN. Did you mean"):
        maps_stage(cnn_run, "conv0")
    with pytest.raises(UsageError, match="--class 'eleven': expected one of 0, 1, 2"):
        select_input(cnn_run, cls="eleven")
    with pytest.raises(UsageError, match="--view 'image': expected one of auto, grid"):
        maps_stage(cnn_run, "conv1", view="image")
    with pytest.raises(ShapeMismatchError, match=r"'conv1' gives a spatial .*--view grid"):
        maps_stage(cnn_run, "conv1", view="heatmap")
    flat = maps_stage(cnn_run, "conv1", view="vector", epochs=[2])   # any layer, flattened
    assert flat.view == "vector" and flat.maps[0].values.shape == (32 * 8 * 8,)
    record = _io.read_json(flat.json_path)
    assert record["flattened_from"] == [32, 8, 8] and len(record["channels_shown"]) == 32


def test_filters_stage_conv_and_epochs(cnn_run):
    result = filters_stage(cnn_run, epochs="all", gif=True, max_filters=8)
    assert result.layer == "conv1" and result.view == "filters"
    assert result.change is not None
    w0 = cnn_run.state_dict(0)["conv1.weight"].numpy()
    w2 = cnn_run.state_dict(2)["conv1.weight"].numpy()
    assert result.change["relative_change"] == pytest.approx(
        np.linalg.norm(w2 - w0) / np.linalg.norm(w0), rel=1e-5)
    names = {p.name for p in result.figures}
    assert {"filters-conv1-e000.png", "filters-conv1-e002.png",
            "filters-conv1-epochs.png"} <= names
    assert result.gif is not None and result.gif.is_file()
    deep = filters_stage(cnn_run, "conv2", max_filters=8, max_in=4)
    assert deep.view == "kernel grid"
    record = _io.read_json(cnn_run.path / "maps" / "filters-conv2.json")
    assert record["shape"] == [64, 32, 3, 3] and record["view"] == "kernel grid"


def test_filters_stage_mlp_units_as_images(tmp_path):
    run = Run.create(tmp_path / "mlp", model={"name": "mlp", "input_shape": [1, 8, 8],
                                              "n_outputs": 10, "kwargs": {"hidden": [6]}},
                     data={"name": "digits", "seed": 0})
    run.save_checkpoint(0, build_model("mlp", (1, 8, 8), hidden=(6,)))
    result = filters_stage(run)
    assert result.layer == "fc1" and result.view == "unit images"
    with pytest.raises(NotApplicableError, match=r"'fc2' reads 6 features, not the whole image "
                                                 r"input \(1, 8, 8\)"):
        filters_stage(run, "fc2")
    assert run.stage("filters")["status"] == "skipped"
    assert "'fc2' reads 6 features" in run.stage("filters")["reason"]


def test_dynamics_and_weights_stages(cnn_run):
    result = dynamics_stage(cnn_run)
    names = {p.name for p in result.figures}
    assert {"dynamics-curves.png", "dynamics-layers.png", "dynamics-status.png"} <= names
    data = _io.read_json(cnn_run.path / "dynamics" / "dynamics.json")
    assert data["dynamics"]["epochs"] == [0, 1, 2]
    assert data["status"]["status"]["conv1"] == "moving"
    assert result.weights is not None
    stats = _io.read_json(cnn_run.path / "dynamics" / "weights.json")["stats"]
    w2 = cnn_run.state_dict(2)["fc1.weight"].double().numpy()
    assert stats["fc1"]["norm"][-1] == pytest.approx(np.linalg.norm(w2))
    npz = np.load(cnn_run.path / "dynamics" / "weights.npz")
    assert npz["fc1__counts"].shape == (3, 60)
    assert npz["conv1__counts"].shape == (3, 16)  # 288 weights: √n bins
    assert weights_stage(cnn_run, epochs=[0, 2], layers=["fc2"]).history.layers == ("fc2",)


def test_vgg_shaped_first_middle_last_conv_and_filters(vgg_run):
    """Seed 003 (W6): first, a middle and the last conv layer of a VGG16-shaped model."""
    shapes = {}
    for layer in ("features.0", "features.14", "features.28"):
        result = maps_stage(vgg_run, layer, index=0, epochs=("init", "final"))
        assert result.view == "spatial"
        shapes[layer] = result.maps[-1].values.shape
        assert (vgg_run.figures_dir / f"maps-{layer}-test0-e000-e003.png").is_file()
    assert shapes == {"features.0": (4, 32, 32), "features.14": (8, 8, 8),
                      "features.28": (16, 2, 2)}
    filters = filters_stage(vgg_run, epochs=("final",))
    assert filters.layer == "features.0" and filters.view == "filters"
    assert filters.filters[-1].weight.shape == (4, 3, 3, 3)      # RGB kernels
    assert (vgg_run.figures_dir / "filters-features.0-e003.png").is_file()


# ---- users' sequence, token and signal models (issue 12, items 3, 8, 12) -------------------
USER_MODELS = Path(__file__).resolve().parents[1] / "user_models.py"


def user_run(folder: Path, factory: str, *, steps: int = 25) -> Run:
    """A run of ``user_models.<factory>`` on digits: epoch 0 fresh, epoch 1 after a few Adam
    steps; with its ``layers.json`` as the Recorder writes it."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    run = Run.create(folder, model={"factory": f"{USER_MODELS}:{factory}"},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    model = run.build_model()
    data = run.data
    _io.write_json(folder / "layers.json", list_layers(model, data.test.x[:2]).to_dict())
    run.save_checkpoint(0, model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        pick = torch.randint(0, len(data.train.x), (64,), generator=gen)
        loss = F.cross_entropy(model(data.train.x[pick]), data.train.y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    run.save_checkpoint(1, model.eval())
    return Run(folder, trust_code=True)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    return user_run(tmp_path_factory.mktemp("lstm") / "run", "RowLSTM")


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    return user_run(tmp_path_factory.mktemp("vit") / "run", "TinyViT")


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory):
    return user_run(tmp_path_factory.mktemp("signal") / "run", "SignalNet")


def hooked(model, module, x):
    """``module``'s output for ``x``, recorded with a plain forward hook (independent)."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0]


def test_lstm_maps_are_a_time_by_hidden_heatmap_with_the_change(lstm_run):
    result = maps_stage(lstm_run, "lstm", index=3, device="cpu")
    x = lstm_run.data.test.x[3:4]
    direct = [hooked(m, m.lstm, x)[0][0].numpy() for m in (lstm_run.model(0),
                                                           lstm_run.model(1))]
    assert result.view == "sequence"
    record = _io.read_json(result.json_path)
    assert record["view"] == "sequence" and record["axes"] == ["time step", "hidden unit"]
    assert record["shape"] == [8, 24] and record["key"] == "lstm.0"
    assert record["module_type"] == "LSTM" and record["drawn_as"] == "heatmap"
    assert record["dead_channels"] is None and "LSTM output" in record["dead_channels_reason"]
    diff = np.abs(direct[1] - direct[0])
    assert record["change"]["mean_abs_change"] == pytest.approx(diff.mean(), rel=1e-5)
    np.testing.assert_allclose(record["change"]["per_channel_change"], diff.mean(axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(record["change"]["per_position_change"], diff.mean(axis=1),
                               rtol=1e-5)
    assert record["change"]["top_changed"][0]["channel"] == int(np.argmax(diff.mean(axis=0)))
    saved = np.load(lstm_run.path / "maps" / "maps-lstm-test3-e000-e001.npz")
    np.testing.assert_allclose(saved["values"], np.stack(direct), atol=1e-5)
    assert (lstm_run.figures_dir / "maps-lstm-test3-e000-e001.png").is_file()
    assert lstm_run.stage("maps")["status"] == "done"
    text = result.summary()
    assert "lstm (output lstm.0): sequence (time step × hidden unit)" in text
    assert "most changed hidden units:" in text and "most changed time steps:" in text
    assert "'off' hidden units not counted: LSTM outputs have no hard zero" in text
    assert "top 32" not in text


def test_an_output_key_as_layers_prints_it_is_accepted(lstm_run):
    """Issue 12, item 8: `maps --layer lstm.1.0` (h_n) was refused."""
    result = maps_stage(lstm_run, "lstm.1.0", index=0, epochs=[1], device="cpu")
    x = lstm_run.data.test.x[0:1]
    model = lstm_run.model(1)
    h_n = hooked(model, model.lstm, x)[1][0]
    np.testing.assert_allclose(result.maps[0].values, h_n[0, 0].numpy(), atol=1e-6)
    assert result.view == "vector"
    assert (lstm_run.figures_dir / "maps-lstm.1.0-test0-e001.png").is_file()
    with pytest.raises(LayerNotFoundError, match=r"'lstm' \(LSTM\) gives the outputs lstm.0, "
                                                 r"lstm.1.0, lstm.1.1"):
        maps_stage(lstm_run, "lstm.2", device="cpu")
    assert count_hooks(model) == 0


def test_vit_token_maps_keep_tokens_by_features(vit_run):
    result = maps_stage(vit_run, "encoder.layers.0", index=1, device="cpu")
    record = _io.read_json(result.json_path)
    assert record["view"] == "tokens" and record["axes"] == ["token", "feature"]
    assert record["shape"] == [17, 16] and record["dead_channels"] is None
    model = vit_run.model(1)
    direct = hooked(model, model.encoder.layers[0], vit_run.data.test.x[1:2])[0].numpy()
    np.testing.assert_allclose(result.maps[-1].values, direct, atol=1e-5)
    attn = maps_stage(vit_run, "encoder.layers.1.self_attn", index=1, epochs=[1],
                      device="cpu")
    assert attn.view == "tokens" and attn.maps[0].key == "encoder.layers.1.self_attn.0"


def test_conv1d_maps_are_signals_and_off_is_counted_after_the_relu(signal_run):
    conv = maps_stage(signal_run, "features.0", index=2, device="cpu")
    relu = maps_stage(signal_run, "features.1", index=2, device="cpu")
    assert conv.view == relu.view == "signal"
    conv_rec = _io.read_json(conv.json_path)
    relu_rec = _io.read_json(relu.json_path)
    assert conv_rec["axes"] == ["channel", "position"] and conv_rec["shape"] == [8, 64]
    assert conv_rec["dead_channels"] is None and "Conv1d output" in \
        conv_rec["dead_channels_reason"]
    x = signal_run.data.test.x[2:3].reshape(1, 1, 64)
    for e in (0, 1):
        model = signal_run.model(e)
        with torch.no_grad():
            out = torch.relu(model.features[0](x))[0].numpy()
        expected = [int(c) for c in np.flatnonzero((out <= 0).all(axis=1))]
        assert relu_rec["dead_channels"][str(e)] == expected
    assert relu_rec["dead_channels_rule"] == "output of ReLU"
    assert relu_rec["dead_channels_reason"] is None


def test_conv1d_filters_are_drawn_as_signals_with_the_change_since_init(signal_run):
    """Issue 12, item 3: filters of a Conv1d failed with exit 1."""
    result = filters_stage(signal_run, epochs=("init", "final"))
    assert result.layer == "features.0" and result.view == "kernel signals"
    w0 = signal_run.state_dict(0)["features.0.weight"].double().numpy()
    w1 = signal_run.state_dict(1)["features.0.weight"].double().numpy()
    assert result.change is not None
    assert result.change["relative_change"] == pytest.approx(
        np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rel=1e-5)
    per = np.linalg.norm((w1 - w0).reshape(8, -1), axis=1) / np.linalg.norm(
        w0.reshape(8, -1), axis=1)
    np.testing.assert_allclose(result.change["per_filter_change"], per, rtol=1e-5)
    names = {p.name for p in result.figures}
    assert {"filters-features.0-e000.png", "filters-features.0-e001.png",
            "filters-features.0-epochs.png"} <= names
    assert signal_run.stage("filters")["status"] == "done"
    final = filters_stage(signal_run, "features.2")     # one epoch: change since epoch 0
    record = _io.read_json(final.json_path)
    assert record["kind"] == "conv1d" and record["shape"] == [16, 8, 5]
    assert record["reference_epoch"] == 0 and record["module_type"] == "Conv1d"
    w0 = signal_run.state_dict(0)["features.2.weight"].double().numpy()
    w1 = signal_run.state_dict(1)["features.2.weight"].double().numpy()
    assert record["change"]["relative_change"] == pytest.approx(
        np.linalg.norm(w1 - w0) / np.linalg.norm(w0), rel=1e-5)


@pytest.mark.parametrize(("fixture", "layer", "reason"), [
    ("lstm_run", None, r"no Conv1d/Conv2d layer, and its first Linear layer 'fc' reads 24 "
                       r"features, not the whole input \(1, 8, 8\)"),
    ("lstm_run", "lstm", r"'lstm' is an LSTM; filters are drawn for Conv1d/Conv2d kernels and "
                         r"for a first Linear layer that reads the whole input"),
    ("vit_run", "encoder.layers.0.norm1", r"'encoder.layers.0.norm1' is a LayerNorm"),
    ("vit_run", "encoder.layers.0.self_attn", r"is a MultiheadAttention"),
    ("vit_run", "to_tokens", r"'to_tokens' reads 4 features, not the whole image input"),
])
def test_filters_that_do_not_apply_are_skipped_with_the_reason(fixture, layer, reason,
                                                               request):
    run = request.getfixturevalue(fixture)
    before = sorted(p.name for p in run.figures_dir.iterdir())
    with pytest.raises(NotApplicableError, match=reason):
        filters_stage(run, layer, epochs=("init", "final"))
    stage = run.stage("filters")
    assert stage["status"] == "skipped" and "error" not in stage
    assert stage["reason"].startswith("filters: ")
    assert sorted(p.name for p in run.figures_dir.iterdir()) == before


def test_a_shared_block_call_is_drawn_by_its_key(tmp_path):
    run = user_run(tmp_path / "shared", "SharedBlock", steps=5)
    result = maps_stage(run, "block#1", index=0, device="cpu")
    assert result.maps[-1].key == "block#1" and result.view == "vector"
    assert result.json_path.name == "maps-block_1-test0-e000-e001.json"
    model = run.model(1)
    x = run.data.test.x[0:1]
    seen = []
    handle = model.block.register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    np.testing.assert_allclose(result.maps[-1].values, seen[1][0].numpy(), atol=1e-6)
    assert _io.read_json(result.json_path)["dead_channels_rule"] is not None  # ends in ReLU


@pytest.mark.parametrize("stage_name", ["maps", "filters"])
def test_a_failure_at_run_time_is_recorded_failed(signal_run, monkeypatch, stage_name):
    """Before, the stages set 'running' by hand and left it so when a step raised."""
    import importlib

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(importlib.import_module(f"shenjing.stages.{stage_name}"),
                        "save_figure", broken)
    with pytest.raises(OSError, match="disk full"):
        if stage_name == "maps":
            maps_stage(signal_run, "features.0", index=5, device="cpu")
        else:
            filters_stage(signal_run)
    stage = signal_run.stage(stage_name)
    assert stage["status"] == "failed" and stage["error"] == "OSError: disk full"


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"view": "bogus"}, UsageError, "--view 'bogus': expected one of auto, grid, heatmap"),
    ({"top_k": 0}, UsageError, "--top-k 0: expected a whole number from 1 to 4096"),
    ({"scale": "log"}, UsageError, "--scale 'log': expected one of shared, channel, global"),
    ({"order": "size"}, UsageError, "--order 'size': expected one of layer, mean, max"),
    ({"index": -1}, UsageError, "--index -1: input index -1 is out of range"),
    ({"epochs": [0, 9]}, EpochNotFoundError, "no checkpoint for epoch 9"),
    ({"index": 450}, UsageError, "input index 450 is out of range"),
    ({"layer": "lstmm"}, LayerNotFoundError, "no layer 'lstmm' in RowLSTM. Did you mean 'lstm'"),
    ({"view": "grid"}, ShapeMismatchError, "outputs a sequence .*--view heatmap"),
    ({"gif": True}, UsageError, "--gif animates channel grids"),
])
def test_bad_maps_options_write_nothing(lstm_run, kwargs, error, message):
    kwargs = {"layer": "lstm", "device": "cpu", **kwargs}
    manifest = _io.read_json(lstm_run.path / "run.json")
    listing = sorted(str(p.relative_to(lstm_run.path)) for p in lstm_run.path.rglob("*"))
    with pytest.raises(error, match=message):
        maps_stage(lstm_run, **kwargs)
    assert _io.read_json(lstm_run.path / "run.json") == manifest
    assert sorted(str(p.relative_to(lstm_run.path)) for p in lstm_run.path.rglob("*")) == \
        listing


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scale": "per"}, "--scale 'per': expected one of filter, shared"),
    ({"max_filters": 0}, "--max-filters 0: expected a whole number from 1 to 4096"),
    ({"max_in": 0}, "--max-in 0: expected a whole number from 1 to 4096"),
    ({"layer": "features.9"}, r"no weights for layer 'features.9'"),
])
def test_bad_filters_options_write_nothing(signal_run, kwargs, message):
    manifest = _io.read_json(signal_run.path / "run.json")
    with pytest.raises(UsageError, match=message):
        filters_stage(signal_run, **kwargs)
    assert _io.read_json(signal_run.path / "run.json") == manifest


def test_default_filters_layer_is_the_first_conv_in_module_order(tmp_path):
    """A checkpoint lists tensors sorted by name (``layer1.conv1`` before ``stem.0``); the
    first conv layer is the model's first, read from layers.json."""
    run = user_run(tmp_path / "resnet", "TinyResNet", steps=2)
    result = filters_stage(run)
    assert result.layer == "stem.0" and result.view == "filters"
    assert result.filters[-1].weight.shape == (8, 1, 3, 3)


def test_an_unreadable_checkpoint_is_recorded_failed_not_left_running(tmp_path):
    from shenjing.errors import CheckpointError

    run = user_run(tmp_path / "signal", "SignalNet", steps=1)
    for epoch in (0, 1):
        (run.path / "checkpoints" / f"epoch-{epoch:03d}.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        maps_stage(run, "features.0", device="cpu")
    assert run.stage("maps")["status"] == "failed"
    assert run.stage("maps")["error"].startswith("CheckpointError: ")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        filters_stage(run)
    assert run.stage("filters")["status"] == "failed"
