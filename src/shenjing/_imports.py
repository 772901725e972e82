"""Import a user's ``pkg.module:name`` or ``path/to/file.py:name`` reference.

One implementation for every option that names user code (``--model``, ``--data``,
``--function``, ``--loss``), so all of them find modules the same way, never write
``__pycache__`` next to the user's files, and explain failures the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shenjing.errors import UsageError, did_you_mean


@contextlib.contextmanager
def no_bytecode() -> Iterator[None]:
    """Import a user's code without writing ``__pycache__`` next to it."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def where(exc: BaseException) -> str:
    """`` (at file.py:12)``: the innermost frame of a user's exception, for messages."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {Path(last.filename).name}:{last.lineno})"


def load_file_module(path: Path, ref: str, *, kind: str = "model",
                     option: str = "--model") -> Any:
    """Execute a ``.py`` file as a module once per (path, modification time)."""
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    mod_name = f"_shenjing_user_{resolved.stem}_{digest}"
    mtime = resolved.stat().st_mtime_ns
    cached = sys.modules.get(mod_name)
    if cached is not None and getattr(cached, "__shenjing_mtime__", None) == mtime:
        return cached
    spec = importlib.util.spec_from_file_location(mod_name, resolved)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as Python (from {option} {ref!r})")
    module = importlib.util.module_from_spec(spec)
    module.__shenjing_mtime__ = mtime  # type: ignore[attr-defined]
    sys.modules[mod_name] = module
    try:
        with no_bytecode():
            spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a script's sys.exit() at import, too
        sys.modules.pop(mod_name, None)
        raise UsageError(f"{kind} file {path} failed while being imported: "
                         f"{type(exc).__name__}: {exc}{where(exc)}. Fix the file, or check "
                         f"that it runs with `python {path}`") from None
    return module


def import_module(module_ref: str, ref: str, *, option: str = "--model") -> Any:
    """Import a module by name; a module in the current folder is found too."""
    try:
        with no_bytecode():
            return importlib.import_module(module_ref)
    except ModuleNotFoundError as exc:
        top = module_ref.split(".")[0]
        cwd = str(Path.cwd())
        if exc.name == top and cwd not in sys.path:
            # like `python -m`, let a module in the working folder be found
            sys.path.append(cwd)
            try:
                with no_bytecode():
                    return importlib.import_module(module_ref)
            except ModuleNotFoundError:
                pass
        raise UsageError(f"cannot import module {module_ref!r} for {option} {ref!r} "
                         f"({exc}). Is the package installed, or its folder on PYTHONPATH? "
                         "A single file can be named as path/to/file.py:name") from None
    except (Exception, SystemExit) as exc:
        raise UsageError(f"importing {module_ref!r} for {option} {ref!r} raised "
                         f"{type(exc).__name__}: {exc}{where(exc)}. Fix the module, or check "
                         f"that `python -c 'import {module_ref}'` works") from None


def import_reference(ref: str, *, kind: str = "model", option: str = "--model") -> Any:
    """The object ``ref`` names: ``pkg.module:name`` or ``path/to/file.py:name``.

    ``name`` may be dotted (``module:Outer.build``). ``kind`` and ``option`` only shape
    the error messages (``model``/``--model``, ``data``/``--data`` …).

    >>> import_reference("math:sqrt")(9.0)
    3.0
    """
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise UsageError(f"{option} {ref!r} must look like 'pkg.module:name' or "
                         "'path/to/file.py:name'")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise UsageError(f"{option} {ref!r}: the {kind} file {path} does not exist; check "
                             "the path (relative to the current folder)")
        module = load_file_module(path, ref, kind=kind, option=option)
    else:
        module = import_module(module_ref, ref, option=option)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise UsageError(
                f"{module_ref!r} has no attribute {attr!r} (from {option} {ref!r})."
                f"{did_you_mean(part, public)} It defines: {', '.join(public[:30])}"
            ) from None
    return obj
