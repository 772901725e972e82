"""The recurrent view's numbers: states and gates recomputed from a module's weights equal an
independent computation (``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` stepped here with
the same weights) for LSTM, GRU and RNN, batch-first or not, stacked and bidirectional; the
check against the real output can fail and says so; probes, saturation, PCA and files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shenjing.analysis.recurrent import (
    GateSaturation,
    OverTime,
    RecomputeCheck,
    RecurrentStates,
    find_recurrent_layer,
    first_step_reaching,
    gate_saturation,
    load_over_time,
    load_recurrent_states,
    over_time,
    probe_by_step,
    recurrent_layers,
    recurrent_states,
    state_trajectories,
    step_by_step,
)
from shenjing.errors import LayerNotFoundError, NotApplicableError, UsageError
from shenjing.hooks import count_hooks

TOL = 1e-5
CELLS = {nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell, nn.RNN: nn.RNNCell}


def seeded(cls: type[nn.Module], *args, seed: int = 0, **kwargs) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(*args, **kwargs).eval()


def cell_for(module: nn.RNNBase, layer: int, reverse: bool) -> nn.Module:
    """A cell holding the weights of one layer and direction of ``module``."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    w_ih = getattr(module, f"weight_ih{suffix}")
    cls = CELLS[type(module)]
    kwargs = {"nonlinearity": module.nonlinearity} if isinstance(module, nn.RNN) else {}
    cell = cls(w_ih.shape[1], module.hidden_size, **kwargs)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(module, f"{name}{suffix}"))
    return cell.eval()


def reference(module: nn.RNNBase, seq: torch.Tensor, h0=None, c0=None):
    """States ``(layers, dirs, batch, steps, hidden)`` and gates by stepping cells here.

    ``seq`` is batch-first. Gates are computed from the *cell's* previous state with
    ``F.linear`` (LSTM: i, f, g, o; GRU: r, z, n)."""
    n_dirs = 2 if module.bidirectional else 1
    batch, steps, _ = seq.shape
    hsz = module.hidden_size
    states = torch.zeros(module.num_layers, n_dirs, batch, steps, hsz)
    n_gates = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 0}[type(module)]
    gates = torch.zeros(n_gates, module.num_layers, n_dirs, batch, steps, hsz)
    layer_in = seq
    with torch.no_grad():
        for k in range(module.num_layers):
            for d in range(n_dirs):
                cell = cell_for(module, k, d == 1)
                idx = k * n_dirs + d
                h = torch.zeros(batch, hsz) if h0 is None else h0[idx]
                c = torch.zeros(batch, hsz) if c0 is None else c0[idx]
                order = range(steps - 1, -1, -1) if d else range(steps)
                for t in order:
                    x_t = layer_in[:, t]
                    a_i = F.linear(x_t, cell.weight_ih, cell.bias_ih)
                    a_h = F.linear(h, cell.weight_hh, cell.bias_hh)
                    if isinstance(module, nn.LSTM):
                        pre = (a_i + a_h).chunk(4, 1)
                        gates[:, k, d, :, t] = torch.stack(
                            [torch.sigmoid(pre[0]), torch.sigmoid(pre[1]),
                             torch.tanh(pre[2]), torch.sigmoid(pre[3])])
                        h, c = cell(x_t, (h, c))
                    elif isinstance(module, nn.GRU):
                        ir, iz, i_n = a_i.chunk(3, 1)
                        hr, hz, h_n = a_h.chunk(3, 1)
                        r = torch.sigmoid(ir + hr)
                        gates[:, k, d, :, t] = torch.stack(
                            [r, torch.sigmoid(iz + hz), torch.tanh(i_n + r * h_n)])
                        h = cell(x_t, h)
                    else:
                        h = cell(x_t, h)
                    states[k, d, :, t] = h
            layer_in = torch.cat(list(states[k]), dim=-1)
    return states, gates


class Wrap(nn.Module):
    """``lstm`` (any recurrent module) over ``(batch, steps, features)`` inputs, read by
    ``fc`` at the last step; transposes for a time-major module."""

    def __init__(self, rnn: nn.RNNBase, n_out: int = 3) -> None:
        super().__init__()
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.fc = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x if self.rnn.batch_first else x.transpose(0, 1)
        out, _ = self.rnn(seq)
        last = out[:, -1] if self.rnn.batch_first else out[-1]
        return self.fc(last)


