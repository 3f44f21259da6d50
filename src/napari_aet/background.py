"""The background of a tilt series' projections: where the particle is in each image, and a
constant or smooth background fitted to the pixels around it and subtracted.

A building block of pre-processing (a step the user chooses) and of alignment (which measures
on a copy with the background removed; docs/architecture.md). Projections are ``(n, ny, nx)``
in detector counts; masks are ``(ny, nx)`` booleans; distances in pixels.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy import ndimage

from .model import InputError, TiltSeries


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


#: What can be removed before reconstructing and refining (:func:`background_removed`).
BACKGROUNDS = ("none", "constant", "smooth")


def background_removed(series: TiltSeries, background) -> tuple[TiltSeries, str]:
    """``series`` with the ``background`` ("smooth", "constant" or "none") removed
    (:func:`subtract_background`, the model and degree chosen from the data), and why not (""
    if it was): where the particle leaves too little background for a fit, the series is returned
    as it is."""
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r} is unknown: expected one of {', '.join(BACKGROUNDS)}")
    if background == "none":
        return series, ""
    try:
        return subtract_background(series, method=background, model=None, degree=None), ""
    except InputError as error:  # too little background to fit
        return series, str(error)
