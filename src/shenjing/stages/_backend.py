"""The compute backend a heavy stage runs on, connected before the stage writes anything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from shenjing.backend import Backend, make_backend, ray_session


@contextlib.contextmanager
def backend_session(backend: Backend) -> Iterator[dict[str, Any]]:
    """For the block: nothing for ``local``; for ``ray``, the cluster connected (or a local
    Ray instance started) and its resources checked. Entered before
    ``run.running_stage``, so an unreachable address or a cluster without the GPUs asked
    for is refused before any file of the run changes. Yields what the stage records
    about the backend (``{"backend": "local"}``, or the cluster's description)."""
    if not backend.is_ray:
        yield {"backend": "local"}
        return
    with ray_session(backend) as cluster:
        yield {"backend": "ray", "cluster": cluster.describe()}


def stage_backend(backend: str | Backend | None, ray_address: str | None) -> Backend:
    """A stage's ``backend`` / ``ray_address`` arguments as a checked :class:`Backend`."""
    return make_backend(backend, ray_address=ray_address)


__all__ = ["backend_session", "stage_backend"]
