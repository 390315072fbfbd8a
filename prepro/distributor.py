"""The distributor: runs worker tasks on joblib (local processes or a Dask cluster), results in order.

Results come back in submission order whatever the number of workers, so the shards are the
same for 1 and N jobs. Only a named backend is forced: otherwise a surrounding
``joblib.parallel_config`` (e.g. one set up for Dask) applies.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from prepro.errors import InputError

_DASK_CLIENT = None  # kept so the cluster connection lives as long as the process


def worker_count(jobs: int) -> int:
    n = os.cpu_count() if jobs == -1 else jobs
    if n is None or n < 1:
        raise InputError(f"jobs must be -1 (all cores) or a positive number, got {jobs}")
    return n


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


def run_in_order(tasks: Iterable[Any], jobs: int, backend: str | None = None) -> Iterator[Any]:
    """The results of joblib ``delayed`` ``tasks``, in order, as they finish."""
    import warnings

    from joblib import Parallel, parallel_config

    config = {"backend": backend} if backend else {}
    with parallel_config(n_jobs=worker_count(jobs), **config), warnings.catch_warnings():
        # When a run stops early (an error, a full disk) joblib notes the tasks it cancels: expected.
        warnings.filterwarnings("ignore", message=r".*tasks which were still being processed")
        yield from Parallel(return_as="generator", pre_dispatch="2*n_jobs", batch_size=1)(tasks)
