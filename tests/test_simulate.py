"""The simulator: a realistic particle and tilt series, deterministic for a seed."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_aet.simulate import FEPT_LATTICE, adf_amplitudes, fcc_particle, simulate_tilt_series


def test_particle_is_fcc_binary_alloy_with_ordered_and_disordered_regions():
    atoms = fcc_particle(radius=12.0, seed=4)
    d, _ = cKDTree(atoms.positions).query(atoms.positions, k=13)
    interior = d[:, 12] < 3.0  # atoms with all 12 fcc neighbours
    assert interior.mean() > 0.3
    assert np.median(d[interior, 1:]) == pytest.approx(FEPT_LATTICE / np.sqrt(2), abs=0.05)
    share_pt = np.mean(atoms.species == "Pt")
    assert 0.35 < share_pt < 0.65
    ordered = atoms.features["ordered"]
    assert 0.3 < ordered.mean() < 0.7
    assert np.abs(atoms.positions.mean(axis=0)).max() < 1e-9


def test_ordered_region_is_layered_l10():
    """Ordered atoms share their species with fewer nearest neighbours than disordered ones."""
    atoms = fcc_particle(radius=14.0, seed=1, antisite=0.0, jitter=0.0)
    tree = cKDTree(atoms.positions)
    _, idx = tree.query(atoms.positions, k=13)
    same = atoms.species[idx[:, 1:]] == atoms.species[:, None]
    ordered = atoms.features["ordered"]
    # L1_0: of 12 nearest neighbours, 4 are in the same (001) plane, i.e. same species (1/3);
    # random 50/50 alloy: about half.
    assert same[ordered].mean() < 0.42
    assert same[~ordered].mean() > 0.42


def test_simulation_is_deterministic_and_noise_is_poisson():
    atoms = fcc_particle(radius=8.0, seed=0)
    a = simulate_tilt_series(atoms, shape=(48, 48), dose=300.0, seed=5)
    b = simulate_tilt_series(atoms, shape=(48, 48), dose=300.0, seed=5)
    assert np.array_equal(a.tilt_series.projections, b.tilt_series.projections)
    assert np.allclose(a.tilt_series.projections, np.round(a.tilt_series.projections))
    clean = simulate_tilt_series(atoms, shape=(48, 48), dose=None, seed=5)
    total = clean.tilt_series.projections.sum(axis=(1, 2))
    assert np.allclose(total, adf_amplitudes(atoms.species, 1.0).sum(), rtol=1e-3)
    assert a.true_shifts.shape == (51, 2) and np.abs(a.true_shifts).max() <= 3.0


def test_z_contrast_ratio():
    amp = adf_amplitudes(np.array(["Fe", "Pt"], dtype=object), 300.0)
    assert amp[1] == 300.0 and amp[1] / amp[0] == pytest.approx((78 / 26) ** 1.7)


def test_frames_carry_drift_and_sum_to_the_projection():
    atoms = fcc_particle(radius=8.0, seed=0)
    sim = simulate_tilt_series(atoms, angles=[-30.0, 0.0, 30.0], shape=(48, 48), dose=None,
                               n_frames=4, frame_drift=0.5, seed=2)
    assert sim.frames.shape == (3, 4, 48, 48) and sim.frame_drift.shape == (3, 4, 2)
    assert np.allclose(sim.frames.sum(axis=1), sim.tilt_series.projections, atol=1e-3)
