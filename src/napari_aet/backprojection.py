"""Volumes from an aligned tilt series through the projector's adjoint: weighted back-projection and
the real-space iterative solver (SIRT / RESIRE), and what every reconstruction checks first.

Building blocks of the reconstruct stage (its "wbp" and "resire" methods wrap them with parameters,
R-free, extended objects and live states), of alignment (quick reconstructions to re-project) and
of refinement (a back-projection of the residual); docs/architecture.md.

Weighted back-projection uses Radermacher's general weighting: each projection is filtered in 2D
Fourier space by ``1 / S_i(q)``, where ``S_i(q) = sum_j D sinc(D q . n_ij)`` counts how strongly
the back-projections of all projections j (object diameter ``D`` voxels) overlap at frequency
``q`` of plane i; then all are back-projected with the shared
:class:`~napari_aet.geometry.Projector` adjoint. For an evenly sampled single tilt this is the
familiar ramp filter, but it also handles uneven angles, a missing wedge and arbitrary Euler
angles with one formula.

The iterative solver is ``x <- P(x - step * C A^T R (A x - b))`` where ``A`` is the projector,
``A^T`` its exact adjoint, ``R = 1 / (A 1)`` the inverse ray lengths, ``C = 1 / (A^T 1)`` the
inverse voxel coverage and ``P`` the projection on the constraints (support and positivity).
``C`` and ``R`` are diagonal, so clipping is the exact projection in the metric that makes this a
preconditioned projected gradient descent on ``||A x - b||^2_R``: it converges for any
``0 < step < 2``; with ``accelerate`` the gradient step is taken from an extrapolated point
(Nesterov/FISTA momentum, ``step <= 1``).

Volumes are ``(nz, ny, nx)`` float32 with voxels of the pixel size; projections ``(n, ny, nx)``;
angles in degrees (single tilts ``(n,)`` or Euler ``(n, 3)``, docs/conventions.md).
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from .geometry import Projector, euler_angles, rotation_matrices
from .model import InputError, TiltSeries
from .progress import report
from .threads import fft_workers


def check_aligned(series: TiltSeries) -> TiltSeries:
    """Raise InputError unless ``series`` is aligned (zero shifts, tilt axis along y) and valid."""
    if not isinstance(series, TiltSeries):
        raise InputError(f"expected a TiltSeries, got {type(series).__name__}")
    if np.any(series.shifts != 0) or series.tilt_axis != 0:
        raise InputError("the tilt series is not aligned (non-zero shifts or tilt axis): apply the "
                         "alignment first (napari_aet.projections.apply_alignment)")
    orientations = np.round(rotation_matrices(series.angles).reshape(series.n_angles, 9), 6) + 0.0
    if len(np.unique(orientations, axis=0)) != series.n_angles:
        raise InputError("the angles contain duplicates (the same orientation twice): each projection "
                         "needs its own orientation")
    return series


def volume_shape(series: TiltSeries, thickness=None) -> tuple[int, int, int]:
    """Output shape ``(nz, ny, nx)``: nz = nx unless ``thickness`` (voxels) is given."""
    _, ny, nx = series.projections.shape
    if thickness is None:
        return nx, ny, nx
    if int(thickness) != thickness or thickness < 1:
        raise InputError(f"thickness must be a positive whole number of voxels, got {thickness}")
    return int(thickness), ny, nx


def single_axis_equivalent(angles, shape, tolerance) -> np.ndarray:
    """The tilts θ ``(n,)`` of Euler angles ``(n, 3)`` (φ, θ, ψ) when every single tilt θ moves no
    point of a volume ``shape`` ``(nz, ny, nx)`` by more than ``tolerance`` pixels on the detector
    (small φ and ψ, e.g. ≤ 0.4° in published film data); otherwise ``angles`` unchanged. Single
    tilts use the fast sparse projector, general Euler angles a projector tens of times slower."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim == 1 or tolerance <= 0:
        return angles
    corners = np.stack(np.meshgrid(*([-n / 2, n / 2] for n in shape[::-1]), indexing="ij"), -1).reshape(-1, 3)
    tilts = euler_angles(angles)[:, 1]
    difference = rotation_matrices(angles)[:, :2] - rotation_matrices(tilts)[:, :2]
    moved = np.linalg.norm(np.einsum("nij,cj->nci", difference, corners), axis=2).max()
    return tilts if moved <= tolerance else angles


def relative_residual(measured, model) -> float:
    """``sum|measured - model| / sum|measured|`` (real or complex arrays)."""
    return float(np.abs(measured - model).sum() / max(np.abs(measured).sum(), np.finfo(np.float32).tiny))


