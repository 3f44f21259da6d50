"""Fast frame stacks: the frames of every tilt registered (their drift measured) and summed.

What the tilt-series readers do with a 4D file ``(n_angles, n_frames, ny, nx)`` (counts), so a
building block of reading, not a pre-processing step (docs/architecture.md). Drifts are (dy, dx)
pixels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from .model import InputError
from .progress import report


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
