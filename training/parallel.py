"""Fan-out of independent training jobs (seeds x folds) over local processes or an existing Ray cluster.

``run_jobs(fn, jobs, workers, ray_address)`` calls the module-level function ``fn(**job)`` once per job
mapping and returns the results in job order:

- ``workers <= 1`` and no Ray: in this process, one after the other (simplest, fully deterministic);
- ``workers > 1``: a ``ProcessPoolExecutor`` with the *spawn* start method (no forked torch/BLAS state);
- ``ray_address`` given (``"auto"``, ``"ray://host:10001"``, or ``"local"`` to start a private
  in-process cluster): one Ray task per job, each reserving one CPU.

Ray is an optional extra (``pip install drl-hedge-fund[ray]``; the ``dev`` extra installs it for CI) and is
imported only on the Ray path. Every job seeds itself, so the results do not depend on which worker ran it
or in which order. With ``label`` set, one line per finished job reports ``k/n <label> done`` and an ETA.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TextIO

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


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; ``3725`` -> ``"1h02m"``; under a minute ``"42s"``."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Prints ``[label] k/n done, elapsed 1m02s, ETA 3m10s`` after each finished unit of work.

    The ETA assumes the remaining units take the mean time of the finished ones (with ``workers`` running
    at once that is what the wall clock shows, since the elapsed time already reflects the parallelism).
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.stream = int(total), label, stream
        self.done = 0
        self.t0 = time.perf_counter()

    def line(self, done: int, note: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        left = self.total - done
        eta = "done" if left <= 0 else (f"ETA {format_seconds(elapsed / done * left)}" if done else "ETA ?")
        return (f"[{self.label}] {done}/{self.total} done, elapsed {format_seconds(elapsed)}, {eta}"
                + (f" ({note})" if note else ""))

    def update(self, n: int = 1, note: str = "") -> None:
        """``n`` more units finished."""
        self.show(self.done + n, note)

    def show(self, done: int, note: str = "") -> None:
        """``done`` units finished in all (e.g. counted in a shared Optuna study)."""
        self.done = int(done)
        print(self.line(self.done, note), file=self.stream or sys.stdout, flush=True)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[dict[str, Any]],
    workers: int = 1,
    ray_address: str | None = None,
    label: str | None = None,
) -> list[Any]:
    """Run ``fn(**job)`` for every job; results in job order. ``fn`` must be importable (module level).

    ``label`` (e.g. ``"runs"``) prints a progress line (``Progress``) each time a job finishes.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    progress = Progress(len(jobs), label) if label else None
    results: list[Any] = [None] * len(jobs)
    if ray_address:
        ray = init_ray(ray_address, num_cpus=workers if workers > 1 else None)
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        refs = [remote.remote(fn, job) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results[index[ready[0]]] = ray.get(ready[0])
            if progress:
                progress.update()
        return results
    if workers <= 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            results[i] = fn(**job)
            if progress:
                progress.update()
        return results
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                results[futures[f]] = f.result()
                if progress:
                    progress.update()
    return results
