"""Grids and storage: anchors on the axes, NaN done-mask, resume after kill -9, reuse."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kill_at_signal import kill_at_signal
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
    # a loop-path landscape job that tells its parent through a pipe when it has saved
    # ``stop_at`` points (the file is saved after every point), then waits to be killed
    import os, sys, torch
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
        fd, stop_at = int(sys.argv[2]), int(sys.argv[3])

        def reached(done, total):
            if done >= stop_at:
                os.write(fd, f"{done}\\n".encode())
                sys.stdin.read()  # blocks until the parent kills this process

        plane(net, x, y, loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu",
              engine="loop", batch_size=16, path=sys.argv[1], save_every=0.0,
              progress=reached)
""")


CHILD = textwrap.dedent("""
    # a landscape job that tells its parent, through a pipe, the point it has reached (the
    # file is saved after every chunk), then waits to be killed: no sleeps, no polling
    import os, sys, torch
    from torch import nn
    from shenjing.analysis.landscape import plane

    torch.set_num_threads(2)  # the parent runs with one: the engine's record must decide
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 1, 4, 4, generator=g), torch.randint(0, 3, (300,), generator=g)
    fd, stop_at = int(sys.argv[2]), int(sys.argv[3])

    def reached(done, total):
        if done >= stop_at:
            os.write(fd, f"{done}\\n".encode())
            sys.stdin.read()  # blocks until the parent kills this process

    plane(net, x, y, loss="cross_entropy", steps=13, range_=(-1, 1), device="cpu",
          engine="auto", path=sys.argv[1], save_every=0.0, progress=reached)
""")


def _child_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 3)).eval()
    g = torch.Generator().manual_seed(1)
    return net, torch.randn(300, 1, 4, 4, generator=g), torch.randint(0, 3, (300,), generator=g)


def test_resume_after_kill_with_the_automatic_engine_is_bit_identical(tmp_path):
    """Issue 13 item 11: a resumed landscape with the automatic engine could choose another
    path than before the kill (loss off by up to 4e-7 at 605 of 625 points). The path,
    batch, threads, layout and compile chosen are recorded with the first points and reused
    on resume: every point equals an uninterrupted run with those settings, bit for bit."""
    import select

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = tmp_path / "killed.npz"
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(write_end), "40"],
                            pass_fds=(write_end,), stdin=subprocess.PIPE)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 120)
        assert ready, "the child never reported its progress"
        reached = int(os.read(read_end, 64).decode().split()[0])
        proc.kill()
        proc.wait(timeout=30)
    finally:
        os.close(read_end)
        if proc.poll() is None:
            proc.kill()
    partial = load_landscape(target)
    assert 40 <= reached < 169 and partial.n_done == reached
    engine = partial.meta["engine"]
    assert isinstance(engine["threads"], int) and engine["threads"] >= 1
    net, x, y = _child_data()
    seen = []
    resumed = plane(net, x, y, loss="cross_entropy", steps=13, range_=(-1, 1), device="cpu",
                    engine="auto", path=target, progress=lambda d, t: seen.append(d))
    assert seen[0] == reached and resumed.complete
    assert resumed.meta["engine"] == engine  # the same settings, not chosen again
    np.testing.assert_array_equal(resumed.loss[partial.done], partial.loss[partial.done])
    clean = plane(net, x, y, loss="cross_entropy", steps=13, range_=(-1, 1), device="cpu",
                  engine=engine["path"], batch_size=engine["batch_size"],
                  channels_last=engine["channels_last"], compile=engine["compile"],
                  threads=engine["threads"], path=tmp_path / "clean.npz")
    assert {k: clean.meta["engine"][k] for k in ("path", "batch_size", "threads", "chunk")} \
        == {k: engine[k] for k in ("path", "batch_size", "threads", "chunk")}
    np.testing.assert_array_equal(resumed.loss, clean.loss)
    np.testing.assert_array_equal(resumed.accuracy, clean.accuracy)


