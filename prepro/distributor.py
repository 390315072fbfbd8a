"""The distributor: runs worker tasks on joblib (local processes or a Dask cluster), results in order.

Results come back in submission order whatever the number of workers, so the shards are the
same for 1 and N jobs. Only a named backend is forced: otherwise a surrounding
``joblib.parallel_config`` (e.g. one set up for Dask) applies.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from prepro.errors import InputError, raise_if_stopped

_DASK_CLIENT = None  # kept so the cluster connection lives as long as the process


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int) -> None:
    """The one check of a worker count (run by the settings that hold one): -1 or positive."""
    if jobs != -1 and jobs < 1:
        raise InputError(f"jobs must be -1 (all cores) or a positive number, got {jobs}")


def worker_count(jobs: int, tasks: int | None = None) -> int:
    """Local worker processes for ``jobs`` (-1 = all cores, checked by `check_jobs` where it was set):
    never more than the usable cores (more only share them, each loading the 100 MB landmark model)
    or the ``tasks`` there are."""
    n = usable_cores() if jobs == -1 else min(jobs, usable_cores())
    return max(1, min(n, tasks)) if tasks is not None else n


def lowered_jobs_note(jobs: int, tasks: int) -> str | None:
    """What to tell the user when ``-j jobs`` is lowered by `worker_count`, else None."""
    n = worker_count(jobs, tasks)
    if jobs == -1 or n >= jobs:
        return None
    why = (f"this machine lets it use {usable_cores()} cores" if n == usable_cores()
           else f"there are {tasks} chunks of work")
    return f"note: -j {jobs} lowered to {n} worker{'s' if n > 1 else ''}: {why}"


def connect_dask(address: str) -> None:
    """Make the Dask cluster at ``address`` the one joblib's ``dask`` backend uses."""
    global _DASK_CLIENT
    try:
        from distributed import Client
    except ImportError:
        raise InputError("the dask backend needs the `distributed` package: pip install 'dask[distributed]'") from None
    try:
        _DASK_CLIENT = Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"cannot reach the Dask scheduler at {address} ({str(e)[:120]})") from None


class _ShutdownRace:
    """A logging filter: after a run is stopped (Ctrl-C, SIGTERM), loky's callback thread may still
    try to hand out the next task and log "cannot schedule new futures after shutdown" with a
    traceback; the run's own message has said everything, so only that one record is dropped."""

    @staticmethod
    def filter(record) -> bool:  # noqa: ANN001
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "ShutdownExecutorError"


def run_in_order(tasks: Iterable[Any], jobs: int, backend: str | None = None, n_tasks: int | None = None
                 ) -> Iterator[Any]:
    """The results of joblib ``delayed`` ``tasks``, in order, as they finish; ``n_tasks`` (their
    number) caps the local workers. A Dask cluster gets ``jobs`` as asked: its workers are its own."""
    import logging
    import warnings

    from joblib import Parallel, parallel_config

    logging.getLogger("concurrent.futures").addFilter(_ShutdownRace)
    config = {"backend": backend} if backend else {}
    n_jobs = jobs if backend == "dask" else worker_count(jobs, n_tasks)
    with parallel_config(n_jobs=n_jobs, **config), warnings.catch_warnings():
        # When a run stops early (an error, a full disk) joblib notes the tasks it cancels: expected.
        warnings.filterwarnings("ignore", message=r".*tasks which were still being processed")
        for result in Parallel(return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)(tasks):
            raise_if_stopped()  # a termination signal whose exception was swallowed stops the run here
            yield result
