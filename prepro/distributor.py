"""The distributor: runs worker tasks on joblib (local processes or a Dask cluster), results in order.

Results come back in submission order whatever the number of workers, so the shards are the
same for 1 and N jobs. Only a named backend is forced: otherwise a surrounding
``joblib.parallel_config`` (e.g. one set up for Dask) applies, else joblib's loky. Named
``multiprocessing`` (preprocessing's default on Linux, `DEFAULT_BACKEND`), the workers are forked
after the models are loaded, so they share them instead of each loading its own (faster to start,
less memory: BENCHMARKS.md); they are given one OpenCV and one BLAS thread before they fork, so
thread pools this process may have started are never entered in a child.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Iterator

from prepro.errors import DataError, InputError, raise_if_stopped

# What `faceblocks preprocess` runs its workers on when none is named: forked where the system can.
DEFAULT_BACKEND = "multiprocessing" if sys.platform == "linux" else None
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


def run_in_order(tasks: Iterable[Any], jobs: int, backend: str | None = None, n_tasks: int | None = None,
                 before_fork: Callable[[], None] | None = None) -> Iterator[Any]:
    """The results of joblib ``delayed`` ``tasks``, in order, as they finish; ``n_tasks`` (their
    number) caps the local workers. A Dask cluster gets ``jobs`` as asked: its workers are its own.
    ``multiprocessing`` forks its workers after ``before_fork`` has run here, so that what it loads
    (the 100 MB landmark model) is inherited, not loaded again by every worker."""
    import logging
    import warnings

    from joblib import Parallel, parallel_config

    n_jobs = jobs if backend == "dask" else worker_count(jobs, n_tasks)
    if backend == "multiprocessing":
        yield from _on_forked_workers(tasks, n_jobs, before_fork)
        return
    logging.getLogger("concurrent.futures").addFilter(_ShutdownRace)
    config = {"backend": backend} if backend else {}
    with parallel_config(n_jobs=n_jobs, **config), warnings.catch_warnings():
        # When a run stops early (an error, a full disk) joblib notes the tasks it cancels: expected.
        warnings.filterwarnings("ignore", message=r".*tasks which were still being processed")
        for result in Parallel(return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)(tasks):
            raise_if_stopped()  # a termination signal whose exception was swallowed stops the run here
            yield result


def _on_forked_workers(tasks: Iterable[Any], n_jobs: int, before_fork: Callable[[], None] | None
                       ) -> Iterator[Any]:
    """joblib ``delayed`` ``tasks`` on ``n_jobs`` forked processes (in this one when 1), results in
    order; at most two tasks a worker are handed out ahead, so the input is never all in memory
    (joblib's own multiprocessing backend cannot return results as they come)."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if "fork" not in multiprocessing.get_all_start_methods():
        raise InputError("the multiprocessing backend forks its workers, which this system cannot: use loky")
    if before_fork is not None:
        before_fork()
    if n_jobs == 1:
        for func, args, kwargs in tasks:
            yield func(*args, **kwargs)
            raise_if_stopped()
        return
    import cv2

    pending: deque = deque()
    pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("fork"),
                               initializer=_forked_worker_start)
    # The workers fork at the first task and keep the setting they inherit: one OpenCV thread each
    # (the workers are the parallelism), set here, not in the child, where OpenCV's pool, if this
    # process had started it, would hang. This process's own setting is back when the run ends.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for func, args, kwargs in tasks:
            pending.append(pool.submit(func, *args, **kwargs))
            if len(pending) >= 2 * n_jobs:
                yield pending.popleft().result()
                raise_if_stopped()
        while pending:
            yield pending.popleft().result()
            raise_if_stopped()
    except BrokenProcessPool:
        raise DataError("a worker process died while cutting images (a crash in a native library, or "
                        "the system ran out of memory); what was written before is kept: run the "
                        "same command again to resume") from None
    finally:
        _end_workers(pool)
        cv2.setNumThreads(threads)


def _end_workers(pool) -> None:  # noqa: ANN001
    """Stop ``pool`` now: queued tasks cancelled, running ones killed (the run has ended or failed,
    so nothing they would return is wanted). Python 3.11's executor has no public way to end
    running workers, so its process table is used."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def _forked_worker_start() -> None:
    """In a forked worker: the signals this process's handlers turn into a stop are the parent's to
    handle (it terminates the workers; a worker inheriting them would not end when told to); and one
    BLAS thread, as loky sets its workers (OpenBLAS is safe to reconfigure after a fork; OpenMP,
    which torch uses, is not, and the workers do not use torch)."""
    import signal

    from threadpoolctl import threadpool_limits

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(1, user_api="blas")
