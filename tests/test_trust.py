"""A run folder is data, never code, unless the user says so (shenjing.trust).

A hostile run folder names a model factory / data factory / loss / target function in a
file that writes a marker when imported. Every command opened on it must write no marker
and either work without the code (report, dynamics, weights, runs) or refuse in one line
naming the file, its hash and ``--trust-code``; with ``--trust-code`` it runs (the control).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from shenjing import trust
from shenjing.errors import UntrustedCodeError
from shenjing.runs import Run

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/: cli_invoke
from cli_invoke import invoke

EVIL = '''
from pathlib import Path
Path(__file__).with_name("MARKER").write_text("ran")

def Net():
    from shenjing.models import build_model
    return build_model("mlp", (1, 8, 8), 10)

def make(**kwargs):
    from shenjing.data import load_dataset
    return load_dataset("digits")

def loss(output, target):
    import torch.nn.functional as F
    return F.cross_entropy(output, target)
'''


@pytest.fixture(autouse=True)
def _fresh_trust_list(tmp_path, monkeypatch):
    """Each test here starts from an empty trust list, as on a machine that never ran
    the code (a consent given in one test must not leak into the next)."""
    monkeypatch.setenv("SHENJING_TRUST_FILE", str(tmp_path / "trusted-code.json"))


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    """A real trained mlp run on digits, made once (2 epochs, so every view has data)."""
    import shenjing.training as training

    folder = tmp_path_factory.mktemp("zoo") / "mlp"
    training.train("mlp", "digits", epochs=2, run=folder, progress=False)
    return folder


def _hostile(zoo_run: Path, tmp_path: Path, kind: str = "model") -> tuple[Path, Path]:
    """A copy of the zoo run whose run.json names the evil file (as someone sent it)."""
    import shutil

    sender = tmp_path / "sender"
    sender.mkdir()
    (sender / "evil.py").write_text(EVIL)
    run = tmp_path / "received"
    shutil.copytree(zoo_run, run)
    for junk in ("landscapes", "embeddings", "activations", "maps", "figures"):
        shutil.rmtree(run / junk, ignore_errors=True)
    manifest = json.loads((run / "run.json").read_text())
    evil = str(sender / "evil.py")
    if kind == "model":
        manifest["model"] = {"factory": f"{evil}:Net", "kwargs": {}}
    elif kind == "data":
        manifest["data"] = {"name": "factory", "factory": f"{evil}:make", "kwargs": {}}
    elif kind == "loss":
        manifest["config"]["loss"] = f"{evil}:loss"
    # the sender's own record of the code and its hash means nothing on this machine
    manifest["code"] = [{"role": "model factory", "ref": f"{evil}:Net", "path": evil,
                         "sha256": hashlib.sha256(EVIL.encode()).hexdigest()}]
    (run / "run.json").write_text(json.dumps(manifest))
    return run, sender / "MARKER"


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


#: every command that opens a run folder, with the arguments it needs
NEEDS_MODEL = {
    "layers --dry-run": ["layers", "{run}", "--dry-run"],
    "capture": ["capture", "{run}", "--layers", "relu1"],
    "embed": ["embed", "{run}", "--layers", "relu1", "--method", "pca", "--n", "100",
              "--n-train", "200"],
    "maps": ["maps", "{run}", "--layer", "relu1"],
    "landscape-line": ["landscape", "{run}", "--line", "0:final", "--steps", "3",
                       "--samples", "50"],
    "landscape-plane": ["landscape", "{run}", "--plane", "--steps", "3", "--samples", "50"],
    "hessian": ["hessian", "{run}", "--top", "1", "--no-trace", "--samples", "50"],
}
NO_MODEL = {
    "report": ["report", "{run}"],
    "dynamics": ["dynamics", "{run}"],
    "weights": ["weights", "{run}"],
    "filters": ["filters", "{run}", "--layer", "fc1"],  # drawn from the checkpoints
    "runs": ["runs", "{parent}"],
    "layers": ["layers", "{run}"],  # the table saved with the run
}


def _args(template: list[str], run: Path) -> list[str]:
    return [a.format(run=run, parent=run.parent) for a in template]


@pytest.mark.parametrize("command", list(NEEDS_MODEL))
def test_a_hostile_run_folder_runs_no_code(tmp_path, capsys, zoo_run, command):
    run, marker = _hostile(zoo_run, tmp_path)
    before = _contents(run)
    code, out, err = invoke(capsys, *_args(NEEDS_MODEL[command], run))
    assert not marker.exists(), f"{command} ran the run folder's code"
    assert _contents(run) == before  # refused: nothing in the folder created or changed
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UntrustedCodeError: "), err
    sha = hashlib.sha256(EVIL.encode()).hexdigest()
    assert f"evil.py, SHA-256 {sha}" in lines[0] and "--trust-code" in lines[0]


@pytest.mark.parametrize("command", list(NO_MODEL))
def test_views_that_need_no_model_work_and_run_no_code(tmp_path, capsys, zoo_run, command):
    run, marker = _hostile(zoo_run, tmp_path)
    code, out, err = invoke(capsys, *_args(NO_MODEL[command], run))
    assert not marker.exists(), f"{command} ran the run folder's code"
    assert code == 0, (out, err)


@pytest.mark.parametrize("command", ["layers --dry-run", "hessian", "landscape-line"])
def test_with_trust_code_it_runs(tmp_path, capsys, zoo_run, command):
    run, marker = _hostile(zoo_run, tmp_path)
    code, _, err = invoke(capsys, *_args(NEEDS_MODEL[command], run), "--trust-code")
    assert code == 0, err
    assert marker.exists()  # the control: this code does run when consented to


@pytest.mark.parametrize("kind", ["data", "loss"])
def test_data_and_loss_code_need_consent_too(tmp_path, zoo_run, kind):
    run, marker = _hostile(zoo_run, tmp_path, kind)
    with pytest.raises(UntrustedCodeError, match=rf"names {kind}( factory)? code"):
        Run(run).model()
    if kind == "data":
        with pytest.raises(UntrustedCodeError):
            _ = Run(run).data
    assert not marker.exists()
    trusted = Run(run, trust_code=True)
    if kind == "data":
        _ = trusted.data
    else:
        from shenjing.stages.landscape import landscape_line

        landscape_line(trusted, steps=3, samples=20, progress=False, figures=False)
    assert marker.exists()  # the control: consented, the code runs


def test_a_target_function_in_a_fit_run_needs_consent(tmp_path, capsys):
    from shenjing.stages.fit import fit

    (tmp_path / "mine.py").write_text("import numpy as np\ndef f(x):\n    return np.sin(x)\n")
    fit(tmp_path / "fit", function=f"{tmp_path / 'mine.py'}:f", epochs=1, passes_per_epoch=5,
        gif=False, progress=False)
    # someone else's machine: a fresh trust list, and the file rewritten to write a marker
    (tmp_path / "mine.py").write_text(EVIL + "\nimport numpy as np\ndef f(x):\n"
                                      "    return np.sin(x)\n")
    code, out, err = invoke(capsys, "fit", "--run", str(tmp_path / "fit"), "--no-gif")
    assert code == 2 and "changed since the run was made" in err, (out, err)
    assert not (tmp_path / "MARKER").exists()


# ---- the rule itself --------------------------------------------------------------------------
def test_creating_a_run_trusts_its_code_and_a_changed_file_is_refused(tmp_path):
    net_file = tmp_path / "mynet.py"
    net_file.write_text("from shenjing.models import build_model\n"
                        "def Net():\n    return build_model('mlp', (1, 8, 8), 10)\n")
    run = Run.create(tmp_path / "r", model={"factory": f"{net_file}:Net", "kwargs": {}},
                     data={"name": "digits"})
    (entry,) = run.manifest["code"]
    assert entry["sha256"] == hashlib.sha256(net_file.read_bytes()).hexdigest()
    assert trust.is_trusted(entry["sha256"])
    run.build_model()  # the user's own run: no consent needed
    net_file.write_text(net_file.read_text() + "\n# edited\n")
    with pytest.raises(UntrustedCodeError, match=r"changed since the run was made"):
        Run(run.path).build_model()
    Run(run.path, trust_code=True).build_model()  # consent, once, trusts the new hash
    Run(run.path).build_model()


def test_a_zoo_model_needs_no_consent(zoo_run):
    assert trust.code_refs(Run(zoo_run).manifest) == []
    Run(zoo_run).model()


def test_locating_a_module_imports_nothing(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    (pkg / "models.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = trust.locate_source("userpkg.models:Net")
    assert found == (pkg / "models.py").resolve()
    assert list(tmp_path.rglob("*.ran")) == []
    assert trust.locate_source("no_such_module_xyz:Net") is None


def test_the_error_names_file_hash_and_flag(tmp_path, zoo_run):
    run, _ = _hostile(zoo_run, tmp_path)
    with pytest.raises(UntrustedCodeError) as info:
        Run(run).model()
    text = str(info.value)
    assert re.search(r"names model factory code '.*evil\.py:Net' \(file .*evil\.py, SHA-256 "
                     r"[0-9a-f]{64}\) and you have not run it yourself on this machine", text)
    assert text.endswith("pass --trust-code (Python: trust_code=True)")
