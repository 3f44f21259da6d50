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
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.filters import threshold_otsu

from .geometry import render_atoms, voxel_to_specimen
from .model import AtomModel, InputError, Reconstruction
from .progress import report, sub_progress

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
    Holes inside the particle are filled.
    """
    volume = _check_volume(volume)
    smooth = ndimage.gaussian_filter(volume, sigma / voxel_size)
    mask = smooth > threshold_otsu(smooth)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= min_fraction * sizes.max()))
    radius = int(round(dilation / voxel_size))
    if radius > 0:
        r = np.arange(-radius, radius + 1)
        ball = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= radius ** 2
        mask = ndimage.binary_dilation(mask, ball)
    return ndimage.binary_fill_holes(mask)


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


def _fit_gaussians(values, offsets, iterations=20):
    """Fit ``b + A exp(-sum_k (r_k - c_k)^2 / (2 s_k^2))`` to every row of ``values`` at once.

    values : ``(N, M)`` patch values at ``offsets`` ``(M, 3)`` voxels from the peak voxel.
    Returns centre ``(N, 3)`` (voxels, relative to the peak voxel), background ``b``,
    amplitude ``A``, widths ``(N, 3)`` (voxels) and R² of the fit.
    """
    values = values.astype(np.float64)
    r = offsets.astype(np.float64)[None]  # (1, M, 3)
    n = len(values)
    lo, hi = values.min(axis=1), values.max(axis=1)
    params = np.zeros((n, 8))
    params[:, 0], params[:, 1], params[:, 5:] = lo, hi - lo, 1.0
    damping = np.full(n, 1e-3)

    def model(p):
        d = r - p[:, None, 2:5]
        q = d / p[:, None, 5:]
        e = np.exp(-0.5 * np.sum(q * q, axis=2))
        return d, q, e, p[:, None, 0] + p[:, None, 1] * e

    def cost(p):
        return np.sum((model(p)[3] - values) ** 2, axis=1)

    current = cost(params)
    for _ in range(iterations):
        d, q, e, f = model(params)
        ae = params[:, 1, None] * e
        jac = np.concatenate([np.ones_like(e)[..., None], e[..., None],
                              (ae[..., None] * q / params[:, None, 5:]),
                              (ae[..., None] * q * q / params[:, None, 5:])], axis=2)
        jtj = np.einsum("nmi,nmj->nij", jac, jac)
        jtr = np.einsum("nmi,nm->ni", jac, values - f)
        diag = np.einsum("nii->ni", jtj)
        step = np.linalg.solve(jtj + (damping[:, None] * (diag + 1e-12))[..., None] * np.eye(8), jtr[..., None])[..., 0]
        trial = params + step
        trial[:, 5:] = np.clip(np.abs(trial[:, 5:]), 0.2, 10.0)
        new = cost(trial)
        better = new < current
        params[better], current[better] = trial[better], new[better]
        damping = np.where(better, damping * 0.3, damping * 10.0)
    total = np.sum((values - values.mean(axis=1, keepdims=True)) ** 2, axis=1)
    quality = np.clip(1.0 - current / np.maximum(total, 1e-30), 0.0, 1.0)
    return params[:, 2:5], params[:, 0], params[:, 1], params[:, 5:], quality


def _fit_peaks(volume, peaks, half, progress=None):
    """Sub-voxel centres ``(N, 3)`` (z, y, x voxels), backgrounds, amplitudes, widths, fit quality."""
    offsets = _patch_offsets(half)
    results = []
    for start in range(0, len(peaks), _BATCH):
        report(progress, start / len(peaks), "fitting atoms")
        part = peaks[start:start + _BATCH]
        centre, background, amplitude, width, quality = _fit_gaussians(_patches(volume, part, half), offsets)
        # a fit whose centre leaves the peak voxel's neighbourhood or whose amplitude is not positive failed
        failed = (np.abs(centre).max(axis=1) > 1.0) | (amplitude <= 0)
        peak_value = _patches(volume, part, 0)[:, 0]
        centre[failed], quality[failed], background[failed] = 0.0, 0.0, 0.0
        amplitude[failed] = peak_value[failed]
        results.append((part + centre, background, amplitude, width, quality))
    report(progress, 1.0, "fitting atoms")
    if not results:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0)
    return tuple(np.concatenate(x) for x in zip(*results))


def enforce_min_distance(positions, score, min_distance) -> np.ndarray:
    """Boolean mask of the atoms kept so that no two kept atoms are closer than ``min_distance``.

    Of any too-close pair the one with the higher ``score`` wins (ties broken by position),
    resolved globally: the result equals greedy suppression in score order, so it does not
    depend on the order of the input. Vectorised: each round keeps every atom that beats all
    its undecided neighbours and drops their neighbours.
    positions : ``(N, 3)``; score : ``(N,)``; min_distance in the units of ``positions``.
    """
    n = len(positions)
    pairs = cKDTree(positions).query_pairs(min_distance, output_type="ndarray")
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
    min_distance : smallest allowed interatomic distance, Å (the brighter fitted peak of a
        too-close pair is kept; the result is independent of processing order).
    threshold : smallest peak value (volume units) of a candidate; ``None`` = robust noise
        level outside the support (median + 3 x 1.4826 x MAD).
    support : boolean mask ``(nz, ny, nx)`` where atoms may be; ``None`` = :func:`particle_support`.
    fit_radius : half-width (Å) of the cube fitted around each peak; ``None`` = 0.4 x min_distance
        (at least one voxel).
    peel_iterations : rounds of "peel-off": subtract the fitted atoms (Gaussians) and search
        the residual for further peaks at least ``min_distance`` from every atom found.
    progress : ``progress(fraction, message)``; raise :class:`~napari_aet.progress.Cancelled` to stop.

    Returns an AtomModel (x, y, z Å about the rotation centre, species ""), features
    ``peak`` (fitted peak height), ``fit_quality`` (R² of the fit, 0 = failed fit),
    ``width`` (mean fitted Gaussian sigma, Å) and ``peel_round`` (0 = direct detection).
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
    half = max(1, int(round((0.4 * min_distance if fit_radius is None else fit_radius) / voxel)))
    rounds = int(peel_iterations) + 1
    residual = volume
    found = []  # per round: centres (voxels), peak height, amplitude, widths (voxels), fit quality
    for k in range(rounds):
        stage = sub_progress(progress, 0.05 + 0.9 * k / rounds, 0.05 + 0.9 * (k + 1) / rounds)
        report(stage, 0.0, "finding peaks")
        peaks = _local_maxima(residual, support, threshold)
        if k == 0 and len(peaks) == 0:
            raise InputError(f"no peak above the threshold {threshold:.4g} inside the particle support: "
                             "lower the threshold or check the support")
        centres, background, amplitude, width, quality = _fit_peaks(residual, peaks, half,
                                                                    sub_progress(stage, 0.1, 0.9))
        height = background + amplitude
        keep = enforce_min_distance(centres * voxel, height, min_distance)
        if found:
            previous = np.concatenate([f[0] for f in found])
            keep &= cKDTree(previous * voxel).query(centres * voxel, distance_upper_bound=min_distance)[0] > min_distance
        found.append((centres[keep], height[keep], amplitude[keep], width[keep], quality[keep]))
        if k + 1 < rounds:
            c, _, a, w, _ = found[-1]
            residual = residual - render_atoms(voxel_to_specimen(c, volume.shape, voxel), _gauss_mass(a, w),
                                               w.mean(axis=1) * voxel, volume.shape, voxel)
    report(progress, 0.97, "building the atom model")
    centres, height, _, width, quality = (np.concatenate(x) for x in zip(*found))
    peel_round = np.concatenate([np.full(len(f[0]), k) for k, f in enumerate(found)])
    atoms = AtomModel(voxel_to_specimen(centres, volume.shape, voxel), None, {
        "peak": height.astype(np.float64), "fit_quality": quality, "width": width.mean(axis=1) * voxel,
        "peel_round": peel_round})
    report(progress, 1.0, f"traced {len(atoms)} atoms")
    return atoms


def _gauss_mass(amplitude, width):
    """Integrated intensity (volume units x voxels) of Gaussians of peak ``amplitude`` and widths (voxels)."""
    return amplitude * (2 * np.pi) ** 1.5 * np.prod(width, axis=1)
