"""The run directory: everything known about one study of a model, as files.

    runs/<name>/
      run.json              manifest: model spec, data spec, seed, versions, stage status
      checkpoints/          epoch-000.safetensors (untrained) … epoch-NNN.safetensors,
                            state-NNN.pt (optimizer + RNG, for --resume)
      metrics.jsonl         one JSON object per epoch
      activations/ embeddings/ landscapes/ figures/   written by later stages
      report.html
      .lock                 the writer lock (pid and start of the process writing the run)

See docs/run-format.md and docs/reliability.md. Every write is atomic (temporary file, then
rename). One process writes a run at a time: writers hold the run's lock
(:func:`writer_lock`, taken by :meth:`Run.running_stage`, the trainer and the Recorder), so
a second writer is refused with one line; readers never take it. ``--force`` deletes a run
only through :func:`remove_run`, which deletes nothing that shenjing did not write.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import platform
import re
import shutil
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    RunLockedError,
    ShenjingError,
    UsageError,
)

if TYPE_CHECKING:
    from shenjing.data.types import Dataset

FORMAT_VERSION = 1
_EPOCH0_WORDS = {"trained": "untrained", "fresh": "fresh init", "weights": "init weights",
                 "checkpoints": "first checkpoint"}
MANIFEST = "run.json"
LAYER_TABLE = "layers.json"  # the model's layer table, saved when the run is made
_EPOCH_FILE = re.compile(r"^epoch-(\d{3,})\.safetensors$")
SUBDIRS = ("checkpoints", "activations", "embeddings", "landscapes", "figures")
#: the top-level files a run holds (besides temporary files and the lock)
RUN_FILES = (MANIFEST, LAYER_TABLE, "metrics.jsonl", "report.html")
#: the top-level folders the stages write (a stage that adds one adds it here, so that
#: ``--force`` may delete it)
RUN_FOLDERS = (*SUBDIRS, "maps", "fit", "warp", "dynamics", "gan")
#: the kinds of file the stages write inside those folders
RUN_FILE_SUFFIXES = (".safetensors", ".pt", ".npy", ".npz", ".json", ".jsonl", ".png",
                     ".svg", ".pdf", ".gif", ".html", ".tsv", ".pbtxt", ".vtk")
LOCK_FILE = ".lock"
#: how long a manifest update waits for another process's brief update (seconds)
MANIFEST_WAIT = 10.0


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
        read_manifest(self.path)

    # ---- creation and manifest ------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, model: Mapping[str, Any],
               data: Mapping[str, Any], seed: int = 0, task: str = "classification",
               classes: tuple[str, ...] | list[str] = (),
               config: Mapping[str, Any] | None = None, overwrite: bool = False) -> Run:
        """Create a new run directory (refusing to clobber an existing run unless asked, and
        to write into a folder that is not a run)."""
        path = Path(path)
        if (path / MANIFEST).exists() and not overwrite:
            raise RunError(f"{path} already holds a run; pass --resume to continue it, "
                           "--force to start over, or choose another --run folder")
        with writer_lock(path):
            for sub in SUBDIRS:
                _io.make_folder(path / sub)
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
        return read_manifest(self.path)

    def update_manifest(self, **fields: Any) -> None:
        """Set top-level manifest fields atomically, under the writer lock (waiting up to
        :data:`MANIFEST_WAIT` seconds for another process's update, so none is lost)."""
        with writer_lock(self.path, wait=MANIFEST_WAIT):
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
        """Record a stage's status and details (read, changed and written back under the
        writer lock, so two processes' updates are never lost).

        ``status`` is ``running``, ``done``, ``failed`` (with ``error``: what went wrong) or
        ``skipped`` (with ``reason``: why the view does not apply to this model).
        """
        with writer_lock(self.path, wait=MANIFEST_WAIT):
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
        """Hold the run's writer lock and mark stage ``name`` running for the block; if the
        block raises, mark it failed with the error and re-raise (the block marks it done
        itself, with its results). Every stage runs its work in this block, so no stage
        ends still saying ``running``.

        Another process writing the run refuses the block at once
        (:class:`~shenjing.errors.RunLockedError`, nothing marked). On entry, temporary files
        that killed writers left in the run are deleted. A
        :class:`~shenjing.errors.NotApplicableError` marks it ``skipped`` with the
        message as the reason instead (and is re-raised too). Any other usage error (bad
        input found inside the block, a refused run folder) puts the stage's record back as
        it was, so bad input changes nothing in the run; if run.json was written since the
        stage was marked, it cannot be put back without losing that write, and the stage is
        marked failed with the error instead.
        """
        with writer_lock(self.path):
            self.sweep_stale_temps()
            before = (self.path / MANIFEST).read_bytes()
            self.update_stage(name, "running", **info)
            marked = (self.path / MANIFEST).read_bytes()
            try:
                with epoch0_called(self.epoch0_words):  # figures name epoch 0 for what it is
                    yield
            except NotApplicableError as exc:
                self.update_stage(name, "skipped", reason=str(exc))
                raise
            except UsageError as exc:
                if (self.path / MANIFEST).read_bytes() == marked:  # nobody wrote since: undo
                    _io.write_bytes(self.path / MANIFEST, before)
                else:
                    record_failure(self, name, exc)
                raise
            except BaseException as exc:
                record_failure(self, name, exc)
                raise

    def sweep_stale_temps(self) -> list[Path]:
        """Delete the temporary files that killed writers left in the run (their pid is
        gone); return them. Run by every stage as it starts (:meth:`running_stage`)."""
        return _io.sweep_stale_temps(self.path)

    # ---- folders ----------------------------------------------------------------------
    def subdir(self, name: str) -> Path:
        """A stage folder of the run (created on demand; a file in its place is one
        :class:`~shenjing.errors.RunError` naming it)."""
        return _io.make_folder(self.path / name)

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
            if folder.exists():
                raise RunError(f"{folder} is a file, where shenjing keeps the run's "
                               "checkpoints folder; move that file away")
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
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        target = self.path / "checkpoints" / epoch_filename(epoch)
        # the metadata in a stable order: identical weights give identical bytes
        return _io.save_safetensors(target, state,
                                    metadata={"epoch": str(epoch), "format": "pt"})

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
        """The run's dataset (a :class:`shenjing.data.Dataset`): the one given to
        :meth:`attach_data`, else rebuilt from its spec on first use and kept."""
        from shenjing.data import load_from_spec

        if self.data_is_code:
            self.require_trust()
        return load_from_spec(self.manifest["data"])

    def attach_data(self, dataset: Dataset) -> None:
        """Give the run its dataset, already in memory, so that :attr:`data` returns it
        instead of rebuilding it from the spec (reading files again, or running the data
        factory the run names). For the caller that has just loaded the data the run was
        made from (``inspect``); it must be that data, or every view would show another."""
        self.__dict__["data"] = dataset  # what functools.cached_property reads first

    @property
    def data_loaded(self) -> bool:
        """Whether :attr:`data` is in memory (loaded, or given with :meth:`attach_data`):
        reading it then loads no file and runs no code. Asking loads nothing."""
        return "data" in self.__dict__

    def metrics(self) -> list[dict[str, Any]]:
        """Records of metrics.jsonl, one per epoch, in order.

        A line that is not a JSON object, has no whole-number ``epoch``, or does not come
        after the line before it (epochs strictly increase: two writers, or a file pasted
        together, break that) is refused with one :class:`~shenjing.errors.RunError` naming
        the file and the line.
        """
        return read_metrics(self.metrics_path)

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


# ---- reading a run's files ---------------------------------------------------------------
def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``run.json`` of the run folder ``path``, checked to be shenjing's (a JSON
    object with ``format_version``, of a format this shenjing reads); else one
    :class:`~shenjing.errors.RunError` saying what the folder is."""
    path = Path(path)
    manifest = path / MANIFEST
    if not path.is_dir():
        if path.exists():
            raise RunError(f"{path} is a file, not a run directory; pass the folder that "
                           "`shenjing train --run` created")
        raise RunError(f"no run directory at {path}; create one with "
                       f"`shenjing train --run {path}`")
    if not manifest.is_file():
        raise RunError(f"{path} is not a shenjing run (no {MANIFEST}); "
                       "pass the folder that `shenjing train --run` created")
    damaged = ("restore run.json from a copy, or delete the folder and create the run "
               "again (shenjing will not guess what it held)")
    try:
        data = _io.read_json(manifest)
    except ValueError as exc:
        raise RunError(f"{path} is not a readable shenjing run: {manifest} is not valid "
                       f"JSON ({exc}); {damaged}") from None
    except OSError as exc:
        raise RunError(f"cannot read {manifest}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise RunError(f"{manifest} is not a shenjing manifest (no format_version): the "
                       "folder belongs to another tool, or its run.json was damaged; pass "
                       "the folder that `shenjing train --run` created, or delete the folder "
                       "and create the run again")
    version = data["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunError(f"{manifest}: format_version {version!r} is not a whole number; "
                       "this is not a run.json shenjing wrote")
    if version > FORMAT_VERSION:
        shenjing_version = (data.get("versions") or {}).get("shenjing", "?") \
            if isinstance(data.get("versions"), dict) else "?"
        raise RunError(
            f"{path} was written in run format {version} by shenjing {shenjing_version}; "
            f"this shenjing ({__version__}) reads format {FORMAT_VERSION}: upgrade shenjing")
    return data


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (``[]`` if there is none), each checked: a JSON
    object with a whole-number ``epoch`` greater than the line before's. A bad line is one
    :class:`~shenjing.errors.RunError` naming the file and the line."""
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    previous: tuple[int, int] | None = None  # (epoch, line)
    fix = ("delete that line and the ones after it, then `shenjing train --resume` redoes "
           "those epochs (or start over with --force)")
    try:
        for line, record in _io.iter_jsonl(path):
            epoch = record.get("epoch")
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise RunError(f"{path} line {line}: no whole-number 'epoch' (got "
                               f"{epoch!r:.40}); every line is one epoch's record. {fix}")
            if previous is not None and epoch <= previous[0]:
                raise RunError(
                    f"{path} line {line}: epoch {epoch} after epoch {previous[0]} (line "
                    f"{previous[1]}); epochs must increase, so the file was written twice or "
                    f"by two processes at once. {fix}")
            previous = (epoch, line)
            records.append(record)
    except _io.JsonLinesError as exc:
        raise RunError(f"{exc.path} line {exc.line}: {exc.problem}; the file is damaged. "
                       f"{fix}") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    return records


