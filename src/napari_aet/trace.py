"""Atom tracing: candidate peaks in a reconstructed volume, sub-voxel fits, minimum distance.

The chain is :func:`particle_support` (where the particle is) -> local maxima above a
threshold inside it -> a 3D Gaussian fitted around every peak at once (vectorised
Levenberg-Marquardt) -> a minimum interatomic distance enforced by score, which does
not depend on the order of the candidates -> optionally "peel-off": subtract the fitted
atoms and search the residual for atoms hidden by brighter neighbours.
Positions are returned as an :class:`~napari_aet.model.AtomModel` in specimen (x, y, z) Å
about the rotation centre.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage
from scipy.spatial import cKDTree
from skimage.filters import threshold_otsu

from .elements import PIXELS_PER_MIN_DISTANCE, enforce_min_distance
from .geometry import voxel_to_specimen
from .model import AtomModel, InputError, Reconstruction
from .progress import report, sub_progress
from .sampling import fit_peaks, integrated_intensities, render_fits
from .threads import fft_workers

def _check_volume(volume) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume (nz, ny, nx), got an array of shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise InputError("the volume contains NaN or Inf values")
    if volume.size == 0 or np.ptp(volume) == 0:
        raise InputError("the volume is empty (every voxel has the same value): nothing to trace")
    return volume


def particle_support(volume, *, sigma=2.0, dilation=2.0, voxel_size=1.0, min_fraction=0.05) -> np.ndarray:
    """Boolean mask ``(nz, ny, nx)`` of the particle: smoothed, Otsu-thresholded, cleaned.

    volume : ``(nz, ny, nx)`` reconstruction; voxel_size : Å per voxel.
    sigma : Gaussian smoothing width (Å) before thresholding; about one interatomic distance
        blurs the atoms into one blob, so weak surface atoms are not cut off.
    dilation : distance (Å) added around the thresholded region.
    min_fraction : connected regions smaller than this fraction of the largest are dropped.
    Holes inside the particle are filled. The mask is smooth on the scale of ``sigma``, so
    it is computed on a grid binned to at most ``sigma / 2`` and expanded back.
    """
    volume = _check_volume(volume)
    factor = max(1, int(sigma / (2 * voxel_size)))
    binned = _bin(volume, factor)
    smooth = ndimage.gaussian_filter(binned, sigma / (voxel_size * factor))
    mask = smooth > threshold_otsu(smooth)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= min_fraction * sizes.max()))
    mask = ndimage.binary_fill_holes(mask)
    radius = dilation / (voxel_size * factor)
    if radius >= 1:
        mask = _dilate(mask, radius)
    for axis in range(3):
        mask = np.repeat(mask, factor, axis=axis)
    return mask[:volume.shape[0], :volume.shape[1], :volume.shape[2]]


def _bin(volume, factor):
    """Block means of ``factor**3`` voxels (the volume edge-padded to a multiple of ``factor``)."""
    if factor == 1:
        return volume
    pad = [(0, -n % factor) for n in volume.shape]
    v = np.pad(volume, pad, mode="edge")
    nz, ny, nx = (n // factor for n in v.shape)
    return v.reshape(nz, factor, ny, factor, nx, factor).mean(axis=(1, 3, 5))


def _dilate(mask, radius):
    """Dilation of ``mask`` by a ball of ``radius`` voxels, as an FFT convolution (fast for big balls)."""
    shape = mask.shape
    r = int(np.ceil(radius))
    padded_shape = tuple(n + r + 1 for n in shape)  # padding absorbs the wrap-around of the FFT
    g = np.arange(-r, r + 1)
    ball = np.zeros(padded_shape, np.float32)  # the ball centred on voxel 0 (periodically)
    ball[np.ix_(*(g % n for n in padded_shape))] = (g[:, None, None] ** 2 + g[None, :, None] ** 2
                                                   + g[None, None, :] ** 2) <= radius ** 2
    padded = np.zeros(padded_shape, np.float32)
    padded[:shape[0], :shape[1], :shape[2]] = mask
    spectrum = fft.rfftn(padded, workers=fft_workers()) * fft.rfftn(ball, workers=fft_workers())
    out = fft.irfftn(spectrum, padded_shape, workers=fft_workers())
    return out[:shape[0], :shape[1], :shape[2]] > 0.5


def _background_threshold(volume, support, n_sigma=3.0):
    """Robust noise level outside the support: median + ``n_sigma`` * 1.4826 * MAD."""
    outside = volume[~support]
    if outside.size < 1000:
        outside = volume.ravel()
    median = np.median(outside)
    mad = 1.4826 * np.median(np.abs(outside - median))
    return float(median + n_sigma * mad)


def _local_maxima(volume, support, threshold) -> np.ndarray:
    """Integer indices ``(N, 3)`` (z, y, x) of 26-neighbour local maxima above threshold in support."""
    peaks = (ndimage.maximum_filter(volume, size=3, mode="nearest") == volume) & (volume > threshold) & support
    return np.argwhere(peaks)


def _common_width(widths, quality):
    """``(N, 3)`` copies of the median widths of the better half of the fits: the reconstruction's
    blur is shared by all atoms, while one small patch constrains a single atom's width poorly."""
    good = quality >= np.median(quality)
    return np.broadcast_to(np.median(widths[good], axis=0), widths.shape)


