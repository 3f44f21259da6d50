"""Pre-processing of tilt series before alignment: frames, background, intensity, noise, scan distortion.

Every function returns new data and records what it did in ``metadata``; the input is
never modified. Intensities are detector counts unless stated otherwise.
"""

from __future__ import annotations

import importlib.util
from functools import partial

import numpy as np
from scipy import ndimage, stats
from skimage.registration import phase_cross_correlation
from skimage.restoration import denoise_nl_means, denoise_wavelet

from .model import InputError, TiltSeries
from .progress import report

# ------------------------------------------------------------------ frame stacks


def _band_pass(images, fine=1.0, coarse=8.0):
    """Difference of Gaussian blurs (px) over the last two axes: keeps atom-sized features,
    suppresses pixel noise and slowly varying backgrounds."""
    images = np.asarray(images, dtype=np.float32)
    lead = (0,) * (images.ndim - 2)
    return (ndimage.gaussian_filter(images, lead + (fine, fine))
            - ndimage.gaussian_filter(images, lead + (coarse, coarse)))


def _frame_drift(frames, upsample, iterations):
    """Displacement (dy, dx) ``(f, 2)`` of each frame of one tilt, mean zero."""
    spectra = np.fft.fft2(_band_pass(frames))
    ky = np.fft.fftfreq(frames.shape[1])[:, None]
    kx = np.fft.fftfreq(frames.shape[2])[None, :]
    drift = np.zeros((len(frames), 2))
    for _ in range(iterations):
        aligned = spectra * np.exp(2j * np.pi * (ky[None] * drift[:, :1, None] + kx[None] * drift[:, 1:, None]))
        total = aligned.sum(axis=0)
        for f in range(len(frames)):  # leave-one-out reference: no bias towards zero drift
            drift[f] = -phase_cross_correlation(total - aligned[f], spectra[f], space="fourier",
                                                upsample_factor=upsample, normalization=None)[0]
        drift -= drift.mean(axis=0)
    return drift


def register_frames(frames, *, upsample=20, iterations=3, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Register the fast frames of every tilt and sum them.

    frames : ``(n_angles, n_frames, ny, nx)`` counts.
    upsample : sub-pixel precision is ``1 / upsample`` px.

    Each frame is cross-correlated (band-passed to atom-sized features) with the sum of the
    other frames of its tilt, ``iterations`` times. Returns the registered frames
    *summed* ``(n_angles, ny, nx)`` float32 (a sum keeps Poisson counts; divide by
    ``n_frames`` for the mean) and the drift ``(n_angles, n_frames, 2)``: displacement
    (dy, dx) px of each frame from its tilt's mean position.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise InputError(f"expected frame stacks (n_angles, n_frames, ny, nx), got shape {frames.shape}: "
                         "a single frame per angle needs no registration, open it as a tilt series")
    if frames.shape[1] < 2:
        raise InputError(f"only one frame per angle in shape {frames.shape}: nothing to register, "
                         "use frames[:, 0] as the tilt series")
    out = np.empty((frames.shape[0], *frames.shape[2:]), dtype=np.float32)
    drift = np.empty(frames.shape[:2] + (2,))
    for i, stack in enumerate(frames):
        drift[i] = _frame_drift(stack.astype(np.float32), upsample, iterations)
        out[i] = sum(ndimage.shift(frame.astype(np.float32), -d, order=3, mode="nearest")
                     for frame, d in zip(stack, drift[i]))
        report(progress, (i + 1) / len(frames), f"registered frames of tilt {i + 1}/{len(frames)}")
    return out, drift


def merge_frames(frames, *, upsample=20, progress=None) -> tuple[np.ndarray, dict]:
    """Frame stacks ``(n_angles, n_frames, ny, nx)`` registered and summed (:func:`register_frames`),
    with the metadata a TiltSeries keeps of them: ``frame_drift`` (px, (dy, dx)) and ``n_frames``."""
    projections, drift = register_frames(frames, upsample=upsample, progress=progress)
    return projections, {"frame_drift": drift.tolist(), "n_frames": int(np.shape(frames)[1])}


# ----------------------------------------------------------------- background


