import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.geometry import render_atoms, specimen_to_voxel
from napari_aet.model import InputError, Reconstruction
from napari_aet.progress import Cancelled
from napari_aet.simulate import adf_amplitudes, fcc_particle
from napari_aet.elements import enforce_min_distance
from napari_aet.trace import particle_support, trace_atoms

VOXEL = 0.4
SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def truth():
    return fcc_particle(radius=10.0, seed=2)


@pytest.fixture(scope="module")
def ideal(truth):
    return render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), 0.6, SHAPE, VOXEL)


@pytest.fixture(scope="module")
def degraded(ideal):
    """Elongated along z (missing wedge) with Gaussian noise of 2% of the maximum."""
    blurred = ndimage.gaussian_filter(ideal, (1.2, 0.3, 0.3))
    return blurred + np.random.default_rng(1).normal(0, 0.02 * ideal.max(), SHAPE).astype(np.float32)


def test_support_holds_every_atom(truth, ideal):
    support = particle_support(ideal, voxel_size=VOXEL)
    idx = np.round(specimen_to_voxel(truth.positions, SHAPE, VOXEL)).astype(int)
    assert support[tuple(idx.T)].all()
    assert support.mean() < 0.5  # and is not the whole box


def test_ideal_volume_traced_exactly(truth, ideal):
    atoms = trace_atoms(Reconstruction(ideal, VOXEL))
    result = compare_atoms(atoms, truth)
    assert result["recall"] == 1.0 and result["precision"] == 1.0
    assert result["rms_error_pm"] < 6.0
    assert np.median(atoms.features["fit_quality"]) > 0.9
    assert set(atoms.features) >= {"peak", "fit_quality", "width"}


def test_degraded_volume_positions(truth, degraded):
    atoms = trace_atoms(Reconstruction(degraded, VOXEL))
    result = compare_atoms(atoms, truth)  # precision is the classifier's job (non-atoms)
    assert result["recall"] >= 0.97
    assert result["rms_error_pm"] < 40.0
    nearest = cKDTree(atoms.positions).query(atoms.positions, k=2)[0][:, 1]
    assert nearest.min() >= 2.0


def test_min_distance_is_order_independent():
    rng = np.random.default_rng(4)
    points = rng.uniform(0, 12, size=(400, 3))
    score = rng.random(400)
    keep = enforce_min_distance(points, score, 2.0)
    perm = rng.permutation(400)
    assert np.array_equal(enforce_min_distance(points[perm], score[perm], 2.0), keep[perm])
    # equals greedy suppression in score order
    greedy = np.zeros(400, bool)
    for i in np.argsort(-score):
        if not greedy.any() or np.linalg.norm(points[greedy] - points[i], axis=1).min() >= 2.0:
            greedy[i] = True
    assert np.array_equal(keep, greedy)


def test_progress_and_cancel(ideal):
    seen = []
    trace_atoms(Reconstruction(ideal, VOXEL), progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)

    def cancel(fraction, message):
        if fraction > 0.3:
            raise Cancelled

    with pytest.raises(Cancelled):
        trace_atoms(Reconstruction(ideal, VOXEL), progress=cancel)


def test_bad_input(ideal):
    with pytest.raises(InputError, match="empty"):
        trace_atoms(Reconstruction(np.zeros(SHAPE), VOXEL))
    with pytest.raises(InputError, match="no peak above"):
        trace_atoms(Reconstruction(ideal, VOXEL), threshold=10 * ideal.max())
    with pytest.raises(InputError, match="3D"):
        particle_support(np.ones((8, 8)))
    with pytest.raises(InputError, match="Reconstruction"):
        trace_atoms(ideal)
    with pytest.raises(InputError, match="support has shape"):
        trace_atoms(Reconstruction(ideal, VOXEL), support=np.ones((4, 4, 4), bool))


def test_peel_off_finds_an_atom_hidden_by_a_bright_neighbour():
    positions = np.array([[0.0, 0, 0], [2.2, 0, 0]])  # the weak atom is only a shoulder of the bright one
    volume = render_atoms(positions, [8.0, 1.0], 0.9, (40, 40, 40), VOXEL)
    reconstruction = Reconstruction(volume, VOXEL)
    support = np.ones(volume.shape, bool)
    direct = trace_atoms(reconstruction, support=support, threshold=0.01 * volume.max())
    peeled = trace_atoms(reconstruction, support=support, threshold=0.01 * volume.max(), peel_iterations=1)
    assert len(direct) == 1
    assert len(peeled) == 2 and peeled.features["peel_round"].tolist() == [0, 1]
    error = np.linalg.norm(peeled.positions - positions, axis=1)
    assert error.max() < 0.15
