"""Fetch a file over HTTP(S), verify its SHA-256, and only then put it in place.

The bytes go to a temporary file beside the target; a checksum mismatch or a broken
connection deletes it, so the target is never a half or wrong file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from shenjing import _io
from shenjing.errors import ChecksumError, DataError

_CHUNK = 1 << 16


def download(urls: Sequence[str], target: str | os.PathLike[str], sha256: str, *,
             timeout: float = 30.0, progress: bool = True) -> Path:
    """Download the first URL that answers into ``target`` and verify its SHA-256.

    Tries each mirror in turn. Raises :class:`ChecksumError` (nothing left behind) when the
    bytes do not hash to ``sha256``, :class:`DataError` when no mirror can be reached.
    """
    target = Path(target)
    errors: list[str] = []
    for url in urls:
        try:
            with _io.atomic_path(target) as tmp:
                got = _fetch(url, tmp, timeout=timeout, progress=progress)
                if got != sha256:
                    raise ChecksumError(
                        f"{target.name} from {url} has SHA-256 {got}, expected {sha256}; "
                        "the file was discarded. The mirror may be corrupt: try again later or "
                        f"place a verified copy at {target}"
                    )
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
    raise DataError(f"could not download {target.name}: " + "; ".join(errors))


def _fetch(url: str, dest: Path, *, timeout: float, progress: bool) -> str:
    """Stream ``url`` into ``dest`` with a Rich progress bar; return the SHA-256 of the bytes."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
            bar = Progress("[progress.description]{task.description}", BarColumn(),
                           DownloadColumn(), TransferSpeedColumn(), transient=True)
            bar.start()
            task = bar.add_task(f"download {dest.name.split('.tmp')[0].lstrip('.')}",
                                total=total)
        try:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                digest.update(block)
                if bar is not None:
                    bar.advance(task, len(block))
        finally:
            if bar is not None:
                bar.stop()
    return digest.hexdigest()
