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

from .classify import integrated_intensities
from .elements import close_pairs
from .geometry import voxel_to_specimen
from .model import AtomModel, InputError, Reconstruction
from .progress import report, sub_progress
from .threads import fft_workers

#: Atoms fitted per vectorised batch (bounds memory: ~batch * patch voxels * 8 parameters).
_BATCH = 4096


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


def _patch_offsets(half):
    r = np.arange(-half, half + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def _patches(volume, centres, half):
    """Values ``(N, M)`` of the ``(2*half+1)**3`` voxels around integer ``centres`` (edge-clamped)."""
    idx = centres[:, None, :] + _patch_offsets(half)[None]
    idx = np.clip(idx, 0, np.array(volume.shape) - 1)
    return volume[idx[..., 0], idx[..., 1], idx[..., 2]]


def _fit_gaussians(values, offsets, iterations=30):
    """Fit ``b + A exp(-sum_k (r_k - c_k)^2 / (2 s_k^2))`` to every row of ``values`` at once.

    Levenberg-Marquardt, vectorised over atoms. values : ``(N, M)`` patch values at
    ``offsets`` ``(M, 3)`` voxels from the patch centre. Returns centre ``(N, 3)`` (voxels,
    relative to the patch centre), background ``b``, amplitude ``A``, widths ``(N, 3)``
    (voxels) and R² of the fit.
    """
    values = values.astype(np.float64)
    r = offsets.astype(np.float64)[None]  # (1, M, 3)
    n = len(values)
    lo, hi = values.min(axis=1), values.max(axis=1)
    params = np.zeros((n, 8))
    params[:, 0], params[:, 1], params[:, 5:] = lo, hi - lo, 1.0
    damping = np.full(n, 1e-3)

    def model(p):
        q = (r - p[:, None, 2:5]) / p[:, None, 5:]
        e = np.exp(-0.5 * np.sum(q * q, axis=2))
        return q, e, p[:, None, 0] + p[:, None, 1] * e

    def cost(p):
        return np.sum((model(p)[2] - values) ** 2, axis=1)

    current = cost(params)
    for _ in range(iterations):
        q, e, f = model(params)
        ae = (params[:, 1, None] * e)[..., None]
        jac = np.concatenate([np.ones_like(e)[..., None], e[..., None], ae * q / params[:, None, 5:],
                              ae * q * q / params[:, None, 5:]], axis=2)
        jtj = np.einsum("nmi,nmj->nij", jac, jac)
        jtr = np.einsum("nmi,nm->ni", jac, values - f)
        damped = jtj + (damping[:, None] * (np.einsum("nii->ni", jtj) + 1e-12))[..., None] * np.eye(8)
        trial = params + np.linalg.solve(damped, jtr[..., None])[..., 0]
        trial[:, 5:] = np.clip(np.abs(trial[:, 5:]), 0.2, 10.0)
        new = cost(trial)
        better = new < current
        gain = np.where(better, current - new, 0.0)
        params[better], current[better] = trial[better], new[better]
        damping = np.where(better, damping * 0.3, damping * 10.0)
        if np.all(gain <= 1e-9 * np.maximum(current, 1e-30)) and np.all(damping > 1e-3):
            break
    total = np.sum((values - values.mean(axis=1, keepdims=True)) ** 2, axis=1)
    quality = np.clip(1.0 - current / np.maximum(total, 1e-30), 0.0, 1.0)
    return params[:, 2:5], params[:, 0], params[:, 1], params[:, 5:], quality


def _gaussians(points, centres, amplitude, widths):
    """Values ``(N, M)`` at ``points`` ``(N, M, 3)`` of each atom's fitted Gaussian (no background)."""
    q = (points - centres[:, None]) / widths[:, None]
    return amplitude[:, None] * np.exp(-0.5 * np.sum(q * q, axis=2))


def _fit_peaks(volume, peaks, half, own=None, progress=None):
    """Fit a Gaussian around each integer peak ``(N, 3)`` (z, y, x voxels) of ``volume``.

    own : ``(centres, amplitudes, widths)`` of Gaussians added back to each atom's patch
        (refitting an atom on a residual from which every fitted atom was subtracted).
    Returns centres ``(N, 3)`` (voxels), backgrounds, amplitudes, widths ``(N, 3)`` and fit quality.
    A fit whose centre leaves the peak voxel's neighbourhood or whose amplitude is not positive
    failed: it keeps the peak voxel with quality 0.
    """
    offsets = _patch_offsets(half)
    results = []
    for start in range(0, len(peaks), _BATCH):
        report(progress, start / len(peaks), "fitting atoms")
        part = slice(start, start + _BATCH)
        values = _patches(volume, peaks[part], half)
        if own is not None:
            c, a, w = (x[part] for x in own)
            values = values + _gaussians(peaks[part, None] + offsets[None], c, a, w)
        centre, background, amplitude, width, quality = _fit_gaussians(values, offsets)
        failed = (np.abs(centre).max(axis=1) > 1.0) | (amplitude <= 0)
        centre[failed], quality[failed], background[failed] = 0.0, 0.0, 0.0
        amplitude[failed] = values[failed, len(offsets) // 2]
        results.append((peaks[part] + centre, background, amplitude, width, quality))
    report(progress, 1.0, "fitting atoms")
    if not results:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*results))


