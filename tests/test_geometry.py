"""The one projection geometry: convention, adjoint, agreement of the two code paths."""

import numpy as np
import pytest

from napari_aet.geometry import (_BLOCK, Projector, atom_footprints, euler_angles, in_plane_rotation, project,
                                 project_atoms, render_atoms, rotation_matrices, specimen_to_voxel,
                                 voxel_to_specimen)
from napari_aet.model import InputError

ANGLES = np.linspace(-70, 70, 9)


def test_single_tilt_convention_matches_design():
    """A positive tilt carries (x, y, z) to (x cos t - z sin t, y), GENFIRE's (0, t, 0)."""
    t = np.deg2rad(30)
    m = rotation_matrices([30.0])[0]
    x, y, z = 2.0, -1.0, 3.0
    u, v, _ = m @ [x, y, z]
    assert u == pytest.approx(x * np.cos(t) - z * np.sin(t))
    assert v == pytest.approx(y)
    assert np.allclose(rotation_matrices([30.0]), rotation_matrices([[0.0, 30.0, 0.0]]))


def test_rotation_matrices_are_proper_rotations():
    rng = np.random.default_rng(1)
    m = rotation_matrices(rng.uniform(-180, 180, size=(20, 3)))
    assert np.allclose(m @ m.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(m), 1.0)


def test_off_centre_voxel_projects_where_the_convention_says():
    shape = (33, 17, 41)
    vol = np.zeros(shape, np.float32)
    x, y, z = 7, -3, 5  # voxels from the centre
    vol[z + 16, y + 8, x + 20] = 1.0
    proj = project(vol, ANGLES)
    for p, t in zip(proj, np.deg2rad(ANGLES)):
        col = (p.sum(axis=0) * np.arange(41)).sum() - 20
        assert col == pytest.approx(x * np.cos(t) - z * np.sin(t), abs=1e-4)
        assert np.argmax(p.sum(axis=1)) == y + 8


@pytest.mark.parametrize("euler, shape", [(False, (12, 10, 14)), (True, (12, 10, 14)), (False, (6, 150, 8))])
def test_adjoint_is_exact(euler, shape):
    """Also with more y slices than one block of the single-axis product (the last one partial)."""
    rng = np.random.default_rng(0)
    angles = rng.uniform(-60, 60, size=(5, 3)) if euler else ANGLES
    proj = Projector(shape, angles)
    assert proj.single_axis is not euler
    v = rng.random(shape).astype(np.float32)
    p = rng.random(proj.projection_shape).astype(np.float32)
    lhs, rhs = np.vdot(proj.forward(v).astype(np.float64), p), np.vdot(v, proj.adjoint(p).astype(np.float64))
    assert lhs == pytest.approx(rhs, rel=1e-5)


@pytest.mark.parametrize("shape", [(14, 12, 16), (6, 150, 8)])
def test_single_axis_fast_path_equals_general_path(shape):
    """The blocked, threaded sparse product equals the per-angle splatting, in every block."""
    rng = np.random.default_rng(2)
    v = rng.random(shape).astype(np.float32)
    fast = Projector(shape, ANGLES)
    general = Projector(shape, euler_angles(ANGLES) + [0.0, 0.0, 1e-9])
    assert fast.single_axis and not general.single_axis
    assert np.allclose(fast.forward(v), general.forward(v), atol=1e-4)
    p = rng.random(fast.projection_shape).astype(np.float32)
    assert np.allclose(fast.adjoint(p), general.adjoint(p), atol=1e-4)


def test_projection_conserves_mass_inside_the_field():
    vol = np.zeros((32, 32, 32), np.float32)
    vol[10:22, 12:20, 11:21] = 1.0
    proj = project(vol, ANGLES)
    assert np.allclose(proj.sum(axis=(1, 2)), vol.sum(), rtol=1e-5)