def record_failure(run: Run, stage: str, exc: BaseException) -> None:
    """Mark ``stage`` failed with ``exc`` as its error, if run.json can still be written (on
    a full or read-only disk it may not be: the original error is what the user needs)."""
    with contextlib.suppress(ShenjingError, OSError):
        run.update_stage(stage, "failed", error=f"{type(exc).__name__}: {exc}")


# ---- the writer lock ----------------------------------------------------------------------
@dataclass
class _Held:
    """A lock this process holds: the lock file, its descriptor, how many holds share it."""

    path: Path
    fd: int
    depth: int


_HELD: dict[str, _Held] = {}  # realpath of the run folder → the lock held on it
_REGISTRY = threading.Lock()  # guards _HELD
_ACQUIRING = threading.Lock()  # one acquisition at a time in this process


def _forget_locks_in_child() -> None:
    """In a forked child: close the inherited lock files without unlocking them, so the
    lock stays the parent's and ends with it (a child never holds a run by accident)."""
    global _REGISTRY, _ACQUIRING
    for held in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _HELD.clear()
    _REGISTRY, _ACQUIRING = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


class RunLock:
    """One hold of a run's writer lock; :meth:`release` once (later calls do nothing).

    Holds nest within a process (a stage inside ``inspect``, ``update_stage`` inside a
    stage): when the last hold is released the lock file is deleted and unlocked, so a run
    nobody writes has none; when the process ends any other way, the kernel unlocks it (the
    file, naming the dead writer, is taken over by the next one).
    """

    def __init__(self, key: str, folder: Path) -> None:
        self._key = key
        self.folder = folder
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _REGISTRY:
            held = _HELD.get(self._key)
            if held is None:  # forgotten in a forked child
                return
            held.depth -= 1
            if held.depth == 0:
                del _HELD[self._key]
                # delete, then unlock: a process that opened the file meanwhile finds it
                # gone once it has the lock (see _try_lock) and starts again
                if _same_file(held.fd, held.path):
                    with contextlib.suppress(OSError):
                        held.path.unlink()
                os.close(held.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_key(folder: Path) -> str:
    return os.path.realpath(folder)


def _holder_note() -> bytes:
    """What the lock file says about its holder: pid, host, since when, which command."""
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
    return (json.dumps({"pid": os.getpid(), "host": platform.node(), "since": _now(),
                        "command": command[:200]}) + "\n").encode()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder_alive(holder: Mapping[str, Any]) -> bool:
    """Whether the process the lock file names still runs (True when it cannot be told: a
    pid on another machine, or none written yet)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host", platform.node()) != platform.node():
        return True
    return _io.pid_alive(pid)


def _check_lockable(folder: Path) -> None:
    """Refuse to put a lock file into a folder that is not a shenjing run (nor empty, nor
    new): writing into another tool's folder is what ``--force`` must never do."""
    check_run_folder(folder)
    _io.make_folder(folder)


def check_run_folder(folder: str | os.PathLike[str]) -> None:
    """Refuse (one :class:`~shenjing.errors.RunError`) a folder a run cannot be written
    into: a file, a run.json that is not shenjing's, or another tool's folder (anything but
    what a run being created leaves: :func:`_leftover`). Reads only, so a stage can call it
    before loading its data."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder} is a file, not a run directory; choose another --run folder")
    if (folder / MANIFEST).exists():
        read_manifest(folder)
        return
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if not _leftover(p))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
            raise RunError(f"{folder} exists and is not a shenjing run (it holds {shown}); "
                           "refusing to write into it. Choose an empty or new folder")


def _leftover(entry: Path) -> bool:
    """What a run being created may leave before its run.json is written (the lock, a
    temporary file, an empty run folder): not a reason to call the folder foreign."""
    if entry.name == LOCK_FILE or _io.is_temp_file(entry.name):
        return True
    return entry.name in RUN_FOLDERS and entry.is_dir() and not entry.is_symlink() and \
        not any(entry.iterdir())


def _locked_error(folder: Path, holder: Mapping[str, Any]) -> RunLockedError:
    pid = holder.get("pid", "?")
    since = holder.get("since", "an unknown time")
    command = holder.get("command")
    doing = f", `{command}`" if command else ""
    return RunLockedError(f"run {folder} is being written by pid {pid} (since {since}"
                          f"{doing}); wait for it to finish, or stop it (kill {pid}), then "
                          "run this command again")


def _try_lock(folder: Path) -> tuple[int | None, dict[str, Any]]:
    """Take the lock file's exclusive lock without waiting: ``(fd, {})``, or ``(None,
    holder)`` if a live process holds it. A lock whose recorded writer is dead is taken
    over (its file replaced)."""
    path = folder / LOCK_FILE
    for _ in range(20):  # a file deleted or replaced under us is tried again at once
        with _io.translated_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                         _io.file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            if not _same_file(fd, path):  # its holder is releasing it: look again
                os.close(fd)
                continue
            if _holder_alive(holder):
                os.close(fd)
                return None, holder
            # the writer named there is dead, yet its lock lives on (a child it forked
            # outside Python holds the file): replace the file, so the lock is ours
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            continue
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            # a filesystem without locks: the pid written in the file is the lock
            holder = _read_holder(fd)
            if holder.get("pid") not in (None, os.getpid()) and _holder_alive(holder):
                os.close(fd)
                return None, holder
        if not _same_file(fd, path):  # replaced meanwhile by a take-over: start again
            os.close(fd)
            continue
        return fd, {}
    raise RunError(f"cannot take the writer lock {path}: it keeps being replaced by another "
                   "process; run one command at a time on this run")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except OSError:
        return False


def acquire_writer_lock(folder: str | os.PathLike[str], *, wait: float = 0.0) -> RunLock:
    """Hold ``folder``'s writer lock (``RUN/.lock``), or raise
    :class:`~shenjing.errors.RunLockedError` naming the process that holds it.

    ``wait`` seconds are spent retrying first (for a brief holder, such as another
    process's manifest update); 0 refuses at once (a second command on a run). The lock is
    an ``fcntl.flock`` on the file, so the kernel drops it when its process ends, however
    it ends: a killed writer never leaves a run locked (its file, naming it, is taken over
    by the next writer). The file names the holder (pid, host, since, command) for the
    message a second writer gets, and is deleted when the last hold is released. The folder
    must be a shenjing run, empty or new; a new one is created.
    """
    folder = Path(folder)
    key = _lock_key(folder)
    with _REGISTRY:
        held = _HELD.get(key)
        if held is not None:
            held.depth += 1
            return RunLock(key, folder)
    with _ACQUIRING:
        with _REGISTRY:  # another thread of this process may have taken it meanwhile
            held = _HELD.get(key)
            if held is not None:
                held.depth += 1
                return RunLock(key, folder)
        _check_lockable(folder)
        key = _lock_key(folder)  # the folder may have just been created
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            fd, holder = _try_lock(folder)
            if fd is not None:
                break
            if time.monotonic() >= deadline:
                raise _locked_error(folder, holder)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_note(), 0)
        except OSError:
            pass  # the note is for messages only; the lock itself is held
        with _REGISTRY:
            _HELD[key] = _Held(folder / LOCK_FILE, fd, 1)
    return RunLock(key, folder)


@contextmanager
def writer_lock(folder: str | os.PathLike[str], *, wait: float = 0.0) -> Iterator[RunLock]:
    """Hold ``folder``'s writer lock for the block (see :func:`acquire_writer_lock`).

    >>> import tempfile; d = Path(tempfile.mkdtemp()) / "r"
    >>> with writer_lock(d):
    ...     (d / ".lock").is_file()
    True
    """
    lock = acquire_writer_lock(folder, wait=wait)
    try:
        yield lock
    finally:
        lock.release()


def hold_writer_lock(owner: object, folder: str | os.PathLike[str]) -> RunLock:
    """Hold ``folder``'s writer lock for as long as ``owner`` lives (or until the returned
    lock is released): for an object that writes a run across many calls (the Recorder)."""
    lock = acquire_writer_lock(folder)
    weakref.finalize(owner, lock.release)
    return lock


# ---- deleting a run (--force) --------------------------------------------------------------
def foreign_entries(path: str | os.PathLike[str]) -> list[str]:
    """What a run folder holds that shenjing does not write, as paths relative to it:
    anything but the run's files (:data:`RUN_FILES`), its folders (:data:`RUN_FOLDERS`)
    holding the kinds of file the stages write (:data:`RUN_FILE_SUFFIXES`), temporary files
    and the lock. Links count as foreign (shenjing writes none)."""
    path = Path(path)
    found: list[str] = []
    for entry in sorted(path.iterdir()):
        name = entry.name
        if entry.is_symlink():
            found.append(f"{name} (a link)")
        elif entry.is_dir():
            if name not in RUN_FOLDERS:
                found.append(f"{name}/")
            else:
                found += _foreign_in_folder(entry, name)
        elif name not in RUN_FILES and name != LOCK_FILE and not _io.is_temp_file(name):
            found.append(name)
    return found


def _foreign_in_folder(folder: Path, shown: str) -> list[str]:
    found: list[str] = []
    for entry in sorted(folder.iterdir()):
        rel = f"{shown}/{entry.name}"
        if entry.is_symlink():
            found.append(f"{rel} (a link)")
        elif entry.is_dir():
            found += _foreign_in_folder(entry, rel)
        elif not entry.is_file():
            found.append(f"{rel} (not a regular file)")
        elif not (entry.suffix in RUN_FILE_SUFFIXES or _io.is_temp_file(entry.name)):
            found.append(rel)
    return found


def check_removable(path: str | os.PathLike[str]) -> None:
    """Refuse (one :class:`~shenjing.errors.RunError` saying why) unless ``path`` is a
    shenjing run that :func:`remove_run` may delete: a real folder (not a link) whose
    run.json is shenjing's, holding nothing foreign (:func:`foreign_entries`). Reads only.
    """
    path = Path(path)
    if path.is_symlink():
        raise RunError(f"--force: {path} is a link; refusing to delete through it. Pass the "
                       "run folder itself")
    if not (path / MANIFEST).is_file():
        raise RunError(f"--force: {path} is not a shenjing run (no {MANIFEST}); refusing to "
                       "delete it. Choose another folder, or delete it yourself")
    try:
        read_manifest(path)
    except RunError as exc:
        raise RunError(f"--force: refusing to delete {path}: {exc}") from None
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                          if len(foreign) > 5 else "")
        raise RunError(f"--force: refusing to delete {path}: it holds what shenjing does "
                       f"not write ({shown}); move those out of the folder, or delete it "
                       "yourself")


def remove_run(path: str | os.PathLike[str]) -> None:
    """Delete a shenjing run's contents, for ``--force``: only what :func:`check_removable`
    accepts, and only while holding its writer lock (another process writing it is
    refused). Otherwise one :class:`~shenjing.errors.RunError` says why, and nothing is
    deleted or written.

    The folder itself is kept, empty but for its lock file, so the lock stays held by the
    caller that starts the run over in it.
    """
    path = Path(path)
    check_removable(path)  # before the lock file is written into it
    with writer_lock(path):
        check_removable(path)  # again: nobody can add to it now
        for entry in path.iterdir():
            if entry.name == LOCK_FILE:
                continue
            with _io.translated_errors(entry):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


# ---- finding runs --------------------------------------------------------------------------
def _manifests_below(root: Path) -> list[Path]:
    """Every run.json at or below ``root`` (links not followed, unreadable folders skipped)."""
    found = []
    for folder, dirs, files in os.walk(root, onerror=lambda _e: None):
        dirs.sort()
        if MANIFEST in files:
            found.append(Path(folder) / MANIFEST)
    return sorted(found)


def find_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every readable run directory at or below ``root`` (a folder holding a shenjing
    run.json); :func:`list_runs` also lists the broken ones, with the reason."""
    root = Path(root)
    if not root.exists():
        raise RunError(f"no folder {root}")
    found = []
    for manifest in _manifests_below(root):
        try:
            found.append(Run(manifest.parent))
        except RunError:
            continue
    return found


