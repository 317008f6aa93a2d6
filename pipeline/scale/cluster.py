"""Connecting to Ray, and sizing the actor pool from what the cluster has.

The pool is sized from the cluster's resources, never a fixed number: on a 2-CPU machine a pool of
two one-CPU actors leaves no CPU for the read tasks that feed them and the job waits forever, so the
read side always keeps its share and the actors divide the rest.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pipeline.errors import RetrainError

INSTALL_HINT = (
    "Ray is not installed: the --engine ray extra needs it; install it with "
    "`.venv/bin/pip install -r requirements-scale.txt`"
)
READ_TASK_CPUS = 0.5  # CPU share of one read-and-decode task
CONNECT_TIMEOUT = 5.0  # seconds to wait for a --ray_address to answer before saying it cannot be reached


def require_ray():
    """The ray module, or a RetrainError saying how to install the extra."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]; ray alone lacks pyarrow and pandas glue)
    except ImportError:
        raise RetrainError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class PoolPlan:
    """How many backbone actors, and what each actor and each read task asks Ray for."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    read_cpus: float  # per read/decode task


def plan_pool(resources: dict[str, float], actors: int | None = None, node_cpus: list[float] | None = None) -> PoolPlan:
    """An actor pool that fits the cluster with room left for the read tasks (see the module docstring).

    With GPUs: one actor per GPU. Without: a quarter of the CPUs (at least one) stays with the read
    tasks and every other CPU gets an actor. `actors` overrides the count; actors then share what
    the read side leaves, in fractions of a CPU. `node_cpus` (CPUs of each node) keeps an actor small
    enough that a read task still fits beside it on the smallest node.
    """
    cpus = float(resources.get("CPU", 1.0))
    gpus = int(resources.get("GPU", 0))
    smallest = min(node_cpus) if node_cpus else cpus
    if actors is None:
        actors = gpus or max(1, math.floor(cpus - max(1.0, cpus / 4)))
    if actors < 1:
        raise RetrainError(f"--ray_actors is {actors}; it must be at least 1")
    # At most half a CPU per read task: decoding is light next to the forward pass, and a share unequal
    # to the actors' keeps Ray Data from fusing the decode into the actors (which would serialise it).
    read_cpus = min(READ_TASK_CPUS, cpus / (actors + 1), smallest / 4)
    cpus_per_actor = min(1.0, (cpus - read_cpus) / actors, smallest - read_cpus)
    gpus_per_actor = min(1.0, gpus / actors) if gpus else 0.0
    return PoolPlan(actors, round(cpus_per_actor, 4), gpus_per_actor, round(read_cpus, 4))


def cluster_plan(actors: int | None = None) -> PoolPlan:
    """`plan_pool` for the cluster this process is connected to."""
    import ray

    node_cpus = [
        float(node["Resources"].get("CPU", 0))
        for node in ray.nodes()
        if node.get("Alive") and node["Resources"].get("CPU")
    ]
    return plan_pool(ray.cluster_resources(), actors, node_cpus)


_QUIET = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}


def init_options(object_store_mb: int | None = None) -> dict:
    """`ray.init` options for a local instance: quiet, and its workers import this checkout's `pipeline`.

    (A real cluster's workers need Retrain Studio installed, or `ray job submit --working-dir .`; see docs/scale.md.)
    """
    root = str(Path(__file__).resolve().parents[2])
    options = {**_QUIET, "runtime_env": {"env_vars": {"PYTHONPATH": root}}}
    if object_store_mb:
        options["object_store_memory"] = object_store_mb * 1024 * 1024
    return options


@contextmanager
def ray_session(address: str | None = None, object_store_mb: int | None = None) -> Iterator:
    """Ray for the length of a job: a local instance without `address`, else the cluster at `address`.

    A cluster we connected to is left running; a local instance we started is shut down after.
    """
    ray = require_ray()
    if address is not None and address != "auto":  # "" too: an unset $RAY_ADDRESS, refused in one line
        _require_reachable(address)
    _quiet_ray_data()
    if ray.is_initialized():  # a caller (a test, a notebook) already holds a session: use it as it is
        yield ray
        return
    try:
        ray.init(address=address, **(init_options(object_store_mb) if not address else _QUIET))
    except ConnectionError as error:
        raise RetrainError(
            f"cannot connect to the Ray cluster at {address!r} ({_first_line(error)}); "
            "start one with `ray start --head`, or leave --ray_address out for a local one"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """Our progress line is the one the user reads; Ray Data's own bars and INFO logs go to its log files."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _require_reachable(address: str) -> None:
    """Fail in seconds, with the address in the message, when nothing listens there (Ray itself would retry)."""
    try:
        parsed = urlparse(address if "://" in address else f"ray://{address}")
        port = parsed.port  # raises on a port that is not a number or is out of range
    except ValueError:
        port = None
    if port is None or not parsed.hostname:
        raise RetrainError(f"--ray_address {address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as error:
        raise RetrainError(
            f"cannot reach the Ray cluster at {address} ({error.strerror or error}); check the "
            "address and that the cluster is up, or leave --ray_address out for a local one"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
