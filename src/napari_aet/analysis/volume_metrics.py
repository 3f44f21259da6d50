"""Quality of a reconstruction: R-factor against the measured projections and Fourier shell correlation.

* R-factor = ``sum |P_measured - P_reprojected| / sum |P_measured|`` over all pixels of all
  projections, the reprojection made with the shared :class:`~napari_aet.geometry.Projector`.
* FSC(shell) = ``Re sum A B* / sqrt(sum |A|^2 sum |B|^2)`` over the Fourier coefficients of
  the two volumes in each shell of width ``1 / max(shape)`` cycles per voxel.

The half-set FSC (reconstructions from the even- and odd-numbered projections, compared by FSC)
runs the reconstruct stage, so it is orchestration: :func:`napari_aet.workflow.half_set_fsc`.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from ..backprojection import check_aligned, relative_residual
from ..geometry import Projector
from ..model import InputError, Reconstruction, TiltSeries
from ..threads import fft_workers


def r_factor(series: TiltSeries, volume) -> float:
    """R-factor of ``volume`` (array ``(nz, ny, nx)`` or Reconstruction) against an aligned series."""
    check_aligned(series)
    volume = volume.volume if isinstance(volume, Reconstruction) else np.asarray(volume, np.float32)
    if volume.ndim != 3:
        raise InputError(f"expected a volume (nz, ny, nx), got shape {volume.shape}")
    reprojected = Projector(volume.shape, series.angles, series.projections.shape[1:]).forward(volume)
    return relative_residual(series.projections, reprojected)


def fourier_shell_correlation(a, b, voxel_size=1.0) -> tuple[np.ndarray, np.ndarray]:
    """FSC of two volumes of equal shape.

    Returns ``(frequency, fsc)``: shell centres in 1/Å (cycles per voxel / ``voxel_size``) up to
    Nyquist, and the correlation in each shell (NaN where a shell is empty or a volume is zero).
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(f"FSC needs two volumes of the same 3D shape, got {a.shape} and {b.shape}")
    fa, fb = fft.rfftn(a, workers=fft_workers()), fft.rfftn(b, workers=fft_workers())
    nz, ny, nx = a.shape
    radius = np.sqrt(fft.fftfreq(nz)[:, None, None] ** 2 + fft.fftfreq(ny)[None, :, None] ** 2
                     + fft.rfftfreq(nx)[None, None, :] ** 2)
    kx = np.arange(nx // 2 + 1)
    multiplicity = np.where((kx == 0) | (2 * kx == nx), 1.0, 2.0)  # Hermitian mates not stored
    n_shells = max(a.shape) // 2
    shell = np.rint(radius * 2 * n_shells).astype(np.int64).ravel()
    inside = shell <= n_shells
    weight = np.broadcast_to(multiplicity, fa.shape).ravel()[inside]
    shell = shell[inside]

    def shell_sum(values):
        return np.bincount(shell, weight * values.ravel()[inside], minlength=n_shells + 1)

    cross = shell_sum((fa * np.conj(fb)).real)
    power = shell_sum(np.abs(fa) ** 2) * shell_sum(np.abs(fb) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        fsc = cross / np.sqrt(power)
    frequency = np.arange(n_shells + 1) / (2 * n_shells) / voxel_size
    return frequency, fsc


def resolution_from_fsc(frequency, fsc, threshold=0.143) -> float:
    """Resolution in Å where the FSC first drops below ``threshold`` (1 / crossing frequency,
    interpolated); the Nyquist resolution when it never does."""
    frequency, fsc = np.asarray(frequency), np.nan_to_num(np.asarray(fsc), nan=0.0)
    below = np.nonzero(fsc[1:] < threshold)[0]
    if len(below) == 0:
        return 1.0 / frequency[-1]
    i = below[0] + 1
    f = np.interp(threshold, [fsc[i], fsc[i - 1]], [frequency[i], frequency[i - 1]])
    return 1.0 / f
