import numpy as np
import pytest
from scipy import ndimage

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.classify import classify_atoms, species_warnings
from napari_aet.geometry import render_atoms, voxel_to_specimen
from napari_aet.model import AtomModel, InputError, Reconstruction
from napari_aet.progress import Cancelled
from napari_aet.sampling import atom_window, integrated_intensities, local_profiles
from napari_aet.simulate import adf_amplitudes, fcc_particle
from napari_aet.trace import trace_atoms

VOXEL = 0.4
SHAPE = (64, 64, 64)


@pytest.fixture(scope="module")
def truth():
    return fcc_particle(radius=10.0, seed=2)


def _volume(truth, noise=0.0, drift=0.0, seed=1):
    volume = render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), 0.6, SHAPE, VOXEL)
    volume = ndimage.gaussian_filter(volume, (1.2, 0.3, 0.3))
    if drift:  # intensity falling linearly along x by `drift` across the particle
        x = (np.arange(SHAPE[2]) - SHAPE[2] // 2) * VOXEL / 20.0
        volume = volume * (1 - drift * x)[None, None, :].astype(np.float32)
    rng = np.random.default_rng(seed)
    return volume + rng.normal(0, noise * volume.max(), SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def noisy(truth):
    reconstruction = Reconstruction(_volume(truth, noise=0.02), VOXEL)
    return reconstruction, trace_atoms(reconstruction)


def test_integrated_intensity_of_isolated_atoms():
    positions = np.array([[0.0, 0, 0], [5.0, 2, -3]])
    volume = render_atoms(positions, [3.0, 1.0], 0.5, (40, 40, 40), 0.5)
    found = integrated_intensities(volume, AtomModel(positions), 0.5, box=9)
    assert np.allclose(found, [3.0, 1.0], rtol=0.01)


def test_profiles_weighted_by_the_atoms_own_width(noisy):
    reconstruction, traced = noisy
    plain = local_profiles(reconstruction.volume, traced, VOXEL, box=5)
    weighted = local_profiles(reconstruction.volume, traced, VOXEL, box=5, window=0.5)
    r = np.arange(5) - 2
    r2 = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2).ravel() * VOXEL ** 2
    assert np.allclose(weighted, plain * np.exp(-r2 / (2 * 0.5 ** 2)), rtol=1e-5, atol=1e-6)
    window = atom_window(reconstruction.volume, traced, VOXEL)
    atoms = classify_atoms(reconstruction, traced, "Fe,Pt")
    expected = integrated_intensities(reconstruction.volume, traced, VOXEL, window=window)
    assert np.allclose(atoms.features["intensity"], expected, rtol=1e-5)


@pytest.mark.parametrize("blur", [0.35, 0.5])
def test_the_window_is_the_width_of_an_atom_in_a_noisy_volume(truth, blur):
    """The width of the atoms' mean profile, also where noise peaks outnumber the atoms; trilinear
    sampling at random sub-voxel positions adds a variance of about voxel²/6. (Blurred much more,
    neighbours 2.7 Å away lift the profile's edge and the width comes out short.)"""
    volume = render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), blur, SHAPE, VOXEL)
    volume += np.random.default_rng(3).normal(0, 0.1 * volume.max(), SHAPE).astype(np.float32)
    peaks = np.argwhere(ndimage.maximum_filter(volume, size=3) == volume)
    noise = AtomModel(voxel_to_specimen(peaks, SHAPE, VOXEL))
    noise = noise.subset(np.random.default_rng(4).permutation(len(noise))[:2 * len(truth)])
    atoms = AtomModel(np.concatenate([truth.positions, noise.positions]))
    assert atom_window(volume, atoms, VOXEL) == pytest.approx(np.hypot(blur, VOXEL / np.sqrt(6)), rel=0.06)
    assert atom_window(volume, atoms.subset(np.arange(2)), VOXEL) is None  # too few atoms
    assert atom_window(np.zeros_like(volume), atoms, VOXEL) is None  # nothing peaks: unweighted


