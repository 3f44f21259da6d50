"""Tilt-series alignment: each method measures shifts, the projections stay untouched.

Every ``*_shifts`` function returns ``(n, 2)`` translations (dy, dx) in pixels that
align projection i when applied with :func:`scipy.ndimage.shift`, measured on the raw
projections (``series.shifts`` is ignored, except by projection matching which refines
it). :func:`napari_aet.projections.apply_alignment` resamples the data once, at the end.

Axis frame: (u, v) pixel coordinates about the image centre ``(ny//2, nx//2)`` with the
tilt axis along v; :func:`napari_aet.geometry.in_plane_rotation` maps (u, v) to image
(x, y). A shift perpendicular to the axis moves along u, a shift along the axis along v.

Shifts are defined up to a rigid translation of the particle in 3D (a common shift along
the axis and ``tx cos(theta) - tz sin(theta)`` across it); the centre of mass fixes that
gauge by putting the particle's intensity centroid on the rotation centre. A *constant* shift
across the axis is not a gauge: it is the tilt-axis offset, and it must be measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from .geometry import Projector, in_plane_rotation, radians_message, radians_suspected
from .model import InputError, TiltSeries
from .projections import EDGE_SIGNAL_FILM, apply_alignment, border_level, edge_signal, pixel_coordinates
from .background import background_removed, particle_mask
from .backprojection import sirt_volume
from .progress import report, sub_progress

# ---------------------------------------------------------------------------- helpers


def _signal(projections) -> np.ndarray:
    """What the measurements use: each projection minus its border level, zero outside the
    particle (:func:`napari_aet.background.particle_mask`), so noise and background residue
    far from the particle do not bias centres of mass and profiles."""
    p = np.asarray(projections, dtype=np.float32) - border_level(projections)[:, None, None].astype(np.float32)
    return p * np.stack([particle_mask(image) for image in p])


def _to_image(du, dv, tilt_axis) -> np.ndarray:
    """Shifts (dy, dx) in the image from components (du, dv) in the axis frame."""
    x, y = in_plane_rotation(tilt_axis) @ np.stack([du, dv])
    return np.stack([y, x], axis=1)


def _to_axis(shifts, tilt_axis):
    """Components (du, dv) in the axis frame of image shifts (dy, dx) ``(n, 2)``."""
    du, dv = in_plane_rotation(tilt_axis).T @ np.stack([shifts[:, 1], shifts[:, 0]])
    return du, dv


def _single_axis(series: TiltSeries, what: str):
    if not series.is_single_axis:
        raise InputError(f"{what} needs single-axis tilt angles (one tilt per projection); this series has "
                         f"Euler angles (φ, θ, ψ) for each of its {series.n_angles} projections")


def _why_not_aligned(series: TiltSeries) -> str | None:
    """Why :func:`align_auto` cannot measure ``series``'s alignment, or None: Euler angles (they come
    from an alignment already made), or an object that fills the field of view in most
    projections (a film, or a particle larger than the images: its centre of mass and outline,
    which the automatic alignment follows, are not in the images)."""
    if not series.is_single_axis:
        return ("kept as it is: the series has Euler angles (φ, θ, ψ) for each projection, which come from "
                "an alignment already made; automatic alignment measures single-axis tilt series")
    coverage = float(np.median(edge_signal(series)))
    if coverage > EDGE_SIGNAL_FILM:
        return (f"kept as it is: the object fills the field of view in most projections (median edge signal "
                f"{coverage:.2f} > {EDGE_SIGNAL_FILM}: a film, or a particle larger than the images), and automatic "
                f"alignment follows an isolated particle's centre of mass and outline; align such a series "
                f"beforehand (e.g. by patch tracking or fiducials)")
    return None


def _centre_of_mass(signal, file_indices=None):
    """Centre of mass (x, y) in pixels about the image centre, ``(n,)`` each; ``file_indices``
    ``(n,)`` name the projections in an error (default 0 … n-1)."""
    total = signal.sum(axis=(1, 2), dtype=np.float64)
    if np.any(total <= 0):
        bad = np.flatnonzero(total <= 0)
        bad = bad if file_indices is None else np.asarray(file_indices)[bad]
        raise InputError(f"projection(s) {bad.tolist()} hold no signal above the background: "
                         "check the data or leave those tilts out (--exclude I,J, or the Data step's leave out "
                         "projections)")
    x, y = pixel_coordinates(signal.shape[1:])
    cx = np.einsum("iyx,x->i", signal, x, dtype=np.float64) / total
    cy = np.einsum("iyx,y->i", signal, y, dtype=np.float64) / total
    return cx, cy


def _rigid_fit(values, angles):
    """Least-squares fit ``A cos(theta) + B sin(theta) + C`` of ``values`` ``(n,)``; returns (fit, C)."""
    t = np.deg2rad(angles)
    design = np.stack([np.cos(t), np.sin(t), np.ones_like(t)], axis=1)
    coef = np.linalg.lstsq(design, values, rcond=None)[0]
    return design @ coef, coef[2]


def _register(reference, moving, precision) -> np.ndarray:
    """Shift (pixels, per axis) that registers ``moving`` onto ``reference`` (plain cross-correlation)."""
    return phase_cross_correlation(reference, moving, upsample_factor=int(round(1 / precision)),
                                   normalization=None)[0]


# ------------------------------------------------------------- common-line profiles


class _Profiles:
    """Projections summed perpendicular to a tilt-axis direction, in Fourier space.

    ``spectra[i, m]`` is the Fourier transform of the profile of projection i along the
    axis at ``m / length`` cycles per pixel, computed exactly from the pixels (the
    Fourier-slice theorem, no interpolation), so no direction is favoured; frequencies
    above ``max_frequency`` (cycles/px) are left out (zero). ``coordinates`` (x, y) of
    the pixel centres about the image centre (default: unit pixels) serve binned images.
    """

    def __init__(self, signal, tilt_axis, max_frequency=0.5, coordinates=None):
        x, y = pixel_coordinates(signal.shape[1:]) if coordinates is None else coordinates
        self.length = 2 * int(np.ceil(np.hypot(np.ptp(x) + 1, np.ptp(y) + 1) / 2)) + 2
        k = np.arange(int(max_frequency * self.length) + 1) / self.length
        a = np.deg2rad(tilt_axis)
        ex = np.exp(-2j * np.pi * k[:, None] * x[None, :] * np.sin(a))  # (K, nx)
        ey = np.exp(-2j * np.pi * k[:, None] * y[None, :] * np.cos(a))  # (K, ny)
        partial = signal.astype(np.float64) @ ex.T  # (n, ny, K)
        self.k = k
        self.spectra = np.einsum("iyk,ky->ik", partial, ey)

    def shifted(self, dv) -> np.ndarray:
        """Spectra of the profiles shifted by ``dv`` pixels ``(n,)``."""
        return self.spectra * np.exp(-2j * np.pi * self.k[None, :] * np.asarray(dv)[:, None])

    def register(self, reference, moving, upsample) -> np.ndarray:
        """Shifts ``(n,)`` (pixels) carrying each ``moving`` spectrum onto ``reference`` (both ``(n, K)``)."""
        cross = reference * np.conj(moving)
        cross[:, 0] = 0
        n_fine = self.length * upsample
        corr = np.fft.irfft(cross, n=n_fine, axis=1)
        peak = np.argmax(corr, axis=1)
        rows = np.arange(len(corr))
        left, mid, right = corr[rows, peak - 1], corr[rows, peak], corr[rows, (peak + 1) % n_fine]
        curvature = left - 2 * mid + right
        frac = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, 1), 0.0)
        shift = (peak + frac) / upsample
        return np.where(shift >= self.length / 2, shift - self.length, shift)

    def align(self, precision, iterations=3) -> np.ndarray:
        """Shifts ``(n,)`` aligning every profile to the mean of the others (leave-one-out)."""
        upsample = int(np.ceil(1 / precision))
        n = len(self.spectra)
        dv = np.zeros(n)
        reference = np.broadcast_to(self.spectra[np.argmax(np.abs(self.spectra[:, 0]))], self.spectra.shape)
        for _ in range(iterations):
            dv = self.register(reference, self.spectra, upsample)
            aligned = self.shifted(dv)
            reference = (aligned.sum(axis=0) - aligned) / (n - 1)
        return dv

    def consistency(self, dv) -> float:
        """Mean normalised cross-power of the shifted profiles (1 = identical), DC excluded."""
        aligned = self.shifted(dv)[:, 1:]
        power = np.sum(np.abs(aligned) ** 2)
        return float((np.sum(np.abs(aligned.sum(axis=0)) ** 2) - power) / ((len(aligned) - 1) * power))

    def real_space(self, dv) -> tuple[np.ndarray, np.ndarray]:
        """Profiles ``(n, length)`` shifted by ``dv`` and their coordinate v (pixels about the centre)."""
        profiles = np.fft.fftshift(np.fft.irfft(self.shifted(dv), n=self.length, axis=1), axes=1)
        return profiles, np.arange(self.length) - self.length // 2


def _common_line(signal, tilt_axis, precision):
    """Along-axis shifts dv ``(n,)`` centring the mean profile, and the profiles object."""
    profiles = _Profiles(signal, tilt_axis)
    dv = profiles.align(precision)
    mean, v = profiles.real_space(dv)
    mean = mean.mean(axis=0)
    centroid = np.sum(v * mean) / np.sum(mean)
    return dv - centroid, profiles


# ------------------------------------------------------------------ public methods


def center_of_mass_shifts(series: TiltSeries) -> np.ndarray:
    """Shifts (dy, dx) ``(n, 2)`` px putting each projection's centre of mass on the tilt axis.

    Only the component perpendicular to the tilt axis (``series.tilt_axis``) is set; the
    one along the axis is 0 (for ``tilt_axis = 0``: dx set, dy 0). For Euler-angle series
    both components centre the mass. The background level (border median) is removed
    and pixels outside the particle are ignored; a slowly varying background should be
    subtracted beforehand
    (:func:`napari_aet.background.subtract_background`).
    """
    cx, cy = _centre_of_mass(_signal(series.projections), series.file_indices())
    if not series.is_single_axis:
        return np.stack([-cy, -cx], axis=1)
    du, _ = _to_axis(np.stack([cy, cx], axis=1), series.tilt_axis)
    return _to_image(-du, np.zeros_like(du), series.tilt_axis)


def common_line_shifts(series: TiltSeries, *, precision=0.05) -> np.ndarray:
    """Shifts (dy, dx) ``(n, 2)`` px along the tilt axis by the common-line method.

    Each projection summed perpendicular to the tilt axis gives the same 1D profile at
    every tilt; the profiles are cross-correlated (leave-one-out mean as reference,
    sub-sample peak to ``precision`` px) and the mean profile is centred. The component
    perpendicular to the axis is 0.
    """
    _single_axis(series, "the common-line method")
    dv, _ = _common_line(_signal(series.projections), series.tilt_axis, precision)
    return _to_image(np.zeros_like(dv), dv, series.tilt_axis)


def cross_correlation_shifts(series: TiltSeries, *, precision=0.1) -> np.ndarray:
    """Coarse shifts (dy, dx) ``(n, 2)`` px from cross-correlating neighbouring tilts.

    Starting at the smallest tilt, each projection is registered to its already-aligned
    neighbour; errors accumulate, so use it as a start only. Mean shift removed.
    """
    signal = _signal(series.projections)
    tilt = series.angles if series.is_single_axis else series.angles[:, 1]
    order = np.argsort(tilt)
    start = int(np.argmin(np.abs(tilt[order])))
    shifts = np.zeros((len(tilt), 2))
    for path in (order[start:], order[start::-1]):
        for previous, current in zip(path[:-1], path[1:]):
            shifts[current] = shifts[previous] + _register(signal[previous], signal[current], precision)
    return shifts - shifts.mean(axis=0)


def _binned(signal, largest=160):
    """``signal`` summed over b x b pixel blocks so no side exceeds ``largest`` px, the
    block centres (x, y) in original pixels about the image centre, and b."""
    n, ny, nx = signal.shape
    b = max(1, int(np.ceil(max(ny, nx) / largest)))
    if b == 1:
        return signal, pixel_coordinates((ny, nx)), 1
    my, mx = ny // b, nx // b
    binned = signal[:, :my * b, :mx * b].reshape(n, my, b, mx, b).sum(axis=(2, 4))
    x, y = pixel_coordinates((ny, nx))
    return binned, (x[:mx * b].reshape(mx, b).mean(axis=1), y[:my * b].reshape(my, b).mean(axis=1)), b


def _particle_window(inside, margin=4) -> tuple[slice, slice]:
    """Rows and columns of the smallest window centred on the image centre ``(ny//2, nx//2)``
    that holds the particle of every projection (``inside`` ``(n, ny, nx)`` bool, aligned
    frame) with ``margin`` px to spare; a side that does not fit keeps the full image.

    With a single tilt axis along y the rows are independent problems and the volume box
    follows the window's columns (depth = width), so reconstructing the window alone gives
    the particle at a fraction of the cost (a 256² series of a particle half the field wide:
    about an eighth of the voxels)."""
    def span(occupied, n):
        centre, where = n // 2, np.flatnonzero(occupied)
        half = max(centre - where[0], where[-1] - centre) + margin if len(where) else centre
        return slice(centre - half, centre + half + 1) if half < centre and centre + half < n else slice(0, n)

    return span(inside.any(axis=(0, 2)), inside.shape[1]), span(inside.any(axis=(0, 1)), inside.shape[2])


def _aligned_inside(series: TiltSeries, masks) -> np.ndarray:
    """The particle masks ``(n, ny, nx)`` (measured frame) carried into the aligned frame of ``series``."""
    return apply_alignment(series.replace(projections=masks.astype(np.float32)), order=1).projections > 0.5


def _signal_bandwidth(profiles) -> float:
    """Highest frequency (cycles/px) up to which the aligned profiles agree more than their
    noise: the fraction of each frequency's power shared by all tilts (cross-power over
    power, smoothed over 5 frequencies) stays above 1/2, i.e. signal above noise."""
    aligned = profiles.shifted(profiles.align(0.05, 2))
    n = len(aligned)
    power = np.mean(np.abs(aligned) ** 2, axis=0)
    shared = (np.abs(aligned.sum(axis=0)) ** 2 - n * power) / (n * (n - 1))
    ratio = ndimage.uniform_filter1d(shared / np.maximum(power, 1e-30), 5)
    below = np.flatnonzero(ratio[1:] < 0.5)
    return float(profiles.k[below[0] + 1] if len(below) else profiles.k[-1])


def _search_tilt_axis(signal, prior, search, progress=None):
    """Tilt-axis angle maximising the common-line consistency, and the score curves (angles,
    scores, fine angles, fine scores): coarse
    (3° steps over ``prior ± search``, frequencies up to 0.15 cycles/px) and fine (0.25°
    steps, frequencies up to where the profiles' signal falls below their noise,
    :func:`_signal_bandwidth`; scores on a different scale). Images larger than 160 px are
    binned for the search."""
    signal, coordinates, factor = _binned(signal)
    coarse = prior + np.arange(-search, search, 3.0)
    report(progress, 0.0, "tilt axis: coarse search")
    scores = []
    for j, a in enumerate(coarse):
        profiles = _Profiles(signal, a, max_frequency=0.15 / factor, coordinates=coordinates)
        scores.append(profiles.consistency(profiles.align(0.25, 2)))
        report(progress, 0.6 * (j + 1) / len(coarse), "tilt axis: coarse search")
    best = coarse[int(np.argmax(scores))]
    cutoff = _signal_bandwidth(_Profiles(signal, best, max_frequency=0.5 / factor, coordinates=coordinates))
    fine = best + np.arange(-3.0, 3.01, 0.25)
    fine_scores = []
    for j, a in enumerate(fine):
        profiles = _Profiles(signal, a, max_frequency=cutoff, coordinates=coordinates)
        fine_scores.append(profiles.consistency(profiles.align(0.05, 2)))
        report(progress, 0.6 + 0.4 * (j + 1) / len(fine), "tilt axis: fine search")
    fine_scores = np.array(fine_scores)
    top = int(np.argmax(fine_scores))
    near = slice(max(top - 4, 0), top + 5)
    c2, c1, _ = np.polyfit(fine[near] - fine[top], fine_scores[near], 2)
    angle = fine[top] - c1 / (2 * c2) if c2 < 0 else fine[top]
    angle = float(np.clip(angle, fine[near][0], fine[near][-1]))
    return angle, (coarse, np.array(scores), fine, fine_scores)


def _axis_offset(signal, shifts, angles, tilt_axis):
    """Offset (px) across the axis of the rotation axis, and the rigid-fit of the centroid track."""
    cx, cy = _centre_of_mass(signal)
    du, _ = _to_axis(np.stack([cy, cx], axis=1) + shifts, tilt_axis)
    fit, offset = _rigid_fit(du, angles)
    return float(offset), fit


def _rotation_residual(measured, model) -> np.ndarray:
    """In-plane rotation (degrees, ``(n,)``) about the image centre, fitted together with a
    shift, that best carries each ``model`` projection onto ``measured`` (both ``(n, ny, nx)``):
    one Gauss-Newton step of least squares on the model's gradient, for rotations well below
    1° (displacements below a pixel). A positive value is corrected by increasing the tilt-axis
    angle of :func:`apply_alignment` by it."""
    gy, gx = np.gradient(np.asarray(model, dtype=np.float64), axis=(1, 2))
    x, y = pixel_coordinates(model.shape[1:])
    basis = [y[:, None] * gx - x[None, :] * gy, gx, gy]
    normal = np.array([[np.sum(a * b, axis=(1, 2)) for b in basis] for a in basis]).transpose(2, 0, 1)
    rhs = np.stack([np.sum(a * (model - measured), axis=(1, 2)) for a in basis], axis=1)
    return np.rad2deg(np.linalg.solve(normal, rhs[:, :, None])[:, 0, 0])


def _axis_rotation(series: TiltSeries, masks, iterations) -> float:
    """Tilt-consistent in-plane rotation (degrees) of ``series`` (shifts and tilt axis applied)
    against its own reconstruction.

    The reconstruction (RESIRE's iteration with momentum, :func:`napari_aet.backprojection.sirt_volume`,
    ``iterations``, positivity; of the particle's
    window, :func:`_particle_window`) is confined to the particle's visual hull: the voxels
    that project inside the particle mask (``masks`` ``(n, ny, nx)``) of every tilt; without it, R below was far from zero at the true axis
    (by 0.18° after 8 plain iterations on a benchmark series). Each projection's in-plane
    rotation against the re-projection (:func:`_rotation_residual`) is fitted by
    ``R + B cos(theta) + C sin(theta)``; the B and C terms are what a small 3D rotation of the
    reconstruction explains, R is the part no volume explains: zero at the true axis. The
    volume absorbs most of an axis error (R changes by only 0.15-0.4° per degree), so R is a
    criterion to be zeroed, not a correction to be added.
    """
    inside = _aligned_inside(series, masks)
    window = (slice(None), *_particle_window(inside))
    inside = inside[window]
    aligned = apply_alignment(series)
    aligned = aligned.replace(projections=aligned.projections[window])
    shape = (inside.shape[2], *inside.shape[1:])  # the reconstruction's default box (nz = nx)
    projector = Projector(shape, series.angles)
    hull = projector.adjoint((~inside).astype(np.float32)) < 0.5
    volume = sirt_volume(aligned, iterations, support=hull, accelerate=True, step=1.0)
    rotation = _rotation_residual(aligned.projections, projector.forward(volume))
    t = np.deg2rad(series.angles)
    design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], axis=1)
    return float(np.linalg.lstsq(design, rotation, rcond=None)[0][0])


def _refine_tilt_axis(signal, series: TiltSeries, step=0.25, iterations=50, progress=None):
    """Tilt-axis angle (degrees) where the tilt-consistent rotation of :func:`_axis_rotation`
    vanishes: evaluated at ``series.tilt_axis`` and ``step`` degrees beyond it, zero found by
    the secant (the rotation is linear in the angle over a few tenths of a degree). ``signal``
    as from :func:`_signal`; ``series`` holds the start angle and shifts aligning it. If the
    rotation does not decrease with the angle, or the root lies more than 1° away, the start
    is kept. Returns the angle and a :class:`TiltAxisRefinement`."""
    masks = np.stack([particle_mask(image) for image in signal])
    start = series.replace(projections=signal)
    angles = series.tilt_axis + np.array([0.0, step])
    rotations = []
    for j, a in enumerate(angles):
        report(progress, j / 2, "tilt axis: re-projection")
        rotations.append(_axis_rotation(start.replace(tilt_axis=float(a)), masks, iterations))
    slope = (rotations[1] - rotations[0]) / step
    root = angles[0] - rotations[0] / slope if slope < 0 else np.inf
    accepted = bool(abs(root - angles[0]) <= 1.0)
    report(progress, 1.0, "tilt axis: re-projection")
    return (float(root) if accepted else series.tilt_axis), TiltAxisRefinement(angles, np.array(rotations), accepted)


#: An estimated tilt axis this near (degrees) an end of the range searched is a toss-up with its
#: mirror twin, which lies just beyond the other end.
SEARCH_EDGE = 5.0


def at_search_edge(angle: float, searched) -> bool:
    """Whether the tilt axis ``angle`` (degrees) lies within :data:`SEARCH_EDGE` of an end of the
    angles ``searched`` (the coarse search, :class:`TiltAxisSearch`'s ``angles``): a range ±90°
    about the start leaves the answer's twin 180° away just outside it, so near an end the two
    were nearly equally likely (an axis along image x, started from 0°)."""
    searched = np.asarray(searched, dtype=float)
    return searched.size > 1 and min(abs(angle - searched.min()), abs(angle - searched.max())) < SEARCH_EDGE


def describe_tilt_axis(angle: float, decimals=1, choose="", searched=None) -> str:
    """"tilt axis a° (…)" for a person: a (degrees from the image y axis) and the direction 180°
    away, which fits the data as well and gives the mirror-image particle (docs/alignment.md);
    ``choose`` says how to pick the other one. With the angles ``searched``, an estimate at the
    search's edge (:func:`at_search_edge`) is called a toss-up."""
    other = angle - 180.0 if angle > 0 else angle + 180.0
    if round(other, decimals) == -180.0:  # the same direction as 180.0°: one spelling
        other = 180.0
    tie = searched is not None and at_search_edge(angle, searched)
    return (f"tilt axis {round(angle, decimals) + 0.0:.{decimals}f}° (the data cannot tell it from "
            f"{round(other, decimals) + 0.0:.{decimals}f}°, which gives the mirror image"
            + ("; at the edge of the range searched the two were a toss-up, so check the particle's "
               "handedness" if tie else "")
            + (f": {choose}" if choose else "") + ")")


def estimate_tilt_axis(series: TiltSeries, *, search=90.0, progress=None) -> tuple[float, float]:
    """In-plane tilt-axis angle (degrees, ``TiltSeries.tilt_axis`` convention) and offset (px).

    The angle maximises the consistency of the common-line profiles (projections summed
    perpendicular to the candidate axis, aligned along it), searched within ``search``
    degrees of ``series.tilt_axis``; it is insensitive to the shifts. The direction is
    only defined modulo 180° (the sign is fixed by the tilt angles' sense), so the answer
    closest to ``series.tilt_axis`` is given.

    The offset is the distance (px, along u) of the rotation axis from the image centre in
    the series *as aligned by* ``series.shifts``: the centre of mass of a projection at
    tilt theta follows ``X cos(theta) - Z sin(theta) + offset``, fitted over all tilts.
    """
    _single_axis(series, "tilt-axis estimation")
    signal = _signal(series.projections)
    angle = _search_tilt_axis(signal, series.tilt_axis, search, progress)[0]
    offset, _ = _axis_offset(signal, series.shifts, series.angles, angle)
    return angle, offset


# ------------------------------------------------------------ projection matching


def projection_matching_shifts(series: TiltSeries, *, iterations=6, reconstruction_iterations=8, precision=0.05,
                               tolerance=0.02, along_axis=True, history=None, progress=None) -> np.ndarray:
    """Shifts (dy, dx) ``(n, 2)`` px refined by projection matching, starting from ``series.shifts``.

    Each iteration applies the current alignment, reconstructs (RESIRE,
    ``reconstruction_iterations``, :func:`napari_aet.backprojection.sirt_volume`; the particle's
    window only, :func:`_particle_window`, placed with the starting shifts and 8 px to spare),
    re-projects with the same projector, and registers each measured projection onto its
    re-projection (cross-correlation to ``precision`` px). The update's rigid-translation part (the gauge) is removed, so the particle
    stays where the start put it. Stops when the largest update is below ``tolerance`` px.
    ``along_axis=False`` refines only the component across the tilt axis (keep the
    common-line result along it). ``history``, if a list, receives a :class:`MatchingIteration`
    per iteration.
    """
    _single_axis(series, "projection matching")
    signal = series.replace(projections=_signal(series.projections))
    shifts = series.shifts.copy()
    window = (slice(None), *_particle_window(_aligned_inside(signal, signal.projections != 0), margin=8))
    for it in range(iterations):
        step = sub_progress(progress, it / iterations, (it + 1) / iterations)
        report(step, 0.0, f"projection matching {it + 1}/{iterations}: reconstructing")
        aligned = apply_alignment(signal.replace(shifts=shifts))
        aligned = aligned.replace(projections=aligned.projections[window])
        volume = sirt_volume(aligned, reconstruction_iterations, progress=sub_progress(step, 0.0, 0.8))
        reprojection = Projector(volume.shape, series.angles).forward(volume)
        aligned = aligned.projections
        report(step, 0.8, f"projection matching {it + 1}/{iterations}: registering")
        update = np.array([_register(reprojection[i], aligned[i], precision) for i in range(len(aligned))])
        gauge, offset = _rigid_fit(update[:, 1], series.angles)
        du = update[:, 1] - gauge + offset
        dv = update[:, 0] - update[:, 0].mean() if along_axis else np.zeros(len(update))
        shifts = shifts + _to_image(du, dv, series.tilt_axis)
        size = np.hypot(du, dv)
        if history is not None:
            history.append(MatchingIteration(float(np.sqrt(np.mean(size ** 2))), float(size.max()),
                                             float(np.abs(aligned - reprojection).sum() / np.abs(aligned).sum())))
        report(step, 1.0, f"projection matching {it + 1}/{iterations}: max update {size.max():.3f} px")
        if size.max() < tolerance:
            break
    return shifts


# ------------------------------------------------------------- consistency check


@dataclass
class AlignmentCheck:
    """Whether an alignment made a series more self-consistent (:func:`check_alignment`).

    Both measures are evaluated per projection on the input and on the aligned series, on the
    measured pixels (never on resampled ones, whose interpolation would smooth the noise away):

    common_line : mean over projections of the normalised correlation (1 = identical) of each
        projection's common-line profile with the mean of the others' (input, aligned).
    reprojection : mean held-out re-projection residual, the squared difference between each
        projection and the re-projection of a quick reconstruction from the *other* half of the
        tilts (alternate tilts), mapped back onto the measured pixels, relative to the
        projection's squared signal, both smoothed by a 1-px Gaussian (input, aligned); held
        out, so shifts fitted to noise do not lower it.
    common_line_t, reprojection_t : paired t-statistics of the per-projection improvements
        (positive: the aligned series is better); beyond ``threshold`` counts as significant.
    threshold : the t-statistic that counts as significant.
    accepted : the aligned series was kept; reason : one line saying why.
    """

    accepted: bool
    reason: str
    common_line: tuple[float, float]
    reprojection: tuple[float, float]
    common_line_t: float
    reprojection_t: float
    threshold: float


def _common_line_agreement(signal, series: TiltSeries, max_frequency=0.25) -> np.ndarray:
    """Per projection ``(n,)``: normalised correlation of its common-line profile (along
    ``series.tilt_axis``, shifted by the along-axis part of ``series.shifts``) with the mean
    profile of all others, over frequencies 0 < k <= ``max_frequency`` cycles/px."""
    profiles = _Profiles(signal, series.tilt_axis, max_frequency)
    _, dv = _to_axis(series.shifts, series.tilt_axis)
    spectra = profiles.shifted(dv)[:, 1:]
    others = (spectra.sum(axis=0) - spectra) / (len(spectra) - 1)
    overlap = np.real(np.sum(spectra * np.conj(others), axis=1))
    return overlap / np.maximum(np.linalg.norm(spectra, axis=1) * np.linalg.norm(others, axis=1), 1e-30)


def _to_measured_frame(images, shifts, tilt_axis) -> np.ndarray:
    """Images ``(n, ny, nx)`` of the aligned frame (tilt axis along y, no shifts) resampled onto
    the measured pixels of a series with ``shifts`` ``(n, 2)`` and ``tilt_axis``: the inverse of
    :func:`apply_alignment` (cubic spline interpolation, 0 outside)."""
    ny, nx = images.shape[1:]
    x, y = pixel_coordinates((ny, nx))
    xx, yy = np.meshgrid(x, y)
    rot = in_plane_rotation(tilt_axis)
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(shifts):
        u = rot[0, 0] * (xx + dx) + rot[1, 0] * (yy + dy)
        v = rot[0, 1] * (xx + dx) + rot[1, 1] * (yy + dy)
        out[i] = ndimage.map_coordinates(images[i], [v + ny // 2, u + nx // 2], order=3, mode="grid-constant")
    return out


def _held_out_residual(signal, series: TiltSeries, iterations=10, smoothing=1.0) -> np.ndarray:
    """Per projection ``(n,)``: ``sum (data - model)^2 / sum data^2`` where the data are ``signal``
    smoothed by a Gaussian of ``smoothing`` px (rms) and the model is the re-projection of a
    reconstruction (RESIRE's iteration with momentum, :func:`napari_aet.backprojection.sirt_volume`,
    ``iterations``, of the particle's window,
    :func:`_particle_window`) from the other half of the tilts (alternate ones in angle order),
    mapped back onto the measured pixels. The smoothing makes the
    slight low-pass of resampling at sub-pixel shifts negligible: without it, resampled noise is
    weaker, and any shifted series of noisy data would look more consistent than the unshifted one."""
    window = (slice(None), *_particle_window(_aligned_inside(series, signal != 0), margin=8))
    signal = ndimage.gaussian_filter(signal, (0, smoothing, smoothing))
    aligned = apply_alignment(series.replace(projections=signal)).projections[window]
    halves = series.half_sets()
    residual = np.empty(len(signal))
    for train, test in (halves, halves[::-1]):
        part = series.replace(projections=aligned[train], angles=series.angles[train],
                              shifts=np.zeros((len(train), 2)), tilt_axis=0.0)
        volume = sirt_volume(part, iterations, accelerate=True, step=1.0)
        model = np.zeros((len(test), *signal.shape[1:]), np.float32)
        model[window] = Projector(volume.shape, series.angles[test]).forward(volume)
        model = _to_measured_frame(model, series.shifts[test], series.tilt_axis)
        residual[test] = (np.sum((signal[test] - model) ** 2, axis=(1, 2))
                          / np.maximum(np.sum(signal[test] ** 2, axis=(1, 2)), 1e-30))
    return residual


def _paired_t(improvement) -> float:
    """t-statistic of the mean of per-projection improvements ``(n,)`` (0 when they are all equal)."""
    spread = np.std(improvement, ddof=1) / np.sqrt(len(improvement))
    return float(np.mean(improvement) / spread) if spread > 0 else 0.0


def check_alignment(before: TiltSeries, after: TiltSeries, *, threshold=2.0, background="smooth",
                    progress=None) -> AlignmentCheck:
    """Is ``after`` (the same projections with new shifts and tilt axis) more consistent than ``before``?

    Two measures, each evaluated per projection on both series (:class:`AlignmentCheck`): the
    held-out re-projection residual (everything: tilt axis, shifts across and along the axis)
    and the agreement of the common-line profiles (tilt axis and shifts along it). Each gives a
    paired t-statistic of the improvement. ``after`` is accepted when the held-out residual is
    significantly lower (t > ``threshold``) and neither measure is significantly worse
    (t < -``threshold``). The common line only vetoes: alignment fits the along-axis shifts to
    this very agreement, noise included, so it always looks a little better after alignment,
    while the held-out residual is measured on projections the reconstruction did not see. So an
    alignment that only moves projections by their noise keeps ``before``: already-aligned data
    come out unchanged. ``background`` is removed before measuring, as in :func:`align_auto`.
    """
    _single_axis(before, "the alignment check")
    if after.projections.shape != before.projections.shape or not np.array_equal(after.angles, before.angles):
        raise InputError("the alignment check compares two alignments of the same projections and angles")
    signal = _signal(background_removed(before, background)[0].projections)
    return _consistency_check(signal, before, after, threshold, progress)


#: Largest rms (px) by which an alignment's change of the shifts may depart from a rigid 3D
#: translation of the particle and still count as one (:func:`_rigid_translation`).
RIGID_TOLERANCE = 0.1


def _rigid_translation(before: TiltSeries, after: TiltSeries):
    """(x, y, z) px when ``after`` differs from ``before`` only by a rigid translation of the
    particle — the same tilt axis (within 0.05°), shifts that change by ``x cos θ − z sin θ`` across
    the axis and by ``y`` along it, within :data:`RIGID_TOLERANCE` rms — else None. Such an
    alignment moves the origin and nothing else (a particle off the rotation centre in aligned
    data), while resampling the projections smooths their noise, which would make it look more
    consistent (docs/alignment.md)."""
    if abs(after.tilt_axis - before.tilt_axis) > 0.05:
        return None
    a, t = np.deg2rad(before.tilt_axis), np.deg2rad(before.angles)
    dy, dx = (after.shifts - before.shifts).T
    across, along = dx * np.cos(a) - dy * np.sin(a), dx * np.sin(a) + dy * np.cos(a)
    design = np.stack([np.cos(t), -np.sin(t)], axis=1)
    (x, z), *_ = np.linalg.lstsq(design, across, rcond=None)
    departure = np.concatenate([across - design @ (x, z), along - along.mean()])
    if np.sqrt(np.mean(departure ** 2)) > RIGID_TOLERANCE:
        return None
    return float(x), float(along.mean()), float(z)


def _consistency_check(signal, before, after, threshold, progress=None) -> AlignmentCheck:
    """:func:`check_alignment` on ``signal`` as from :func:`_signal`."""
    if len(signal) < 4:  # each held-out half needs two tilts to reconstruct from
        nan = float("nan")
        return AlignmentCheck(True, f"aligned series kept unchecked: {len(signal)} projections are too few to "
                              "hold half of them out", (nan, nan), (nan, nan), nan, nan, float(threshold))
    translation = _rigid_translation(before, after)
    if translation is not None:  # nothing to gain but a new origin, at the cost of resampling the noise
        nan = float("nan")
        reason = ("input kept: the alignment only moves the particle as a whole (by {:.2f}, {:.2f}, {:.2f} px along x, "
                  "y, z), which its projections already agree on").format(*translation) \
            if np.max(np.abs(translation)) >= 0.05 else "input kept: the alignment changed nothing"
        report(progress, 1.0, reason)
        return AlignmentCheck(False, reason, (nan, nan), (nan, nan), nan, nan, float(threshold))
    report(progress, 0.0, "checking the alignment: common line")
    lines = [_common_line_agreement(signal, s) for s in (before, after)]
    residuals = []
    for j, s in enumerate((before, after)):
        report(progress, 0.1 + 0.45 * j, "checking the alignment: held-out re-projection")
        residuals.append(_held_out_residual(signal, s))
    line_t, residual_t = _paired_t(lines[1] - lines[0]), _paired_t(residuals[0] - residuals[1])
    worse = [name for name, t in (("common line", line_t), ("re-projection", residual_t)) if t < -threshold]
    accepted = residual_t > threshold and not worse
    if accepted:
        reason = "aligned series kept: its held-out re-projection residual is significantly lower"
    elif worse:
        reason = f"input kept: the alignment made the {' and '.join(worse)} consistency worse"
    else:
        reason = "input kept: the alignment did not lower the held-out re-projection residual significantly"
    report(progress, 1.0, reason)
    return AlignmentCheck(accepted, f"{reason} (t: common line {line_t:+.1f}, re-projection {residual_t:+.1f})",
                          (float(np.mean(lines[0])), float(np.mean(lines[1]))),
                          (float(np.mean(residuals[0])), float(np.mean(residuals[1]))),
                          line_t, residual_t, float(threshold))


# ------------------------------------------------------------------------ the report


@dataclass
class TiltAxisRefinement:
    """The re-projection refinement of the tilt-axis angle (:func:`_axis_rotation`).

    angles : ``(2,)`` trial tilt-axis angles (degrees); rotations : ``(2,)`` the tilt-consistent
    in-plane rotation (degrees) at each; accepted : the secant root was kept.
    """

    angles: np.ndarray
    rotations: np.ndarray
    accepted: bool


@dataclass
class TiltAxisSearch:
    """How the tilt-axis angle (degrees, ``TiltSeries.tilt_axis`` convention) was found.

    common_line : the common-line optimum; given : the angle passed to :func:`align_auto` (None
    = estimated); angles, scores : the coarse search (3° steps) and its consistency scores;
    fine_angles, fine_scores : the fine search (0.25° steps; scores on another scale);
    estimate : the estimate (the common line, refined by re-projection if that was accepted);
    used : the angle the alignment used; reprojection : the re-projection refinement (only when
    the angle was estimated).
    """

    common_line: float
    given: float | None
    angles: np.ndarray
    scores: np.ndarray
    fine_angles: np.ndarray
    fine_scores: np.ndarray
    estimate: float
    used: float
    reprojection: TiltAxisRefinement | None = None


@dataclass
class CommonLineProfiles:
    """Each projection summed perpendicular to the tilt axis: ``raw`` and ``aligned`` ``(n, L)``
    (detector counts), along the axis at ``v`` ``(L,)`` pixels about the image centre."""

    v: np.ndarray
    raw: np.ndarray
    aligned: np.ndarray


@dataclass
class AlignmentStep:
    """One step of :func:`align_auto`: its name and the rms change (px) it made to the shifts."""

    name: str
    rms_change: float


@dataclass
class MatchingIteration:
    """One iteration of :func:`projection_matching_shifts`: rms and largest shift update (px)
    and the R-factor of the projections against the re-projection."""

    rms_update: float
    max_update: float
    r_factor: float


@dataclass
class AlignmentReport:
    """What an alignment measured and how (:func:`align_auto`; a single-method alignment fills
    ``angles`` and ``shifts`` only).

    angles : the tilt angles (degrees). shifts : the shifts ``(n, 2)`` (dy, dx) px after each
        step, by step name. steps : each step's rms change. background : what was removed before
        measuring ("smooth", "constant", "none", or "none (why)" when the particle left too little
        background for a fit); background_fit : the fit's record
        (``metadata["background"]`` of :func:`napari_aet.background.subtract_background`).
    tilt_axis : how the tilt axis was found. common_line : the profiles before and after.
    projection_matching : its iterations ([] when it did not run). offset : the tilt-axis offset
        (px across the axis) that was removed. check : the consistency check that decided whether
        the alignment was kept (None when not checked).
    Everything describes the alignment that was measured, kept or not. Fields that are None do
    not apply; :meth:`record` is what studies and ``report.json`` keep.
    """

    angles: list[float]
    shifts: dict[str, np.ndarray]
    steps: list[AlignmentStep] | None = None
    background: str | None = None
    background_fit: dict | None = None
    tilt_axis: TiltAxisSearch | None = None
    common_line: CommonLineProfiles | None = None
    projection_matching: list[MatchingIteration] | None = None
    offset: float | None = None
    check: AlignmentCheck | None = None
    skipped: str | None = None

    def record(self) -> dict:
        """The report as plain dicts (JSON-able after numpy conversion), as studies
        (``TimePoint.report["alignment"]``) and ``report.json`` keep it, fields that do not apply
        (None) left out. The common-line profiles are kept (``2 n L`` values)."""
        record = {item.name: _plain(getattr(self, item.name)) for item in fields(self)
                  if getattr(self, item.name) is not None}
        if self.tilt_axis is not None and self.tilt_axis.reprojection is None:
            del record["tilt_axis"]["reprojection"]  # only an estimated axis is refined
        return record


def _plain(value):
    """A dataclass, or a list of them, as plain dicts; anything else as it is."""
    if is_dataclass(value):
        return asdict(value)
    return [_plain(v) for v in value] if isinstance(value, list) else value


# ------------------------------------------------------------------------- chain


def align_auto(series: TiltSeries, *, tilt_axis=None, axis_tolerance=1.0, precision=0.05,
               projection_matching=True, iterations=6, background="smooth", check=True,
               progress=None) -> tuple[TiltSeries, AlignmentReport]:
    """Align a single-axis tilt series end to end; returns it with shifts and tilt axis set, and an
    :class:`AlignmentReport`.

    1. tilt-axis angle from common-line consistency, refined where the in-plane rotation of
       the projections against a reconstruction confined to the particle's visual hull is
       one that no 3D rotation explains (:func:`_axis_rotation`; ``tilt_axis=None``), or the
       given angle (degrees), which is checked against the data: an angle more than
       ``axis_tolerance`` degrees from the common-line estimate raises :class:`InputError`;
    2. centre of mass across the axis + common line along it (absolute, any shift size; the
       common line's sub-pixel search stops at ``precision`` px);
    3. projection matching (``iterations`` rounds) across the axis, if ``projection_matching``
       (along the axis the common line is exact: profile invariance holds for any object);
    4. the rigid part of the centroid track and the tilt-axis offset are removed, so the
       centroid lies on the rotation centre and the axis through ``nx // 2``;
    5. if ``check``, the result is kept only if it is more consistent than the input
       (:func:`check_alignment`: common-line agreement and held-out re-projection residual,
       measured on both); otherwise the input comes back unchanged (its own shifts and tilt
       axis) and ``report.check`` (an :class:`AlignmentCheck`) says why.

    A series this cannot align comes back unchanged, with ``report.skipped`` saying why: Euler
    angles (an alignment already made), or an object filling the field of view in most
    projections (:func:`napari_aet.projections.edge_signal`: a film).

    All measurements use a copy with the background removed (``background``: "smooth",
    "constant" or "none", see :func:`napari_aet.background.subtract_background`); for "smooth"
    the model (one shape fixed to the detector for all tilts, with or without a scale per
    tilt, or a polynomial per tilt) and its degree are those that best predict the outside
    pixels nearest the particle from those farther out: a background left under the particle
    biases the centre of mass, and so the tilt-axis offset. Where the particle leaves too
    little background for a fit, only the border level is removed and ``report.background``
    says why; otherwise ``report.background_fit`` holds the fit's record.

    The report (:class:`AlignmentReport`) holds every step's shifts and rms change, the tilt-axis
    search (score curves over ±90° and near the optimum, the re-projection refinement), the
    common-line profiles before and after, the projection-matching iterations, the offset and,
    with ``check``, the :class:`AlignmentCheck`; all describe the alignment that was measured,
    kept or not. The projections are not modified.
    """
    if series.is_single_axis and radians_suspected(series.angles):
        raise InputError(radians_message(series.angles, "the tilt series"))
    skipped = _why_not_aligned(series)
    if skipped:
        report(progress, 1.0, skipped)
        return series, AlignmentReport(np.asarray(series.angles).tolist(), {}, skipped=skipped)
    measured, why_not = background_removed(series, background)
    rep = AlignmentReport(series.angles.tolist(), {}, [], background=f"none ({why_not})" if why_not else background,
                          background_fit=measured.metadata["background"] if not why_not and background != "none"
                          else None)
    signal = _signal(measured.projections)

    def add_step(name, shifts, previous):
        rep.shifts[name] = shifts
        rep.steps.append(AlignmentStep(name, float(np.sqrt(np.mean(np.sum((shifts - previous) ** 2, 1))))))

    def first_shifts(axis):
        oriented = series.replace(tilt_axis=axis, projections=signal)
        dv, profiles = _common_line(signal, axis, precision)
        return oriented, center_of_mass_shifts(oriented) + _to_image(np.zeros_like(dv), dv, axis), dv, profiles

    prior = series.tilt_axis if tilt_axis is None else float(tilt_axis)
    estimate, curves = _search_tilt_axis(signal, prior, 90.0, sub_progress(progress, 0.0, 0.2))
    if tilt_axis is not None and abs(estimate - prior) > axis_tolerance:
        raise InputError(f"the given tilt axis {prior:.2f}° disagrees with the data, which indicate "
                         f"{estimate:.2f}°: check the angle, or leave it out to estimate it (tilt_axis=None; on "
                         "the command line, leave out --tilt-axis)")
    common_line, refinement = estimate, None
    if tilt_axis is None:
        oriented, shifts, _, _ = first_shifts(estimate)
        estimate, refinement = _refine_tilt_axis(signal, oriented.replace(shifts=shifts),
                                                 progress=sub_progress(progress, 0.2, 0.35))
    axis = estimate if tilt_axis is None else prior
    rep.tilt_axis = TiltAxisSearch(common_line, tilt_axis, *curves, estimate=estimate, used=axis,
                                   reprojection=refinement)

    report(progress, 0.35, "centre of mass and common line")
    oriented, shifts, dv, profiles = first_shifts(axis)
    raw, v = profiles.real_space(np.zeros_like(dv))
    rep.common_line = CommonLineProfiles(v, raw, profiles.real_space(dv)[0])
    add_step("centre of mass + common line", shifts, np.zeros_like(shifts))

    rep.projection_matching = []
    if projection_matching:
        refined = projection_matching_shifts(oriented.replace(shifts=shifts), iterations=iterations,
                                             precision=precision, along_axis=False, history=rep.projection_matching,
                                             progress=sub_progress(progress, 0.4, 0.85))
        add_step("projection matching", refined, shifts)
        shifts = refined

    rep.offset, fit = _axis_offset(signal, shifts, series.angles, axis)
    centred = shifts + _to_image(-fit, np.zeros_like(fit), axis)
    add_step("centroid and axis offset", centred, shifts)
    result = series.replace(shifts=centred, tilt_axis=axis)
    if check:
        rep.check = _consistency_check(signal, series, result, 2.0, sub_progress(progress, 0.85, 1.0))
        if not rep.check.accepted:
            result = series
    report(progress, 1.0, rep.check.reason if check else "aligned")
    return result, rep
