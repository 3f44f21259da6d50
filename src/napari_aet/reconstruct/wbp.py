"""Weighted back-projection with Radermacher's general weighting: the fast, non-iterative baseline.

Each projection is filtered in 2D Fourier space by ``1 / S_i(q)``, where
``S_i(q) = sum_j D sinc(D q . n_ij)`` counts how strongly the back-projections of all
projections j (object diameter ``D`` voxels) overlap at frequency ``q`` of plane i; then
all are back-projected with the shared :class:`~napari_aet.geometry.Projector` adjoint.
For an evenly sampled single tilt this is the familiar ramp filter, but it also handles
uneven angles, a missing wedge and arbitrary Euler angles with one formula.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from ..geometry import Projector, rotation_matrices
from ..model import InputError, TiltSeries
from ..threads import fft_workers
from ._common import (
    IterationState,
    check_aligned,
    check_volume,
    relative_residual,
    single_axis_equivalent,
    volume_shape,
)


def weighting_filters(angles, pad_shape, diameter) -> np.ndarray:
    """Radermacher weights ``(n, Pv or 1, Pu//2 + 1)`` float32 for rfft2 spectra of ``pad_shape``.

    angles : ``(n,)`` tilts or ``(n, 3)`` Euler angles, degrees; diameter : object size in
    voxels. The kv axis has length 1 when every orientation shares the tilt axis y.
    """
    m = rotation_matrices(angles)
    # c[i, j] = in-plane components (u, v) of plane j's normal seen in projection i
    c = np.einsum("iab,jb->ija", m[:, :2, :], m[:, 2, :])
    pv, pu = pad_shape
    ku = fft.rfftfreq(pu)[None, None, :]
    kv = np.zeros((1, 1, 1)) if np.allclose(c[..., 1], 0) else fft.fftfreq(pv)[None, :, None]
    weights = np.empty((len(m), kv.shape[1], ku.shape[2]), dtype=np.float32)
    for i in range(len(m)):
        overlap = np.sinc(diameter * (ku * c[i, :, 0, None, None] + kv * c[i, :, 1, None, None]))
        weights[i] = 1.0 / (diameter * np.maximum(overlap.sum(axis=0), 1.0))  # >= the plane's own share
    return weights


def weighted_backprojection(series: TiltSeries, thickness=None, single_axis_tolerance=1.0) -> np.ndarray:
    """WBP volume float32 ``(nz, ny, nx)`` of an aligned series; nz = nx unless ``thickness``.

    single_axis_tolerance : pixels; Euler angles whose single tilts θ move no voxel by more than
    this are back-projected as those single tilts (the sparse projector, tens of times faster);
    0 = always exact. One pixel by default: WBP is a preview and a search for candidates.
    """
    check_aligned(series)
    shape = volume_shape(series, thickness)
    _, ny, nx = series.projections.shape
    pad = (fft.next_fast_len(2 * ny, real=True), fft.next_fast_len(2 * nx, real=True))
    weights = weighting_filters(series.angles, pad, max(shape[0], shape[2]))
    spectra = fft.rfft2(series.projections, s=pad, workers=fft_workers())
    spectra *= weights
    filtered = fft.irfft2(spectra, s=pad, workers=fft_workers())[:, :ny, :nx]
    angles = single_axis_equivalent(series.angles, shape, single_axis_tolerance)
    return Projector(shape, angles, (ny, nx)).adjoint(filtered)


def iterate_wbp(series: TiltSeries, thickness=None):
    """WBP as a one-step iteration (so every method shares one generator API); computed at once."""
    volume = weighted_backprojection(series, thickness)
    reprojected = Projector(volume.shape, series.angles, series.projections.shape[1:]).forward(volume)
    errors = {"r_factor": [relative_residual(series.projections, reprojected)]}
    return iter([IterationState(1, 1, volume, errors, final=True)])


def starting_volume(series: TiltSeries, initial, shape, thickness=None) -> np.ndarray:
    """The first estimate of an iterative method: ``initial`` = "zeros", "wbp" or a volume of ``shape``."""
    if not isinstance(initial, str):
        return check_volume("initial volume", initial, shape)
    if initial not in ("zeros", "wbp"):
        raise InputError(f"initial must be 'zeros', 'wbp' or a volume, got {initial!r}")
    return np.zeros(shape, np.float32) if initial == "zeros" else weighted_backprojection(series, thickness)