def particle_mask(image, *, threshold=3.0, margin=4, smooth=2.0, floor=0.01) -> np.ndarray:
    """Boolean ``(ny, nx)`` mask of the particle: the smoothed image more than ``threshold``
    noise deviations, and more than ``floor`` times its peak, above the border level, grown
    by ``margin`` px, and of that only the largest connected region (the particle). The floor
    matters where the border has no noise (e.g. zero counts); keeping one region drops the
    isolated noise peaks that pass the threshold in a large noisy background (~0.1% of pixels
    at 3 deviations), which would otherwise bias a centre of mass by their distance."""
    blurred = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), smooth)
    border = np.concatenate([blurred[:2].ravel(), blurred[-2:].ravel(), blurred[:, :2].ravel(),
                             blurred[:, -2:].ravel()])
    level = np.median(border)
    noise = 1.4826 * np.median(np.abs(border - level))
    cut = max(threshold * noise, floor * (blurred.max() - level), 1e-12)
    grown = ndimage.binary_dilation(blurred - level > cut, iterations=margin)
    labels, count = ndimage.label(grown)
    if count <= 1:
        return grown
    return labels == 1 + int(np.argmax(ndimage.sum_labels(grown, labels, np.arange(1, count + 1))))


def _polynomial_design(shape, degree):
    """Legendre products P_i(x) P_j(y), i + j <= degree, on pixel coordinates scaled to [-1, 1],
    ``(ny*nx, terms)``; ordered by total degree, so the first :func:`_n_terms` (d) columns span degree d."""
    ny, nx = shape
    px = np.polynomial.legendre.legvander(np.linspace(-1, 1, nx), degree)
    py = np.polynomial.legendre.legvander(np.linspace(-1, 1, ny), degree)
    return np.stack([np.outer(py[:, t - i], px[:, i]).ravel() for t in range(degree + 1) for i in range(t + 1)],
                    axis=1)


def _n_terms(degree):
    return (degree + 1) * (degree + 2) // 2


def _moments(images, rows, design):
    """Normal equations of a least-squares fit of ``design`` ``(pixels, terms)`` (column 0 constant)
    to the pixels ``rows`` ``(n, pixels)`` bool of each image: Gram matrices ``(n, terms, terms)``
    and right-hand sides ``(n, terms)``."""
    grams, rhs = [], []
    for image, r in zip(images, rows):
        d = design[r]
        grams.append(d.T @ d)
        rhs.append(d.T @ image[r])
    return np.array(grams), np.array(rhs)


def _fit_each(moments, design, terms):
    """Backgrounds ``(n, pixels)``: a polynomial (the first ``terms`` columns of ``design``) per projection."""
    grams, rhs = moments
    coef = np.stack([np.linalg.lstsq(g[:terms, :terms], h[:terms], rcond=None)[0] for g, h in zip(grams, rhs)])
    return coef @ design[:, :terms].T


def _fit_shared(moments, design, terms, scaled=False, iterations=4):
    """Backgrounds ``(n, pixels)`` ``c_i + s_i B``: one shape B (a polynomial, columns 1..``terms`` - 1 of
    ``design``) for all projections, with a level c_i per projection and, if ``scaled``, a scale
    s_i (rms 1; else 1); least squares, alternating between B and the scales."""
    grams, rhs = moments
    count, sums, total = grams[:, 0, 0], grams[:, 0, 1:terms], rhs[:, 0]
    # the level c_i eliminated: normal equations of the shape alone, centred per projection
    centred = grams[:, 1:terms, 1:terms] - np.einsum("ik,il->ikl", sums, sums) / count[:, None, None]
    projections = rhs[:, 1:terms] - sums * (total / count)[:, None]
    scales, beta = np.ones(len(grams)), np.zeros(terms - 1)
    for _ in range(0 if terms == 1 else iterations if scaled else 1):
        beta = np.linalg.lstsq(np.einsum("i,ikl->kl", scales ** 2, centred), scales @ projections, rcond=None)[0]
        if scaled:
            power = np.einsum("k,ikl,l->i", beta, centred, beta)
            scales = np.where(power > 0, projections @ beta / np.where(power > 0, power, 1), 1.0)
            norm = np.sqrt(np.mean(scales ** 2))
            scales, beta = scales / norm, beta * norm
    levels = (total - scales * (sums @ beta)) / count
    return levels[:, None] + scales[:, None] * (design[:, 1:terms] @ beta)[None, :]


#: Background models of :func:`subtract_background` ("smooth"): fit(moments, design, terms).
_MODELS = {"each": _fit_each, "shared": _fit_shared, "scaled": partial(_fit_shared, scaled=True)}


