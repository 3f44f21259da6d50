"""What every reconstruction method shares: input checks, the output box, the iteration state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import euler_angles, rotation_matrices
from ..model import InputError, TiltSeries


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


def check_aligned(series: TiltSeries) -> TiltSeries:
    """Raise InputError unless ``series`` is aligned (zero shifts, tilt axis along y) and valid."""
    if not isinstance(series, TiltSeries):
        raise InputError(f"expected a TiltSeries, got {type(series).__name__}")
    if np.any(series.shifts != 0) or series.tilt_axis != 0:
        raise InputError("the tilt series is not aligned (non-zero shifts or tilt axis): apply the "
                         "alignment first (napari_aet.align.apply_alignment)")
    orientations = np.round(rotation_matrices(series.angles).reshape(series.n_angles, 9), 6) + 0.0
    if len(np.unique(orientations, axis=0)) != series.n_angles:
        raise InputError("the angles contain duplicates (the same orientation twice): each projection "
                         "needs its own orientation")
    return series


def volume_shape(series: TiltSeries, thickness=None) -> tuple[int, int, int]:
    """Output shape ``(nz, ny, nx)``: nz = nx unless ``thickness`` (voxels) is given."""
    _, ny, nx = series.projections.shape
    if thickness is None:
        return nx, ny, nx
    if int(thickness) != thickness or thickness < 1:
        raise InputError(f"thickness must be a positive whole number of voxels, got {thickness}")
    return int(thickness), ny, nx


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


def relative_residual(measured, model) -> float:
    """``sum|measured - model| / sum|measured|`` (real or complex arrays)."""
    return float(np.abs(measured - model).sum() / max(np.abs(measured).sum(), np.finfo(np.float32).tiny))


def single_axis_equivalent(angles, shape, tolerance) -> np.ndarray:
    """The tilts θ ``(n,)`` of Euler angles ``(n, 3)`` (φ, θ, ψ) when every single tilt θ moves no
    point of a volume ``shape`` ``(nz, ny, nx)`` by more than ``tolerance`` pixels on the detector
    (small φ and ψ, e.g. ≤ 0.4° in published film data); otherwise ``angles`` unchanged. Single
    tilts use the fast sparse projector, general Euler angles a projector tens of times slower."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim == 1 or tolerance <= 0:
        return angles
    corners = np.stack(np.meshgrid(*([-n / 2, n / 2] for n in shape[::-1]), indexing="ij"), -1).reshape(-1, 3)
    tilts = euler_angles(angles)[:, 1]
    difference = rotation_matrices(angles)[:, :2] - rotation_matrices(tilts)[:, :2]
    moved = np.linalg.norm(np.einsum("nij,cj->nci", difference, corners), axis=2).max()
    return tilts if moved <= tolerance else angles
