"""Capture on awkward models: values against a direct computation, and no hook left behind."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/capture: capture_models
import numpy as np
import pytest
import torch
from capture_models import Boom, DictOut, Encoder, LSTMNet, ResBN, Shared
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from shenjing.capture import (
    Activations,
    capture,
    capture_dataset,
    list_layers,
    resolve_layers,
)
from shenjing.errors import LayerNotFoundError, ResourceError, ShapeMismatchError, UsageError
from shenjing.hooks import count_hooks
from shenjing.models import build_model


def test_batchnorm_and_skip_connection_values(seeded):
    model = ResBN().eval()
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model.bn.running_var.copy_(torch.tensor([2.0, 0.5, 3.0]))
    x = torch.randn(10, 3, 4, 4)
    acts = capture_dataset(model, x, ["bn", "relu"], batch_size=3)
    with torch.no_grad():
        conv = model.conv(x)
        bn = (conv - model.bn.running_mean[:, None, None]) / torch.sqrt(
            model.bn.running_var[:, None, None] + model.bn.eps)
        bn = bn * model.bn.weight[:, None, None] + model.bn.bias[:, None, None]
        relu = torch.relu(bn + x)
    np.testing.assert_allclose(acts["bn"], bn.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["relu"], relu.numpy(), rtol=1e-5, atol=1e-6)
    assert count_hooks(model) == 0


def test_train_mode_is_restored_and_eval_used(seeded):
    model = ResBN().train()
    x = torch.randn(6, 3, 4, 4)
    acts = capture_dataset(model, x, ["bn"])
    assert model.training
    with torch.no_grad():
        expected = model.eval().bn(model.conv(x))
    np.testing.assert_allclose(acts["bn"], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_tuple_output_recorded_under_clear_names(seeded):
    model = LSTMNet().eval()
    x = torch.randn(7, 5, 4)
    acts = capture_dataset(model, x, ["lstm"], batch_size=3)
    assert list(acts) == ["lstm.0", "lstm.1.0", "lstm.1.1"]
    with torch.no_grad():
        out, (h, c) = model.lstm(x)
    np.testing.assert_allclose(acts["lstm.0"], out.numpy(), rtol=1e-5, atol=1e-6)
    # h_n is (layers, batch, hidden): the batch dimension is moved first
    np.testing.assert_allclose(acts["lstm.1.0"], h.transpose(0, 1).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(acts["lstm.1.1"], c.transpose(0, 1).numpy(), rtol=1e-5,
                               atol=1e-6)
    assert count_hooks(model) == 0


def test_module_called_twice_records_each_call(seeded):
    model = Shared().eval()
    x = torch.randn(9, 4)
    acts = capture_dataset(model, x, ["block", "block.0"], batch_size=4)
    assert set(acts) == {"block#0", "block#1", "block.0#0", "block.0#1"}
    with torch.no_grad():
        first = model.block(x)
        second = model.block(first)
    np.testing.assert_allclose(acts["block#0"], first.numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts["block#1"], second.numpy(), rtol=1e-6)
    np.testing.assert_allclose(acts["block.0#1"], model.block[0](first).detach().numpy(),
                               rtol=1e-6)
    with capture(model, ["block"]) as got:
        model(x)
    torch.testing.assert_close(got["block#1"], second)
    assert count_hooks(model) == 0


def test_dict_output_records_each_float_tensor(seeded):
    model = DictOut().eval()
    x = torch.randn(5, 4)
    acts = capture_dataset(model, x, ["heads"])
    assert sorted(acts) == ["heads.aux", "heads.logits"]  # argmax is integer: skipped
    with torch.no_grad():
        np.testing.assert_allclose(acts["heads.logits"], model.heads.a(x).numpy(), rtol=1e-6)
        np.testing.assert_allclose(acts["heads.aux"], model.heads.b(x).numpy(), rtol=1e-6)


def test_transformer_encoder_layers(seeded):
    model = Encoder().eval()
    x = torch.randn(6, 5, 8)
    acts = capture_dataset(model, x, ["encoder.layers.*"], batch_size=4)
    assert list(acts) == ["encoder.layers.0", "encoder.layers.1"]
    with torch.inference_mode():
        h0 = model.encoder.layers[0](x)
        h1 = model.encoder.layers[1](h0)
    np.testing.assert_allclose(acts["encoder.layers.0"], h0.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(acts["encoder.layers.1"], h1.numpy(), rtol=1e-4, atol=1e-5)
    assert count_hooks(model) == 0


def test_hooks_removed_when_forward_raises():
    model = Boom()
    with pytest.raises(RuntimeError, match="boom"), capture(model, ["fc"]):
        model(torch.zeros(2, 3))
    assert count_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        capture_dataset(model, torch.zeros(4, 3), ["fc"])
    assert count_hooks(model) == 0


def test_streaming_is_bit_identical_to_a_direct_forward(tmp_path, seeded):
    model = build_model("simple_cnn", (1, 12, 12), 10).eval()
    x = torch.randn(50, 1, 12, 12)
    acts = capture_dataset(model, x, ["conv1", "relu3", "fc2"], batch_size=16,
                           out_dir=tmp_path, stem="epoch-003")
    with torch.inference_mode():
        direct = [model(x[i:i + 16]) for i in range(0, 50, 16)]
    np.testing.assert_array_equal(acts["fc2"], torch.cat(direct).numpy())
    assert isinstance(acts["conv1"], np.memmap)
    loaded = Activations.load(tmp_path, "epoch-003")
    assert sorted(loaded) == ["conv1", "fc2", "relu3"]
    np.testing.assert_array_equal(loaded["relu3"], acts["relu3"])
    np.testing.assert_array_equal(loaded.indices, np.arange(50))
    assert loaded.info["conv1"]["shape"] == [50, 32, 12, 12]
    assert not list(tmp_path.rglob("*.tmp*"))  # temporary files renamed away
    assert count_hooks(model) == 0


def test_interrupted_stream_leaves_no_file(tmp_path):
    class FailSecond(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            y = self.fc(x)
            if self.calls == 2:
                raise RuntimeError("interrupted")
            return y

    model = FailSecond()
    with pytest.raises(RuntimeError, match="interrupted"):
        capture_dataset(model, torch.zeros(8, 2), ["fc"], batch_size=4, out_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert count_hooks(model) == 0


def test_streamed_files_get_the_umask_mode_and_pid_named_temporaries(tmp_path):
    """Issue 13 items 6 and 12: a killed capture left `.epoch-003.*.tmp.npy` files no later
    stage could tell from a live writer's, and its `.npy` files were 0600 while the rest of
    a run is what the umask gives. The streaming files are named by pid (swept once the
    writer is gone) and get the run's one mode."""
    import os
    import stat

    folder = tmp_path / "acts" / "0"
    seen: list[str] = []

    class Peek(nn.Module):  # looks at the folder while the rows stream in
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.extend(p.name for p in folder.glob(".*"))
            return x

    model = nn.Sequential(nn.Linear(3, 4), Peek())
    capture_dataset(model, torch.ones(10, 3), ["0"], batch_size=4, out_dir=tmp_path / "acts",
                    stem="epoch-001")
    assert seen and all(name.startswith(f".epoch-001.{os.getpid()}.") and
                        name.endswith(".tmp.npy") for name in seen), seen
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_split_keeps_indices_labels_and_limit(digits):
    model = build_model("mlp", digits.input_shape, 10)
    acts = capture_dataset(model, digits.test, ["relu1"], batch_size=64, limit=100)
    assert acts["relu1"].shape == (100, 128)
    np.testing.assert_array_equal(acts.indices, digits.test.indices[:100].numpy())
    np.testing.assert_array_equal(acts.labels, digits.test.y[:100].numpy())
    assert (acts["relu1"] >= 0).all()  # post-ReLU


