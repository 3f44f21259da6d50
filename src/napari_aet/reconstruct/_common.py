"""What every reconstruction method shares: parameter checks and the iteration state (the series
checks and the output box are :mod:`napari_aet.backprojection`'s)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model import InputError


@dataclass
class IterationState:
    """One step of an iterative reconstruction, as yielded by :func:`napari_aet.reconstruct.iterate`.

    iteration : 1-based number of the iteration just completed.
    n_iterations : how many the run will do.
    volume : float32 ``(nz, ny, nx)``, the current estimate (unpadded); not modified later.
    errors : per-iteration curves so far, e.g. ``{"r_factor": [...], "r_free": [...]}``.
    final : True only for the last state of a completed run, whose volume is the method's
        chosen result (for GENFIRE the best iterate with every measured point restored).
    """

    iteration: int
    n_iterations: int
    volume: np.ndarray
    errors: dict[str, list[float]] = field(default_factory=dict)
    final: bool = False


def check_volume(name, array, shape, dtype=np.float32) -> np.ndarray | None:
    """``array`` as ``dtype`` with the volume ``shape``, or None; InputError on a wrong shape."""
    if array is None:
        return None
    array = np.asarray(array)
    if array.shape != tuple(shape):
        raise InputError(f"{name} has shape {array.shape}, expected the volume shape {tuple(shape)} "
                         "(nz, ny, nx)")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or Inf values")
    return array.astype(dtype)


def check_count(name, value, minimum=1) -> int:
    """A whole number >= ``minimum``, or InputError."""
    if int(value) != value or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value}")
    return int(value)
