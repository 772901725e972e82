"""The Recorder in a user's own loop: every parameter tracked (grouped by module) with numbers
checked against torch by hand, and a model spec that later commands can read."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shenjing import _io
from shenjing.errors import RunError, UsageError
from shenjing.runs import Run
from shenjing.training import Recorder

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: user_models
from user_models import RowLSTM, TinyViT  # noqa: E402


def flat(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """The group's parameters concatenated as one float64 vector (the independent count)."""
    return torch.cat([state[n].double().reshape(-1) for n in names])


def train_loop(model: torch.nn.Module, rec: Recorder, data, *, epochs: int = 1,
               groups: dict[str, list[str]] | None = None, lr: float = 0.05
               ) -> list[dict[str, float]]:
    """SGD over fixed batches; returns, per epoch, the mean over steps of each group's
    gradient norm computed here by hand from ``p.grad``."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    params = dict(model.named_parameters())
    means = []
    for _ in range(epochs):
        sums: dict[str, float] = {}
        steps = 0
        for x, y in data.train.loader(100):
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            for group, names in (groups or {}).items():
                g = torch.cat([params[n].grad.double().reshape(-1) for n in names])
                sums[group] = sums.get(group, 0.0) + float(g.norm())
            steps += 1
            rec.after_backward(loss, output=out, target=y)
            opt.step()
        rec.end_epoch(optimizer=opt)
        means.append({k: v / steps for k, v in sums.items()})
    return means


def test_lstm_every_parameter_is_tracked_and_numbers_match_torch(tmp_path, small_digits):
    torch.manual_seed(0)
    model = RowLSTM()
    lstm = ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    groups = {"lstm": lstm, "lstm.bias": ["lstm.bias_ih_l0", "lstm.bias_hh_l0"],
              "fc": ["fc.weight"], "fc.bias": ["fc.bias"]}
    rec = Recorder(tmp_path / "lstm", model, data=small_digits)
    rec.start()
    grads = train_loop(model, rec, small_digits, epochs=2, groups=groups)
    run = Run(tmp_path / "lstm")
    records = run.metrics()
    assert list(records[1]["layers"]) == sorted(groups)
    listing = records[0]["params"]
    n_total = sum(p.numel() for p in model.parameters())
    assert listing["n_total"] == listing["n_tracked"] == n_total and listing["untracked"] == []
    assert [g["name"] for g in listing["groups"]] == list(groups)   # model order
    assert {g["name"]: g["params"] for g in listing["groups"]} == groups
    s0, s1, s2 = (run.state_dict(e) for e in (0, 1, 2))
    for group, names in groups.items():
        w0, w1, w2 = flat(s0, names), flat(s1, names), flat(s2, names)
        got = records[2]["layers"][group]
        assert got["weight_norm"] == pytest.approx(float(w2.norm()), rel=1e-12)
        assert got["update_ratio"] == pytest.approx(float((w2 - w1).norm() / w1.norm()),
                                                    rel=1e-9)
        assert got["dist_from_init"] == pytest.approx(float((w2 - w0).norm() / w0.norm()),
                                                      rel=1e-9)
        assert got["cos_to_init"] == pytest.approx(
            float(w2 @ w0 / (w2.norm() * w0.norm())), rel=1e-12)
        # float32 gradients: the recorder's norms agree with float64 ones to ~1e-6
        assert records[1]["layers"][group]["grad_norm"] == pytest.approx(grads[0][group],
                                                                         rel=1e-5)
        assert got["grad_norm"] == pytest.approx(grads[1][group], rel=1e-5)
        assert records[0]["layers"][group]["grad_norm"] is None


def test_vit_attention_projection_cls_token_and_position_embedding_are_tracked(
        tmp_path, small_digits):
    torch.manual_seed(1)
    model = TinyViT()
    rec = Recorder(tmp_path / "vit", model, data=small_digits)
    rec.start()
    train_loop(model, rec, small_digits, epochs=1)
    run = Run(tmp_path / "vit")
    records = run.metrics()
    layers = records[1]["layers"]
    attn = "encoder.layers.0.self_attn"
    assert {"cls_token", "pos_embedding", attn, f"{attn}.bias", f"{attn}.out_proj",
            "to_tokens", "head.bias"} <= set(layers)
    groups = {g["name"]: g["params"] for g in records[0]["params"]["groups"]}
    assert groups[attn] == [f"{attn}.in_proj_weight"]
    assert groups[f"{attn}.bias"] == [f"{attn}.in_proj_bias"]
    assert groups["cls_token"] == ["cls_token"]
    tracked = [p for names in groups.values() for p in names]
    assert sorted(tracked) == sorted(n for n, _ in model.named_parameters())
    s0, s1 = run.state_dict(0), run.state_dict(1)
    for group in ("cls_token", "pos_embedding", attn):
        w0, w1 = flat(s0, groups[group]), flat(s1, groups[group])
        assert layers[group]["weight_norm"] == pytest.approx(float(w1.norm()), rel=1e-12)
        assert layers[group]["dist_from_init"] == pytest.approx(
            float((w1 - w0).norm() / w0.norm()), rel=1e-9)
        assert layers[group]["dist_from_init"] > 0


def test_a_zoo_layer_entry_is_its_weight_alone_as_before(tmp_path, small_digits):
    """``fc1`` keeps meaning fc1.weight (numbers identical to earlier runs); the bias is
    its own group ``fc1.bias``."""
    import shenjing as sj

    run = sj.train("mlp", small_digits, epochs=1, run=tmp_path / "r", progress=False)
    rec = run.metrics()[1]["layers"]
    w0, w1 = (run.state_dict(e)["fc1.weight"].double() for e in (0, 1))
    b1 = run.state_dict(1)["fc1.bias"].double()
    assert rec["fc1"]["weight_norm"] == float(w1.norm())
    assert rec["fc1"]["update_ratio"] == float((w1 - w0).norm()) / float(w0.norm())
    assert rec["fc1.bias"]["weight_norm"] == float(b1.norm())
    assert set(rec) == {"fc1", "fc1.bias", "fc2", "fc2.bias"}


# ---- the model spec the Recorder writes -------------------------------------------------
def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_without_a_model_spec_the_run_says_what_it_is_and_why_it_cannot_rebuild(
        tmp_path, small_digits):
    rec = Recorder(tmp_path / "mine", tiny_model(), data=small_digits)
    spec = rec.run.manifest["model"]
    assert spec["class"] == "torch.nn.modules.container.Sequential"
    assert spec["rebuildable"] is False
    assert spec["why"] == "was recorded by sj.Recorder without a model_spec"
    assert spec["input_shape"] == [1, 8, 8] and spec["n_outputs"] == 10
    with pytest.raises(RunError, match=r"cannot rebuild .*Sequential was recorded by "
                       r"sj.Recorder without a model_spec"):
        Run(tmp_path / "mine").build_model()


def test_model_spec_as_a_reference_string_with_kwargs(tmp_path, small_digits, monkeypatch):
    monkeypatch.chdir(TESTS.parent)
    model = RowLSTM(hidden=12)
    rec = Recorder(tmp_path / "a", model, data=small_digits, model_spec="user_models:RowLSTM",
                   model_kwargs={"hidden": 12})
    spec = rec.run.manifest["model"]
    assert spec["factory"] == "user_models:RowLSTM" and spec["kwargs"] == {"hidden": 12}
    by_path = Recorder(tmp_path / "b", model, data=small_digits,
                       model_spec="tests/user_models.py:RowLSTM", model_kwargs={"hidden": 12})
    assert by_path.run.manifest["model"]["factory"] == \
        f"{TESTS / 'user_models.py'}:RowLSTM"
    as_dict = Recorder(tmp_path / "d", model, data=small_digits, model_spec={
        "factory": "tests/user_models.py:RowLSTM", "kwargs": {"hidden": 12}})
    assert as_dict.run.manifest["model"] == {"factory": f"{TESTS / 'user_models.py'}:RowLSTM",
                                             "kwargs": {"hidden": 12}}
    zoo = Recorder(tmp_path / "c", torch.nn.Linear(1, 1), data=small_digits, model_spec="mlp")
    assert zoo.run.manifest["model"] == {"name": "mlp", "input_shape": [1, 8, 8],
                                         "n_outputs": 10, "kwargs": {}}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_spec": {"kwargs": {}}}, "model_spec must be"),
    ({"model_spec": "Net"}, "model_spec 'Net'"),
    ({"model_kwargs": {"hidden": 3}}, "model_kwargs needs model_spec"),
    ({"loss_fn": "cross_entropy"}, "loss_fn must be a callable"),
])
def test_bad_recorder_arguments_fail_before_any_file_is_written(tmp_path, small_digits, kwargs,
                                                                message):
    with pytest.raises(UsageError, match=message):
        Recorder(tmp_path / "bad", tiny_model(), data=small_digits, **kwargs)
    assert not (tmp_path / "bad").exists()


def halved_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.cross_entropy(output, target)


def test_loss_fn_is_used_for_evaluation_and_named_in_the_run(tmp_path, small_digits):
    torch.manual_seed(0)
    model = tiny_model()
    rec = Recorder(tmp_path / "r", model, data=small_digits, loss_fn=halved_cross_entropy)
    rec.start()
    with torch.no_grad():
        expected = float(halved_cross_entropy(model(small_digits.test.x), small_digits.test.y))
    assert rec.run.metrics()[0]["test_loss"] == pytest.approx(expected, rel=1e-6)
    assert rec.run.manifest["config"]["loss"].endswith(":halved_cross_entropy")
    named = Recorder(tmp_path / "n", model, data=small_digits, loss="mine:loss",
                     loss_fn=halved_cross_entropy)
    assert named.run.manifest["config"]["loss"] == "mine:loss"
    anonymous = Recorder(tmp_path / "l", model, data=small_digits,
                         loss_fn=lambda o, t: F.cross_entropy(o, t))
    assert anonymous.run.manifest["config"]["loss"] == "custom"


def test_start_writes_the_layer_table(tmp_path, small_digits):
    model = RowLSTM()
    rec = Recorder(tmp_path / "r", model, data=small_digits)
    rec.start()
    table = _io.read_json(tmp_path / "r" / "layers.json")
    assert table["format"] == 1 and table["input_shape"] == [1, 8, 8]
    assert table["n_params"] == sum(p.numel() for p in model.parameters())
    rows = {r["name"]: r for r in table["rows"]}
    assert rows["lstm"]["calls"] == 1 and rows["fc"]["output_shapes"]["fc"] == [2, 10]


def test_unchanged_groups_have_zero_update(tmp_path, small_digits):
    """A frozen parameter is tracked (coverage counts it) and shows no movement."""
    torch.manual_seed(0)
    model = RowLSTM()
    model.fc.weight.requires_grad_(False)
    rec = Recorder(tmp_path / "frozen", model, data=small_digits)
    rec.start()
    train_loop(model, rec, small_digits, epochs=1)
    layers = rec.run.metrics()[1]["layers"]
    assert layers["fc"]["update_ratio"] == 0.0 and layers["fc"]["grad_norm"] is None
    assert layers["fc.bias"]["update_ratio"] > 0
    assert math.isclose(layers["fc"]["cos_to_init"], 1.0, rel_tol=1e-12)
    from shenjing.analysis.dynamics import layer_status, read_dynamics

    status = layer_status(read_dynamics(rec.run.metrics()))
    assert status.status["fc"] == "unchanged" and status.status["lstm"] != "unchanged"
    (frozen,) = [w for w in status.warnings if w.kind == "frozen"]
    assert frozen.message.endswith("(frozen, or receiving no gradient): fc")


class _FailsOnSecondCall(torch.nn.Module):
    """Runs once (the layer table's 2-sample batch), then raises like a buggy forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= 2:
            raise RuntimeError("index 7 is out of bounds for this batch")
        return self.fc(x.flatten(1))


def test_a_forward_that_fails_while_evaluating_is_one_line_naming_the_batch(tmp_path,
                                                                           small_digits):
    rec = Recorder(tmp_path / "r", _FailsOnSecondCall(), data=small_digits)
    with pytest.raises(UsageError, match=r"^the model _FailsOnSecondCall raised RuntimeError: "
                                         r"index 7 is out of bounds for this batch \(at "
                                         r"test_recorder\.py:\d+\) while evaluating test batch "
                                         r"1 \(samples 0 to 149 of 150\); the error is the "
                                         r"model's own: fix its forward") as info:
        rec.start()
    assert "\n" not in str(info.value)
    rec.close()


HOLD_CHECK = r"""
import sys
from shenjing.runs import writer_lock
try:
    with writer_lock(sys.argv[1]):
        print("free")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_a_recorder_holds_the_run_until_closed(tmp_path, small_digits):
    import subprocess

    def other_writer() -> str:
        return subprocess.run([sys.executable, "-c", HOLD_CHECK, str(tmp_path / "r")],
                              capture_output=True, text=True, timeout=120).stdout.strip()

    with Recorder(tmp_path / "r", tiny_model(), data=small_digits) as rec:
        rec.start()
        assert other_writer() == "RunLockedError"
    assert other_writer() == "free"
    assert not (tmp_path / "r" / ".lock").exists()
