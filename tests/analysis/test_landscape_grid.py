"""Grids and storage: anchors on the axes, NaN done-mask, resume after kill -9, reuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shenjing.analysis.landscape import (
    directions_path,
    line,
    load_directions,
    load_landscape,
    make_axis,
    plane,
    random_directions,
)
from shenjing.errors import UsageError

SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    from shenjing.analysis.landscape import plane

    def build():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
        g = torch.Generator().manual_seed(1)
        return net.eval(), torch.randn(40, 1, 4, 4, generator=g), \\
            torch.randint(0, 3, (40,), generator=g)

    if __name__ == "__main__":
        net, x, y = build()
        slow = float(sys.argv[2])
        plane(net, x, y, loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu",
              engine="loop", batch_size=16, path=sys.argv[1], save_every=0.0,
              progress=lambda done, total: time.sleep(slow))
""")


def _build():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(1)
    return (net.eval(), torch.randn(40, 1, 4, 4, generator=g),
            torch.randint(0, 3, (40,), generator=g))


def test_make_axis_contains_anchors_and_refuses_bad_ranges():
    ax = make_axis(-1, 1, 21)
    assert len(ax) == 21 and ax[10] == 0.0 and ax[0] == -1 and ax[-1] == 1
    even = make_axis(-1, 1, 20)  # 0 is not on an even grid: inserted
    assert 0.0 in even and len(even) == 21
    ln = make_axis(-0.5, 1.5, 51, anchors=(0.0, 1.0))
    assert 0.0 in ln and 1.0 in ln and ln[0] == -0.5 and ln[-1] == 1.5
    assert np.all(np.diff(ln) > 0)
    with pytest.raises(UsageError, match="min ≥ max"):
        make_axis(1, -1, 5)
    with pytest.raises(UsageError, match="min ≥ max"):
        make_axis(0.5, 0.5, 5)
    with pytest.raises(UsageError, match="steps must be at least 2 \\(got 0\\)"):
        make_axis(-1, 1, 0)
    with pytest.raises(UsageError, match="must be finite"):
        make_axis(-np.inf, 1, 5)


def test_line_includes_both_end_points_exactly():
    net, x, y = _build()
    start = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    ls = line(start, net, x, y, loss="cross_entropy", steps=11, range_=(-0.5, 1.5),
              device="cpu")
    alpha = ls.axes[0]
    i0, i1 = int(np.flatnonzero(alpha == 0.0)[0]), int(np.flatnonzero(alpha == 1.0)[0])
    with torch.no_grad():
        l_end = float(nn.functional.cross_entropy(net(x), y))
        l_start = float(nn.functional.cross_entropy(start(x), y))
    assert ls.loss[i1] == pytest.approx(l_end, rel=1e-6)
    assert ls.loss[i0] == pytest.approx(l_start, rel=1e-5)
    assert ls.origin.tolist() == [1.0] and ls.center_index == (i1,)


def test_not_computed_is_nan_with_a_done_mask(tmp_path):
    net, x, y = _build()
    path = tmp_path / "p.npz"
    calls = []

    def stop_after_first(done, total):
        calls.append(done)
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        plane(net, x, y, loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu",
              engine="linear", path=path, save_every=0.0, progress=stop_after_first)
    partial = load_landscape(path)
    assert 0 < partial.n_done < 81
    assert np.isnan(partial.loss[~partial.done]).all()
    assert np.isfinite(partial.loss[partial.done]).all()
    assert partial.done.dtype == bool