def test_resume_refuses_settings_other_than_those_of_the_stored_points(tmp_path):
    """Points computed one way are never mixed with points computed another way: an
    explicit engine, batch size, layout, compile or thread count that differs from the
    stored one is refused (naming both), and leaving them out resumes exactly."""
    net, x, y = _build()
    path = tmp_path / "p.npz"

    def stop(done, total):
        if done >= 20:
            raise KeyboardInterrupt

    kw = dict(loss="cross_entropy", steps=9, range_=(-1, 1), device="cpu", path=path)
    with pytest.raises(KeyboardInterrupt):
        plane(net, x, y, engine="loop", batch_size=16, channels_last=False, save_every=0.0,
              progress=stop, **kw)
    before = path.read_bytes()
    for other, shown in ((dict(engine="linear"), "--engine linear"),
                         (dict(batch_size=8), "--batch-size 8"),
                         (dict(compile=True), "--compile"),
                         (dict(channels_last=True), "channels_last=True"),
                         (dict(threads=3), "threads 3")):
        with pytest.raises(UsageError, match=rf"^p\.npz holds 2\d of 81 points computed with "
                                             rf"engine loop \(batch 16, 1 thread\(s\), "
                                             rf"NCHW, eager\); resuming with {shown} would "
                                             rf"mix .*leave .* out to resume exactly"):
            plane(net, x, y, **other, **kw)
        assert path.read_bytes() == before
    done = plane(net, x, y, **kw)  # nothing given: the stored settings are used
    assert done.complete and done.meta["engine"]["path"] == "loop"
    assert done.meta["engine"]["batch_size"] == 16


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
    message = kill_at_signal(
        lambda fd: [sys.executable, str(script), str(target), str(fd), "10"], env=env,
        timeout=120)
    reached = int(message.decode().split()[0])
    partial = load_landscape(target)
    assert partial.n_done == reached and 10 <= reached < 81, (partial.n_done, reached)
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


def test_grid_and_weight_copies_beyond_the_memory_allowed_are_refused_first(tmp_path,
                                                                           monkeypatch):
    """Issue 13 item 7: the grid's arrays (256 bytes per point) and the engine's copies of
    the weights are estimated before either is allocated; above the budget one
    ResourceError names the size and what reduces it, and no file is written."""
    import shenjing.capture.dataset as ds
    from shenjing.errors import ResourceError

    net, x, y = _build()  # 243 parameters
    kw = dict(loss="cross_entropy", device="cpu", engine="loop", batch_size=16)
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 40_000)  # 40 kB allowed
    with pytest.raises(ResourceError, match=r"^a 13×13 plane \(169 points\) needs about "
                                            r"42\.25 KiB .* only 39\.06 KiB is allowed .*; "
                                            r"reduce steps, e.g. steps=11$"):
        plane(net, x, y, steps=13, range_=(-1, 1), path=tmp_path / "p.npz", **kw)
    with pytest.raises(ResourceError, match=r"^a line of 200 points"):
        line(net, net, x, y, steps=198, path=tmp_path / "l.npz", **kw)
    assert list(tmp_path.iterdir()) == []
    assert plane(net, x, y, steps=11, range_=(-1, 1), **kw).complete  # 11×11 fits
    # the engine's copies: 15 vectors of 243 float64 parameters + 2 × the samples = 39,400 B;
    # the 3×3 grid (2,304 B) fits in 10 kB, they do not
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 10_000)
    with pytest.raises(ResourceError, match=r"^evaluating 2 direction\(s\) of a model with "
                                            r"243 parameters needs about 38\.48 KiB .*15 "
                                            r"vectors of 8 bytes per parameter, and the "
                                            r"samples\) but only 9\.77 KiB is allowed .*; "
                                            r"use --dtype float32"):
        plane(net, x, y, steps=3, range_=(-1, 1), path=tmp_path / "p.npz",
              **{**kw, "dtype": "float64"})
    assert list(tmp_path.iterdir()) == []


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