def test_atom_projection_agrees_with_voxel_projection_of_rendered_atoms():
    rng = np.random.default_rng(3)
    positions = rng.uniform(-6, 6, size=(6, 3))
    shape, voxel = (40, 40, 40), 0.5
    volume = render_atoms(positions, 1.0, 0.8, shape, voxel)
    assert volume.sum() == pytest.approx(6.0, rel=1e-3)
    by_voxels = project(volume, ANGLES)
    analytic = project_atoms(positions, 1.0, 0.8, ANGLES, shape[1:], voxel)
    assert np.abs(by_voxels - analytic).max() < 0.1 * analytic.max()
    assert np.allclose(analytic.sum(axis=(1, 2)), 6.0, rtol=1e-3)


def test_in_plane_rotation_moves_the_tilt_axis():
    """A line of atoms along y, imaged with the axis at a, lies along (sin a, cos a)."""
    positions = np.stack([np.zeros(9), np.linspace(-8, 8, 9), np.zeros(9)], axis=1)
    img = project_atoms(positions, 1.0, 0.5, [0.0], (64, 64), 0.5, tilt_axis=30.0)[0]
    ys, xs = np.nonzero(img > 0.3 * img.max())
    slope = np.polyfit(ys - 32, xs - 32, 1)[0]  # dx/dy along the line
    assert slope == pytest.approx(np.tan(np.deg2rad(30)), abs=0.05)
    assert np.allclose(in_plane_rotation(0.0), np.eye(2))


def test_voxel_specimen_round_trip():
    shape = (20, 21, 22)
    pos = np.array([[1.5, -2.0, 3.25]])
    idx = specimen_to_voxel(pos, shape, 0.5)
    assert np.allclose(idx, [[10 + 6.5, 10 - 4.0, 11 + 3.0]])
    assert np.allclose(voxel_to_specimen(idx, shape, 0.5), pos)


def test_bad_shapes_are_reported():
    with pytest.raises(InputError, match="volume has shape"):
        Projector((8, 8, 8), ANGLES).forward(np.zeros((8, 8, 9)))
    with pytest.raises(InputError, match="angles must have shape"):
        rotation_matrices(np.zeros((3, 2)))


def test_footprint_images_equal_the_sum_of_each_atom_s_outer_product():
    """splat, splat_shift and gather_along_x work in blocks of atoms; more atoms than one block here,
    some partly off the detector, with the y integrals shared between the projections."""
    rng = np.random.default_rng(2)
    n_atoms, shape = _BLOCK + 300, (40, 36)
    positions = rng.uniform(-9, 9, (n_atoms, 3))
    footprints = list(atom_footprints(positions, 0.5, [0.0, 40.0], shape, 0.4, derivatives=True))
    assert footprints[0].wy is footprints[1].wy  # same rows in every projection about y
    f = footprints[1]
    amplitudes, layer = rng.uniform(1, 2, n_atoms), rng.integers(0, 2, n_atoms)
    dx, dy = rng.normal(size=(2, n_atoms))
    image = rng.normal(size=shape)
    stack, shift = np.zeros((2, *shape)), np.zeros(shape)
    for a in range(n_atoms):
        at = np.ix_(f.iy[a], f.ix[a])
        np.add.at(stack[layer[a]], at, amplitudes[a] * np.outer(f.wy[a], f.wx[a]))
        np.add.at(shift, at, np.outer(f.wy[a], f.dwx[a]) * dx[a] + np.outer(f.dwy[a], f.wx[a]) * dy[a])
    np.testing.assert_allclose(f.splat(amplitudes, (2, *shape), layer), stack, atol=1e-12)
    np.testing.assert_allclose(f.splat(amplitudes, shape), stack.sum(0), atol=1e-12)
    np.testing.assert_allclose(f.splat_shift(dx, dy, shape), shift, atol=1e-12)
    weights = np.stack([f.wx, f.dwx], -1)
    np.testing.assert_allclose(f.gather_along_x(image, weights), f.gather(image) @ weights, atol=1e-12)
    (alone,) = atom_footprints(positions, 0.5, [40.0], shape, 0.4, derivatives=True)
    for name in ("iy", "wy", "dwy", "ix", "wx", "dwx"):
        np.testing.assert_array_equal(getattr(alone, name), getattr(f, name))
