"""Where the heavy views compute: on this machine (``local``) or on a Ray cluster (``ray``).

A :class:`Backend` is built where the user's options arrive (``--backend``,
``--ray-address``, ``--ray-workers``, ``--ray-cpus``, ``--ray-gpus``, ``--tile``) and passed
down whole; :func:`ray_session` connects to the cluster it names (or starts a local Ray
instance), checks that the resources asked for exist, and describes the cluster
(:class:`ClusterInfo`) for the run's record. Everything that needs Ray imports it here, when
a Ray backend is used: ``import shenjing`` never imports it.

Why a connection check of our own: ``ray.init(address=…)`` on an address where nothing
answers retries for a minute or more. A plain TCP connection to the address, with a
timeout, tells within seconds that nothing is listening there, and the refusal can name the
address and the fix before any file is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shenjing._optional import require
from shenjing.errors import UsageError

BACKENDS: tuple[str, ...] = ("local", "ray")

CONNECT_TIMEOUT_S = 10.0
"""How long the address check waits for a TCP connection before refusing the address."""

DEFAULT_RAY_PORT = 6379
"""The port ``ray start --head`` listens on unless told otherwise (its GCS)."""


@dataclass(frozen=True)
class Backend:
    """Where and how a heavy view computes.

    ``address``: None starts a local Ray instance for the call (all of this machine's CPUs
    and GPUs); ``"auto"`` joins the cluster this machine belongs to (``ray start`` wrote
    its address, or ``RAY_ADDRESS``); ``"host:port"`` or ``"ray://host:port"`` names one.
    ``workers``: actors started (default: as many as the cluster's resources hold, at
    ``num_cpus`` / ``num_gpus`` each). ``tile``: grid points per task (default: sized from
    the measured cost of a point, see :mod:`shenjing.analysis.landscape.ray_grid`).
    """

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    tile: int | None = None
    connect_timeout: float = CONNECT_TIMEOUT_S

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


LOCAL = Backend()


def make_backend(backend: str | Backend | None = "local", *, ray_address: str | None = None,
                 workers: int | None = None, num_cpus: float | None = None,
                 num_gpus: float | None = None, tile: int | None = None) -> Backend:
    """The :class:`Backend` of a stage's or a notebook call's options, checked (cheap: no
    connection). Options of the Ray backend given with ``backend='local'`` are refused,
    since they would silently do nothing."""
    if isinstance(backend, Backend):
        base = backend
    else:
        name = "local" if backend is None else str(backend)
        if name not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
        base = Backend(name=name)
    ray_options = {"--ray-address": ray_address, "--ray-workers": workers,
                   "--ray-cpus": num_cpus, "--ray-gpus": num_gpus, "--tile": tile}
    given = [flag for flag, value in ray_options.items() if value is not None]
    if given and not base.is_ray:
        raise UsageError(f"{', '.join(given)} only apply to the Ray backend: add "
                         "--backend ray, or leave them out")
    changes: dict[str, Any] = {}
    if ray_address is not None:
        changes["address"] = _checked_address(ray_address)
    if workers is not None:
        changes["workers"] = _positive_int("--ray-workers", workers)
    if num_cpus is not None:
        changes["num_cpus"] = _amount("--ray-cpus", num_cpus, zero_ok=False)
    if num_gpus is not None:
        changes["num_gpus"] = _amount("--ray-gpus", num_gpus, zero_ok=True)
    if tile is not None:
        changes["tile"] = _positive_int("--tile", tile)
    result = replace(base, **changes)
    if result.is_ray:
        require("ray", extra="ray", purpose="--backend ray")
    return result


def _positive_int(flag: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{flag} must be a whole number of at least 1, got {value!r}")
    return int(value)


def _amount(flag: str, value: Any, *, zero_ok: bool) -> float:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(amount) or amount < 0 \
            or (amount == 0 and not zero_ok):
        least = "0 or more" if zero_ok else "more than 0"
        raise UsageError(f"{flag} must be {least} (a fraction shares a device between "
                         f"workers), got {value!r}")
    return amount


def _checked_address(address: str) -> str:
    text = address.strip()
    if not text:
        raise UsageError("--ray-address is empty: give auto, or host:port of the cluster's "
                         "head node (what `ray start --head` printed)")
    if text != "auto":
        host, port = split_address(text)
        if not host or port is None:
            raise UsageError(f"--ray-address {address!r} must be auto or host:port (e.g. "
                             "10.0.0.5:6379, or ray://10.0.0.5:10001 for Ray Client)")
    return text


def split_address(address: str) -> tuple[str, int | None]:
    """``'ray://h:10001'`` / ``'h:6379'`` / ``'h'`` → ``(host, port)`` (port None if bad).

    >>> split_address("ray://10.0.0.5:10001")
    ('10.0.0.5', 10001)
    >>> split_address("head")
    ('head', 6379)
    """
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not port:
        return host, DEFAULT_RAY_PORT
    try:
        number = int(port)
    except ValueError:
        return host, None
    return host, number if 0 < number < 65536 else None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse an address where nothing accepts a TCP connection within ``timeout`` s."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, int(port or DEFAULT_RAY_PORT)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else \
            (exc.strerror or type(exc).__name__)
        raise UsageError(
            f"no Ray cluster answers at --ray-address {address} ({reason} after at most "
            f"{timeout:g} s): start one there with `ray start --head --port "
            f"{port or DEFAULT_RAY_PORT}` (see docs/scale.md), or give the address that "
            "`ray start --head` printed; without --ray-address, --backend ray starts a "
            "local Ray instance") from None


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster a Ray backend runs on has: nodes, resources, the address used."""

    address: str
    nodes: int
    resources: dict[str, float] = field(default_factory=dict)
    started_here: bool = False

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))

    def describe(self) -> str:
        """``'1 node, 2 CPUs, 0 GPUs'``."""
        return (f"{self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cpus:g} CPUs, "
                f"{self.gpus:g} GPUs")

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "nodes": self.nodes,
                "resources": {k: v for k, v in sorted(self.resources.items())
                              if not k.startswith("node:")},
                "started_here": self.started_here}


