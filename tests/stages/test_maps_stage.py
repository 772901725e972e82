"""Maps, filters, weights and dynamics stages on tiny runs (no training: hand-made
checkpoints), including a VGG-shaped user model whose layers are named like VGG16's."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from shenjing import _io
from shenjing.errors import EpochNotFoundError, LayerNotFoundError, ShapeMismatchError, UsageError
from shenjing.models import build_model
from shenjing.runs import Run
from shenjing.stages.dynamics import dynamics_stage, weights_stage
from shenjing.stages.maps import filters_stage, maps_stage, select_input

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
    return Run(run.path)


def test_maps_untrained_vs_trained_numbers_match_direct_computation(cnn_run):
    result = maps_stage(cnn_run, "conv1", index=4, epochs=("init", "final"), device="cpu")
    x = cnn_run.data.test.x[4:5]
    direct = []
    for e in (0, 2):
        with torch.no_grad():
            direct.append(cnn_run.model(e).conv1(x)[0].numpy())
    assert result.epochs == (0, 2) and result.view == "grid" and result.index == 4
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
    assert int(cnn_run.data.test.y[result.index]) == 3
    gif = maps_stage(cnn_run, "relu1", index=0, epochs=[0, 1, 2], gif=True, top_k=6)
    from shenjing.plot.animate import read_gif

    assert gif.gif is not None and len(read_gif(gif.gif)) == 3
    assert any(p.name == "maps-relu1-test0-strip.png" for p in gif.figures)


def test_maps_bad_input_messages(cnn_run):
    with pytest.raises(ShapeMismatchError, match=r"'fc1' outputs a vector of 128 features.*"
                                                 r"--view vector"):
        maps_stage(cnn_run, "fc1", view="grid")
    with pytest.raises(UsageError, match=r"input index 450 is out of range: the test split of "
                                         r"'digits' has 450 samples \(0…449\)"):
        maps_stage(cnn_run, "conv1", index=450)
    with pytest.raises(EpochNotFoundError, match="no checkpoint for epoch 9; epochs there are: "
                                                 "0, 1, 2"):
        maps_stage(cnn_run, "conv1", epochs=[0, 9])
    with pytest.raises(LayerNotFoundError, match="no layer 'conv0' in SimpleCNN. Did you mean"):
        maps_stage(cnn_run, "conv0")
    with pytest.raises(UsageError, match="no test sample of class 'eleven'|not one of"):
        select_input(cnn_run, cls="eleven")
    with pytest.raises(UsageError, match="view 'image' must be"):
        maps_stage(cnn_run, "conv1", view="image")


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
    with pytest.raises(ShapeMismatchError, match="not an image"):
        filters_stage(run, "fc2")


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
        assert result.view == "grid"
        shapes[layer] = result.maps[-1].values.shape
        assert (vgg_run.figures_dir / f"maps-{layer}-test0-e000-e003.png").is_file()
    assert shapes == {"features.0": (4, 32, 32), "features.14": (8, 8, 8),
                      "features.28": (16, 2, 2)}
    filters = filters_stage(vgg_run, epochs=("final",))
    assert filters.layer == "features.0" and filters.view == "filters"
    assert filters.filters[-1].weight.shape == (4, 3, 3, 3)      # RGB kernels
    assert (vgg_run.figures_dir / "filters-features.0-e003.png").is_file()