def weighting_filters(angles, pad_shape, diameter) -> np.ndarray:
    """Radermacher weights ``(n, Pv or 1, Pu//2 + 1)`` float32 for rfft2 spectra of ``pad_shape``.

    angles : ``(n,)`` tilts or ``(n, 3)`` Euler angles, degrees; diameter : object size in
    voxels. The kv axis has length 1 when every orientation shares the tilt axis y.
    """
    m = rotation_matrices(angles)
    # c[i, j] = in-plane components (u, v) of plane j's normal seen in projection i
    c = np.einsum("iab,jb->ija", m[:, :2, :], m[:, 2, :])
    pv, pu = pad_shape
    ku = fft.rfftfreq(pu)[None, None, :]
    kv = np.zeros((1, 1, 1)) if np.allclose(c[..., 1], 0) else fft.fftfreq(pv)[None, :, None]
    weights = np.empty((len(m), kv.shape[1], ku.shape[2]), dtype=np.float32)
    for i in range(len(m)):
        overlap = np.sinc(diameter * (ku * c[i, :, 0, None, None] + kv * c[i, :, 1, None, None]))
        weights[i] = 1.0 / (diameter * np.maximum(overlap.sum(axis=0), 1.0))  # >= the plane's own share
    return weights


def weighted_backprojection(series: TiltSeries, thickness=None, single_axis_tolerance=1.0) -> np.ndarray:
    """WBP volume float32 ``(nz, ny, nx)`` of an aligned series; nz = nx unless ``thickness``.

    single_axis_tolerance : pixels; Euler angles whose single tilts θ move no voxel by more than
    this are back-projected as those single tilts (the sparse projector, tens of times faster);
    0 = always exact. One pixel by default: WBP is a preview and a search for candidates.
    """
    check_aligned(series)
    shape = volume_shape(series, thickness)
    _, ny, nx = series.projections.shape
    pad = (fft.next_fast_len(2 * ny, real=True), fft.next_fast_len(2 * nx, real=True))
    weights = weighting_filters(series.angles, pad, max(shape[0], shape[2]))
    spectra = fft.rfft2(series.projections, s=pad, workers=fft_workers())
    spectra *= weights
    filtered = fft.irfft2(spectra, s=pad, workers=fft_workers())[:, :ny, :nx]
    angles = single_axis_equivalent(series.angles, shape, single_axis_tolerance)
    return Projector(shape, angles, (ny, nx)).adjoint(filtered)


def _inverse(a):
    """``1 / a``, 0 where ``a`` is (nearly) 0: rays and voxels the geometry never reaches."""
    out = np.zeros_like(a)
    np.divide(1.0, a, out=out, where=a > 1e-6)
    return out


def iterative_backprojection(projector: Projector, projections, initial, *, step=1.8, accelerate=False,
                             support=None, positivity=True):
    """The iterates of the real-space solver (module docstring), as an endless generator.

    projector : the :class:`~napari_aet.geometry.Projector` of the volume and the projections.
    projections : ``(n, ny, nx)`` float32, the measured ``b``. initial : the first volume.
    step : relaxation, in (0, 2) for plain iterations and (0, 1] with ``accelerate`` (not checked).
    support : optional volume mask (non-zero = the object may exist there); positivity : clip
        negative voxels. Yields ``(volume, its projections)`` after every iteration; each volume is
        a new array. The preconditioners are computed on the call.
    """
    row = _inverse(projector.forward(np.ones(projector.shape, np.float32)))
    col = step * _inverse(projector.adjoint(np.ones(np.shape(projections), np.float32)))

    def iterates(x):
        projected = projector.forward(x)
        # the gradient is taken at `point` (x itself without acceleration); its projection
        # follows from linearity, so each iteration costs one forward and one adjoint.
        point, projected_point, momentum = x, projected, 1.0
        while True:
            new = point - col * projector.adjoint(row * (projected_point - projections))
            if support is not None:
                new *= support
            if positivity:
                np.maximum(new, 0, out=new)
            projected_new = projector.forward(new)
            if accelerate:
                next_momentum = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
                beta = np.float32((momentum - 1) / next_momentum)
                point = new + beta * (new - x)
                projected_point = projected_new + beta * (projected_new - projected)
                momentum = next_momentum
            else:
                point, projected_point = new, projected_new
            x, projected = new, projected_new
            yield x, projected

    return iterates(initial)


def sirt_volume(series: TiltSeries, n_iterations, *, step=1.8, accelerate=False, support=None,
                progress=None) -> np.ndarray:
    """A quick reconstruction ``(nx, ny, nx)`` float32 of an aligned series: ``n_iterations`` of
    :func:`iterative_backprojection` from zeros, with positivity (RESIRE's iteration, without its
    R-factor bookkeeping). support : optional ``(nx, ny, nx)`` mask. progress : after each iteration."""
    check_aligned(series)
    shape = volume_shape(series)
    projector = Projector(shape, series.angles, series.projections.shape[1:])
    volume = np.zeros(shape, np.float32)
    iterates = iterative_backprojection(projector, series.projections, volume, step=step, accelerate=accelerate,
                                        support=support)
    for iteration in range(1, int(n_iterations) + 1):
        volume, _ = next(iterates)
        report(progress, iteration / n_iterations, f"iterative back-projection {iteration}/{n_iterations}")
    return volume
