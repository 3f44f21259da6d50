"""The volume around atoms: local profiles and integrated intensities, sub-voxel Gaussian peak
fits, and the fitted Gaussians drawn back into a volume.

Building blocks shared by tracing, classification and hand editing (docs/architecture.md).
Volumes are ``(nz, ny, nx)`` float32; atom positions are specimen (x, y, z) Å about the rotation
centre (:class:`~napari_aet.model.AtomModel`); peaks, centres and widths handed to the fits are in
voxels, (z, y, x) order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import specimen_to_voxel
from .model import AtomModel, InputError
from .progress import report

#: Atoms fitted per vectorised batch (bounds memory: ~batch * patch voxels * 8 parameters).
_BATCH = 4096



def _box_offsets(box):
    if int(box) != box or box < 1:
        raise InputError(f"box must be a positive whole number of voxels, got {box}")
    r = np.arange(box) - (box - 1) / 2
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)


def local_profiles(volume, atoms: AtomModel, voxel_size, *, box=5, window=None) -> np.ndarray:
    """Profiles ``(N, box**3)`` float32: the volume on a ``box``-voxel cube centred on each atom.

    Sampled by trilinear interpolation at the atom's sub-voxel position (zero outside).
    volume : ``(nz, ny, nx)``; atoms : positions in Å; voxel_size : Å.
    window : width (Å) of a Gaussian weight ``exp(-r**2 / (2 window**2))`` applied about the
        atom's centre, ``r`` in Å: a matched filter for an atom of that width, so the edge of the
        cube, where neighbours' tails and noise dominate, counts less; None = unweighted.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume (nz, ny, nx), got an array of shape {volume.shape}")
    offsets = _box_offsets(box)
    centres = specimen_to_voxel(atoms.positions, volume.shape, voxel_size)
    points = (centres[:, None, :] + offsets[None]).reshape(-1, 3).T
    values = ndimage.map_coordinates(volume, points, order=1, mode="constant", cval=0.0).reshape(len(centres), -1)
    if window:
        values = values * np.exp(-0.5 * np.sum(offsets ** 2, axis=1) * (voxel_size / window) ** 2)
    return values.astype(np.float32)


def integrated_intensities(volume, atoms: AtomModel, voxel_size, *, box=5, window=None) -> np.ndarray:
    """Integrated intensity ``(N,)`` of each atom: the sum of its ``box**3`` profile (volume units),
    Gaussian-weighted if ``window`` (Å) is given (see :func:`local_profiles`)."""
    return local_profiles(volume, atoms, voxel_size, box=box, window=window).sum(axis=1, dtype=np.float64)


def atom_window(volume, atoms: AtomModel, voxel_size, *, reach=1.2, share=0.25):
    """Width σ (Å) of an atom as :func:`local_profiles` sees it (its width in the volume; trilinear
    sampling adds about voxel²/6 in variance): the default ``window`` of :func:`local_profiles` in
    classification and editing, a matched filter. None (unweighted) when there are fewer than 3
    atoms or their mean profile does not peak at the centre.

    A Gaussian plus a constant fitted to the mean profile, over a cube of half-edge ``reach`` Å
    (at least 2 voxels), of the brightest ``share`` of the atoms (by the sum over that cube, at
    least 3 atoms): averaging many atoms measures the reconstruction's blur where one atom's
    small, noisy patch cannot, and the brightest are atoms, not noise peaks. Ranking by the
    cube's sum, not its centre, keeps the selection's bias flat (it enters the constant).
    Neighbours' tails lift the cube's edge, so where atoms overlap strongly (σ above a quarter of
    the spacing) the width comes out short: a narrower filter, which suits crowded atoms.
    volume : ``(nz, ny, nx)``; atoms : positions in Å; voxel_size : Å.
    """
    if len(atoms) < 3:
        return None
    volume = np.asarray(volume, dtype=np.float32)
    box = 2 * max(2, int(np.ceil(reach / voxel_size))) + 1
    cube_means = ndimage.uniform_filter(volume, size=box, mode="constant")  # sampled linearly = the cube's mean
    centres = specimen_to_voxel(atoms.positions, volume.shape, voxel_size).T
    ranking = ndimage.map_coordinates(cube_means, centres, order=1, mode="constant", cval=0.0)
    brightest = atoms.subset(np.argsort(ranking)[::-1][:max(3, int(round(share * len(atoms))))])
    mean = local_profiles(volume, brightest, voxel_size, box=box).mean(axis=0, dtype=np.float64)
    r2 = np.sum(_box_offsets(box) ** 2, axis=1) * voxel_size ** 2
    return _gaussian_width(r2, mean, limits=(0.25 * voxel_size, reach))


def _gaussian_width(r2, values, limits):
    """σ (within ``limits``) of ``a exp(-r2 / 2σ²) + b`` (a > 0) fitted by least squares to
    ``values`` at squared radii ``r2``: for each σ on a fine grid a and b are linear, so the best
    σ is the one whose centred Gaussian explains the most of the centred values; None when no σ
    gives a > 0."""
    sigmas = np.geomspace(*limits, 200)
    gaussians = np.exp(-r2[None] / (2 * sigmas[:, None] ** 2))
    gaussians -= gaussians.mean(axis=1, keepdims=True)
    overlap = gaussians @ (values - values.mean())
    explained = np.where(overlap > 0, overlap ** 2 / np.einsum("sm,sm->s", gaussians, gaussians), -np.inf)
    return float(sigmas[int(np.argmax(explained))]) if np.isfinite(explained.max()) else None


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


def fit_peaks(volume, peaks, half, own=None, progress=None):
    """Fit ``b + A exp(-sum_k (r_k - c_k)^2 / (2 s_k^2))`` around each integer peak of ``volume``.

    volume : ``(nz, ny, nx)``. peaks : ``(N, 3)`` integer voxel indices (z, y, x).
    half : half-width (voxels) of the ``(2 half + 1)**3`` cube fitted around each peak (edge-clamped).
    own : ``(centres, amplitudes, widths)`` of Gaussians added back to each atom's patch
        (refitting an atom on a residual from which every fitted atom was subtracted).
    progress : ``progress(fraction, message)``.
    Vectorised Levenberg-Marquardt over all peaks (batches of 4096). Returns centres ``(N, 3)``
    (z, y, x voxels), backgrounds ``b`` and amplitudes ``A`` ``(N,)`` (volume units), widths
    ``s`` ``(N, 3)`` (voxels, along z, y, x) and fit quality ``(N,)`` (R², 0..1). A fit whose
    centre leaves the peak voxel's neighbourhood or whose amplitude is not positive failed: it
    keeps the peak voxel, the peak value as amplitude, background 0 and quality 0.
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


def render_fits(shape, centres, amplitude, widths):
    """A float32 volume ``shape`` ``(nz, ny, nx)`` of the Gaussians of :func:`fit_peaks` (no
    background): centres ``(N, 3)`` and widths ``(N, 3)`` in (z, y, x) voxels, amplitudes ``(N,)``;
    each cut at 3 sigma (at most 8 voxels)."""
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