def _select_model(images, outside, distance, design, models, degrees):
    """The background model (a name in ``models``) and degree (one of ``degrees``) whose fit
    to the outside pixels farther from the particle best predicts the nearest third of them (by
    ``distance`` to the particle mask): the extrapolation towards the particle that a background
    under it needs. Returns (model, degree, squared prediction error per degree for each model)."""
    third = np.array([np.quantile(d[o], 1 / 3) for d, o in zip(distance, outside)])
    near = outside & (distance <= third[:, None])
    moments = _moments(images, outside & ~near, design)
    errors = {name: [float(np.sum(((images - _MODELS[name](moments, design, _n_terms(d))) ** 2)[near]))
                     for d in degrees] for name in models}
    best = min(errors, key=lambda name: min(errors[name]))
    return best, degrees[int(np.argmin(errors[best]))], errors


def subtract_background(series: TiltSeries, *, method="constant", degree=3, model="each", max_degree=8,
                        threshold=3.0, margin=4) -> TiltSeries:
    """Subtract a background estimated outside the particle in every projection.

    method : ``"constant"`` (mean of the pixels outside the particle) or ``"smooth"``
        (a 2D polynomial of ``degree`` fitted to them, then a second pass with the
        particle mask recomputed on the corrected image).
    model : ``"smooth"`` only. ``"each"``: a polynomial per projection. ``"shared"``: the
        background is fixed to the detector, one polynomial shape B for all projections plus
        a level per projection (``c_i + B``); ``"scaled"``: also a scale per projection
        (``c_i + s_i B``, e.g. a beam current that varies). Fitted to the outside pixels of
        all tilts together, a shared shape is far less noisy under the particle than a fit
        per projection, so a higher degree can follow the background closely.
        None: the model is chosen from the data, as the degree is (below).
    degree : polynomial degree, or None to choose it from the data (0..``max_degree``): the
        model and degree whose fit to the outside pixels farther from the particle best
        predicts the nearest third of them, i.e. extrapolate best towards (and so under) the
        particle.
    threshold, margin : particle mask, see :func:`particle_mask`.

    The image border must show background: at least 10% of the image must lie outside
    the particle mask, else :class:`InputError`.

    ``metadata["background"]`` records the method, the degree used, the mean level per projection
    (counts) and, when the degree was chosen, the prediction error per degree.
    """
    if method not in ("constant", "smooth"):
        raise InputError(f"background method {method!r} is unknown: expected 'constant' or 'smooth'")
    if model is not None and model not in _MODELS:
        raise InputError(f"background model {model!r} is unknown: expected one of {sorted(_MODELS)} or None")
    n, ny, nx = series.projections.shape
    images = series.projections.reshape(n, -1).astype(np.float64)
    design = _polynomial_design((ny, nx), (max_degree if degree is None else degree) if method == "smooth" else 0)
    background = np.zeros_like(images)
    record = {"method": method}
    for step in range(2 if method == "smooth" else 1):
        masks = np.stack([particle_mask(image.reshape(ny, nx), threshold=threshold, margin=margin)
                          for image in images - background])
        fraction = 1 - masks.reshape(n, -1).mean(axis=1)
        if fraction.min() < 0.1:
            i = int(np.argmin(fraction))
            raise InputError(f"projection {i}: the particle fills the field of view ({fraction[i]:.0%} "
                             "background left); crop less tightly or skip background subtraction")
        outside = ~masks.reshape(n, -1)
        used, name = (degree, model) if method == "smooth" else (0, "each")
        if used is None or name is None:
            distance = np.stack([ndimage.distance_transform_edt(~m) for m in masks]).reshape(n, -1)
            name, used, record["prediction_errors"] = _select_model(
                images, outside, distance, design, _MODELS if name is None else [name],
                list(range(max_degree + 1)) if used is None else [used])
        background = _MODELS[name](_moments(images, outside, design[:, :_n_terms(used)]), design, _n_terms(used))
        if method == "smooth":
            record.update(degree=used, model=name)
    record["levels"] = background.mean(axis=1).tolist()
    out = (images - background).reshape(n, ny, nx).astype(np.float32)
    return series.replace(projections=out, metadata={**series.metadata, "background": record})


def normalise_intensity(series: TiltSeries) -> TiltSeries:
    """Scale every projection to the mean total intensity (ADF mass conservation).

    Run after :func:`subtract_background`, or the background is counted as mass. The
    factors ``(n,)`` go to ``metadata["normalisation"]["factors"]``.
    """
    totals = series.projections.sum(axis=(1, 2), dtype=np.float64)
    if np.any(totals <= 0):
        raise InputError(f"projection(s) {np.flatnonzero(totals <= 0).tolist()} have no positive total "
                         "intensity: check the background subtraction or remove those tilts")
    factors = totals.mean() / totals
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
