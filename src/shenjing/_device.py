"""``resolve_device``: the one place that turns ``--device`` into a ``torch.device``.

A stage resolves its ``device`` argument once, as it starts, and hands the
``torch.device`` to everything below it (the model, the analysis), so ``"auto"`` means
one device for the whole stage.
"""

from __future__ import annotations

import torch

from shenjing.errors import UsageError


def resolve_device(device: str | torch.device = "auto", *,
                   option: str | None = None) -> torch.device:
    """``'auto'`` → CUDA if available, else CPU; other strings as ``torch.device``.

    Asking for CUDA where there is none is a usage error that says what to pass instead;
    ``option`` (``"--device"``) names the option the value came from at the start of it.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    try:
        return _resolve(device)
    except UsageError as exc:
        if option is None:
            raise
        raise UsageError(f"{option} {device!r}: {exc}") from None


def _resolve(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but CUDA is not available here; "
                         "use --device cpu or auto")
    return dev
