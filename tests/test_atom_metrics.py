import numpy as np
import pytest

from napari_aet.analysis.atom_metrics import compare_atoms, mutual_nearest_pairs
from napari_aet.model import AtomModel
from napari_aet.simulate import fcc_particle


@pytest.fixture(scope="module")
def truth():
    return fcc_particle(radius=10.0, seed=3)


def test_identical_models_match_perfectly(truth):
    result = compare_atoms(truth, truth)
    assert result["n_matched"] == len(truth)
    assert result["recall"] == result["precision"] == result["species_accuracy"] == 1.0
    assert result["rms_error_pm"] == pytest.approx(0.0, abs=1e-9)


def test_translation_is_removed_and_error_measured(truth):
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.05, size=truth.positions.shape)  # 5 pm per axis -> ~8.7 pm 3D rms
    moved = AtomModel(truth.positions + [0.7, -0.4, 0.3] + noise, truth.species)
    result = compare_atoms(moved, truth)
    assert result["recall"] == 1.0
    assert np.allclose(result["translation"], [-0.7, 0.4, -0.3], atol=0.01)
    expected = np.sqrt(np.mean(np.sum((noise - np.median(noise, axis=0)) ** 2, axis=1))) * 100
    assert result["rms_error_pm"] == pytest.approx(expected, rel=0.02)
    kept = compare_atoms(moved, truth, remove_translation=False)
    assert kept["translation"] == (0.0, 0.0, 0.0) and kept["rms_error_pm"] > 70


def test_missing_extra_non_atoms_and_wrong_species(truth):
    n = len(truth)
    extra = np.array([[100.0, 0, 0], [0, 100.0, 0]])
    species = truth.species.copy()
    species[:10] = np.where(species[:10] == "Fe", "Pt", "Fe")
    found = AtomModel(np.vstack([truth.positions[5:], extra]), np.concatenate([species[5:], ["Pt", ""]]),
                      {"non_atom": np.r_[np.zeros(n - 5, bool), False, True]})
    result = compare_atoms(found, truth)
    assert result["n_found"] == n - 5 + 1  # the flagged non-atom is left out
    assert result["n_matched"] == n - 5
    assert result["recall"] == pytest.approx((n - 5) / n)
    assert result["precision"] == pytest.approx((n - 5) / (n - 4))
    assert result["species_accuracy"] == pytest.approx(1 - 5 / (n - 5))


def test_match_is_mutual_and_within_distance():
    a = np.array([[0.0, 0, 0], [0.3, 0, 0], [5.0, 0, 0]])
    b = np.array([[0.1, 0, 0], [6.5, 0, 0]])
    ia, ib = mutual_nearest_pairs(a, b, 1.0)
    assert ia.tolist() == [0] and ib.tolist() == [0]
    assert len(mutual_nearest_pairs(a, np.zeros((0, 3)), 1.0)[0]) == 0
