"""Shared test fixtures: Agg backend, closed figures, the real MNIST folder, markers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# as the CLI does (see shenjing/cli/app.py): spinning OpenMP threads slow small ops ~10x
# whenever the cores are shared
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# the tests' own trust list (shenjing.trust), set before any fixture of any scope runs:
# never the user's ~/.config one. tests/test_trust.py gives each of its tests a fresh one.
os.environ["SHENJING_TRUST_FILE"] = str(
    Path(tempfile.mkdtemp(prefix="shenjing-tests-")) / "trusted-code.json")

REPO = Path(__file__).resolve().parents[1]
# the tests' helper modules (cli_invoke, kill_at_signal, inspect_models …) import from any
# test folder
sys.path.insert(0, str(Path(__file__).resolve().parent))
MNIST_DIR = Path(os.environ.get("SHENJING_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    skip_gpu = pytest.mark.skip(reason="gpu: no CUDA device on this machine")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny tensors: one intra-op thread avoids oversubscribing the shared cores
    (measured ~10x faster for small models on the 2-core CI machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test starts and ends with no open matplotlib figure."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST test set (10,000 images, IDX), used through its path only."""
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found in {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def digits():
    """The embedded digits dataset (loaded once per session)."""
    from shenjing.data import load_dataset

    return load_dataset("digits")
