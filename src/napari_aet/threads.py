"""How many threads the core's FFTs use.

One process alone on a machine uses every core; a process that shares the machine with other
workers (a dask worker of ``napari-aet batch``) is limited to what ``OMP_NUM_THREADS`` says, the
variable that also limits BLAS. dask's nanny sets it to 1 in every worker process it starts.
"""

from __future__ import annotations

import os


def fft_workers() -> int:
    """The ``workers`` argument for :mod:`scipy.fft` calls: ``OMP_NUM_THREADS`` when it is a
    positive integer, else -1 (every core)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else -1
