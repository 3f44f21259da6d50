"""The one projection geometry: rotations, frames, the forward projector and its adjoint.

Conventions (see ``docs/conventions.md``):

* Specimen frame: x along image columns, y along image rows, z along the beam at 0° tilt.
* Arrays are ``(nz, ny, nx)`` volumes and ``(n_angles, ny, nx)`` projections.
* The rotation centre is index ``n // 2`` on every axis (the FFT centre).
* Orientation ``(phi, theta, psi)`` are GENFIRE's ZYZ Euler angles in degrees; a single
  tilt ``theta`` is ``(0, theta, 0)``. The rotation matrix ``M`` carries a specimen point
  ``r = (x, y, z)`` to ``(u, v, w) = M r``: image column coordinate ``u``, image row
  coordinate ``v`` and depth ``w`` along the beam. For a single tilt,
  ``u = x cos(theta) - z sin(theta)`` and ``v = y``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.special import erf

from .model import InputError
from .threads import map_threads, thread_count

#: y slices per block of the single-axis sparse product: a block of the volume stays in
#: cache (measured at 256³: 2.3–3.9× faster than one product over every slice, on 2 threads).
_SLICES_PER_BLOCK = 64


def euler_angles(angles) -> np.ndarray:
    """``(n, 3)`` Euler angles (phi, theta, psi) in degrees from ``(n,)`` tilts or ``(n, 3)``."""
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim == 1:
        return np.stack([np.zeros_like(angles), angles, np.zeros_like(angles)], axis=1)
    if angles.ndim == 2 and angles.shape[1] == 3:
        return angles
    raise InputError(f"angles must have shape (n,) or (n, 3), got {angles.shape}")


def rotation_matrices(angles) -> np.ndarray:
    """``(n, 3, 3)`` matrices M with ``(u, v, w) = M @ (x, y, z)``; angles in degrees."""
    phi, theta, psi = np.deg2rad(euler_angles(angles)).T
    cf, sf, ct, st, cp, sp = np.cos(phi), np.sin(phi), np.cos(theta), np.sin(theta), np.cos(psi), np.sin(psi)
    m = np.empty((len(phi), 3, 3))
    m[:, 0] = np.stack([cp * ct * cf - sp * sf, cp * ct * sf + sp * cf, -cp * st], axis=1)
    m[:, 1] = np.stack([-sp * ct * cf - cp * sf, -sp * ct * sf + cp * cf, sp * st], axis=1)
    m[:, 2] = np.stack([st * cf, st * sf, ct], axis=1)
    return m


def is_single_axis(angles) -> bool:
    """True when every orientation is a rotation about the y axis (v = y exactly)."""
    m = rotation_matrices(angles)
    return bool(np.allclose(m[:, 1], [0.0, 1.0, 0.0], atol=1e-12))


def radians_suspected(angles) -> bool:
    """Whether single tilt angles given in degrees look like radians: five or more, all within
    ±π (+0.01) yet spanning more than 0.5 — a span of a few degrees holds no 3D information, a
    span of a few radians is a whole tilt series."""
    angles = np.asarray(angles, dtype=float)
    return angles.ndim == 1 and len(angles) >= 5 and bool(np.all(np.abs(angles) <= np.pi + 0.01)) \
        and float(np.ptp(angles)) > 0.5


def radians_message(angles, source: str) -> str:
    """What to tell the user when :func:`radians_suspected` (``source``: where the angles came from)."""
    angles = np.asarray(angles, dtype=float)
    return (f"the angles of {source} span only {np.ptp(angles):.2f}° ({angles.min():.2f} to {angles.max():.2f}): "
            "are they in radians? napari-aet reads degrees (multiply by 57.2958); if they are degrees, a range "
            "this narrow cannot give a 3D reconstruction")


def in_plane_rotation(tilt_axis) -> np.ndarray:
    """2x2 matrix taking (u, v) with the tilt axis along v to image (x, y) when the tilt
    axis makes ``tilt_axis`` degrees with the image y axis (direction ``(sin a, cos a)``)."""
    a = np.deg2rad(tilt_axis)
    return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


def centre(shape) -> np.ndarray:
    """Index of the rotation centre on each axis: ``n // 2``."""
    return np.array([n // 2 for n in shape], dtype=np.float64)


def specimen_to_voxel(positions, shape, voxel_size) -> np.ndarray:
    """Specimen (x, y, z) in Å ``(N, 3)`` to fractional voxel indices (z, y, x) ``(N, 3)``."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    return positions[:, ::-1] / voxel_size + centre(shape)


def voxel_to_specimen(indices, shape, voxel_size) -> np.ndarray:
    """Fractional voxel indices (z, y, x) ``(N, 3)`` to specimen (x, y, z) in Å ``(N, 3)``."""
    indices = np.asarray(indices, dtype=np.float64).reshape(-1, 3)
    return ((indices - centre(shape)) * voxel_size)[:, ::-1]


class Projector:
    """The forward projector (line integrals, one voxel = one unit of path) and its exact adjoint.

    Voxel-driven: each voxel centre is rotated by M and its value split between the
    neighbouring detector pixels by linear (single axis) or bilinear (general) weights.
    Mass is conserved: ``forward(v).sum(axis=(1, 2)) == v.sum()`` when nothing leaves
    the detector. Single-axis orientations use a cached sparse matrix acting on every
    y slice, in cache-sized blocks on several threads; general Euler angles use the same
    weights computed per angle.

    shape : volume shape ``(nz, ny, nx)``; detector_shape : ``(ny_d, nx_d)``, default
    ``(ny, nx)``; angles : ``(n,)`` tilts or ``(n, 3)`` Euler angles, degrees.
    """

    def __init__(self, shape, angles, detector_shape=None):
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise InputError(f"volume shape must be (nz, ny, nx), got {shape}")
        self.detector_shape = tuple(detector_shape or self.shape[1:])
        self.matrices = rotation_matrices(angles)
        self.single_axis = is_single_axis(angles) and self.detector_shape[0] == self.shape[1]
        self._matrix = self._tilt_matrix() if self.single_axis else None
        self._matrix_transposed = None

    @property
    def projection_shape(self):
        return (len(self.matrices), *self.detector_shape)

    def _tilt_matrix(self):
        """Sparse ``(n * nx_d, nz * nx)`` matrix of the tilt about y, one slice at a time."""
        nz, _, nx = self.shape
        nxd = self.detector_shape[1]
        z = np.arange(nz) - nz // 2
        x = np.arange(nx) - nx // 2
        cos, sin = self.matrices[:, 0, 0], self.matrices[:, 0, 2]
        u = cos[:, None, None] * x[None, None, :] + sin[:, None, None] * z[None, :, None] + nxd // 2
        j0 = np.floor(u)
        frac = (u - j0).astype(np.float32)
        j0 = j0.astype(np.int64)
        col = np.broadcast_to(np.arange(nz * nx).reshape(1, nz, nx), u.shape)
        row0 = np.arange(len(cos))[:, None, None] * nxd + j0
        rows, cols, vals = [], [], []
        for dj, w in ((0, 1 - frac), (1, frac)):
            ok = (j0 + dj >= 0) & (j0 + dj < nxd)
            rows.append((row0 + dj)[ok])
            cols.append(col[ok])
            vals.append(w[ok])
        return sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(cos) * nxd, nz * nx), dtype=np.float32)

    def _check(self, array, shape, what):
        array = np.asarray(array, dtype=np.float32)
        if array.shape != shape:
            raise InputError(f"{what} has shape {array.shape}, expected {shape}")
        return array

    def forward(self, volume) -> np.ndarray:
        """Projections ``(n, ny_d, nx_d)`` float32 of a volume ``(nz, ny, nx)``."""
        volume = self._check(volume, self.shape, "volume")
        if self.single_axis:
            return _slices_product(self._matrix, volume, len(self.matrices))
        out = np.empty(self.projection_shape, dtype=np.float32)
        for i in range(len(self.matrices)):
            index, weights = self._splat_weights(i)
            out[i] = np.bincount(index.ravel(), (weights * volume.reshape(1, -1)).ravel(),
                                 minlength=out[i].size).reshape(self.detector_shape)
        return out

    def adjoint(self, projections) -> np.ndarray:
        """Back-projection ``(nz, ny, nx)`` float32: the exact transpose of :meth:`forward`."""
        projections = self._check(projections, self.projection_shape, "projections")
        nz, ny, nx = self.shape
        if self.single_axis:
            if self._matrix_transposed is None:
                self._matrix_transposed = self._matrix.T.tocsr()
            return _slices_product(self._matrix_transposed, projections, nz)
        out = np.zeros(nz * ny * nx, dtype=np.float32)
        for i in range(len(self.matrices)):
            index, weights = self._splat_weights(i)
            out += (weights * projections[i].ravel()[index]).sum(axis=0)
        return out.reshape(self.shape)

    def _splat_weights(self, i):
        """Detector pixel index and bilinear weight ``(4, n_voxels)`` for orientation i."""
        nz, ny, nx = self.shape
        nyd, nxd = self.detector_shape
        m = self.matrices[i].astype(np.float32)
        z, y, x = (np.arange(n, dtype=np.float32) - n // 2 for n in self.shape)
        u = (m[0, 0] * x[None, None, :] + m[0, 1] * y[None, :, None] + m[0, 2] * z[:, None, None]).ravel() + nxd // 2
        v = (m[1, 0] * x[None, None, :] + m[1, 1] * y[None, :, None] + m[1, 2] * z[:, None, None]).ravel() + nyd // 2
        ju, jv = np.floor(u), np.floor(v)
        fu, fv = u - ju, v - jv
        ju, jv = ju.astype(np.int64), jv.astype(np.int64)
        index = np.empty((4, u.size), dtype=np.int64)
        weights = np.empty((4, u.size), dtype=np.float32)
        for k, (dv, du, w) in enumerate(((0, 0, (1 - fv) * (1 - fu)), (0, 1, (1 - fv) * fu),
                                        (1, 0, fv * (1 - fu)), (1, 1, fv * fu))):
            ok = (jv + dv >= 0) & (jv + dv < nyd) & (ju + du >= 0) & (ju + du < nxd)
            index[k] = np.where(ok, (jv + dv) * nxd + ju + du, 0)
            weights[k] = np.where(ok, w, 0)
        return index, weights


def _slices_product(matrix, stack, n_out) -> np.ndarray:
    """The sparse ``matrix`` applied to every y slice of ``stack``: ``(a, ny, c)`` in,
    ``(n_out, ny, matrix.shape[0] // n_out)`` float32 out, where slice y of the input, raveled,
    is the vector multiplied. Blocks of y slices run on several threads."""
    ny = stack.shape[1]
    out = np.empty((n_out, ny, matrix.shape[0] // n_out), np.float32)

    def block(start):
        rows = slice(start, min(start + _SLICES_PER_BLOCK, ny))
        columns = np.ascontiguousarray(stack[:, rows].transpose(0, 2, 1)).reshape(-1, rows.stop - start)
        out[:, rows] = (matrix @ columns).reshape(n_out, -1, rows.stop - start).transpose(0, 2, 1)

    map_threads(block, range(0, ny, _SLICES_PER_BLOCK))
    return out


def project(volume, angles, detector_shape=None) -> np.ndarray:
    """Projections ``(n, ny, nx)`` of ``volume`` ``(nz, ny, nx)`` at ``angles`` (degrees)."""
    return Projector(np.shape(volume), angles, detector_shape).forward(volume)


def _pixel_integrals(centres, sigma, n, half, derivative=False):
    """Per-atom Gaussian integrals over ``2*half+1`` pixels around each centre.

    centres : ``(N,)`` fractional pixel coordinates; sigma ``(N,)`` in pixels.
    Returns indices ``(N, w)`` and weights ``(N, w)`` (zero weight outside ``[0, n)``), and
    with ``derivative`` also the weights' derivative with respect to the centre ``(N, w)``.
    """
    start = np.floor(centres).astype(np.int64) - half
    index = start[:, None] + np.arange(2 * half + 1)[None, :]
    scale = 1.0 / (np.sqrt(2.0) * sigma[:, None])
    edges = (start[:, None] + np.arange(2 * half + 2)[None, :] - centres[:, None] - 0.5) * scale
    inside = (index >= 0) & (index < n)
    out = (np.where(inside, index, 0), np.where(inside, 0.5 * np.diff(erf(edges), axis=1), 0.0))
    if not derivative:
        return out
    # d/dc [Phi((i + 1/2 - c)/s) - Phi((i - 1/2 - c)/s)] = (phi(lower edge) - phi(upper edge)) / s
    slope = -np.diff(np.exp(-edges ** 2), axis=1) * scale / np.sqrt(np.pi)
    return (*out, np.where(inside, slope, 0.0))


#: Atoms per block of the ``(N, w, w)`` work arrays of :class:`Footprints`: made for thousands of
#: atoms at once they are tens of MB, which the allocator gives back to the system and faults in
#: again every time (measured: twice as slow).
_BLOCK = 1024


@dataclass
class Footprints:
    """Where the Gaussian atoms of one projection fall on the detector (separable in y and x).

    iy, wy : ``(N, w)`` row indices and pixel-integrated weights; ix, wx likewise for columns.
    dwy, dwx : derivatives of the weights with respect to the atom's image position (per pixel),
        or None. jacobian : ``(2, 3)`` d(image x, image y) px / d(specimen x, y, z) Å.
    An atom of amplitude a adds ``a * wy[:, :, None] * wx[:, None, :]`` at ``(iy, ix)``.
    """

    iy: np.ndarray
    wy: np.ndarray
    ix: np.ndarray
    wx: np.ndarray
    jacobian: np.ndarray
    dwy: np.ndarray | None = None
    dwx: np.ndarray | None = None

    def flat_index(self, nx, offset=0, rows=slice(None)) -> np.ndarray:
        """Raveled detector index ``(N, w, w)`` of every footprint pixel of the atoms ``rows`` in
        images ``nx`` pixels wide, plus ``offset`` (scalar or one per atom of ``rows``)."""
        return (self.iy[rows] * nx + np.reshape(offset, (-1, 1)))[:, :, None] + self.ix[rows, None, :]

    def splat(self, amplitudes, shape, layer=0) -> np.ndarray:
        """The image ``shape`` = ``(ny, nx)`` float64 of the atoms with ``amplitudes`` ``(N,)``, or a
        stack of images ``shape`` = ``(n_layers, ny, nx)`` with atom a in image ``layer[a]``."""
        return self._scatter((amplitudes[:, None] * self.wy)[:, :, None], self.wx[:, :, None], shape, layer)

    def splat_shift(self, dx, dy, detector_shape) -> np.ndarray:
        """The change ``(ny, nx)`` float64, to first order, of the image of unit-amplitude atoms each
        shifted by ``(dx, dy)`` ``(N,)`` pixels (needs the derivatives)."""
        return self._scatter(np.stack([self.wy, self.dwy * dy[:, None]], -1),
                             np.stack([self.dwx * dx[:, None], self.wx], -1), detector_shape)

    def _scatter(self, row_weights, column_weights, shape, layer=0) -> np.ndarray:
        """Images ``shape`` (``(ny, nx)`` or ``(n_layers, ny, nx)``) float64 holding at the footprint
        of each atom a (in image ``layer[a]``) the sum over k of the outer products of
        ``row_weights[a, :, k]`` and ``column_weights[a, :, k]`` (both ``(N, w, K)``)."""
        starts = np.broadcast_to(np.multiply(layer, shape[-2] * shape[-1]), len(self.iy))
        out = np.zeros(int(np.prod(shape)))
        for rows in self._blocks():
            weights = row_weights[rows] @ column_weights[rows].transpose(0, 2, 1)
            out += np.bincount(self.flat_index(shape[-1], starts[rows], rows).ravel(), weights.ravel(),
                               minlength=out.size)
        return out.reshape(shape)

    def gather(self, image) -> np.ndarray:
        """The values ``(N, w, w)`` of ``image`` ``(ny, nx)`` under every footprint."""
        return np.take(image, self.flat_index(image.shape[1]))

    def gather_along_x(self, image, weights) -> np.ndarray:
        """``(N, w, K)``: the values of ``image`` ``(ny, nx)`` under every footprint summed along x
        with the ``weights`` ``(N, w, K)`` of each atom's columns."""
        out = np.empty((*self.iy.shape, weights.shape[2]))
        for rows in self._blocks():
            out[rows] = np.take(image, self.flat_index(image.shape[1], rows=rows)) @ weights[rows]
        return out

    def _blocks(self):
        """Slices of at most :data:`_BLOCK` atoms."""
        return [slice(start, start + _BLOCK) for start in range(0, len(self.iy), _BLOCK)]


def footprint_half_width(sigma) -> int:
    """Half-width (pixels) of the footprint window of Gaussians with widths ``sigma`` (pixels): 4 sigma + 1
    of the widest, so that every footprint holds all but ~1e-4 of its atom."""
    return int(np.ceil(4 * np.max(sigma))) + 1 if np.size(sigma) else 0


def atom_footprints(positions, sigma, angles, detector_shape, pixel_size, tilt_axis=0.0, offsets=None,
                    derivatives=False, half_width=None):
    """Yield the :class:`Footprints` of Gaussian atoms in each projection, in angle order.

    positions : ``(N, 3)`` specimen (x, y, z) in Å, origin at the rotation centre.
    sigma : Gaussian width in Å, scalar or ``(N,)``.
    angles : ``(n,)`` tilts or ``(n, 3)`` Euler angles in degrees.
    tilt_axis : in-plane tilt-axis direction in degrees (see :func:`in_plane_rotation`).
    offsets : ``(n, 2)`` displacement (dy, dx) in pixels of the particle in each image.
    derivatives : also give the weights' derivatives (for fitting positions).
    half_width : footprint window half-width in pixels (default :func:`footprint_half_width` of sigma).

    The pixel integrals along an image axis are computed once for consecutive projections where
    the atoms' coordinates along it are the same (the rows of every projection about a tilt axis
    along y): such footprints share those arrays, which must not be modified.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64) / pixel_size, len(positions))
    ny, nx = detector_shape
    matrices = rotation_matrices(angles)
    offsets = np.zeros((len(matrices), 2)) if offsets is None else np.asarray(offsets, float)
    to_image = in_plane_rotation(tilt_axis)
    half = footprint_half_width(sig) if half_width is None else half_width
    jacobians = [to_image @ m[:2] / pixel_size for m in matrices]
    xy = [positions @ j.T for j in jacobians]
    # per projection and image axis (x, y): the atoms' centres in pixels from the detector corner
    centres = [(p[:, 0] + nx // 2 + o[1], p[:, 1] + ny // 2 + o[0]) for p, o in zip(xy, offsets)]

    def integrals(job):
        i, axis = job
        return _pixel_integrals(centres[i][axis], sig, (nx, ny)[axis], half, derivatives)

    latest = [None, None]  # per image axis: the integrals of the last projection
    threads = thread_count()
    for first in range(0, len(matrices), threads):  # a batch of projections on several threads
        batch = range(first, min(first + threads, len(matrices)))
        new = [(i, axis) for i in batch for axis in (0, 1)
               if i == 0 or not np.array_equal(centres[i][axis], centres[i - 1][axis])]
        computed = dict(zip(new, map_threads(integrals, new)))
        for i in batch:
            latest = [computed.get((i, axis), latest[axis]) for axis in (0, 1)]
            (ix, wx, *dx), (iy, wy, *dy) = latest
            yield Footprints(iy, wy, ix, wx, jacobians[i], *((dy[0], dx[0]) if derivatives else ()))


def project_atoms(positions, amplitudes, sigma, angles, detector_shape, pixel_size,
                  tilt_axis=0.0, offsets=None) -> np.ndarray:
    """Projections ``(n, ny, nx)`` float32 of Gaussian atoms, integrated over each pixel.

    positions : ``(N, 3)`` specimen (x, y, z) in Å, origin at the rotation centre.
    amplitudes : ``(N,)`` integrated intensity of each atom per projection.
    sigma : Gaussian width in Å, scalar or ``(N,)``.
    angles, tilt_axis, offsets : as in :func:`atom_footprints`.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    amplitudes = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), len(positions))
    footprints = atom_footprints(positions, sigma, angles, detector_shape, pixel_size, tilt_axis, offsets)
    return np.stack([f.splat(amplitudes, detector_shape) for f in footprints]).astype(np.float32)


def render_atoms(positions, amplitudes, sigma, shape, voxel_size) -> np.ndarray:
    """A volume ``shape`` = (nz, ny, nx) float32 of Gaussian atoms integrated over each voxel.

    positions : ``(N, 3)`` specimen (x, y, z) Å; amplitudes ``(N,)`` integrated intensity;
    sigma : Gaussian width in Å (scalar or ``(N,)``).
    """
    idx = specimen_to_voxel(positions, shape, voxel_size)
    amplitudes = np.broadcast_to(np.asarray(amplitudes, dtype=np.float64), len(idx))
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64) / voxel_size, len(idx))
    half = footprint_half_width(sig)
    nz, ny, nx = shape
    out = np.zeros(nz * ny * nx, dtype=np.float64)
    for start in range(0, len(idx), 2048):
        part = slice(start, start + 2048)
        (iz, wz), (iy, wy), (ix, wx) = (_pixel_integrals(idx[part, a], sig[part], shape[a], half)
                                        for a in range(3))
        flat = ((iz[:, :, None, None] * ny + iy[:, None, :, None]) * nx + ix[:, None, None, :]).ravel()
        w = (amplitudes[part, None, None, None] * wz[:, :, None, None] * wy[:, None, :, None]
             * wx[:, None, None, :]).ravel()
        out += np.bincount(flat, w, minlength=out.size)
    return out.reshape(shape).astype(np.float32)
