"""Directions on disk: a seed or two end points where they can be remade bit for bit,
float32 vectors (with their error stated) only where they cannot; old files still load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from shenjing import _io
from shenjing.analysis.landscape import (
    ParamLayout,
    directions_path,
    flat_params,
    line,
    line_direction,
    load_directions,
    plane,
    random_directions,
    read_directions_meta,
    save_directions,
    trajectory_pca,
)
from shenjing.errors import CheckpointError, UsageError


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(30, 1, 8, 8, generator=g), torch.randint(0, 10, (30,), generator=g)


KW = dict(loss="cross_entropy", steps=3, range_=(-1.0, 1.0), device="cpu", engine="loop")


def test_a_planes_random_directions_are_stored_as_their_seed(tmp_path):
    net = _cnn()
    x, y = _data()
    path = tmp_path / "p.npz"
    plane(net, x, y, seed=7, path=path, **KW)
    dpath = directions_path(path)
    n = sum(p.numel() for p in net.parameters())
    with np.load(dpath) as z:
        assert z.files == ["meta"]  # no vector, no centre
    meta = read_directions_meta(dpath)
    assert meta["stored_as"] == "seed" and meta["format"] == 2 and meta["n_params"] == n
    assert meta["info"]["seed"] == 7 and meta["info"]["norm"] == "filter"
    # a few kB, where the vectors and centre took 3 × 4 bytes per parameter
    assert dpath.stat().st_size < 4_000 < 12 * n
    again, center = load_directions(dpath, center=net)
    assert center is None
    assert torch.equal(again.vectors, random_directions(net, 2, seed=7).vectors)


def test_regeneration_is_bit_identical_in_another_process(tmp_path):
    from safetensors.torch import save_file

    net = _cnn()
    dirs = random_directions(net, 2, seed=3)
    dpath = save_directions(tmp_path / "d.directions.npz", dirs, flat_params(net))
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    script = textwrap.dedent(f"""
        import numpy as np
        from safetensors.torch import load_file
        from shenjing.analysis.landscape import load_directions
        d, _ = load_directions({str(dpath)!r}, center=load_file({str(weights)!r}))
        np.save({str(tmp_path / "v.npy")!r}, d.vectors.numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    other = torch.from_numpy(np.load(tmp_path / "v.npy"))
    assert torch.equal(other, dirs.vectors)


def test_a_seed_file_refuses_a_missing_or_wrong_centre(tmp_path):
    net = _cnn()
    dirs = random_directions(net, 2, seed=1)
    dpath = save_directions(tmp_path / "d.directions.npz", dirs, flat_params(net))
    with pytest.raises(UsageError, match=r"stored as their seed \(seed 1, filter-normalized, "
                                         r"1-D tensors fixed\): pass center="):
        load_directions(dpath)
    with pytest.raises(CheckpointError, match="the center weights given are not the ones"):
        load_directions(dpath, center=_cnn(seed=5))


def test_directions_that_a_seed_cannot_remake_are_stored_as_vectors(tmp_path):
    net = _cnn()
    dirs = random_directions(net, 2, seed=1)
    # the same info, but drawn around other weights than the centre they are saved with
    drawn_elsewhere = random_directions(_cnn(seed=9), 2, seed=1)
    dpath = save_directions(tmp_path / "d.directions.npz", drawn_elsewhere, flat_params(net))
    meta = read_directions_meta(dpath)
    assert meta["stored_as"] == "vectors" and "recipe_refused" in meta
    back, _ = load_directions(dpath)
    assert torch.equal(back.vectors, drawn_elsewhere.vectors)
    assert not torch.equal(back.vectors, dirs.vectors)


def test_a_lines_direction_is_stored_as_its_end_points(tmp_path):
    start, end = _cnn(seed=1), _cnn(seed=2)
    x, y = _data()
    path = tmp_path / "l.npz"
    line(start, end, x, y, loss="cross_entropy", steps=4, device="cpu", path=path)
    dpath = directions_path(path)
    meta = read_directions_meta(dpath)
    assert meta["stored_as"] == "end points"
    with np.load(dpath) as z:
        assert z.files == ["meta"]
    back, _ = load_directions(dpath, center=end, start=start.state_dict())
    assert torch.equal(back.vectors, line_direction(start, end)[1].vectors)
    with pytest.raises(UsageError, match="pass start="):
        load_directions(dpath, center=end)
    with pytest.raises(CheckpointError, match="the start weights given are not the ones"):
        load_directions(dpath, center=end, start=_cnn(seed=3))


def test_pca_directions_are_float32_vectors_with_the_error_stated(tmp_path):
    net = nn.Linear(40, 30)
    layout = ParamLayout.of(net)
    gen = torch.Generator().manual_seed(0)
    walk, states = torch.zeros(layout.size), []
    for _ in range(5):
        walk = walk + torch.randn(layout.size, generator=gen)
        states.append(layout.split(walk.clone()))
    pca = trajectory_pca(states, list(range(5)), layout)
    dpath = save_directions(tmp_path / "t.directions.npz", pca.directions,
                            layout.flatten(states[-1]))
    with np.load(dpath) as z:
        assert z["vectors"].dtype == np.float32 and z["vectors"].shape == (2, layout.size)
    meta = read_directions_meta(dpath)
    assert meta["stored_as"] == "vectors" and meta["vectors_dtype"] == "float32"
    # the stated error is the true one: recompute the float64 directions independently
    flats = torch.stack([layout.flatten(s, dtype=torch.float64) for s in states])
    offsets = flats - flats[-1]
    centred = offsets - offsets.mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    exact = vt[:2] * torch.sign((vt[:2] * pca.directions.vectors.double()).sum(1, keepdim=True))
    stored = torch.from_numpy(np.load(dpath)["vectors"]).double()
    true_err = float(((stored - exact).abs() / exact.abs()).max())
    stated = meta["storage_error"]["max_rel_error_vs_float64"]
    assert 0 < stated <= 2.0 ** -24 * 1.01
    assert stated == pytest.approx(true_err, rel=1e-3, abs=1e-9)
    back, center = load_directions(dpath)
    assert center is None and torch.equal(back.vectors, pca.directions.vectors)


def test_a_format_1_file_with_vectors_and_centre_still_loads(tmp_path):
    net = _cnn()
    dirs = random_directions(net, 2, seed=0)
    old = tmp_path / "old.directions.npz"
    # exactly what shenjing wrote before (format 1)
    _io.save_npz(old, vectors=dirs.vectors.numpy(), layout=dirs.layout.to_json(),
                 info=dirs.info, center=flat_params(net).numpy())
    back, center = load_directions(old)
    assert torch.equal(back.vectors, dirs.vectors) and back.info == dirs.info
    np.testing.assert_array_equal(center, flat_params(net).numpy())
    meta = read_directions_meta(old)
    assert meta["format"] == 1 and meta["sha256"] == dirs.sha256()
    # a landscape next to an old file with the same directions keeps using it
    x, y = _data()
    path = tmp_path / "old.npz"
    plane(net, x, y, seed=0, path=path, **KW)
    assert read_directions_meta(old)["format"] == 1  # not rewritten: same directions