def worker_count(backend: Backend, cluster: ClusterInfo) -> int:
    """How many workers to start: ``backend.workers``, else as many as the cluster holds at
    ``num_cpus`` (and ``num_gpus``) each; refuses what the cluster cannot hold."""
    fits_cpu = math.floor(cluster.cpus / backend.num_cpus + 1e-9) if backend.num_cpus else 0
    fits = fits_cpu
    if backend.num_gpus > 0:
        fits_gpu = math.floor(cluster.gpus / backend.num_gpus + 1e-9)
        if fits_gpu < 1:
            raise UsageError(
                f"--ray-gpus {backend.num_gpus:g} per worker, but the cluster has "
                f"{cluster.describe()}: leave --ray-gpus out to compute on the CPUs, or "
                "join nodes with GPUs (`ray start --address …` on each, docs/scale.md)")
        fits = min(fits, fits_gpu)
    if fits < 1:
        raise UsageError(f"--ray-cpus {backend.num_cpus:g} per worker, but the cluster has "
                         f"{cluster.describe()}: ask for fewer CPUs per worker")
    if backend.workers is None:
        return fits
    if backend.workers > fits:
        raise UsageError(
            f"--ray-workers {backend.workers} at {backend.num_cpus:g} CPU"
            f"{f' and {backend.num_gpus:g} GPU' if backend.num_gpus else ''} each needs more "
            f"than the cluster has ({cluster.describe()}): at most {fits} worker"
            f"{'s' if fits != 1 else ''} fit")
    return backend.workers


