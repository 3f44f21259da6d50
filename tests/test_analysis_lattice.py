"""Lattice fit without an initial guess: constant, orientation, grains, sites, misfit."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_aet.analysis.lattice import cubic_rotations, fit_lattice, round_to_sites
from napari_aet.model import AtomModel, InputError
from napari_aet.simulate_alloy import alloy_particle


def _angle_to_lattice(fitted, true_rotation):
    """Smallest angle (degrees) between the fitted rotation and any cubic equivalent of the truth."""
    relative = np.einsum("ji,njk->nik", fitted, true_rotation @ cubic_rotations())
    return np.degrees(np.arccos(np.clip((np.trace(relative, axis1=1, axis2=2).max() - 1) / 2, -1, 1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_fcc_constant_orientation_and_sites(seed):
    rotation = Rotation.random(random_state=seed).as_matrix()
    atoms = alloy_particle(radius=14.0, lattice=3.9, rotation=rotation, shift=(1.3, -0.7, 2.1), jitter=0.03,
                           seed=seed)
    fitted, lattice = fit_lattice(atoms)
    assert lattice.constant == pytest.approx(3.9, abs=0.005)
    assert len(lattice.rotations) == 1 and _angle_to_lattice(lattice.rotation, rotation) < 0.2
    assert fitted.features["displacement"].max() < 0.25  # every atom on its own site
    sites = np.stack([fitted.features[f"site_{c}"] for c in "ijk"], axis=1)
    assert len(np.unique(sites, axis=0)) == len(atoms) and np.all(sites.sum(axis=1) % 2 == 0)
    assert np.trace(lattice.rotation) == pytest.approx(np.trace(lattice.rotation @ cubic_rotations(), axis1=1, axis2=2).max())


def test_bcc_lattice_and_given_constant():
    n = np.arange(-4, 5)
    grid = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3) * 2
    sites = np.vstack([grid, grid + 1])
    rotation = Rotation.from_euler("zyz", [20, 35, -50], degrees=True).as_matrix()
    atoms = AtomModel(sites * 1.43 @ rotation.T, np.full(len(sites), "Fe", dtype=object))
    fitted, lattice = fit_lattice(atoms, kind="bcc", lattice_constant=2.86)
    assert lattice.constant == 2.86 and _angle_to_lattice(lattice.rotation, rotation) < 0.1
    assert fitted.features["displacement"].max() < 1e-6


def test_two_grains_are_labelled():
    first = alloy_particle(radius=14.0, seed=0)
    second = alloy_particle(radius=14.0, seed=1, rotation=Rotation.from_euler("z", 30, degrees=True).as_matrix())
    left = first.subset(first.positions[:, 0] < -1)
    right = second.subset(second.positions[:, 0] > 1)
    atoms = AtomModel(np.vstack([left.positions, right.positions]), np.concatenate([left.species, right.species]))
    fitted, lattice = fit_lattice(atoms)
    grain = fitted.features["grain"]
    assert len(lattice.rotations) == 2
    truth = np.r_[np.zeros(len(left), int), np.ones(len(right), int)]
    agreement = max(np.mean(grain == truth), np.mean(grain == 1 - truth))
    assert agreement > 0.95


def test_round_to_sites_keeps_fcc_parity():
    rng = np.random.default_rng(0)
    sites = round_to_sites(rng.uniform(-10, 10, (1000, 3)), "fcc")
    assert np.all(sites.sum(axis=1) % 2 == 0)


def test_random_points_do_not_fit():
    rng = np.random.default_rng(0)
    atoms = AtomModel(rng.uniform(-15, 15, (2000, 3)), np.full(2000, "Pt", dtype=object))
    with pytest.raises(InputError, match="an fcc lattice does not fit.*bonds.*lattice \"none\" for an amorphous"):
        fit_lattice(atoms)
    with pytest.raises(InputError, match="^a bcc lattice does not fit.*of a bcc bond direction"):
        fit_lattice(atoms, kind="bcc")
    with pytest.raises(InputError, match="lattice must be one of"):
        fit_lattice(atoms, kind="hcp")
