"""The Ray backend's options, declared once for every heavy command, and what they print."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

BACKEND = typer.Option("local", "--backend", help="local (this machine) or ray (a Ray "
                       "cluster: --ray-address, or a local Ray instance; docs/scale.md).")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="auto (the cluster this machine "
                           "joined) or HOST:PORT of the head node [start a local Ray "
                           "instance].")
RAY_WORKERS = typer.Option(None, "--ray-workers", help="Ray workers (actors) to start [as "
                           "many as the cluster holds].")
RAY_CPUS = typer.Option(None, "--ray-cpus", help="CPUs per Ray worker; also its torch "
                        "threads [1].")
RAY_GPUS = typer.Option(None, "--ray-gpus", help="GPUs per Ray worker, fractions allowed "
                        "(0.5: two workers share a GPU) [0].")
TILE = typer.Option(None, "--tile", help="Grid points per Ray task [sized to ~1 s of "
                    "compute each].")


def backend_of(backend: str, *, ray_address: str | None = None, workers: int | None = None,
               num_cpus: float | None = None, num_gpus: float | None = None,
               tile: int | None = None) -> Any:
    """The checked :class:`~shenjing.backend.Backend` of a command's options."""
    from shenjing.backend import make_backend

    return make_backend(backend, ray_address=ray_address, workers=workers,
                        num_cpus=num_cpus, num_gpus=num_gpus, tile=tile)


def print_backend(record: dict[str, Any] | None, out: Console) -> None:
    """The cluster and each Ray worker's throughput, from a result's backend record."""
    if not record:
        return
    out.print(f"ray: {record['cluster']['nodes']} node(s), "
              f"{record['cluster']['resources'].get('CPU', 0):g} CPUs, "
              f"{record['cluster']['resources'].get('GPU', 0):g} GPUs; "
              f"{record['n_tiles']} tiles of {record['tile_points']} points, overhead "
              f"{100 * (record.get('overhead_share') or 0):.1f} % of compute")
    for i, w in enumerate(record["workers"]):
        rate = w["points_per_s"]
        restarted = f", restarted ({len(w['pids'])} processes)" if len(w["pids"]) > 1 else ""
        out.print(f"  worker {i} ({w['host']}, {w['device']}, {w['threads']} thread(s)): "
                  f"{w['points']} points, {w['tiles']} tiles, "
                  f"{rate if rate is not None else 0:.4g} points/s{restarted}")
