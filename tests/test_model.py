"""Validation of the data types: every bad input gets a message that says what was expected."""

import numpy as np
import pytest

from napari_aet.model import AtomModel, InputError, Reconstruction, TiltSeries, check_elements


def series(**changes):
    args = dict(projections=np.arange(5 * 16 * 16.0).reshape(5, 16, 16), angles=np.linspace(-60, 60, 5), pixel_size=0.4)
    args.update(changes)
    return TiltSeries(**args)


def test_valid_tilt_series_is_float32_with_zero_shifts():
    s = series()
    assert s.projections.dtype == np.float32 and s.shifts.shape == (5, 2) and not s.shifts.any()
    assert s.is_single_axis and s.n_angles == 5


@pytest.mark.parametrize("changes, message", [
    (dict(projections=np.ones((16, 16))), "single 2D image"),
    (dict(angles=np.linspace(-60, 60, 4)), "5 projections but 4 angles"),
    (dict(projections=np.full((5, 16, 16), np.nan)), "NaN or Inf"),
    (dict(pixel_size=0.0), "pixel size must be a positive"),
    (dict(pixel_size=-1.0), "pixel size must be a positive"),
    (dict(angles=[-100, -50, 0, 50, 260]), "duplicates"),  # -100° and 260° are one view
    (dict(angles=[-50, 0, 0, 20, 50]), "duplicates"),
    (dict(projections=np.zeros((5, 16, 16))), "the images hold no contrast"),
    (dict(projections=np.full((5, 16, 16), 7.0)), "same value \\(7\\)"),
    (dict(angles=np.zeros((5, 2))), r"shape \(n,\) or \(n, 3\)"),
])
def test_bad_tilt_series_input(changes, message):
    with pytest.raises(InputError, match=message):
        series(**changes)


def test_euler_angles_accepted():
    s = series(angles=np.column_stack([np.zeros(5), np.linspace(-60, 60, 5), np.zeros(5)]))
    assert not s.is_single_axis


def test_reconstruction_validation():
    r = Reconstruction(np.zeros((4, 4, 4), np.float64), 0.4, errors={"r_factor": np.array([0.5, 0.4])})
    assert r.volume.dtype == np.float32 and r.errors["r_factor"] == [0.5, 0.4]
    with pytest.raises(InputError, match="3D array"):
        Reconstruction(np.zeros((4, 4)), 0.4)
    with pytest.raises(InputError, match="voxel size"):
        Reconstruction(np.zeros((4, 4, 4)), -1)


def test_atom_model_defaults_subset_and_frame_round_trip():
    atoms = AtomModel(np.arange(9.0).reshape(3, 3), ["Fe", "Pt", ""], {"intensity": [1.0, 2.0, 3.0]})
    assert list(atoms.features["edited"]) == [False] * 3
    sub = atoms.subset(atoms.species == "Pt")
    assert len(sub) == 1 and sub.features["intensity"][0] == 2.0
    frame = atoms.to_frame()
    assert list(frame.columns[:4]) == ["x", "y", "z", "element"]
    back = AtomModel.from_frame(frame)
    assert np.array_equal(back.positions, atoms.positions) and list(back.species) == ["Fe", "Pt", ""]


def test_atom_model_bad_input():
    with pytest.raises(InputError, match=r"shape \(N, 3\)"):
        AtomModel(np.zeros((3, 2)))
    with pytest.raises(InputError, match="unknown element"):
        AtomModel(np.zeros((1, 3)), ["Xx"])
    with pytest.raises(InputError, match="feature 'q'"):
        AtomModel(np.zeros((2, 3)), features={"q": [1.0]})
    assert len(AtomModel(np.zeros((0, 3)))) == 0


def test_check_elements():
    assert check_elements("Fe, Pt") == ("Fe", "Pt")
    assert check_elements("fe,PT") == check_elements(["fE", "pt"]) == ("Fe", "Pt")  # any case
    assert check_elements("Pt,Fe") == check_elements("Pt Fe") == ("Fe", "Pt")  # lightest first, any separator
    assert check_elements("au; Fe ,pt") == ("Fe", "Pt", "Au")
    for bad, message in [("", "no element"), ("Fe,Qq", "unknown element"), ("Fe,Fe", "repeats"),
                         ("fe,Fe", "repeats")]:
        with pytest.raises(InputError, match=message):
            check_elements(bad)


def test_tilt_series_subset_keeps_each_projection_with_its_angle_and_shift():
    projections = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8) + 1
    series = TiltSeries(projections, [-30.0, -10.0, 10.0, 30.0], 0.4, tilt_axis=5.0,
                        shifts=np.arange(8.0).reshape(4, 2))
    part = series.subset(np.array([3, 1]))
    np.testing.assert_array_equal(part.projections, projections[[3, 1]])
    np.testing.assert_array_equal(part.angles, [30.0, -10.0])
    np.testing.assert_array_equal(part.shifts, [[6.0, 7.0], [2.0, 3.0]])
    assert (part.pixel_size, part.tilt_axis) == (0.4, 5.0)
    assert series.subset(slice(0, None, 2)).n_angles == 2
