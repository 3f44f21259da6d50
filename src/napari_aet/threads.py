"""How many threads the core uses, for its FFTs and its own thread pool.

One process alone on a machine uses every core; a process that shares the machine with other
workers (a dask worker of ``napari-aet batch``) is limited to what ``OMP_NUM_THREADS`` says, the
variable that also limits BLAS. dask's nanny sets it to 1 in every worker process it starts.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: Name prefix of the pool's threads (a call from one of them runs serially).
_POOL_NAME = "napari-aet-worker"


def fft_workers() -> int:
    """The ``workers`` argument for :mod:`scipy.fft` calls: ``OMP_NUM_THREADS`` when it is a
    positive integer, else -1 (every core)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else -1


def thread_count() -> int:
    """Threads for the core's own parallel loops: ``OMP_NUM_THREADS`` when it is a positive
    integer, else every core."""
    workers = fft_workers()
    return workers if workers > 0 else os.cpu_count() or 1


def map_threads(function, items) -> list:
    """``[function(item) for item in items]`` on :func:`thread_count` threads (for work that
    releases the GIL, such as scipy's sparse products and FFTs and numpy's arithmetic). The
    threads are kept between calls; a call from one of them runs serially."""
    items, threads = list(items), thread_count()
    if threads == 1 or len(items) <= 1 or threading.current_thread().name.startswith(_POOL_NAME):
        return [function(item) for item in items]
    return list(_pool(threads, os.getpid()).map(function, items))


@functools.cache
def _pool(threads, process) -> ThreadPoolExecutor:
    """One pool per thread count and process: a forked child makes its own (the parent's threads do
    not exist in it)."""
    return ThreadPoolExecutor(threads, thread_name_prefix=_POOL_NAME)
