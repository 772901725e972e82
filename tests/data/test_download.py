"""Downloads against a local HTTP server on 127.0.0.1: verified, atomic, clear on failure."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from shenjing.data import load_dataset
from shenjing.data import mnist as mnist_mod
from shenjing.data.download import download
from shenjing.data.idx import write_idx
from shenjing.errors import ChecksumError, DataError


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1 (an ephemeral port) for the test's duration."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_good_file_is_downloaded_and_verified(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"hello shenjing" * 1000)
    sha = hashlib.sha256(b"hello shenjing" * 1000).hexdigest()
    target = download([url + "f.bin"], tmp_path / "out" / "f.bin", sha, progress=False)
    assert target.read_bytes() == b"hello shenjing" * 1000
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"tampered")
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match="f.bin from .* has SHA-256 .*expected 0+; "
                                            "the file was discarded"):
        download([url + "f.bin"], out / "f.bin", "0" * 64, progress=False)
    assert list(out.iterdir()) == []


def test_second_mirror_used_when_first_fails(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"ok")
    sha = hashlib.sha256(b"ok").hexdigest()
    target = download([url + "missing.bin", url + "f.bin"], tmp_path / "f.bin", sha,
                      progress=False)
    assert target.read_bytes() == b"ok"


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download f.bin"):
        download(["http://127.0.0.1:9/f.bin"], tmp_path / "f.bin", "0" * 64, timeout=2,
                 progress=False)
    assert not (tmp_path / "f.bin").exists()


def test_mnist_downloads_all_four_files_from_mirror(server, tmp_path, monkeypatch):
    """The real loader code path: four IDX files fetched, verified, read."""
    root, url = server
    rng = np.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 50, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    hashes = {}
    for name, arr in files.items():
        path = write_idx(root / name, arr)
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    fake = mnist_mod.IdxSource("mnist", (url,), hashes, tuple("0123456789"), 0.0, 1.0)
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", fake)
    data_dir = tmp_path / "mnist"
    ds = load_dataset("mnist", data_dir=data_dir, progress=False)
    assert (len(ds.train), len(ds.test)) == (50, 20)
    np.testing.assert_allclose(ds.test.x[3, 0].numpy(),
                               files["t10k-images-idx3-ubyte.gz"][3] / 255.0, rtol=1e-6)
    assert sorted(p.name for p in Path(data_dir).iterdir()) == sorted(files)


def test_offline_error_names_the_four_files(tmp_path, monkeypatch):
    fake = mnist_mod.IdxSource("mnist", ("http://127.0.0.1:9/",), {
        f"{stem}.gz": "0" * 64 for pair in mnist_mod._FILES.values() for stem in pair},
        tuple("0123456789"), 0.0, 1.0)
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", fake)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "empty", progress=False)
    message = str(info.value)
    for stem in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert stem in message
    assert "--data-dir" in message