def trace_atoms(reconstruction: Reconstruction, *, min_distance=2.0, threshold=None, support=None,
                fit_radius=None, peel_iterations=0, progress=None) -> AtomModel:
    """Atoms of a reconstruction: positions to sub-voxel precision with per-atom fit quality.

    reconstruction : the volume ``(nz, ny, nx)`` and its voxel size (Å).
    min_distance : smallest allowed interatomic distance, Å. Of a too-close pair the one with
        the larger integrated intensity (a cube of the fit's size around the fitted centre) is
        kept, resolved globally so the result does not depend on the processing order.
    threshold : smallest peak value (volume units) of a candidate; ``None`` = robust noise
        level outside the support (median + 3 x 1.4826 x MAD).
    support : boolean mask ``(nz, ny, nx)`` where atoms may be; ``None`` = :func:`particle_support`.
    fit_radius : half-width (Å) of the cube fitted around each peak (at least one voxel);
        ``None`` = min_distance / 4, which keeps bright neighbours out of the fit.
    peel_iterations : rounds of "peel-off": subtract every fitted atom (its Gaussian), search
        the residual for further peaks at least ``min_distance`` from every atom found, and
        finally refit each atom with all the others subtracted.
    progress : ``progress(fraction, message)``; raise :class:`~napari_aet.progress.Cancelled` to stop.

    Returns an AtomModel (x, y, z Å about the rotation centre, species ""), features
    ``peak`` (fitted peak height), ``fit_quality`` (R² of the fit, 0 = failed fit),
    ``width`` (geometric mean of the fitted Gaussian sigmas, Å) and ``peel_round``
    (0 = found directly, k = found in the k-th residual).
    """
    if not isinstance(reconstruction, Reconstruction):
        raise InputError("trace_atoms needs a Reconstruction (volume and voxel size), e.g. "
                         f"Reconstruction(volume, voxel_size=0.4); got {type(reconstruction).__name__}")
    volume = _check_volume(reconstruction.volume)
    voxel = reconstruction.voxel_size
    if not (np.isfinite(min_distance) and min_distance > 0):
        raise InputError(f"min_distance must be a positive number of Å, got {min_distance}")
    low, high = PIXELS_PER_MIN_DISTANCE
    if not low <= min_distance / voxel <= high:  # a voxel size in the wrong unit: hours of work, or atoms made up
        raise InputError(f"min_distance {min_distance:g} Å is {min_distance / voxel:.2f} voxels of {voxel:g} Å: "
                         f"tracing needs {low:g}-{high:g}; is the pixel size in Å (not nm or pm)?")
    report(progress, 0.0, "finding the particle support")
    if support is None:
        support = particle_support(volume, voxel_size=voxel)
    support = np.asarray(support, dtype=bool)
    if support.shape != volume.shape:
        raise InputError(f"support has shape {support.shape}, expected the volume's shape {volume.shape}")
    if threshold is None:
        threshold = _background_threshold(volume, support)
    half = max(1, int(round((min_distance / 4 if fit_radius is None else fit_radius) / voxel)))
    rounds = int(peel_iterations) + 1
    residual = volume
    peaks = np.zeros((0, 3), dtype=np.int64)
    fits = [np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0)]
    peel_round = np.zeros(0, dtype=np.int64)
    for k in range(rounds):
        stage = sub_progress(progress, 0.05 + 0.85 * k / rounds, 0.05 + 0.85 * (k + 1) / rounds)
        report(stage, 0.0, f"finding peaks (round {k + 1} of {rounds})")
        new_peaks = _local_maxima(residual, support, threshold)
        if k == 0 and len(new_peaks) == 0:
            raise InputError(f"no peak above the threshold {threshold:.4g} inside the particle support: "
                             "lower the threshold or check the support")
        new = fit_peaks(residual, new_peaks, half, progress=sub_progress(stage, 0.1, 0.9))
        atoms = AtomModel(voxel_to_specimen(new[0], volume.shape, voxel))
        keep = enforce_min_distance(atoms.positions, integrated_intensities(residual, atoms, voxel, box=2 * half + 1),
                                    min_distance)
        if len(peaks):
            previous = voxel_to_specimen(fits[0], volume.shape, voxel)
            keep &= cKDTree(previous).query(atoms.positions)[0] >= min_distance
        peaks = np.concatenate([peaks, new_peaks[keep]])
        fits = [np.concatenate([old, x[keep]]) for old, x in zip(fits, new)]
        peel_round = np.concatenate([peel_round, np.full(np.count_nonzero(keep), k)])
        if rounds > 1:
            models = (fits[0], fits[2], _common_width(fits[3], fits[4]))
            residual = volume - render_fits(volume.shape, *models)
    if rounds > 1:
        report(progress, 0.9, "refitting every atom with its neighbours subtracted")
        fits = list(fit_peaks(residual, peaks, half, own=models))
    report(progress, 0.97, "building the atom model")
    centres, background, amplitude, width, quality = fits
    atoms = AtomModel(voxel_to_specimen(centres, volume.shape, voxel), None, {
        "peak": background + amplitude, "fit_quality": quality,
        "width": np.exp(np.log(width).mean(axis=1)) * voxel, "peel_round": peel_round})
    report(progress, 1.0, f"traced {len(atoms)} atoms")
    return atoms
