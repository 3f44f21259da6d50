"""Data types <-> napari layer data: round trips without a viewer, placement in Å."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_aet._napari.sample_data import sample_fept_layers
from napari_aet._napari.layers import (NON_ATOM_COLOUR, atoms_from_layer, atoms_layer, reconstruction_from_layer,
                                       tilt_series_from_layer, tilt_series_layer, volume_layer)
from napari_aet.model import AtomModel, InputError, Reconstruction, TiltSeries


def as_layer(data_tuple):
    """A stand-in for the napari layer a tuple would create."""
    data, kwargs, _ = data_tuple
    return SimpleNamespace(data=data, name=kwargs["name"], metadata=kwargs["metadata"],
                           features=kwargs.get("features"), scale=kwargs["scale"])


def test_tilt_series_round_trip():
    series = TiltSeries(np.random.default_rng(0).random((4, 16, 16)), [-30, -10, 10, 30], 0.35,
                        shifts=np.ones((4, 2)), metadata={"source": "x"})
    back = tilt_series_from_layer(as_layer(tilt_series_layer(series)))
    assert np.array_equal(back.projections, series.projections)
    assert np.array_equal(back.angles, series.angles) and back.pixel_size == 0.35
    assert np.array_equal(back.shifts, series.shifts) and back.metadata == {"source": "x"}


def test_volume_is_placed_with_the_rotation_centre_at_the_origin():
    recon = Reconstruction(np.zeros((10, 12, 14)), 0.5, "wbp", {"a": 1}, {"r_factor": [0.3]})
    data, kwargs, kind = volume_layer(recon)
    assert kind == "image" and kwargs["scale"] == (0.5, 0.5, 0.5)
    assert kwargs["translate"] == (-2.5, -3.0, -3.5)
    back = reconstruction_from_layer(as_layer((data, kwargs, kind)))
    assert back.voxel_size == 0.5 and back.method == "wbp" and back.errors == {"r_factor": [0.3]}


def test_atoms_round_trip_and_world_position_in_angstrom():
    atoms = AtomModel([[1.0, 2.0, 3.0], [-4.0, 0.5, 0.0]], ["Fe", "Pt"], {"intensity": [1.0, 6.0]})
    data, kwargs, kind = atoms_layer(atoms, (20, 20, 20), 0.4)
    world = data * np.array(kwargs["scale"]) + np.array(kwargs["translate"])
    assert np.allclose(world, atoms.positions[:, ::-1])  # napari (z, y, x) in Å
    assert kwargs["face_color"].shape == (2, 4)
    back = atoms_from_layer(as_layer((data, kwargs, kind)))
    assert np.allclose(back.positions, atoms.positions) and list(back.species) == ["Fe", "Pt"]
    assert np.array_equal(back.features["intensity"], [1.0, 6.0])


def test_every_element_has_a_colour_of_its_own_and_non_atoms_are_grey():
    """Elements outside the colour table (Si, Ta) get distinct colours, never the non-atoms' grey."""
    atoms = AtomModel(np.zeros((5, 3)), ["Ta", "Si", "Pt", "", ""], {"non_atom": [False, False, False, True, False]})
    colours = [tuple(c) for c in atoms_layer(atoms, (20, 20, 20), 0.4)[1]["face_color"]]
    ta, si, pt, non_atom, unclassified = colours
    assert non_atom == NON_ATOM_COLOUR
    assert len({ta, si, pt, non_atom, unclassified}) == 5
    again = atoms_layer(AtomModel(np.zeros((2, 3)), ["Si", "Ta"]), (20, 20, 20), 0.4)[1]["face_color"]
    assert [tuple(c) for c in again] == [si, ta]  # the same colours, whatever the order of the atoms


def test_wrong_layer_kind_is_reported():
    layer = SimpleNamespace(data=np.zeros((3, 8, 8)), name="plain", metadata={}, scale=(1, 1, 1))
    with pytest.raises(InputError, match="not a tilt series"):
        tilt_series_from_layer(layer)
    with pytest.raises(InputError, match="not an atom model"):
        atoms_from_layer(layer)


def test_sample_data_is_a_ready_tilt_series():
    (series_tuple,) = sample_fept_layers()
    series = tilt_series_from_layer(as_layer(series_tuple))
    assert series.projections.shape == (51, 128, 128) and series.pixel_size == 0.4
    assert len(np.unique(series.angles)) == 51 and series.angles.min() == -70.0


def test_hot_pixels_or_a_blank_projection_do_not_set_a_tilt_series_contrast():
    rng = np.random.default_rng(0)
    projections = rng.poisson(1000 + 200 * rng.random((9, 32, 32))).astype(np.float32)
    projections[3, 5, :4] = 60000  # hot pixels
    low, high = tilt_series_layer(TiltSeries(projections, np.linspace(-60, 60, 9)))[1]["contrast_limits"]
    assert 900 < low < high < 1400
    projections[5] = 0  # and a blank projection (a beam blank): it does not wash the others out
    low, high = tilt_series_layer(TiltSeries(projections, np.linspace(-60, 60, 9)))[1]["contrast_limits"]
    assert 900 < low < high < 1400
