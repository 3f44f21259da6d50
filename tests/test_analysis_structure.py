"""General structure (pair distribution, coordination, Q4/Q6) and strain from lattice displacements."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_aet.analysis.lattice import fit_lattice
from napari_aet.analysis.strain import strain_field
from napari_aet.analysis.structure import bond_order, pair_distribution
from napari_aet.model import AtomModel, InputError
from napari_aet.simulate_alloy import alloy_particle


def test_pdf_coordination_and_bond_order_of_fcc():
    atoms = alloy_particle(radius=16.0, lattice=3.85, rotation=Rotation.random(random_state=2).as_matrix(), jitter=0)
    r, g = pair_distribution(atoms.positions, r_max=8.0, bin_width=0.05)
    assert r[np.argmax(g)] == pytest.approx(3.85 / np.sqrt(2), abs=0.05)
    result = bond_order(atoms).features
    interior = result["coordination"] == 12
    assert interior.sum() > 0.5 * len(atoms)
    deep = np.linalg.norm(atoms.positions, axis=1) < 6.0  # the atom and its neighbours fully coordinated
    assert np.allclose(result["Q4"][deep], 1, atol=1e-4) and np.allclose(result["Q6"][deep], 1, atol=1e-4)


def test_disorder_lowers_bond_order():
    atoms = alloy_particle(radius=16.0, jitter=0.35, seed=1)
    result = bond_order(atoms).features
    assert np.median(result["Q6"]) < 0.9


def test_homogeneous_strain_is_recovered():
    strain = np.array([[0.010, 0.004, 0.0], [0.004, -0.006, 0.002], [0.0, 0.002, -0.004]])
    rotation = Rotation.from_euler("zyz", [15, 40, 70], degrees=True).as_matrix()
    atoms = alloy_particle(radius=26.0, lattice=3.85, rotation=rotation, jitter=0.0)
    strained = AtomModel(atoms.positions @ (np.eye(3) + strain).T, atoms.species)
    fitted, _ = fit_lattice(strained, lattice_constant=3.85)
    field = strain_field(fitted, voxel_size=2.0, fwhm=10.0)
    centre = field.mask.shape[0] // 2
    core = (slice(centre - 3, centre + 4),) * 3
    for (a, b) in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
        name = "xyz"[a] + "xyz"[b]
        assert np.median(field.strain[name][core]) == pytest.approx(strain[a, b], abs=5e-4), name
    assert field.mask[core].all() and not field.mask[0, 0, 0]


def test_too_few_atoms():
    with pytest.raises(InputError, match="at least 5 atoms"):
        pair_distribution(np.zeros((3, 3)))