def test_dataloader_input_and_float16(digits):
    model = build_model("mlp", digits.input_shape, 10).eval()
    loader = digits.test.loader(batch_size=50)
    acts = capture_dataset(model, loader, ["fc1"], dtype="float16")
    assert acts["fc1"].dtype == np.float16
    with torch.inference_mode():
        direct = model.fc1(digits.test.x.flatten(1))
    np.testing.assert_allclose(acts["fc1"], direct.numpy(), rtol=1e-2, atol=1e-2)
    np.testing.assert_array_equal(acts.labels, digits.test.y.numpy())


@pytest.mark.parametrize("pool", ["mean", "max", 2])
def test_pooling_matches_torch(pool, seeded):
    model = build_model("simple_cnn", (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    acts = capture_dataset(model, x, ["relu1", "fc1"], pool=pool)
    with torch.inference_mode():
        maps = model.relu1(model.conv1(x))
    expected = {"mean": maps.mean((2, 3)), "max": maps.amax((2, 3)),
                2: torch.nn.functional.adaptive_avg_pool2d(maps, 2)}[pool]
    np.testing.assert_allclose(acts["relu1"], expected.numpy(), rtol=1e-6)
    assert acts["fc1"].shape == (5, 128)  # vectors are never pooled


@settings(max_examples=15, deadline=None)
@given(batch_size=st.integers(1, 40), n=st.integers(1, 40))
def test_batch_size_never_changes_values(batch_size, n):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(n, 6)
    acts = capture_dataset(model, x, ["1", "2"], batch_size=batch_size)
    with torch.inference_mode():
        h = model[1](model[0](x))
        out = model[2](h)
    np.testing.assert_allclose(acts["1"], h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["2"], out.numpy(), rtol=1e-5, atol=1e-6)


# ---- choosing layers ----------------------------------------------------------------------
def test_resolve_by_name_glob_and_type():
    model = build_model("simple_cnn", (1, 8, 8), 10)
    assert resolve_layers(model, "fc?") == ["fc1", "fc2"]
    assert resolve_layers(model, ["ReLU"]) == ["relu1", "relu2", "relu3"]
    assert resolve_layers(model, [nn.Conv2d, "fc2"]) == ["conv1", "conv2", "fc2"]
    assert resolve_layers(model, "type:MaxPool2d") == ["pool1", "pool2"]


def test_unknown_layer_names_the_closest():
    model = build_model("mnistnet", (1, 8, 8), 10)
    with pytest.raises(LayerNotFoundError, match=r"no layer 'fc4' in MLP\. Did you mean 'fc.'"):
        resolve_layers(model, ["fc4"])
    with pytest.raises(LayerNotFoundError, match="shenjing layers RUN"):
        capture_dataset(model, torch.zeros(2, 1, 8, 8), ["relu9"])


def test_layer_that_never_fires():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(2, 2)
            self.spare = nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    model = Unused()
    with pytest.raises(LayerNotFoundError, match=r"'spare' of Unused never ran for input "
                                                 r"of shape \(3, 2\).*Layers that ran: used"):
        capture_dataset(model, torch.zeros(3, 2), ["used", "spare"])
    assert count_hooks(model) == 0


def test_data_that_does_not_fit_names_both_shapes():
    model = build_model("mlp", (1, 28, 28), 10)
    with pytest.raises(ShapeMismatchError, match=r"data of shape \(4, 1, 8, 8\) does not fit "
                                                 r"MLP: .*'fc1' \(Linear\) takes 784 features"):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["fc1"])
    with pytest.raises(ShapeMismatchError, match=r"expects samples of shape \(1, 28, 28\).*"
                                                 r"received per-sample shape \(1, 8, 8\)"):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["fc1"], input_shape=(1, 28, 28))
    assert count_hooks(model) == 0