class _DropAuthEnabledNotice(logging.Filter):
    """Drops Ray's notice that token authentication is *on* (the state we want; a command
    prints one line of its own). The warning that it is off still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Token authentication is enabled")


@contextlib.contextmanager
def _quiet_auth_notice() -> Iterator[None]:
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    dropper = _DropAuthEnabledNotice()
    notice.addFilter(dropper)
    try:
        yield
    finally:
        notice.removeFilter(dropper)


def local_auth_token() -> str | None:
    """Where this machine keeps a Ray cluster token (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, as Ray looks), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return path if os.path.isfile(path) else None


def _refresh_ray_config() -> None:
    """Make an imported Ray read ``RAY_*`` settings again (it reads them at import); what
    Ray itself does when it turns token authentication on for a cluster it starts."""
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
    except ImportError:  # another Ray layout: the setting applies from the next import
        return
    Config.initialize("")


@contextlib.contextmanager
def _bounded_connect(address: str | None, timeout: float) -> Iterator[None]:
    """While connecting to a named address: Ray's wait for its GCS bounded by ``timeout``
    (``RAY_gcs_server_port_wait_time_s``: one try a second; ~20 s by default), restored
    once connected: it applies to this connection attempt only (Ray's C++ client prints a
    warning line per failed try on stderr). With a cluster token on this machine, token
    authentication is turned on for the session."""
    if address in (None, "auto"):
        yield
        return
    settings = {"RAY_gcs_server_port_wait_time_s": str(max(1, math.ceil(timeout)))}
    if "RAY_AUTH_MODE" not in os.environ and local_auth_token() is not None:
        # a cluster started with `ray start --head` asks for its token (Ray's default), and
        # a driver sends it only in token mode: as `RAY_AUTH_MODE=token shenjing …` would
        os.environ["RAY_AUTH_MODE"] = "token"
        _refresh_ray_config()
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update({k: v for k, v in settings.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


@contextlib.contextmanager
def ray_session(backend: Backend) -> Iterator[ClusterInfo]:
    """Connect to the backend's cluster (or start a local Ray instance) for the block.

    An existing connection (``ray.init`` called by the user or a test) is used as it is and
    left open; a connection made here is closed at the end. The resources the backend asks
    for are checked against the cluster (:func:`worker_count`) before the block runs.
    """
    ray = require("ray", extra="ray", purpose="--backend ray")
    started = False
    if not ray.is_initialized():
        address = backend.address
        if address not in (None, "auto"):
            check_reachable(address, backend.connect_timeout)
        # workers inherit the CLI's passive OpenMP waiting (two spinning workers on shared
        # cores slow each other down many times over)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            with _bounded_connect(address, backend.connect_timeout), _quiet_auth_notice():
                # "local": a new instance even where `ray start` runs a cluster on this
                # machine (which a bare ray.init() would join)
                ray.init(address=address or "local", include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            token = local_auth_token()
            auth = (f"; if it runs with token authentication (Ray's default), its token "
                    f"must be in {token}" if token else "; if it runs with token "
                    "authentication (Ray's default), copy its ~/.ray/auth_token here or set "
                    "RAY_AUTH_TOKEN")
            raise UsageError(f"no Ray cluster answers at --ray-address {address} ({exc}, "
                             f"within {backend.connect_timeout:g} s{auth}): start one there "
                             "with `ray start --head` (docs/scale.md), or give the address "
                             "that `ray start --head` printed; without --ray-address, "
                             "--backend ray starts a local Ray instance") from None
        started = True
    try:
        info = ClusterInfo(address=str(backend.address or "local"), nodes=sum(
            1 for n in ray.nodes() if n.get("Alive")),
            resources={k: float(v) for k, v in ray.cluster_resources().items()},
            started_here=started)
        worker_count(backend, info)
        yield info
    finally:
        if started:
            ray.shutdown()


__all__ = ["BACKENDS", "LOCAL", "Backend", "ClusterInfo", "check_reachable",
           "make_backend", "ray_session", "split_address", "worker_count"]
