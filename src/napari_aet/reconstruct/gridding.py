"""Fourier-slice gridding: projections onto the half (rfft) grid of an oversampled cube.

By the Fourier slice theorem the 2D FT of projection i at (ku, kv) is the 3D FT of the
volume at ``k = M_i^T (ku, kv, 0)`` (``M_i`` from :func:`~napari_aet.geometry.rotation_matrices`).
Each grid point within ``cutoff`` (grid units) of measured samples takes their
inverse-distance-weighted average. Only the rfft half grid (kx >= 0) is filled; a measured
sample's Hermitian mate ``-k`` carries ``conj(value)``, so each projection's spectrum is
computed once with ``rfft2`` and no grid point is assembled twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import fft

from ..geometry import rotation_matrices
from ..model import InputError
from ..threads import fft_workers


@dataclass
class GriddedData:
    """Measured Fourier values on an ``n^3`` grid, stored on its rfft half ``(n, n, n//2 + 1)``.

    index : int64 flat indices into the half grid (axes kz, ky, kx; negative kz, ky wrapped).
    values : complex64, for an object whose rotation centre sits at grid index 0.
    n : grid size.
    """

    index: np.ndarray
    values: np.ndarray
    n: int

    @property
    def coordinates(self) -> np.ndarray:
        """``(N, 3)`` signed integer frequencies (kx, ky, kz) of the grid points."""
        half = self.n // 2 + 1
        kz, rest = np.divmod(self.index, self.n * half)
        ky, kx = np.divmod(rest, half)
        signed = lambda k: np.where(k > self.n // 2, k - self.n, k)
        return np.stack([kx, signed(ky), signed(kz)], axis=1)

    @property
    def frequency(self) -> np.ndarray:
        """``|k|`` of each grid point in grid units (n/2 = Nyquist)."""
        return np.linalg.norm(self.coordinates, axis=1)


def centred_spectrum(projection, n) -> np.ndarray:
    """rfft2 ``(n, n//2 + 1)`` complex64 of a ``(ny, nx)`` image zero-padded to ``n x n``, with the
    image's rotation centre ``(ny//2, nx//2)`` at the FFT origin."""
    ny, nx = projection.shape
    padded = np.zeros((n, n), np.float32)
    padded[:ny, :nx] = projection
    padded = np.roll(padded, (-(ny // 2), -(nx // 2)), axis=(0, 1))
    return fft.rfft2(padded, workers=fft_workers()).astype(np.complex64, copy=False)


def _plane_frequencies(n):
    """The 2D frequencies (ku, kv) ``(P, 2)`` strictly inside Nyquist that one rfft2 spectrum
    ``(n, n//2 + 1)`` gives: its own samples (mask ``own``) then the Hermitian mates of its interior
    columns 0 < ku < n/2 (mask ``mate``, value ``conj``)."""
    kv, ku = np.meshgrid(fft.fftfreq(n, 1 / n), np.arange(n // 2 + 1), indexing="ij")
    own = ku**2 + kv**2 < (n / 2) ** 2
    mate = own & (ku > 0)
    q = np.concatenate([np.stack([ku[own], kv[own]], 1), -np.stack([ku[mate], kv[mate]], 1)])
    return q, own, mate


def grid_projections(projections, angles, n, cutoff=0.5) -> GriddedData:
    """Grid ``(m, ny, nx)`` projections at ``angles`` (degrees) onto the half grid of an ``n^3`` cube.

    cutoff : interpolation radius in grid voxels (> 0); only grid points inside the Nyquist
    sphere ``|k| <= n/2`` are filled. Weights are inverse distances.
    """
    if not cutoff > 0:
        raise InputError(f"interpolation cutoff must be a positive distance in voxels, got {cutoff}")
    matrices = rotation_matrices(angles)
    half = n // 2 + 1
    q, own, mate = _plane_frequencies(n)
    # grid points within the cutoff of k lie in [k - cutoff, k + cutoff]: ceil(2 cutoff) per axis
    offsets = np.array(list(product(range(int(np.ceil(2 * cutoff))), repeat=3)), dtype=np.float64)
    index, weight, value = [], [], []
    for m, projection in zip(matrices, projections):
        spectrum = centred_spectrum(projection, n)
        samples = np.concatenate([spectrum[own], np.conj(spectrum[mate])])
        k = q @ m[:2]  # (kx, ky, kz) of every sample
        near = k[:, 0] > -cutoff
        k, samples = k[near], samples[near]
        base = np.ceil(k - cutoff)
        for offset in offsets:
            grid = base + offset
            diff = grid - k
            distance = np.sqrt(diff[:, 0] ** 2 + diff[:, 1] ** 2 + diff[:, 2] ** 2)
            ok = ((distance <= cutoff) & (grid[:, 0] >= 0)
                  & (grid[:, 0] ** 2 + grid[:, 1] ** 2 + grid[:, 2] ** 2 <= (n // 2) ** 2))
            g = grid[ok].astype(np.int64) % n
            index.append((g[:, 2] * n + g[:, 1]) * half + g[:, 0])
            weight.append(1.0 / np.maximum(distance[ok], 1e-3))
            value.append(samples[ok])
    index, weight, value = np.concatenate(index), np.concatenate(weight), np.concatenate(value)
    unique, inverse = np.unique(index, return_inverse=True)
    total = np.bincount(inverse, weight)
    values = (np.bincount(inverse, weight * value.real) + 1j * np.bincount(inverse, weight * value.imag)) / total
    return GriddedData(unique, values.astype(np.complex64), n)


def fourier_coverage(series) -> np.ndarray:
    """Where the tilt series samples Fourier space: ``log(1 + |F|)`` of its gridded data on the
    ``(n, n, n)`` grid of the volume (n = the larger image side, made even), zero frequency at
    index n//2 (fftshifted), axes (kz, ky, kx), 0 where nothing is measured, so the missing wedge
    shows as an empty region. Amplitudes do not depend on alignment shifts.
    """
    n = max(series.projections.shape[1:]) + max(series.projections.shape[1:]) % 2
    data = grid_projections(series.projections, series.angles, n)
    half = np.zeros((n, n, n // 2 + 1), np.float32)
    half.reshape(-1)[data.index] = np.log1p(np.abs(data.values))
    full = np.empty((n, n, n), np.float32)
    full[..., : n // 2 + 1] = half
    mate = -np.arange(n) % n  # |F(-k)| = |F(k)| fills the kx < 0 half
    full[..., n // 2 + 1:] = half[np.ix_(mate, mate, n - np.arange(n // 2 + 1, n))]
    return np.fft.fftshift(full)