def test_too_big_for_memory_is_refused_with_bytes_and_options():
    model = build_model("simple_cnn", (1, 8, 8), 10)
    with pytest.raises(ResourceError, match=r"needs 32\.00 KiB \(32768 bytes.*pass out_dir=.*"
                                            r"pool='mean'.*float16"):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["conv1"], max_memory=1000)


def test_pool_larger_than_the_maps_is_refused_before_anything_is_allocated(tmp_path,
                                                                          monkeypatch):
    """Issue 13 item 7: `capture --pool 1000` upsampled 28×28 maps to 1000×1000 and tried
    to allocate 32 GB. Adaptive pooling to k×k can only shrink: k above a map's size is
    refused (a usage error naming the key, its size and the largest k), before any pooled
    tensor exists and with nothing written."""
    import torch.nn.functional as F

    model = build_model("simple_cnn", (1, 8, 8), 10)  # conv1: 8×8 maps, conv2: 4×4
    pooled: list[tuple[int, int]] = []  # (smallest side of the map, k) of every pooling
    real = F.adaptive_avg_pool2d
    monkeypatch.setattr(F, "adaptive_avg_pool2d",
                        lambda t, k: pooled.append((min(t.shape[2:]), k)) or real(t, k))
    with pytest.raises(UsageError, match=r"pool=1000 \(--pool 1000\) would enlarge 'conv1'\'s "
                                         r"8×8 maps to 1000×1000.*at most 8.*'mean'"):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["conv1"], pool=1000,
                        out_dir=tmp_path / "acts")
    with pytest.raises(UsageError, match=r"'conv2'\'s 4×4 maps.*at most 4"):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["conv1", "conv2"], pool=6,
                        out_dir=tmp_path / "acts")
    assert all(k <= side for side, k in pooled), pooled  # nothing was ever enlarged
    assert not (tmp_path / "acts").exists()
    acts = capture_dataset(model, torch.zeros(4, 1, 8, 8), ["conv1"], pool=8)
    assert acts["conv1"].shape == (4, 32, 8, 8)  # k equal to the map size is fine