@dataclass(frozen=True)
class RunListing:
    """One line of ``shenjing runs``: a run's summary, or why it cannot be read."""

    path: Path
    model: str = "-"
    data: str = "-"
    final_epoch: int | None = None
    best_accuracy: float | None = None
    train_status: str = "-"
    #: why the run could not be read (None: it could)
    problem: str | None = None


def list_runs(root: str | os.PathLike[str]) -> list[RunListing]:
    """A summary of every folder at or below ``root`` holding a run.json; a run that cannot
    be read (a damaged run.json or metrics.jsonl, a file where a folder should be) is
    listed with the reason, and never stops the others from being listed."""
    root = Path(root)
    if not root.is_dir():
        raise RunError(f"no folder {root}; pass the folder that holds your runs (by default "
                       "`runs`, where `shenjing train` puts them)" if not root.exists() else
                       f"{root} is a file; pass the folder that holds your runs")
    return [_listing(manifest.parent) for manifest in _manifests_below(root)]


def _listing(path: Path) -> RunListing:
    try:
        run = Run(path)
        m = run.manifest
        model, data = m.get("model"), m.get("data")
        if not isinstance(model, dict) or not isinstance(data, dict):
            raise RunError(f"{path / MANIFEST}: 'model' and 'data' must be JSON objects")
        stages: dict[str, Any] = m["stages"] if isinstance(m.get("stages"), dict) else {}
        train: dict[str, Any] = stages["train"] if isinstance(stages.get("train"), dict) \
            else {}
        accs = [r["test_accuracy"] for r in run.metrics()
                if isinstance(r.get("test_accuracy"), (int, float))]
        epochs = run.epochs
        return RunListing(path, model=str(model.get("name") or model.get("factory") or "-"),
                          data=str(data.get("name") or "-"),
                          final_epoch=epochs[-1] if epochs else None,
                          best_accuracy=max(accs) if accs else None,
                          train_status=str(train.get("status", "-")))
    except (ShenjingError, OSError, ValueError) as exc:
        return RunListing(path, problem=str(exc) if isinstance(exc, ShenjingError)
                          else f"{type(exc).__name__}: {exc}")
