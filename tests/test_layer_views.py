"""How the layers share the viewer's sliders: a tilt series' tilt axis is a slider of its own,
never the volumes' z (napari 0.9 under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_aet._napari._base import show_layer
from napari_aet._napari.layers import projections_of, tilt_series_from_layer, tilt_series_layer, volume_layer
from napari_aet.geometry import render_atoms
from napari_aet.model import Reconstruction
from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series

SIZE = 32  # pixels and voxels
PIXEL = 0.5  # Å


@pytest.fixture(scope="module")
def particle():
    """A 55-atom FePt particle: its tilt series (9 tilts) and its ideal volume, on one grid."""
    atoms = fcc_particle(radius=6.0, seed=2)
    series = simulate_tilt_series(atoms, np.linspace(-60, 60, 9), shape=(SIZE, SIZE), pixel_size=PIXEL,
                                  max_shift=0, seed=2).tilt_series
    volume = render_atoms(atoms.positions, adf_amplitudes(atoms.species, 1.0), 0.5, (SIZE,) * 3, PIXEL)
    return series, Reconstruction(volume, PIXEL)


@pytest.fixture
def viewer(make_napari_viewer, particle):
    series, reconstruction = particle
    viewer = make_napari_viewer(show=True)
    show_layer(viewer, tilt_series_layer(series, name="series"))
    show_layer(viewer, volume_layer(reconstruction, name="volume"))
    return viewer


def displayed(layer) -> np.ndarray:
    """The 2D image a layer shows now (napari's slice of its data)."""
    return np.array(layer._slice.image.view, copy=True)


def test_the_tilt_slider_and_the_z_slider_move_only_their_own_layer(viewer, particle):
    series, reconstruction = particle
    assert viewer.dims.axis_labels == ("tilt", "z", "y", "x")
    tilts, volume = viewer.layers["series"], viewer.layers["volume"]
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, SIZE // 2)
    series_before, volume_before = displayed(tilts), displayed(volume)
    np.testing.assert_array_equal(series_before, series.projections[2])
    np.testing.assert_array_equal(volume_before, reconstruction.volume[SIZE // 2])

    viewer.dims.set_current_step(0, 6)  # the tilt slider: only the tilt series changes
    np.testing.assert_array_equal(displayed(tilts), series.projections[6])
    np.testing.assert_array_equal(displayed(volume), volume_before)
    assert viewer.dims.current_step[1] == SIZE // 2

    for z in (0, SIZE // 4, SIZE - 1):  # the z slider: only the volume changes; the tilt shows at every z
        viewer.dims.set_current_step(1, z)
        np.testing.assert_array_equal(displayed(volume), reconstruction.volume[z])
        np.testing.assert_array_equal(displayed(tilts), series.projections[6])
        assert viewer.dims.current_step[0] == 6

    volume.visible = False  # on the canvas: the z slider leaves the tilt image as it is, the tilt slider not
    viewer.reset_view()
    shots = {}
    for tilt, z in ((6, 0), (6, SIZE - 1), (2, SIZE - 1)):
        viewer.dims.set_current_step(0, tilt)
        viewer.dims.set_current_step(1, z)
        shots[tilt, z] = viewer.screenshot(canvas_only=True, flash=False)
    assert np.array_equal(shots[6, 0], shots[6, SIZE - 1])
    assert np.mean(np.any(shots[6, SIZE - 1] != shots[2, SIZE - 1], axis=-1)) > 0.05


def test_the_tilt_series_is_one_plane_in_3d_and_reads_back_whole(viewer, particle):
    series, _ = particle
    tilts, volume = viewer.layers["series"], viewer.layers["volume"]
    np.testing.assert_array_equal(tilt_series_from_layer(tilts).projections, series.projections)
    assert projections_of(tilts).shape == series.projections.shape

    volume.visible = False
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (0, 60, 30)  # oblique: a block would show its depth, a plane is thin
    plane = viewer.screenshot(canvas_only=True, flash=False)
    tilts.depiction = "volume"  # what napari draws otherwise: a block of the tilt series' depth
    block = viewer.screenshot(canvas_only=True, flash=False)

    def covered(image):
        return np.mean(np.any(image[..., :3] > 10, axis=-1))

    assert 0 < covered(plane) < 0.6 * covered(block)