def test_streaming_buffers_above_the_memory_budget_are_refused(tmp_path, monkeypatch):
    """On disk the rows stream through a few batch-sized buffers per key; a batch size that
    makes those larger than the memory allowed is refused up front, naming --batch-size."""
    import shenjing.capture.dataset as ds

    model = build_model("simple_cnn", (1, 8, 8), 10)
    monkeypatch.setattr(ds, "available_memory", lambda: 200_000)
    with pytest.raises(ResourceError, match=r"batches of 256 .*'conv1'\) need 8\.00 MiB of "
                                            r"memory .* only 97\.66 KiB .*--batch-size 2"):
        capture_dataset(model, torch.zeros(300, 1, 8, 8), ["conv1"], batch_size=256,
                        out_dir=tmp_path / "acts")
    assert not (tmp_path / "acts").exists()
    acts = capture_dataset(model, torch.zeros(300, 1, 8, 8), ["conv1"], batch_size=2,
                           out_dir=tmp_path / "acts")
    assert acts["conv1"].shape == (300, 32, 8, 8)


def test_bad_options():
    model = nn.Linear(2, 2)
    with pytest.raises(UsageError, match="dtype 'int8' is not supported"):
        capture_dataset(nn.Sequential(model), torch.zeros(2, 2), ["0"], dtype="int8")
    with pytest.raises(UsageError, match="--pool 'avg' is not a pooling option"):
        capture_dataset(nn.Sequential(model), torch.zeros(2, 2), ["0"], pool="avg")


def test_size_is_printed_before_allocating(capsys):
    """The library prints nothing; the stage layer's callback prints the plan it is given."""
    from shenjing.stages._progress import print_capture_plan

    model = build_model("mlp", (1, 8, 8), 10)
    capture_dataset(model, torch.zeros(10, 1, 8, 8), ["relu1"])
    assert capsys.readouterr() == ("", "")
    capture_dataset(model, torch.zeros(10, 1, 8, 8), ["relu1"], on_plan=print_capture_plan)
    err = capsys.readouterr().err
    assert "capture: 10 samples, 1 tensor(s), 5.00 KiB in memory" in err
    assert "relu1" in err and "(128,)" in err


