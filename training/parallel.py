"""Fan-out of independent training jobs (seeds x folds) over local processes or an existing Ray cluster.

``run_jobs(fn, jobs, workers, ray_address)`` calls the module-level function ``fn(**job)`` once per job
mapping and returns the results in job order:

- ``workers <= 1`` and no Ray: in this process, one after the other (simplest, fully deterministic);
- ``workers > 1``: a ``ProcessPoolExecutor`` with the *spawn* start method (no forked torch/BLAS state);
- ``ray_address`` given (``"auto"``, ``"ray://host:10001"``, or ``"local"`` to start a private
  in-process cluster): one Ray task per job, each reserving one CPU.

Ray is an optional extra (``pip install drl-hedge-fund[ray]``) and is imported only on the Ray path.
Every job seeds itself, so the results do not depend on which worker ran it or in which order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from data.market import DataError


def default_workers() -> int:
    """Local worker count: the CPUs this process may use, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def import_ray() -> Any:
    """Import Ray lazily; a missing install is a user error with one sentence."""
    try:
        import ray
    except ImportError:
        raise DataError("--ray-address needs Ray: pip install 'drl-hedge-fund[ray]'") from None
    return ray


def init_ray(address: str, num_cpus: int | None = None) -> Any:
    """Connect to the cluster at ``address`` (``"local"`` starts a private one with ``num_cpus``)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
    # Workers must import the project from the repository root, with or without the install.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env_vars = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    kwargs["runtime_env"] = {"env_vars": env_vars}
    if address == "local":
        kwargs["num_cpus"] = num_cpus or default_workers()
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise DataError(f"could not connect to the Ray cluster at '{address}' ({err})") from None
    return ray


def _call(fn: Callable[..., Any], job: dict[str, Any]) -> Any:
    return fn(**job)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[dict[str, Any]],
    workers: int = 1,
    ray_address: str | None = None,
) -> list[Any]:
    """Run ``fn(**job)`` for every job; results in job order. ``fn`` must be importable (module level)."""
    jobs = list(jobs)
    if not jobs:
        return []
    if ray_address:
        ray = init_ray(ray_address, num_cpus=workers if workers > 1 else None)
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        return list(ray.get([remote.remote(fn, job) for job in jobs]))
    if workers <= 1 or len(jobs) == 1:
        return [fn(**job) for job in jobs]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_call, fn, job) for job in jobs]
        return [f.result() for f in futures]
