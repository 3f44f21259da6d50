"""What a reviewer sees (napari_aet.review): orthogonal local slices and class averages."""

from __future__ import annotations

import numpy as np
import pytest

from napari_aet.atom_labels import NON_ATOM
from napari_aet.edit import relabel
from napari_aet.geometry import render_atoms
from napari_aet.model import InputError, Reconstruction
from napari_aet.review import class_average_slices, orthogonal_slices
from napari_aet.simulate import adf_amplitudes, fcc_particle


@pytest.fixture(scope="module")
def particle_volume():
    atoms = fcc_particle(radius=6.0, seed=2)
    volume = render_atoms(atoms.positions, adf_amplitudes(atoms.species, 1.0), 0.5, (40, 40, 40), 0.4)
    return atoms, Reconstruction(volume, 0.4)


def test_slices_cross_at_the_atom(particle_volume):
    atoms, recon = particle_volume
    slices = orthogonal_slices(recon, atoms.positions[:4], half_width=2.0)
    assert slices.shape == (4, 3, 11, 11) and slices.dtype == np.float32  # 2 Å / 0.4 Å = 5 voxels each side
    centre = slices[:, :, 5, 5]
    np.testing.assert_allclose(centre, centre[:, :1].repeat(3, axis=1), rtol=1e-5)  # the planes share it
    assert np.all(slices[:, :, 3:8, 3:8].max(axis=(2, 3)) <= centre * 1.05)  # a peak within 1 Å of it
    x_line = slices[0, 0, 5, :]  # the xy plane's middle row runs along x
    np.testing.assert_allclose(x_line, slices[0, 1, 5, :], rtol=1e-5)  # as does the xz plane's
    with pytest.raises(InputError, match="half_width"):
        orthogonal_slices(recon, atoms.positions[:1], half_width=0)


def test_class_averages_follow_the_labels(particle_volume):
    atoms, recon = particle_volume
    labelled = relabel(atoms, [0], NON_ATOM)
    averages = class_average_slices(recon, labelled)
    assert list(averages) == ["Fe", "Pt", NON_ATOM]
    assert averages["Pt"][0, 5, 5] > 1.5 * averages["Fe"][0, 5, 5]  # Pt scatters more
    np.testing.assert_allclose(averages[NON_ATOM], orthogonal_slices(recon, atoms.positions[:1])[0])