def test_two_species_and_non_atoms(truth, noisy):
    reconstruction, traced = noisy
    atoms = classify_atoms(reconstruction, traced, ("Fe", "Pt"))
    result = compare_atoms(atoms, truth)
    assert atoms.features["non_atom"].sum() >= 5  # the noise peaks were found ...
    assert result["precision"] >= 0.99  # ... and flagged
    assert result["recall"] >= 0.97
    assert result["species_accuracy"] >= 0.99
    assert set(atoms.species[~atoms.features["non_atom"]]) == {"Fe", "Pt"}
    assert np.all(atoms.species[atoms.features["non_atom"]] == "")
    assert np.all((atoms.features["confidence"] >= 0) & (atoms.features["confidence"] <= 1))
    assert np.array_equal(atoms.features["ambiguous"], atoms.features["confidence"] < 0.8)


def test_ideal_volume_has_no_non_atoms(truth):
    reconstruction = Reconstruction(_volume(truth), VOXEL)
    atoms = classify_atoms(reconstruction, trace_atoms(reconstruction), "Fe,Pt")
    assert not atoms.features["non_atom"].any()
    assert compare_atoms(atoms, truth)["species_accuracy"] == 1.0


def test_one_element_labels_every_real_atom(truth, noisy):
    reconstruction, traced = noisy
    atoms = classify_atoms(reconstruction, traced, ["Pt"])
    real = ~atoms.features["non_atom"]
    assert set(atoms.species[real]) == {"Pt"}
    assert compare_atoms(atoms, truth)["precision"] >= 0.99


def test_local_classes_cancel_intensity_drift(truth):
    reconstruction = Reconstruction(_volume(truth, noise=0.01, drift=1.2), VOXEL)
    traced = trace_atoms(reconstruction)
    local = compare_atoms(classify_atoms(reconstruction, traced, "Fe,Pt"), truth)
    global_only = compare_atoms(classify_atoms(reconstruction, traced, "Fe,Pt", local_radius=0), truth)
    assert local["species_accuracy"] >= 0.99
    assert global_only["species_accuracy"] < local["species_accuracy"]


def test_locked_atoms_keep_their_species(truth, noisy):
    reconstruction, traced = noisy
    first = classify_atoms(reconstruction, traced, "Fe,Pt")
    locked = np.zeros(len(first), bool)
    locked[:10] = True
    species = first.species.copy()
    species[:10] = np.where(first.features["class_index"][:10] == 1, "Pt", "Fe")  # deliberately wrong
    edited = AtomModel(first.positions, species, {**first.features, "locked": locked})
    again = classify_atoms(reconstruction, edited, "Fe,Pt")
    assert np.array_equal(again.species[:10], species[:10])
    assert np.all(again.features["confidence"][:10] == 1.0)
    assert np.mean(again.species[10:] == first.species[10:]) >= 0.99