def test_resume_after_kill_9_gives_the_identical_surface(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    target = tmp_path / "killed.npz"
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.Popen([sys.executable, str(script), str(target), "0.15"], env=env)
    try:
        deadline = time.time() + 120
        n_done = 0
        while time.time() < deadline:
            if target.exists():
                try:
                    n_done = load_landscape(target).n_done
                except Exception:
                    n_done = 0
                if n_done >= 10:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partial = load_landscape(target)
    assert 10 <= partial.n_done < 81, partial.n_done
    net, x, y = _build()
    seen = []
    resumed = plane(net, x, y, loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu",
                    engine="loop", batch_size=16, path=target,
                    progress=lambda done, total: seen.append(done))
    assert seen[0] == partial.n_done  # only the missing points were evaluated
    assert resumed.complete
    clean = plane(net, x, y, loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu",
                  engine="loop", batch_size=16, path=tmp_path / "clean.npz")
    np.testing.assert_array_equal(resumed.loss, clean.loss)
    np.testing.assert_array_equal(resumed.accuracy, clean.accuracy)


def test_finer_and_wider_grids_reuse_computed_points(tmp_path):
    net, x, y = _build()
    path = tmp_path / "p.npz"
    kw = dict(loss="cross_entropy", device="cpu", engine="loop", batch_size=16, path=path)
    coarse = plane(net, x, y, steps=5, range_=(-1, 1), **kw)
    seen: list[int] = []
    finer = plane(net, x, y, steps=9, range_=(-1, 1),
                  progress=lambda d, t: seen.append(d), **kw)
    assert seen[0] == 25  # all 5×5 points lie on the 9×9 grid
    np.testing.assert_array_equal(finer.loss[::2, ::2], coarse.loss)
    seen.clear()
    wider = plane(net, x, y, steps=9, range_=(-2, 2), progress=lambda d, t: seen.append(d),
                  **kw)
    assert seen[0] == 25  # the spacing-0.5 points of the finer grid
    assert wider.complete
    # points of the finer grid that are off the wider grid are kept, not lost
    assert len(wider.extra["coords"]) == 81 - 25
    back = plane(net, x, y, steps=9, range_=(-1, 1), progress=lambda d, t: seen.append(d),
                 **kw)
    assert back.meta["n_computed_now"] == 0  # nothing left to compute
    np.testing.assert_array_equal(back.loss, finer.loss)


def test_stale_file_with_other_directions_is_replaced(tmp_path):
    net, x, y = _build()
    path = tmp_path / "p.npz"
    kw = dict(loss="cross_entropy", steps=3, range_=(-1, 1), device="cpu", path=path)
    plane(net, x, y, seed=0, **kw)
    seen: list[int] = []
    other = plane(net, x, y, seed=1, progress=lambda d, t: seen.append(d), **kw)
    assert seen[0] == 0 and "replaced_stale_file" in other.meta
    # stored as the new seed: regenerated around the same centre, they are seed 1's
    d, _ = load_directions(directions_path(path), center=net)
    assert d.sha256() == random_directions(net, 2, seed=1).sha256()
    assert d.info["seed"] == 1


def test_saved_file_keys(tmp_path):
    net, x, y = _build()
    path = tmp_path / "p.npz"
    plane(net, x, y, loss="cross_entropy", steps=3, range_=(-1, 1), device="cpu", path=path,
          sample_indices=np.arange(40))
    with np.load(path) as z:
        assert {"axis_0", "axis_1", "loss", "accuracy", "done", "origin", "meta",
                "sample_indices", "extra_coords", "extra_loss",
                "extra_accuracy"} <= set(z.files)
    assert Path(directions_path(path)).is_file()


def test_vtk_export_holds_the_grid(tmp_path):
    from shenjing.analysis.landscape import export_vtk

    net, x, y = _build()
    ls = plane(net, x, y, loss="cross_entropy", steps=3, range_=(-1, 1), device="cpu")
    text = export_vtk(ls, tmp_path / "p.vtk").read_text()
    assert "DATASET RECTILINEAR_GRID" in text and "DIMENSIONS 3 3 1" in text
    block = text.split("SCALARS loss double 1\nLOOKUP_TABLE default\n")[1].split("SCALARS")[0]
    values = np.array(block.split(), dtype=float)
    np.testing.assert_allclose(values, ls.loss.T.reshape(-1), rtol=1e-8)
    with pytest.raises(UsageError, match="needs a 2-D landscape"):
        export_vtk(line(net, net, x, y, loss="cross_entropy", steps=3), tmp_path / "l.vtk")
