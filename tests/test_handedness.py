"""No mirror images: atoms reconstructed and traced land where the truth puts them."""

import numpy as np
import pytest

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.model import AtomModel
from napari_aet.reconstruct import reconstruct
from napari_aet.simulate import simulate_tilt_series
from napari_aet.trace import trace_atoms

# A chiral set of atoms (x, y, z in Å): no rotation or translation maps it onto its mirror image.
CHIRAL = np.array([[0.0, 0.0, 0.0], [3.5, 0.0, 0.0], [0.0, 4.5, 0.0], [0.0, 0.0, 5.5],
                   [-3.0, -2.5, 2.0], [2.0, -3.0, -4.0]])


@pytest.fixture(scope="module")
def series():
    atoms = AtomModel(CHIRAL + [1.3, -0.7, 0.9], np.full(len(CHIRAL), "Pt", dtype=object))
    sim = simulate_tilt_series(atoms, angles=np.linspace(-70, 70, 41), shape=(48, 48), pixel_size=0.4,
                               dose=None, max_shift=0.0)
    return atoms, sim.tilt_series


@pytest.mark.parametrize("method, params", [("wbp", {}), ("resire", {"n_iterations": 20}),
                                            ("genfire", {"n_iterations": 20})])
def test_traced_atoms_are_not_mirrored(series, method, params):
    truth, tilt_series = series
    traced = trace_atoms(reconstruct(tilt_series, method, **params))
    same = compare_atoms(traced, truth, remove_translation=False, max_distance=0.5)
    assert same["recall"] == 1.0 and same["rms_error_pm"] < 20
    for axis in range(3):  # every mirror image of the truth is far away
        mirrored = truth.positions.copy()
        mirrored[:, axis] *= -1
        mirror = compare_atoms(traced, AtomModel(mirrored, truth.species), max_distance=0.5)
        assert mirror["recall"] <= 0.5