def test_plan_is_reported_before_a_refusal_and_progress_counts_samples():
    model = build_model("simple_cnn", (1, 8, 8), 10)
    plans, steps = [], []
    with pytest.raises(ResourceError):
        capture_dataset(model, torch.zeros(4, 1, 8, 8), ["conv1"], max_memory=1000,
                        on_plan=plans.append, progress=lambda *a: steps.append(a))
    assert len(plans) == 1 and plans[0].n_samples == 4 and not steps
    assert plans[0].tensors["conv1"][0] == (32, 8, 8)
    assert plans[0].total_bytes == 4 * 32 * 8 * 8 * 4
    capture_dataset(model, torch.zeros(5, 1, 8, 8), ["conv1"], batch_size=2,
                    progress=lambda *a: steps.append(a))
    assert steps == [(2, 5), (4, 5), (5, 5)]


def test_verbose_is_a_deprecated_no_op(capsys):
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.warns(DeprecationWarning, match=r"verbose=\.\.\.\) is deprecated and ignored"):
        capture_dataset(model, torch.zeros(3, 2), ["0"], verbose=True)
    assert capsys.readouterr() == ("", "")


def test_list_layers_shows_post_activation_features():
    model = build_model("mlp", (1, 28, 28), 10)
    table = list_layers(model, torch.zeros(2, 1, 28, 28))
    assert table.names == ["flatten", "fc1", "relu1", "fc2"]
    assert table["relu1"].output_shape == (2, 128)
    text = str(table)
    assert "relu1" in text and "post-activation" in text
    assert count_hooks(model) == 0


def test_notebook_capture_concatenates_forward_calls():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    x = torch.randn(4, 3)
    with capture(model, ["0"]) as acts:
        model(x[:2])
        model(x[2:])
    torch.testing.assert_close(acts["0"], model[0](x).detach())
    with pytest.raises(LayerNotFoundError, match="nothing recorded under '1'"):
        acts["1"]


def test_glob_star_stays_within_one_part_and_off_path_matches_are_dropped():
    model = Encoder()
    assert resolve_layers(model, "encoder.layers.*") == ["encoder.layers.0", "encoder.layers.1"]
    assert "encoder.layers.0.linear1" in resolve_layers(model, "encoder.**")
    # out_proj is matched by the type but bypassed by the fused attention path: dropped
    acts = capture_dataset(model.eval(), torch.randn(3, 4, 8), ["Linear"])
    assert "encoder.layers.0.linear1" in acts
    assert count_hooks(model) == 0


def test_inplace_activation_after_the_layer_does_not_change_what_was_recorded(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 2)).eval()
    x = torch.randn(9, 4)
    with torch.inference_mode():
        pre = model[0](x).clone()
    assert (pre < 0).any()
    for out_dir in (None, tmp_path):
        acts = capture_dataset(model, x, ["0"], batch_size=4, out_dir=out_dir)
        np.testing.assert_allclose(acts["0"], pre.numpy(), rtol=1e-5, atol=1e-6)
    with capture(model, ["0"]) as got:
        model(x)
    torch.testing.assert_close(got["0"], pre)  # negatives kept: recorded before the ReLU


@pytest.mark.gpu
def test_cuda_capture_matches_cpu():
    torch.manual_seed(0)
    model = build_model("simple_cnn", (1, 12, 12), 10).eval()
    x = torch.randn(40, 1, 12, 12)
    cpu = capture_dataset(model, x, ["relu1", "fc2"], batch_size=16)
    gpu = capture_dataset(model, x, ["relu1", "fc2"], batch_size=16, device="cuda")
    for key in ("relu1", "fc2"):
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-5)
    assert count_hooks(model) == 0


@pytest.mark.gpu
def test_cuda_capture_of_one_lstm_key_matches_cpu():
    """The pinned-buffer CUDA path keeps only the selected key (h_n), batch first."""
    torch.manual_seed(0)
    model = LSTMNet().eval()
    x = torch.randn(40, 5, 4)
    cpu = capture_dataset(model, x, ["lstm.1.0"], batch_size=16)
    gpu = capture_dataset(model, x, ["lstm.1.0"], batch_size=16, device="cuda")
    assert list(gpu) == ["lstm.1.0"] and gpu["lstm.1.0"].shape == (40, 2, 6)
    np.testing.assert_allclose(gpu["lstm.1.0"], cpu["lstm.1.0"], rtol=1e-4, atol=1e-5)
    assert count_hooks(model) == 0
