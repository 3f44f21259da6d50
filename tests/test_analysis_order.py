"""Chemical order: order parameters on perfect and random crystals, anti-sites, planted nuclei."""

import numpy as np
import pytest

from napari_aet.analysis.lattice import first_shell, fit_lattice
from napari_aet.analysis.nuclei import find_nuclei, nucleus_overlap, order_volume
from napari_aet.analysis.order import classify_order, order_parameters
from napari_aet.model import AtomModel, InputError
from napari_aet.simulate_alloy import PlantedNucleus, alloy_particle, annealing_series


def _whole(phase, variant, **kwargs):
    """A particle that is one perfect ordered crystal, its interior (12 neighbours) and its fit."""
    atoms = alloy_particle(radius=14.0, nuclei=[PlantedNucleus((0, 0, 0), 100.0, phase, variant)], **kwargs)
    fitted, lattice = fit_lattice(atoms)
    _, _, present = first_shell(atoms.positions, lattice.r1, "fcc")
    return fitted, lattice, present.sum(axis=1) == 12


@pytest.mark.parametrize("variant", ["x", "y", "z"])
def test_perfect_l10_gives_one_with_its_variant(variant):
    fitted, lattice, interior = _whole("L10", variant)
    result = classify_order(fitted, lattice).features
    assert np.all(result["order_L10"][interior] == 1) and np.all(result["order_L12"][interior] == 0)
    assert np.all(result["phase"] == "L10") and np.all(result["variant"] == variant)
    assert not np.any(result["antisite"])


@pytest.mark.parametrize("kind", ["A3B", "AB3"])
def test_perfect_l12_gives_one(kind):
    fitted, lattice, interior = _whole("L12", f"{kind}:1")
    result = classify_order(fitted, lattice).features
    assert np.all(result["order_L12"][interior] == 1) and np.all(result["order_L10"][interior] == 0)
    assert np.all(result["phase"] == "L12")
    assert len(set(result["variant"])) == 1 and result["variant"][0].startswith(kind)


def test_random_alloy_is_near_zero_and_a1():
    atoms = alloy_particle(radius=20.0, seed=4)
    fitted, lattice = fit_lattice(atoms)
    classified = classify_order(fitted, lattice)
    result = classified.features
    assert np.mean(result["order_L10"]) < 0.2 and np.mean(result["order_L12"]) < 0.2
    assert np.mean(result["phase"] == "A1") > 0.99
    assert len(find_nuclei(classified, lattice)[1]) == 0


def test_antisites_are_flagged():
    fitted, lattice, interior = _whole("L10", "z")
    swap = np.flatnonzero(interior)[::40]
    species = fitted.species.copy()
    species[swap] = np.where(species[swap] == "Fe", "Pt", "Fe")
    result = classify_order(AtomModel(fitted.positions, species, fitted.features), lattice).features
    assert np.array_equal(np.flatnonzero(result["antisite"]), swap)
    assert np.all(result["phase"][interior] == "L10")


def test_planted_nuclei_are_found():
    atoms = annealing_series(n_times=1, seed=0)[0]
    fitted, lattice = fit_lattice(atoms)
    classified, nuclei = find_nuclei(classify_order(fitted, lattice), lattice)
    truth = atoms.features["true_phase"]
    idx, _, present = first_shell(atoms.positions, lattice.r1, "fcc")
    boundary = ((np.append(truth, "")[idx] != truth[:, None]) & present).any(axis=1)
    accuracy = np.mean(classified.features["phase"][~boundary] == truth[~boundary])
    iou, spurious = nucleus_overlap(classified.features["nucleus"], atoms.features["true_nucleus"])
    assert accuracy >= 0.98 and np.all(iou >= 0.6) and spurious <= 1
    assert len(nuclei) == 4 and set(nuclei.phase) == {"L10", "L12"}
    assert np.all(nuclei.n_atoms >= 13) and np.all(nuclei.max_order <= 1)
    volume, voxel = order_volume(classified)
    centre = np.rint(nuclei.centroid[0][::-1] / voxel).astype(int) + volume.shape[0] // 2
    assert volume[tuple(centre)] > 0.7 and volume.max() <= 1 and volume[0, 0, 0] == 0


def test_the_smallest_nucleus_is_found_whole_without_leaks():
    # seed 1, time 1: the 49-atom L1₀ nucleus (radius 5.5 Å) that has just appeared, next to four larger ones
    atoms = annealing_series(seed=1)[1]
    fitted, lattice = fit_lattice(atoms)
    classified, _ = find_nuclei(classify_order(fitted, lattice), lattice)
    truth = atoms.features["true_nucleus"]
    iou, spurious = nucleus_overlap(classified.features["nucleus"], truth)
    smallest = np.argmin(np.bincount(truth[truth >= 0]))
    assert np.count_nonzero(truth == smallest) < 50 and iou[smallest] >= 0.6
    assert np.all(iou >= 0.6) and spurious == 0


def test_a_stable_nucleus_keeps_its_size_when_nearby_surface_atoms_come_and_go():
    # merge-split seed 4: the L1₂ nucleus (planted 4, 79 atoms) and its surroundings are the same at
    # times 0 and 1, but surface sites near it are missing at time 0 only; cut windows must not let
    # its fringe grow (without the window-size scaling of the thresholds: 81 -> 91 atoms, "grew")
    sizes = []
    for atoms in annealing_series(n_times=2, seed=4, scenario="merge-split"):
        fitted, lattice = fit_lattice(atoms)
        classified, _ = find_nuclei(classify_order(fitted, lattice), lattice)
        found, truth = classified.features["nucleus"], atoms.features["true_nucleus"]
        label = np.bincount(found[(truth == 4) & (found >= 0)]).argmax()
        sizes.append(np.count_nonzero(found == label))
    assert abs(sizes[1] / sizes[0] - 1) <= 0.1


def test_order_parameters_of_the_region_model_are_checked():
    fitted, lattice, _ = _whole("L10", "z")
    with pytest.raises(InputError, match="anti-site fraction must be between 0 and 0.5, got 0.7"):
        classify_order(fitted, lattice, antisite_fraction=0.7)
    with pytest.raises(InputError, match="boundary cost must be at least 0"):
        classify_order(fitted, lattice, boundary_cost=-1)


def test_order_needs_two_elements():
    atoms = alloy_particle(radius=10.0)
    fitted, lattice = fit_lattice(atoms)
    single = AtomModel(fitted.positions, np.full(len(atoms), "Pt", dtype=object), fitted.features)
    with pytest.raises(InputError, match="exactly two elements.*found Pt"):
        order_parameters(single, lattice)
