"""Pre-processing of tilt series before alignment: intensity, noise, scan distortion (fast frames
are merged on reading, :mod:`napari_aet.frames`; the background is :mod:`napari_aet.background`,
which alignment shares).

Every function returns new data and records what it did in ``metadata``; the input is
never modified. Intensities are detector counts unless stated otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from scipy import ndimage, stats
from skimage.restoration import denoise_nl_means, denoise_wavelet

from .model import InputError, TiltSeries
from .progress import report


#: A spike stands above its brightest neighbour by this many times the 90th percentile of that
#: excess over the series' local maxima (clean series: at most 3.7 among pixels twice as bright
#: as every neighbour, 8.3 among all; benchmarks/RESULTS.md §2) ...
SPIKE_EXCESS = 12.0
#: ... and is more than this many times as bright as any neighbour (an atom imaged with a blur of
#: 1 px or more: at most 1.65 without noise).
SPIKE_RATIO = 2.0


def replace_spikes(series: TiltSeries) -> TiltSeries:
    """Single-pixel outliers (X-ray or cosmic-ray hits, hot pixels) replaced by the median of their
    eight neighbours, in every projection.

    A pixel is a spike when it exceeds its brightest neighbour by :data:`SPIKE_EXCESS` times the 90th
    percentile of that excess over the series' local maxima (atoms' and noise's; spikes are too few
    to move it) and is more than :data:`SPIKE_RATIO` times as bright as every neighbour: atoms are
    blurred over neighbouring pixels, so neither holds for them (on our simulations at every dose,
    an abTEM multislice series and the measured Ta film, no pixel does). The replaced pixels, as
    ``(projection, row, column)`` rows, go to ``metadata["spikes"]``; a series without spikes is
    returned unchanged.
    """
    projections = np.asarray(series.projections, dtype=np.float32)
    around = np.ones((1, 3, 3), bool)
    around[0, 1, 1] = False
    brightest = ndimage.maximum_filter(projections, footprint=around, mode="mirror")
    excess = projections - brightest
    peaks = excess[excess > 0]  # local maxima: atoms and noise, and the spikes among them
    if len(peaks) == 0:
        return series
    spikes = (excess > SPIKE_EXCESS * float(np.quantile(peaks, 0.9))) & (
        projections > SPIKE_RATIO * np.maximum(brightest, 0.0))
    if not np.any(spikes):
        return series
    cleaned = projections.copy()
    cleaned[spikes] = ndimage.median_filter(projections, footprint=around, mode="mirror")[spikes]
    return series.replace(projections=cleaned, metadata={**series.metadata,
                                                         "spikes": np.argwhere(spikes).tolist()})


def relative_totals(series: TiltSeries) -> np.ndarray:
    """Each projection's total intensity over the series' mean ``(n,)``: about 1 everywhere for an
    isolated particle under a steady beam; spread by beam-current drift, and by channelling where a
    zone axis lies near the beam (up to 1.38 at two views of an abTEM series, benchmarks/RESULTS.md §3).
    NaN when the mean total is not positive (e.g. a background subtracted to below zero)."""
    totals = series.projections.sum(axis=(1, 2), dtype=np.float64)
    mean = totals.mean()
    return totals / mean if mean > 0 else np.full(len(totals), np.nan)


def normalise_intensity(series: TiltSeries) -> TiltSeries:
    """Scale every projection to the mean total intensity (ADF mass conservation).

    Run after :func:`napari_aet.background.subtract_background`, or the background is counted as mass. The
    factors ``(n,)`` go to ``metadata["normalisation"]["factors"]``.
    """
    relative = relative_totals(series)
    if not np.all(relative > 0):
        raise InputError(f"projection(s) {series.file_indices(~(relative > 0))} have no positive total "
                         "intensity: check the background subtraction or leave those tilts out (--exclude I,J, "
                         "or the Data step's leave out projections)")
    factors = 1.0 / relative
    out = (series.projections * factors[:, None, None]).astype(np.float32)
    return series.replace(projections=out, metadata={**series.metadata,
                                                     "normalisation": {"factors": factors.tolist()}})


# -------------------------------------------------------------------- denoising

#: Counts above which the unbiased inverse Anscombe transform uses its asymptotic form.
_EXACT_INVERSE_LIMIT = 400.0


def anscombe(counts) -> np.ndarray:
    """Variance-stabilising transform ``2 sqrt(counts + 3/8)``: Poisson counts -> unit variance."""
    return 2.0 * np.sqrt(np.maximum(counts, 0) + 0.375)


def inverse_anscombe(values) -> np.ndarray:
    """Exact unbiased inverse of :func:`anscombe` (Mäkitalo & Foi 2011).

    Returns the Poisson mean ``lam`` whose transform has expectation ``values``:
    ``E[anscombe(Poisson(lam))]`` is tabulated exactly for ``lam <= 400`` and inverted
    by interpolation; above, its asymptotic inverse ``values**2 / 4 - 1/8`` is used.
    """
    values = np.asarray(values, dtype=np.float64)
    lam = np.linspace(0, np.sqrt(_EXACT_INVERSE_LIMIT), 2001) ** 2
    k = np.arange(int(_EXACT_INVERSE_LIMIT + 12 * np.sqrt(_EXACT_INVERSE_LIMIT) + 30))
    expected = stats.poisson.pmf(k[None, :], lam[:, None]) @ anscombe(k)
    exact = np.interp(values, expected, lam, left=0.0)
    return np.where(values <= expected[-1], exact, values ** 2 / 4 - 0.125)


_DENOISERS = {
    "nlmeans": lambda image, options: denoise_nl_means(
        image, **{"sigma": 1.0, "h": 0.8, "patch_size": 5, "patch_distance": 6, "fast_mode": True, **options}),
    "wavelet": lambda image, options: denoise_wavelet(
        image, **{"sigma": 1.0, "method": "BayesShrink", "mode": "soft", "rescale_sigma": True, **options}),
}


def denoise(series: TiltSeries, *, method="none", gain=1.0, progress=None, **options) -> TiltSeries:
    """Poisson-aware denoising: Anscombe transform, a scikit-image denoiser, exact unbiased inverse.

    method : ``"none"`` (the series unchanged), ``"nlmeans"``
        (:func:`skimage.restoration.denoise_nl_means`) or ``"wavelet"``
        (:func:`skimage.restoration.denoise_wavelet`); ``options`` go to that function
        (the noise sigma after the transform is 1).
    gain : detector units per count; the projections must be raw counts times ``gain``,
        so denoise *before* background subtraction.
    """
    if method == "none":
        return series
    if method not in _DENOISERS:
        raise InputError(f"denoising method {method!r} is unknown: expected 'none', 'nlmeans' or 'wavelet'")
    counts = series.projections / float(gain)
    if counts.min() < -1:
        raise InputError(f"denoising expects raw counts, but the projections go down to {counts.min():.1f}: "
                         "denoise before background subtraction, or set the detector gain")
    if method == "wavelet" and importlib.util.find_spec("pywt") is None:
        raise InputError("wavelet denoising needs PyWavelets: pip install PyWavelets, or use 'nlmeans'")
    out = np.empty_like(series.projections)
    for i, image in enumerate(anscombe(counts)):
        out[i] = inverse_anscombe(_DENOISERS[method](image, options)) * gain
        report(progress, (i + 1) / len(out), f"denoised projection {i + 1}/{len(out)}")
    record = {"method": method, "gain": float(gain), "options": options}
    return series.replace(projections=out, metadata={**series.metadata, "denoise": record})


# ------------------------------------------------------------ scan distortion


def correct_scan_distortion(series_or_frames, matrix):
    """Apply an affine correction ``matrix`` (2x2, acting on (x, y) about the image centre).

    A feature measured at (x, y) relative to the centre ``(nx//2, ny//2)`` moves to
    ``matrix @ (x, y)``; e.g. ``matrix = true_lattice @ inv(measured_lattice)`` with
    lattice vectors as columns. Accepts a TiltSeries (the matrix is recorded in
    ``metadata["scan_distortion"]``) or an array whose last two axes are (ny, nx), such
    as frames ``(n_angles, n_frames, ny, nx)``; returns the same type.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 2) or not np.all(np.isfinite(matrix)) or np.linalg.det(matrix) <= 0:
        raise InputError(f"scan-distortion correction must be a finite 2x2 matrix with positive "
                         f"determinant, got {matrix.tolist()}")
    is_series = isinstance(series_or_frames, TiltSeries)
    data = np.asarray(series_or_frames.projections if is_series else series_or_frames)
    if data.ndim < 2:
        raise InputError(f"expected images (..., ny, nx), got shape {data.shape}")
    ny, nx = data.shape[-2:]
    swap = np.array([[0, 1], [1, 0]])
    inverse = swap @ np.linalg.inv(matrix) @ swap  # output (row, col) -> input (row, col)
    centre = np.array([ny // 2, nx // 2], dtype=np.float64)
    images = data.reshape(-1, ny, nx).astype(np.float32)
    out = np.stack([ndimage.affine_transform(im, inverse, offset=centre - inverse @ centre, order=3,
                                             mode="nearest") for im in images]).reshape(data.shape)
    if not is_series:
        return out
    return series_or_frames.replace(projections=out, metadata={
        **series_or_frames.metadata, "scan_distortion": matrix.tolist()})
