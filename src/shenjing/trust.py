"""Consent before a run folder's code runs: a run folder is data, never code, unless you say so.

A run's ``run.json`` may name user code: a model factory (``model.factory``), a data factory
(``data.factory``), a loss function (``config.loss``) or a target function
(``fit/function.json``), each as ``pkg.module:name`` or ``path/to/file.py:name``. Opening
such a folder someone sent you must not run that code. The rule (like Hugging Face's
``trust_remote_code``):

- a zoo model, a built-in dataset, a built-in loss or a function *expression* is not code
  here (expressions are interpreted, never executed) and needs no consent;
- user code runs only if its source file's SHA-256 is in **your trust list** — the hashes
  of code you ran yourself: creating a run records the hash in ``run.json`` (``code``) and
  adds it to the list — or if you pass ``--trust-code`` (``trust_code=True``), which adds it
  too;
- a file whose hash differs from the one recorded in ``run.json`` (it changed since the run
  was made) is refused the same way;
- anything else is refused with one error naming the file, its hash and the flag.

The trust list is ``$SHENJING_TRUST_FILE``, else ``$XDG_CONFIG_HOME/shenjing/trusted-code.json``
(``~/.config/shenjing/trusted-code.json``). A module reference is located on ``sys.path``
(and the working folder) without importing anything; only the module's own file is hashed,
not the modules it imports.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shenjing import _io
from shenjing.errors import UntrustedCodeError

TRUST_FILE_ENV = "SHENJING_TRUST_FILE"
_FORMAT = 1


@dataclass(frozen=True)
class CodeRef:
    """One piece of user code a run names: its role, the reference, and the file that runs."""

    role: str  # "model factory", "data factory", "loss", "target function"
    ref: str
    path: Path | None  # None: the source could not be found without importing it

    @property
    def sha256(self) -> str | None:
        return file_sha256(self.path) if self.path is not None else None


def trust_file() -> Path:
    """Where this user's trust list lives."""
    explicit = os.environ.get(TRUST_FILE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shenjing" / "trusted-code.json"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_source(ref: str) -> Path | None:
    """The file ``ref`` would execute, found without importing anything (None if unknown).

    ``path/to/file.py:name`` → that file; ``pkg.mod:name`` → ``pkg/mod.py`` (or
    ``pkg/mod/__init__.py``) on ``sys.path`` or in the working folder, located with the
    path finder, which reads directories only (a package's ``__init__`` is not run).
    """
    module_ref = ref.rpartition(":")[0]
    if not module_ref:
        return None
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        return path.resolve() if path.is_file() else None
    parts = module_ref.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    search: list[str] | None = [*sys.path, str(Path.cwd())]
    spec = None
    for depth in range(1, len(parts) + 1):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth]), search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
        if depth < len(parts) and not search:
            return None
    origin = getattr(spec, "origin", None)
    if not origin or origin in ("built-in", "frozen"):
        return None
    path = Path(origin)
    return path.resolve() if path.is_file() else None


def _is_code_ref(text: Any) -> bool:
    return isinstance(text, str) and ":" in text and not text.startswith(("http:", "https:"))


def code_refs(manifest: Mapping[str, Any], run_path: Path | None = None) -> list[CodeRef]:
    """Every piece of user code the run names (zoo models and built-in names are not code)."""
    refs: list[tuple[str, str]] = []
    model = manifest.get("model") or {}
    if isinstance(model, Mapping) and model.get("factory"):
        refs.append(("model factory", str(model["factory"])))
    data = manifest.get("data") or {}
    if isinstance(data, Mapping) and data.get("name") == "factory" and data.get("factory"):
        refs.append(("data factory", str(data["factory"])))
    config = manifest.get("config") or {}
    if isinstance(config, Mapping) and _is_code_ref(config.get("loss")):
        refs.append(("loss", str(config["loss"])))
    if run_path is not None:
        function = run_path / "fit" / "function.json"
        if function.is_file():
            try:
                recipe = _io.read_json(function)
            except ValueError:
                recipe = {}
            if isinstance(recipe, Mapping) and recipe.get("kind") == "module" \
                    and _is_code_ref(recipe.get("function")):
                refs.append(("target function", str(recipe["function"])))
    return [CodeRef(role, ref, locate_source(ref)) for role, ref in refs]


