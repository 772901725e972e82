"""The run directory: everything known about one study of a model, as files.

    runs/<name>/
      run.json              manifest: model spec, data spec, seed, versions, stage status
      checkpoints/          epoch-000.safetensors (untrained) … epoch-NNN.safetensors,
                            state-NNN.pt (optimizer + RNG, for --resume)
      metrics.jsonl         one JSON object per epoch
      activations/ embeddings/ landscapes/ figures/   written by later stages
      report.html

See docs/run-format.md. Every write is atomic (temporary file, then rename).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing import _io
from shenjing._labels import epoch0_called
from shenjing._version import __version__
from shenjing.errors import (
    CheckpointError,
    EpochNotFoundError,
    NotApplicableError,
    RunError,
    UsageError,
)

FORMAT_VERSION = 1
_EPOCH0_WORDS = {"trained": "untrained", "fresh": "fresh init", "weights": "init weights",
                 "checkpoints": "first checkpoint"}
MANIFEST = "run.json"
LAYER_TABLE = "layers.json"  # the model's layer table, saved when the run is made
_EPOCH_FILE = re.compile(r"^epoch-(\d{3,})\.safetensors$")
SUBDIRS = ("checkpoints", "activations", "embeddings", "landscapes", "figures")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions that matter for reproducing a run."""
    import numpy

    return {"shenjing": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def epoch_filename(epoch: int) -> str:
    """``epoch-007.safetensors`` for epoch 7."""
    return f"epoch-{epoch:03d}.safetensors"


class Run:
    """A run directory on disk. Cheap to create: reads files lazily.

    >>> import tempfile; d = tempfile.mkdtemp()
    >>> run = Run.create(d + "/r", model={"name": "mlp"}, data={"name": "digits"})
    >>> run.epochs
    []
    """

    def __init__(self, path: str | os.PathLike[str], *, trust_code: bool = False) -> None:
        self.path = Path(path)
        #: consent to run the user code the run names (see :mod:`shenjing.trust`)
        self.trust_code = trust_code
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise RunError(f"no run directory at {self.path}; create one with "
                           f"`shenjing train --run {self.path}`")
        if not manifest.is_file():
            raise RunError(f"{self.path} is not a shenjing run (no {MANIFEST}); "
                           "pass the folder that `shenjing train --run` created")
        try:
            data = _io.read_json(manifest)
        except ValueError as exc:
            raise RunError(f"{manifest} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "format_version" not in data:
            raise RunError(f"{manifest} is not a shenjing manifest (no format_version)")
        if int(data["format_version"]) > FORMAT_VERSION:
            raise RunError(
                f"{self.path} was written in run format {data['format_version']} by shenjing "
                f"{data.get('versions', {}).get('shenjing', '?')}; this shenjing "
                f"({__version__}) reads format {FORMAT_VERSION}: upgrade shenjing"
            )

    # ---- creation and manifest ------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, model: Mapping[str, Any],
               data: Mapping[str, Any], seed: int = 0, task: str = "classification",
               classes: tuple[str, ...] | list[str] = (),
               config: Mapping[str, Any] | None = None, overwrite: bool = False) -> Run:
        """Create a new run directory (refusing to clobber an existing run unless asked)."""
        path = Path(path)
        if (path / MANIFEST).exists() and not overwrite:
            raise RunError(f"{path} already holds a run; pass --resume to continue it, "
                           "--force to start over, or choose another --run folder")
        if path.exists() and not (path / MANIFEST).exists() and any(path.iterdir()):
            raise RunError(f"{path} exists and is not a shenjing run; refusing to write "
                           "into it. Choose an empty or new folder")
        for sub in SUBDIRS:
            (path / sub).mkdir(parents=True, exist_ok=True)
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": path.name,
            "created": _now(),
            "model": dict(model),
            "data": dict(data),
            "seed": seed,
            "task": task,
            "classes": list(classes),
            "config": dict(config or {}),
            "versions": versions(),
            "stages": {},
        }
        from shenjing import trust

        # the user is creating this run with this code: record its hashes, and trust them
        manifest["code"] = trust.record(manifest, path)
        _io.write_json(path / MANIFEST, manifest)
        return cls(path)

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed run.json (re-read each time: other processes may update stages)."""
        return _io.read_json(self.path / MANIFEST)

    def update_manifest(self, **fields: Any) -> None:
        """Set top-level manifest fields atomically."""
        manifest = self.manifest
        manifest.update(fields)
        _io.write_json(self.path / MANIFEST, manifest)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def task(self) -> str:
        return str(self.manifest.get("task", "classification"))

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("classes", ()))

    @property
    def init_kind(self) -> str:
        """What epoch 0 is: ``trained`` (shenjing trained the net from its own seeded
        initialisation: the real start), ``fresh`` (an ``inspect`` run whose epoch 0 is a
        seeded fresh initialisation of the architecture, not the user's real one),
        ``weights`` (``--init-weights``) or ``checkpoints`` (the first of ``--checkpoints``)."""
        config = self.manifest.get("config", {}) or {}
        kind = config.get("init_kind")
        if kind in _EPOCH0_WORDS:
            return str(kind)
        if config.get("source") == "inspect":
            return "weights" if config.get("init_weights") else "fresh"
        return "trained"

    @property
    def epoch0_words(self) -> str:
        """Epoch 0 in a figure title: ``untrained``, ``fresh init``, ``init weights`` …"""
        return _EPOCH0_WORDS[self.init_kind]

    def stage(self, name: str) -> dict[str, Any]:
        """The recorded status of a stage (``{}`` if it never ran)."""
        return dict(self.manifest.get("stages", {}).get(name, {}))

    def update_stage(self, name: str, status: str, **info: Any) -> None:
        """Record a stage's status and details.

        ``status`` is ``running``, ``done``, ``failed`` (with ``error``: what went wrong) or
        ``skipped`` (with ``reason``: why the view does not apply to this model).
        """
        manifest = self.manifest
        stage = manifest.setdefault("stages", {}).setdefault(name, {})
        if status != "failed":
            stage.pop("error", None)
        if status != "skipped":
            stage.pop("reason", None)
        stage.update(info)
        stage["status"] = status
        stage["updated"] = _now()
        _io.write_json(self.path / MANIFEST, manifest)

    @contextmanager
    def running_stage(self, name: str, **info: Any) -> Iterator[None]:
        """Mark stage ``name`` running for the block; if the block raises, mark it failed
        with the error and re-raise (the block marks it done itself, with its results).

        A :class:`~shenjing.errors.NotApplicableError` marks it ``skipped`` with the
        message as the reason instead (and is re-raised too). Any other usage error (bad
        input found inside the block, a refused run folder) puts the stage's record back as
        it was: bad input changes nothing in the run.
        """
        before = (self.path / MANIFEST).read_bytes()
        self.update_stage(name, "running", **info)
        marked = (self.path / MANIFEST).read_bytes()
        try:
            with epoch0_called(self.epoch0_words):  # figures name epoch 0 for what it is
                yield
        except NotApplicableError as exc:
            self.update_stage(name, "skipped", reason=str(exc))
            raise
        except UsageError:
            if (self.path / MANIFEST).read_bytes() == marked:  # nobody wrote since: undo
                _io.write_bytes(self.path / MANIFEST, before)
            raise
        except BaseException as exc:
            self.update_stage(name, "failed", error=f"{type(exc).__name__}: {exc}")
            raise

    # ---- folders ----------------------------------------------------------------------
    def subdir(self, name: str) -> Path:
        """A stage folder of the run (created on demand)."""
        folder = self.path / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def checkpoints_dir(self) -> Path:
        return self.subdir("checkpoints")

    @property
    def figures_dir(self) -> Path:
        return self.subdir("figures")

    @property
    def activations_dir(self) -> Path:
        return self.subdir("activations")

    @property
    def embeddings_dir(self) -> Path:
        return self.subdir("embeddings")

    @property
    def landscapes_dir(self) -> Path:
        return self.subdir("landscapes")

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    # ---- checkpoints ------------------------------------------------------------------
    @property
    def epochs(self) -> list[int]:
        """Epochs that have a checkpoint, ascending (0 = the untrained net)."""
        folder = self.path / "checkpoints"
        if not folder.is_dir():
            return []
        found = (_EPOCH_FILE.match(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def final_epoch(self) -> int:
        """The last epoch with a checkpoint."""
        epochs = self.epochs
        if not epochs:
            raise EpochNotFoundError(f"run {self.path} has no checkpoints yet; train it first")
        return epochs[-1]

    def resolve_epoch(self, epoch: int | str) -> int:
        """Turn ``'final'``, ``'init'``, ``-1`` or a number into an epoch that exists."""
        epochs = self.epochs
        if epoch in ("final", "last", -1):
            return self.final_epoch
        if epoch in ("init", "untrained"):
            epoch = 0
        try:
            value = int(epoch)
        except (TypeError, ValueError):
            raise EpochNotFoundError(f"epoch {epoch!r} is not a number, 'init' or 'final'"
                                     ) from None
        if value not in epochs:
            have = ", ".join(map(str, epochs)) or "none"
            raise EpochNotFoundError(f"run {self.name!r} has no checkpoint for epoch {value}; "
                                     f"epochs there are: {have}")
        return value

    def checkpoint_path(self, epoch: int | str) -> Path:
        return self.path / "checkpoints" / epoch_filename(self.resolve_epoch(epoch))

    def save_checkpoint(self, epoch: int, model: nn.Module) -> Path:
        """Write the model's weights for ``epoch`` as safetensors, atomically."""
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        target = self.path / "checkpoints" / epoch_filename(epoch)
        with _io.atomic_path(target) as tmp:
            save_file(state, str(tmp), metadata={"epoch": str(epoch), "format": "pt"})
        return target

    def state_dict(self, epoch: int | str = "final") -> dict[str, torch.Tensor]:
        """The weights saved for ``epoch`` (safetensors: loading runs no code)."""
        from safetensors.torch import load_file

        path = self.checkpoint_path(epoch)
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None

    def saved_layer_table(self) -> dict[str, Any] | None:
        """The layer table saved when the run was made (``layers.json``), or None.

        Reading it runs no code: the report and ``shenjing layers`` show the model from it.
        """
        path = self.path / LAYER_TABLE
        if not path.is_file():
            return None
        try:
            data = _io.read_json(path)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # ---- code the run names ------------------------------------------------------------
    def require_trust(self) -> None:
        """Refuse (:class:`~shenjing.errors.UntrustedCodeError`) if the run names user code
        this user has not trusted, unless the run was opened with ``trust_code=True``.

        Called before anything that could import the run's code: building its model, loading
        a data factory, a user loss or target function. A zoo model needs no consent.
        """
        from shenjing import trust

        trust.require(self.manifest, self.path, trust_code=self.trust_code)

    def record_code(self) -> None:
        """Record (and trust) the user code the run names now: for a stage that adds code to
        a run this user is making (``fit`` writes its target function after training)."""
        from shenjing import trust

        self.update_manifest(code=trust.record(self.manifest, self.path))

    @property
    def data_is_code(self) -> bool:
        """Whether loading the run's data would run user code (a ``pkg.mod:make`` factory)."""
        return self.manifest.get("data", {}).get("name") == "factory"

    def build_model(self) -> nn.Module:
        """A freshly initialised model of the run's architecture (its code trusted first)."""
        from shenjing.models import build_from_spec

        spec = self.manifest["model"]
        rebuildable = "factory" in spec or (
            spec.get("rebuildable") is not False and "input_shape" in spec)
        if not rebuildable:
            cls = spec.get("class") or spec.get("name") or "the model"
            raise RunError(
                f"run {self.name!r} cannot rebuild its network: it was recorded without a "
                f"model spec ({cls} {spec.get('why') or 'is not a zoo model or a factory'}). "
                "Its checkpoints and metrics are there (dynamics, weights and report work); "
                "for the other views record it with Recorder(..., model_spec='pkg.mod:Net', "
                "model_kwargs={...}), or load the weights yourself: "
                "net.load_state_dict(run.state_dict(epoch))")
        self.require_trust()
        return build_from_spec(spec)

    def model(self, epoch: int | str = "final", *,
              device: str | torch.device = "cpu") -> nn.Module:
        """The run's model with the weights of ``epoch``, in ``eval()`` mode."""
        model = self.build_model()
        try:
            model.load_state_dict(self.state_dict(epoch))
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint of epoch {epoch} does not fit the run's "
                                  f"model: {exc}") from None
        return model.to(device).eval()

    # ---- data and metrics -------------------------------------------------------------
    @cached_property
    def data(self) -> Any:
        """The run's dataset, rebuilt from its spec (a :class:`shenjing.data.Dataset`)."""
        from shenjing.data import load_from_spec

        if self.data_is_code:
            self.require_trust()
        return load_from_spec(self.manifest["data"])

    def metrics(self) -> list[dict[str, Any]]:
        """Records of metrics.jsonl, one per epoch, in order."""
        return _io.read_jsonl(self.metrics_path)

    def __repr__(self) -> str:
        try:
            m = self.manifest
            model = m["model"].get("name") or m["model"].get("factory")
            return (f"Run({str(self.path)!r}, model={model}, data={m['data'].get('name')}, "
                    f"epochs={self.epochs})")
        except Exception:
            return f"Run({str(self.path)!r})"


def open_run(path: str | os.PathLike[str], *, trust_code: bool = False) -> Run:
    """Open an existing run directory (clear error if missing, foreign or newer).

    ``trust_code`` consents to running the user code the run names (its model factory,
    data factory, loss): see :mod:`shenjing.trust`. Without it, such code runs only if you
    created the run yourself on this machine.
    """
    return Run(path, trust_code=trust_code)


def find_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every run directory at or below ``root`` (a folder holding a run.json)."""
    root = Path(root)
    if not root.exists():
        raise RunError(f"no folder {root}")
    found = []
    for manifest in sorted(root.rglob(MANIFEST)):
        try:
            found.append(Run(manifest.parent))
        except RunError:
            continue
    return found