def test_progress_and_cancel(noisy):
    reconstruction, traced = noisy
    seen = []
    classify_atoms(reconstruction, traced, "Fe,Pt", progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0

    def cancel(fraction, message):
        if fraction > 0.2:
            raise Cancelled

    with pytest.raises(Cancelled):
        classify_atoms(reconstruction, traced, "Fe,Pt", progress=cancel)


def test_bad_input(truth, noisy):
    reconstruction, traced = noisy
    pure = AtomModel(truth.positions, np.full(len(truth), "Pt", dtype=object))
    volume = render_atoms(pure.positions, 1.0, 0.6, SHAPE, VOXEL)
    pure_reconstruction = Reconstruction(volume, VOXEL)
    with pytest.raises(InputError, match="do not show that many distinct classes"):
        classify_atoms(pure_reconstruction, trace_atoms(pure_reconstruction), "Fe,Pt")
    with pytest.raises(InputError, match="no atoms"):
        classify_atoms(reconstruction, AtomModel(np.zeros((0, 3))), "Fe,Pt")
    with pytest.raises(InputError, match="unknown element"):
        classify_atoms(reconstruction, traced, "Fe,Xx")
    locked = traced.with_features(locked=np.ones(len(traced), bool))
    with pytest.raises(InputError, match="not among the elements"):
        classify_atoms(reconstruction, AtomModel(locked.positions, np.full(len(traced), "Au", dtype=object),
                                                 locked.features), "Fe,Pt")
    with pytest.raises(InputError, match="box"):
        classify_atoms(reconstruction, traced, "Fe,Pt", box=0)


def test_one_element_in_noise_as_bright_as_its_atoms(truth):
    """Pt only, in noise correlated over an atom's width (as in a low-dose tomogram) and clipped
    at zero: the intensity mixture alone finds no non-atom class and keeps every noise peak;
    the noise peaks measured away from the particle tell them apart."""
    platinum = AtomModel(truth.positions, np.full(len(truth), "Pt", dtype=object))
    volume = _volume(platinum)
    noise = ndimage.gaussian_filter(np.random.default_rng(1).normal(size=SHAPE), 1.5)
    reconstruction = Reconstruction(np.maximum(volume + 0.3 * volume.max() * noise / noise.std(), 0), VOXEL)
    traced = trace_atoms(reconstruction)
    mixture = compare_atoms(classify_atoms(reconstruction, traced, "Pt", noise_quantile=0), platinum)
    measured = compare_atoms(classify_atoms(reconstruction, traced, "Pt"), platinum)
    assert mixture["precision"] < 0.8  # the failure: noise peaks taken for atoms
    assert measured["precision"] >= 0.95 and measured["recall"] >= 0.45


def test_an_atom_placed_by_hand_is_never_a_non_atom(truth, noisy):
    reconstruction, traced = noisy
    first = classify_atoms(reconstruction, traced, "Fe,Pt")
    noise = np.flatnonzero(first.features["non_atom"])[:3]
    placed = np.zeros(len(traced), bool)
    placed[noise] = True
    again = classify_atoms(reconstruction, traced.with_features(placed=placed), "Fe,Pt")
    assert not again.features["non_atom"][noise].any() and set(again.species[noise]) <= {"Fe", "Pt"}
    others = ~placed
    assert np.mean(again.species[others] == first.species[others]) > 0.98


def test_species_warnings_catch_an_element_list_that_does_not_match(truth, noisy):
    reconstruction, traced = noisy
    assert species_warnings(classify_atoms(reconstruction, traced, "Fe,Pt"), "Fe,Pt") == []
    wrong = species_warnings(classify_atoms(reconstruction, traced, "Fe,Pt,Au"), "Fe,Pt,Au")
    assert any("Pt and Au differ by only 2%" in w for w in wrong)
    # Au,Pt on FePt: alike in ADF, yet the atoms classified Pt are far brighter than those classified Au
    alike = species_warnings(classify_atoms(reconstruction, traced, "Pt,Au"), "Pt,Au")
    assert any("Pt and Au differ by only 2%" in w for w in alike)
    assert any(w.startswith("the atoms classified Au are") and "predicts about 1.0x" in w for w in alike)
    three = species_warnings(classify_atoms(reconstruction, traced, "C,Fe,Pt"), "C,Fe,Pt")
    assert any(w.startswith("the atoms classified Fe are") for w in three)  # C is far lighter than what it got


def test_noise_that_hides_the_atoms_leaves_the_decision_to_the_mixture(monkeypatch, truth):
    """Pt in correlated noise at half its peak height: the measured noise class would leave
    three quarters of the peaks non-atoms (67 of 272 kept), so it is not used and the result is
    the mixture's and the profiles'."""
    import napari_aet.classify as classify

    platinum = AtomModel(truth.positions, np.full(len(truth), "Pt", dtype=object))
    volume = _volume(platinum)
    noise = ndimage.gaussian_filter(np.random.default_rng(1).normal(size=SHAPE), 1.5)
    reconstruction = Reconstruction(np.maximum(volume + 0.5 * volume.max() * noise / noise.std(), 0), VOXEL)
    traced = trace_atoms(reconstruction)
    mixture = classify_atoms(reconstruction, traced, "Pt", noise_quantile=0)
    assert list(classify_atoms(reconstruction, traced, "Pt").species) == list(mixture.species)
    monkeypatch.setattr(classify, "_MAX_NOISE_SHARE", 1.0)  # the failure the rule prevents
    assert np.count_nonzero(classify_atoms(reconstruction, traced, "Pt").species == "Pt") < 0.3 * len(traced)