# ---- recomputation against cells stepped here ----------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_states_and_gates_equal_cells_stepped_with_the_same_weights(cls, batch_first):
    module = seeded(cls, 3, 5, num_layers=2, batch_first=batch_first)
    seq = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1))
    again = step_by_step(module, seq if batch_first else seq.transpose(0, 1))
    states, gates = reference(module, seq)
    assert again.states.shape == (2, 1, 4, 6, 5)
    torch.testing.assert_close(again.states.float(), states, atol=TOL, rtol=0)
    names = {nn.LSTM: ("input", "forget", "cell", "output"), nn.GRU: ("reset", "update",
                                                                     "new"), nn.RNN: ()}[cls]
    assert tuple(again.gates) == names
    for i, g in enumerate(names):
        torch.testing.assert_close(again.gates[g].float(), gates[i], atol=TOL, rtol=0)
    out, _ = module(seq if batch_first else seq.transpose(0, 1))
    real = out if batch_first else out.transpose(0, 1)
    torch.testing.assert_close(again.output.float(), real, atol=TOL, rtol=0)


def test_relu_rnn_and_a_bidirectional_lstm_with_an_initial_state():
    rnn = seeded(nn.RNN, 3, 4, nonlinearity="relu", batch_first=True)
    seq = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(step_by_step(rnn, seq).states.float(), reference(rnn, seq)[0],
                               atol=TOL, rtol=0)
    lstm = seeded(nn.LSTM, 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    gen = torch.Generator().manual_seed(3)
    h0, c0 = torch.randn(4, 2, 4, generator=gen), torch.randn(4, 2, 4, generator=gen)
    again = step_by_step(lstm, seq, (h0, c0))
    states, gates = reference(lstm, seq, h0, c0)
    assert again.states.shape == (2, 2, 2, 5, 4)
    torch.testing.assert_close(again.states.float(), states, atol=TOL, rtol=0)
    torch.testing.assert_close(again.gates["forget"].float(), gates[1], atol=TOL, rtol=0)
    out, (h_n, c_n) = lstm(seq, (h0, c0))
    torch.testing.assert_close(again.output.float(), out, atol=TOL, rtol=0)
    torch.testing.assert_close(again.h_n.float(), h_n, atol=TOL, rtol=0)
    torch.testing.assert_close(again.c_n.float(), c_n, atol=TOL, rtol=0)


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_an_lstm_with_projections_and_an_unbatched_sequence():
    lstm = seeded(nn.LSTM, 3, 6, proj_size=2)
    seq = torch.randn(5, 3, generator=torch.Generator().manual_seed(4))  # (steps, features)
    again = step_by_step(lstm, seq)
    out, (h_n, _) = lstm(seq)
    assert again.states.shape == (1, 1, 1, 5, 2) and again.gates["input"].shape[-1] == 6
    torch.testing.assert_close(again.output[0].float(), out, atol=TOL, rtol=0)
    torch.testing.assert_close(again.h_n[:, 0].float(), h_n, atol=TOL, rtol=0)


# ---- states inside a model -----------------------------------------------------------------
def test_batch_first_and_time_major_modules_give_the_same_states():
    a = Wrap(seeded(nn.LSTM, 3, 5, num_layers=2, batch_first=True))
    b = Wrap(seeded(nn.LSTM, 3, 5, num_layers=2, batch_first=False))
    b.load_state_dict(a.state_dict())
    x = torch.randn(10, 7, 3, generator=torch.Generator().manual_seed(5))
    sa = recurrent_states(a.eval(), x, batch_size=4)
    sb = recurrent_states(b.eval(), x, batch_size=3)
    assert sa.states.shape == (2, 1, 10, 7, 5) and sa.layer == "rnn"
    np.testing.assert_allclose(sa.states, sb.states, atol=1e-6)
    for g in sa.gates:
        np.testing.assert_allclose(sa.gates[g], sb.gates[g], atol=1e-6)
    # the top layer is the module's real output (for the same batches)
    with torch.no_grad():
        out, _ = a.rnn(x[:4])
    np.testing.assert_array_equal(sa.states[-1, 0, :4], out.detach().numpy())
    assert sa.check.passed and sa.check.max_abs_error < 1e-6
    assert sa.check.compared == "output, h_n, c_n" and sa.check.tolerance == pytest.approx(1e-4)
    assert "passed" in repr(sa) and "steps=7" in repr(sa)


def test_the_zoo_row_lstm_reads_one_row_per_step():
    from shenjing.models import build_model

    torch.manual_seed(0)
    model = build_model("row_lstm", (1, 8, 8), 10).eval()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    s = recurrent_states(model, x)
    assert (s.layer, s.module_type, s.n_steps, s.hidden_size) == ("lstm", "LSTM", 8, 64)
    states, _ = reference(model.lstm, x[:, 0])  # row t of the image is step t
    np.testing.assert_allclose(s.states, states.numpy(), atol=TOL)


class KeywordState(nn.Module):
    """Passes a non-zero initial state as ``hx=`` (forward hooks see positional args only)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.ones(1, x.shape[0], 4)
        return self.lstm(x, hx=(h0, h0))[0]


def test_the_check_fails_and_says_so_when_the_recomputation_is_not_the_module():
    torch.manual_seed(0)
    s = recurrent_states(KeywordState().eval(), torch.randn(3, 5, 3))
    assert not s.check.passed and s.check.max_abs_error > 1e-2
    assert "FAILED" in s.check.text() and "FAILED" in repr(s)


class Positional(KeywordState):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.full((1, x.shape[0], 4), 0.5)
        return self.lstm(x, (h0, -h0))[0]


def test_an_initial_state_passed_positionally_is_used():
    torch.manual_seed(0)
    model = Positional().eval()
    x = torch.randn(3, 5, 3)
    s = recurrent_states(model, x)
    assert s.check.passed
    h0 = torch.full((1, 3, 4), 0.5)
    states, _ = reference(model.lstm, x, h0, -h0)
    np.testing.assert_allclose(s.states, states.numpy(), atol=TOL)


class Packed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((x.shape[0],), x.shape[1])
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
        return self.lstm(packed)[1][0][-1]


def test_packed_sequences_are_refused_with_the_way_out():
    model = Packed().eval()
    with pytest.raises(NotApplicableError, match="called with a PackedSequence; the view "
                       "reads padded tensors only"):
        recurrent_states(model, torch.randn(2, 5, 3))
    assert count_hooks(model) == 0


class Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(3, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.gru(x)
        raise RuntimeError("boom after the GRU")


def test_no_hook_is_left_also_when_forward_raises():
    model = Wrap(seeded(nn.GRU, 3, 4, batch_first=True)).eval()
    recurrent_states(model, torch.randn(4, 5, 3))
    assert count_hooks(model) == 0
    bad = Raises().eval()
    with pytest.raises(RuntimeError, match="boom after the GRU"):
        recurrent_states(bad, torch.randn(4, 5, 3))
    assert count_hooks(bad) == 0


def test_finding_the_layer_refuses_clearly():
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(NotApplicableError, match=r"Sequential has no nn.LSTM, nn.GRU or "
                       r"nn.RNN layer; its layers are 0 \(Linear\), 1 \(ReLU\)"):
        find_recurrent_layer(mlp)
    model = Wrap(seeded(nn.LSTM, 3, 4))
    assert recurrent_layers(model) == {"rnn": "LSTM"}
    assert find_recurrent_layer(model)[0] == "rnn"
    with pytest.raises(LayerNotFoundError, match=r"no layer 'rn' in Wrap\. Did you mean "
                       r"'rnn'\? Its recurrent layers: 'rnn'"):
        find_recurrent_layer(model, "rn")
    with pytest.raises(UsageError, match=r"layer 'fc' is a Linear, not an nn.LSTM.*--layer "
                       "rnn"):
        find_recurrent_layer(model, "fc")


# ---- probe, saturation, PCA ----------------------------------------------------------------
def fake_states(states: np.ndarray, kind: str = "LSTM", gates=None) -> RecurrentStates:
    return RecurrentStates(layer="lstm", module_type=kind, num_layers=states.shape[0],
                           bidirectional=states.shape[1] == 2, hidden_size=states.shape[-1],
                           batch_first=True, states=states.astype(np.float32),
                           gates=gates or {}, check=RecomputeCheck(0.0, 1e-4, "output", 1))


def test_probe_by_step_finds_the_step_where_the_class_appears():
    rng = np.random.default_rng(0)

    def make(n: int):
        y = rng.integers(0, 3, n)
        s = rng.normal(size=(1, 1, n, 4, 6))
        s[0, 0, :, 2:, 0] += 4.0 * y[:, None]  # the class is readable from step 3 on
        return fake_states(s), y

    train, y_tr = make(150)
    test, y_te = make(90)
    probe = probe_by_step(train, y_tr, test, y_te)
    acc = probe.accuracy[0, 0]
    assert acc[:2].max() < 0.6 and acc[2:].min() > 0.95
    assert probe.chance == pytest.approx(np.bincount(y_te).max() / 90)
    assert first_step_reaching(acc) == 3
    assert probe.train_accuracy.shape == (1, 1, 4)


def test_gate_saturation_counts_both_tails_exactly():
    values = np.array([0.05, 0.5, 0.95, 0.91, 0.099, 0.1, 0.9, 0.3]).reshape(1, 1, 2, 2, 2)
    forget = np.array([0.0, 0.01, 0.02, 0.5, 0.6, 0.7, 0.8, 1.0]).reshape(1, 1, 2, 2, 2)
    gates = {"input": values, "forget": forget, "cell": values, "output": values}
    sat = gate_saturation(fake_states(np.zeros((1, 1, 2, 2, 2)), gates=gates))
    assert isinstance(sat, GateSaturation) and sat.gates == ("input", "forget")
    # input: < 0.1 are .05 and .099 (0.1 is not), > 0.9 are .95 and .91 (0.9 is not)
    np.testing.assert_allclose(sat.fractions[0, 0], [2 / 8, 2 / 8])
    np.testing.assert_allclose(sat.fractions[1, 0], [3 / 8, 1 / 8])
    assert sat.total("input") == pytest.approx((0.25, 0.25))
    assert gate_saturation(fake_states(np.zeros((1, 1, 2, 2, 2)), kind="RNN")) is None
    with pytest.raises(UsageError, match="0 ≤ low < high ≤ 1"):
        gate_saturation(fake_states(np.zeros((1, 1, 2, 2, 2)), gates=gates), low=0.9,
                        high=0.1)


def test_trajectories_are_the_pca_of_all_steps_states():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    s = rng.normal(size=(1, 1, 40, 5, 6)) * np.arange(1, 7)
    y = np.repeat(np.arange(4), 10)
    paths = state_trajectories(fake_states(s), y, per_class=2)
    assert paths.samples.tolist() == [0, 1, 10, 11, 20, 21, 30, 31]
    assert paths.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    flat = s[0, 0].reshape(200, 6)
    pca = PCA(2).fit(flat)
    expected = pca.transform(s[0, 0][paths.samples].reshape(-1, 6)).reshape(8, 5, 2)
    np.testing.assert_allclose(np.abs(paths.coords), np.abs(expected), atol=1e-4)
    np.testing.assert_allclose(paths.explained_variance, pca.explained_variance_ratio_,
                               atol=1e-6)


# ---- the whole view, and its files ---------------------------------------------------------
def test_over_time_holds_every_epoch_and_round_trips_through_its_files(tmp_path):
    models = {e: Wrap(seeded(nn.LSTM, 3, 5, batch_first=True, seed=e)).eval()
              for e in (0, 1, 2)}
    gen = torch.Generator().manual_seed(7)
    x_tr, x_te = torch.randn(60, 4, 3, generator=gen), torch.randn(30, 4, 3, generator=gen)
    y_tr, y_te = np.arange(60) % 3, np.arange(30) % 3
    asked: list[int] = []

    def load(e: int) -> nn.Module:
        asked.append(e)
        return models[e]

    ot = over_time(load, epochs=[0, 2], saturation_epochs=[0, 1, 2], x_train=x_tr,
                   y_train=y_tr, x_test=x_te, y_test=y_te, per_class=2, classes=["a", "b",
                                                                                "c"])
    assert asked == [0, 1, 2]  # each model once
    assert isinstance(ot, OverTime) and ot.epochs == (0, 2) and ot.n_steps == 4
    assert ot.probe.shape == (2, 1, 1, 4) and ot.saturation.shape == (3, 2, 1, 2)
    assert ot.trajectories[0].coords.shape == (6, 4, 2)
    assert set(ot.checks) == {0, 1, 2} and ot.check().passed
    lines = "\n".join(ot.summary_lines())
    assert "probe accuracy of h_t (top layer) at step 1 / 2 / 4:" in lines
    assert "epoch 1: input" in lines and "recomputation check: max |recomputed" in lines
    json_path, npz_path = ot.save(tmp_path / "ot", extra={"figures": []})
    back = load_over_time(json_path)
    np.testing.assert_array_equal(back.probe, ot.probe)
    np.testing.assert_array_equal(back.saturation, ot.saturation)
    np.testing.assert_array_equal(back.trajectories[1].coords, ot.trajectories[1].coords)
    assert back.summary_lines() == ot.summary_lines() and back.classes == ("a", "b", "c")
    assert npz_path.is_file() and repr(back) == repr(ot)
    states = recurrent_states(models[0], x_te)
    again = load_recurrent_states(states.save(tmp_path / "states.npz"))
    np.testing.assert_array_equal(again.gates["forget"], states.gates["forget"])
    assert repr(again) == repr(states)
