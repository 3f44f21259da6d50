"""Any single-axis tilt range: 0…177°, beyond ±90° and beyond a half-turn.

A view at theta + 180° is the view at theta mirrored across the tilt axis (image y, through
column nx // 2); the geometry takes any angle, so the same measurements given either way must
give the same alignment, reconstruction and atoms.
"""

import numpy as np
import pytest

from napari_aet.align import align_auto
from napari_aet.projections import apply_alignment
from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.classify import classify_atoms
from napari_aet.io import read_tilt_series, write_tilt_series
from napari_aet.model import InputError, TiltSeries
from napari_aet.reconstruct import reconstruct
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from napari_aet.trace import trace_atoms

HALF_TURN_FROM_ZERO = np.arange(0, 178, 3.0)  # 0…177°, as public AET data sets store them


def mirrored_across_axis(projections):
    """Images mirrored across the image y axis through column ``nx // 2`` (even nx: column 0,
    which has no mirror partner, keeps its value)."""
    out = np.array(projections)
    out[..., 1:] = projections[..., :0:-1]
    return out


def folded_into_90(series):
    """The same measurements as tilts in -90°…+90°: views from +90° on become theta - 180°
    with their images mirrored."""
    back = series.angles >= 90
    projections = series.projections.copy()
    projections[back] = mirrored_across_axis(series.projections[back])
    return series.replace(projections=projections, angles=np.where(back, series.angles - 180, series.angles)), back


@pytest.fixture(scope="module")
def particle():
    return fcc_particle(radius=8.0, seed=1)


def real(atoms):
    return atoms.subset(~atoms.features["non_atom"].astype(bool))


def atoms_of(series, elements=("Fe", "Pt")):
    """The chain with few iterations: align, reconstruct, trace, classify."""
    measured, _ = align_auto(series, iterations=3)
    reconstruction = reconstruct(apply_alignment(measured), "genfire", n_iterations=20)
    atoms = trace_atoms(reconstruction)
    return measured, classify_atoms(reconstruction, atoms, elements)


def test_half_turn_from_zero_gives_the_atoms_of_the_same_views_folded_into_90(particle):
    data = simulate_tilt_series(particle, HALF_TURN_FROM_ZERO, shape=(44, 44), dose=400, max_shift=2, seed=1)
    folded, back = folded_into_90(data.tilt_series)
    assert folded.angles.min() == -90 and folded.angles.max() == 87
    measured, atoms = atoms_of(data.tilt_series)
    measured_folded, atoms_folded = atoms_of(folded)
    # a shift across the axis of a mirrored view is the mirrored shift
    expected = measured.shifts.copy()
    expected[back, 1] *= -1
    np.testing.assert_allclose(measured_folded.shifts, expected, atol=0.1)
    truth = compare_atoms(atoms, particle)
    assert truth["recall"] >= 0.97 and truth["precision"] >= 0.97
    same = compare_atoms(atoms_folded, real(atoms), remove_translation=False)
    assert same["recall"] >= 0.99 and same["precision"] >= 0.99 and same["species_accuracy"] >= 0.99
    assert same["rms_error_pm"] < 0.5 * truth["rms_error_pm"]  # far closer to each other than to the truth


def test_tlt_file_from_0_to_177_is_read(tmp_path, particle):
    series = simulate_tilt_series(particle, HALF_TURN_FROM_ZERO, shape=(32, 32), dose=None, max_shift=0).tilt_series
    tif, tlt = write_tilt_series(tmp_path / "half_turn.tif", series)
    assert tlt.read_text().split()[-1] == "177"
    again = read_tilt_series(tif)
    np.testing.assert_array_equal(again.angles, HALF_TURN_FROM_ZERO)
    np.testing.assert_array_equal(again.projections, series.projections)


@pytest.mark.parametrize("method, tolerance", [("wbp", 0.1), ("resire", 0.05), ("genfire", 0.01)])
def test_more_than_a_half_turn_reconstructs_like_a_half_turn(particle, method, tolerance):
    """-90°…+100°: the views beyond +90° repeat (mirrored) those from -90° to -80°; without noise
    they add no information, and every method must give the half-turn's volume."""
    def volume(angles):
        series = simulate_tilt_series(particle, angles, shape=(40, 40), dose=None, max_shift=0).tilt_series
        return reconstruct(series, method, **({} if method == "wbp" else {"n_iterations": 20})).volume

    beyond, half = volume(np.arange(-90, 101, 3.0)), volume(np.arange(-90, 90, 3.0))
    assert np.abs(beyond - half).sum() / np.abs(half).sum() < tolerance


def test_more_than_a_half_turn_is_aligned(particle):
    angles = np.arange(-90, 101, 4.0)
    data = simulate_tilt_series(particle, angles, shape=(48, 48), dose=400, max_shift=3, seed=2)
    measured, _ = align_auto(data.tilt_series, iterations=3)
    error = measured.shifts - data.true_shifts
    t = np.deg2rad(angles)  # remove the gauge: a rigid 3D translation of the particle
    design = np.stack([np.cos(t), np.sin(t)], axis=1)
    across = error[:, 1] - design @ np.linalg.lstsq(design, error[:, 1], rcond=None)[0]
    assert np.sqrt(np.mean(across ** 2)) < 0.3 and np.std(error[:, 0]) < 0.3
    assert abs(measured.tilt_axis) < 0.3


def test_views_half_a_turn_apart_are_distinct_but_equal_modulo_360_are_refused():
    images = np.random.default_rng(0).random((3, 16, 16))
    TiltSeries(images, [-80.0, 0.0, 100.0])
    for angles in ([0.0, 10.0, 370.0], [-90.0, 0.0, 270.0]):
        with pytest.raises(InputError, match="duplicates"):
            TiltSeries(images, angles)


def test_simulate_command_writes_any_tilt_range(tmp_path, capsys):
    from napari_aet.cli import main

    out = tmp_path / "half_turn"
    assert main(["simulate", "--out", str(out), "--size", "32", "--radius", "6", "--n-angles", "60",
                 "--min-angle", "0", "--max-angle", "177", "--dose", "0", "--max-shift", "0"]) == 0
    np.testing.assert_allclose(read_tilt_series(out / "tilt_series.tif").angles, HALF_TURN_FROM_ZERO)
    assert main(["simulate", "--out", str(tmp_path / "full_turn"), "--min-angle", "-180", "--max-angle", "180"]) == 2
    assert "less than 360 degrees" in capsys.readouterr().err