# ---- the trust list -------------------------------------------------------------------------
def _read_list() -> dict[str, Any]:
    path = trust_file()
    if not path.is_file():
        return {}
    try:
        data = _io.read_json(path)
    except (OSError, ValueError):
        return {}  # an unreadable list trusts nothing
    trusted = data.get("trusted") if isinstance(data, Mapping) else None
    return dict(trusted) if isinstance(trusted, Mapping) else {}


def is_trusted(sha256: str) -> bool:
    """Whether this user has run code with this hash through shenjing (or consented to it)."""
    return sha256 in _read_list()


def trust(refs: list[CodeRef]) -> None:
    """Add the current hashes of ``refs`` to the trust list (atomic write)."""
    entries = {ref.sha256: ref for ref in refs if ref.sha256 is not None}
    if not entries:
        return
    trusted = _read_list()
    if all(h in trusted for h in entries):
        return
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for digest, ref in entries.items():
        trusted.setdefault(digest, {"ref": ref.ref, "path": str(ref.path), "added": now})
    target = trust_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    _io.write_json(target, {"format": _FORMAT, "trusted": trusted})


def record(manifest: Mapping[str, Any], run_path: Path | None = None) -> list[dict[str, Any]]:
    """``run.json``'s ``code`` entry for a run being created by this user, who thereby
    trusts the code (its hashes join the trust list)."""
    refs = code_refs(manifest, run_path)
    trust(refs)
    return [{"role": r.role, "ref": r.ref, "path": str(r.path) if r.path else None,
             "sha256": r.sha256} for r in refs]


def _recorded(manifest: Mapping[str, Any]) -> dict[tuple[str, str], str | None]:
    out: dict[tuple[str, str], str | None] = {}
    for entry in manifest.get("code") or []:
        if isinstance(entry, Mapping):
            out[(str(entry.get("role")), str(entry.get("ref")))] = entry.get("sha256")
    return out


def untrusted(manifest: Mapping[str, Any], run_path: Path) -> Iterator[tuple[CodeRef, str]]:
    """Each piece of the run's code that may not run without consent, with the reason."""
    recorded = _recorded(manifest)
    for ref in code_refs(manifest, run_path):
        digest = ref.sha256
        if digest is None:
            yield ref, "its source file cannot be found to check it"
            continue
        if is_trusted(digest):
            continue
        was = recorded.get((ref.role, ref.ref))
        if was is not None and was != digest and is_trusted(was):
            yield ref, f"it changed since the run was made (recorded SHA-256 {was[:16]}…)"
        else:
            yield ref, "you have not run it yourself on this machine"


def require(manifest: Mapping[str, Any], run_path: Path, *, trust_code: bool) -> None:
    """Refuse (UntrustedCodeError) unless every piece of the run's code may run.

    With ``trust_code`` the code is allowed and its hashes join the trust list.
    """
    problems = list(untrusted(manifest, run_path))
    if not problems:
        return
    if trust_code:
        trust([ref for ref, _ in problems])
        return
    ref, why = problems[0]
    where = f"file {ref.path}, SHA-256 {ref.sha256}" if ref.path is not None else \
        "source not found"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise UntrustedCodeError(
        f"run {run_path} names {ref.role} code {ref.ref!r} ({where}){more} and {why}. A run "
        "folder is data: its code runs only with your consent. Read the file, then pass "
        "--trust-code (Python: trust_code=True)")


__all__ = ["TRUST_FILE_ENV", "CodeRef", "code_refs", "file_sha256", "is_trusted",
           "locate_source", "record", "require", "trust", "trust_file", "untrusted"]