def _common_width(widths, quality):
    """``(N, 3)`` copies of the median widths of the better half of the fits: the reconstruction's
    blur is shared by all atoms, while one small patch constrains a single atom's width poorly."""
    good = quality >= np.median(quality)
    return np.broadcast_to(np.median(widths[good], axis=0), widths.shape)


def _render(shape, centres, amplitude, widths):
    """A volume ``shape`` of the fitted Gaussians (centres, widths in voxels), each cut at 3 sigma."""
    half = int(np.ceil(3 * widths.max())) if len(widths) else 0
    offsets = _patch_offsets(min(half, 8))
    out = np.zeros(int(np.prod(shape)))
    for start in range(0, len(centres), _BATCH):
        part = slice(start, start + _BATCH)
        points = np.round(centres[part])[:, None].astype(np.int64) + offsets[None]
        inside = np.all((points >= 0) & (points < np.array(shape)), axis=2)
        values = _gaussians(points, centres[part], amplitude[part], widths[part])
        out += np.bincount(np.ravel_multi_index(tuple(points[inside].T), shape), values[inside], out.size)
    return out.reshape(shape).astype(np.float32)


def enforce_min_distance(positions, score, min_distance, species_index=None) -> np.ndarray:
    """Boolean mask of the atoms kept so that no two kept atoms are closer than ``min_distance``.

    Of any too-close pair the one with the higher ``score`` wins (ties broken by position),
    resolved globally: the result equals greedy suppression in score order, so it does not
    depend on the order of the input. Vectorised: each round keeps every atom that beats all
    its undecided neighbours and drops their neighbours.
    positions : ``(N, 3)``; score : ``(N,)``; min_distance in the units of ``positions``: one
    number, or an ``(S, S)`` table per pair of species (:func:`napari_aet.elements.min_distance_table`)
    with each atom's row in ``species_index`` ``(N,)``.
    """
    n = len(positions)
    if species_index is None:
        pairs = cKDTree(positions).query_pairs(min_distance, output_type="ndarray")
    else:
        pairs = close_pairs(positions, species_index, np.asarray(min_distance))
    # a strict total order: rank by score, then lexicographically by position
    order = np.lexsort((*positions.T[::-1], score))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    while True:
        live = (state[i] == 0) & (state[j] == 0)
        i, j = i[live], j[live]
        beaten = np.zeros(n, dtype=bool)
        beaten[i[rank[j] > rank[i]]] = True
        winners = (state == 0) & ~beaten
        state[winners] = 1
        state[j[winners[i]]] = -1
        if not np.any(state == 0):
            return state == 1


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
        new = _fit_peaks(residual, new_peaks, half, progress=sub_progress(stage, 0.1, 0.9))
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
            residual = volume - _render(volume.shape, *models)
    if rounds > 1:
        report(progress, 0.9, "refitting every atom with its neighbours subtracted")
        fits = list(_fit_peaks(residual, peaks, half, own=models))
    report(progress, 0.97, "building the atom model")
    centres, background, amplitude, width, quality = fits
    atoms = AtomModel(voxel_to_specimen(centres, volume.shape, voxel), None, {
        "peak": background + amplitude, "fit_quality": quality,
        "width": np.exp(np.log(width).mean(axis=1)) * voxel, "peel_round": peel_round})
    report(progress, 1.0, f"traced {len(atoms)} atoms")
    return atoms
