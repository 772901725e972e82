"""Option parsing shared by CLI commands."""

from __future__ import annotations

from typing import Any

from shenjing.errors import UsageError

TRUST_CODE_HELP = ("Run the code this run folder names (its model factory, data factory, loss "
                   "or function file) although you did not create the run on this machine. A "
                   "run folder is data: read that code first.")


def trust_code_option() -> Any:
    """``--trust-code``: consent to the run folder's code (see shenjing.trust)."""
    import typer

    return typer.Option(False, "--trust-code", help=TRUST_CODE_HELP)


def parse_epochs(text: str) -> list[int | str]:
    """``'0,5'`` → ``[0, 5]``; ``'init,final'`` kept as words for ``Run.resolve_epoch``."""
    out: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        out.append(int(part) if part.lstrip("-").isdigit() else part)
    if not out:
        raise UsageError(f"--epochs {text!r} names no epoch; use e.g. --epochs 0,5")
    return out


def parse_list(text: str | None) -> list[str]:
    """``'fc1, conv1'`` → ``['fc1', 'conv1']`` (empty for None)."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_range(text: str) -> tuple[float, float]:
    """``'-0.5:1.5'`` → ``(-0.5, 1.5)``, refusing min ≥ max."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"range {text!r} must look like MIN:MAX, e.g. -1:1") from None
    if not lo < hi:
        raise UsageError(f"range {text!r} has min ≥ max; use MIN:MAX with MIN < MAX")
    return lo, hi
