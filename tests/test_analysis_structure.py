"""General structure (pair distribution, coordination, Q4/Q6; amorphous models without a lattice) and strain
from lattice displacements."""

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from napari_aet.analysis.analyze import analyze_atoms
from napari_aet.analysis.lattice import fit_lattice
from napari_aet.analysis.strain import strain_field
from napari_aet.analysis.structure import (bond_order, first_minimum, first_peak, pair_distribution,
                                           partial_pair_distributions)
from napari_aet.model import AtomModel, InputError
from napari_aet.simulate import amorphous_slab
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


def bcc_crystal(a=3.30, n=4):
    """A rotated bcc cube (Ta's lattice constant), one element."""
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij"), -1).reshape(-1, 3) * 2
    sites = np.vstack([grid, grid + 1]) * (a / 2)
    rotation = Rotation.from_euler("zyz", [20, 35, -50], degrees=True).as_matrix()
    return AtomModel(sites @ rotation.T, np.full(len(sites), "Ta", dtype=object))


def test_amorphous_film_structure_without_a_lattice():
    atoms = amorphous_slab(min_distance=2.4, seed=0)
    assert cKDTree(atoms.positions).query(atoms.positions, k=2)[0][:, 1].min() >= 2.4
    analysis = analyze_atoms(atoms, lattice="none")
    assert analysis.lattice is None and analysis.strain is None and analysis.order_error == ""
    structure = analysis.structure
    assert 2.4 <= structure["first_peak_A"] <= 2.7  # contact of the 2.4 Å minimum distance, smoothed by 0.1 Å
    # random addition has only a shallow first minimum: the cutoff is at most 1.6 × the first peak
    assert 3.0 < structure["neighbour_cutoff_A"] <= 1.6 * 2.65 and 6 < structure["coordination"]["mean"] < 12
    assert "partial" not in structure["pdf"]
    features = analysis.atoms.features
    assert "phase" not in features and "displacement" not in features
    assert 0.2 < np.median(features["Q6"]) < 0.6  # far from fcc (1)
    summary = analysis.summary()
    assert summary["lattice"] == "none" and summary["ran"] == ["pair distribution", "coordination", "Q4/Q6"]
    assert set(summary["skipped"]) == {"lattice fit", "chemical order", "nuclei", "strain"}
    assert "needs a lattice" in summary["skipped"]["strain"]
    assert "no lattice (amorphous)" in analysis.describe() and "skipped: lattice fit" in analysis.describe()


def test_first_minimum_of_a_glass_like_pdf():
    r = np.arange(0.025, 10, 0.05)
    g = 2.8 * np.exp(-((r - 2.9) / 0.25) ** 2) + 1.4 * np.exp(-((r - 4.9) / 0.5) ** 2) + 0.4 * (r > 2.5)
    assert first_minimum(r, g) == pytest.approx(3.7, abs=0.15)
    assert first_peak(r, g) == pytest.approx(2.9, abs=0.05)


def test_first_peak_is_the_shell_not_a_spike_at_the_minimum_distance():
    """Refined pairs held at exactly the minimum distance fill one bin (the Ta film's area 53: g =
    2.8 at 2.43 Å beside a shell of height ~2 at 3.0 Å); the first peak is the shell's."""
    r = np.arange(0.025, 10, 0.05)
    g = 2.0 * np.exp(-((r - 3.05) / 0.3) ** 2) + 0.8 * np.exp(-((r - 5.2) / 0.6) ** 2)
    g[np.argmin(np.abs(r - 2.425))] += 2.8
    assert r[np.argmax(g)] == pytest.approx(2.425)
    assert first_peak(r, g) == pytest.approx(3.05, abs=0.05)
    assert 3.5 < first_minimum(r, g) < 4.8


def test_partial_pair_distributions_of_a_random_mixture():
    atoms = amorphous_slab(size=(36.0, 36.0), min_distance=2.4, elements=("Fe", "Pt"), seed=1)
    r, g = pair_distribution(atoms.positions)
    partial = partial_pair_distributions(atoms.positions, atoms.species)
    assert list(partial) == ["Fe-Fe", "Fe-Pt", "Pt-Pt"]
    between = (r > 3) & (r < 8)
    for pair, values in partial.items():  # a random mixture: every partial is the total
        assert np.mean(values[between]) == pytest.approx(np.mean(g[between]), rel=0.1), pair
        assert values[r < 2.35].max() == 0, pair
    assert list(analyze_atoms(atoms, lattice="none").structure["pdf"]["partial"]) == list(partial)


def test_auto_takes_the_lattice_that_fits_else_none():
    fcc = analyze_atoms(alloy_particle(radius=12.0, seed=0))
    assert fcc.lattice.kind == "fcc" and fcc.lattice_choice.startswith("lattice auto: fcc")
    bcc = analyze_atoms(bcc_crystal())
    assert bcc.lattice.kind == "bcc" and bcc.lattice.constant == pytest.approx(3.30, abs=0.01)
    assert bcc.skipped["chemical order"] and bcc.order_error  # one element, bcc: an error, the rest ran
    amorphous = analyze_atoms(amorphous_slab(seed=2))
    assert amorphous.lattice is None and "phase" not in amorphous.atoms.features
    assert "no lattice fits" in amorphous.lattice_choice and "analysed as amorphous" in amorphous.describe()
    with pytest.raises(InputError, match="lattice must be one of auto, fcc, bcc, none"):
        analyze_atoms(amorphous.atoms, lattice="amorphous")
