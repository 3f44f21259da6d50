import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_aet.analysis.atom_metrics import compare_atoms
from napari_aet.geometry import atom_footprints, project_atoms
from napari_aet.model import AtomModel, InputError, TiltSeries
from napari_aet.progress import Cancelled
from napari_aet.elements import close_pairs, min_distance_table
from napari_aet.refine import (_ADDED, _REMOVED, _held_out_test, _Model, _partial_moves, _residual_correlation,
                               refine_atoms, worst_projections)
from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series

ANGLES = np.linspace(-70, 70, 29)
BLUR = 0.55


@pytest.fixture(scope="module")
def truth():
    return fcc_particle(radius=8.0, seed=3)


@pytest.fixture(scope="module")
def measured(truth):
    """A noisy, misaligned series (shifts and in-plane axis known: as after alignment)."""
    sim = simulate_tilt_series(truth, angles=ANGLES, shape=(64, 64), dose=2000.0, blur=BLUR, max_shift=2.0,
                               tilt_axis=12.0, background=3.0, seed=4)
    return sim.tilt_series.replace(shifts=sim.true_shifts, tilt_axis=12.0)


def perturbed(truth, scale=0.2, seed=5):
    noise = np.random.default_rng(seed).normal(scale=scale, size=truth.positions.shape)
    return AtomModel(truth.positions + noise, truth.species, dict(truth.features))


def rms_pm(atoms, truth):
    return 100 * np.sqrt(np.mean(np.sum((atoms.positions - truth.positions) ** 2, axis=1)))


def test_footprint_derivatives_match_finite_differences():
    positions = np.array([[1.3, -0.7, 2.1], [-2.2, 1.9, -0.4]])
    step = 1e-4
    (f,) = atom_footprints(positions, 0.5, [35.0], (32, 32), 0.4, tilt_axis=20.0, derivatives=True)
    for axis in range(3):
        moved = positions.copy()
        moved[:, axis] += step
        (g,) = atom_footprints(moved, 0.5, [35.0], (32, 32), 0.4, tilt_axis=20.0)
        image_step = f.jacobian[:, axis] * step  # (dx, dy) in pixels
        numeric = (g.wy[:, :, None] * g.wx[:, None, :] - f.wy[:, :, None] * f.wx[:, None, :]) / step
        analytic = (f.wy[:, :, None] * f.dwx[:, None, :] * image_step[0]
                    + f.dwy[:, :, None] * f.wx[:, None, :] * image_step[1]) / step
        np.testing.assert_allclose(numeric, analytic, atol=1e-3 * np.abs(analytic).max())


def test_refinement_recovers_positions_heights_and_widths(truth, measured):
    start = perturbed(truth)
    result = refine_atoms(measured, start, iterations=12)
    before, after = rms_pm(start, truth), rms_pm(result.atoms, truth)
    assert before > 30
    assert after < 6, (before, after)  # every move kept: 4.8 pm; the check keeps Fe 0.89 of them
    assert abs(result.widths["Pt"] - BLUR) < 0.05 and abs(result.widths["Fe"] - BLUR) < 0.1
    # heights follow the simulator's Z**1.7 contrast: Pt/Fe = (78/26)**1.7 = 6.5
    assert result.heights["Pt"] / result.heights["Fe"] == pytest.approx(3.0 ** 1.7, rel=0.1)
    assert result.heights["Pt"] == pytest.approx(2000.0, rel=0.05)
    assert np.allclose(result.scale.mean(), 1.0)
    assert result.errors["r_factor"][-1] < result.errors["r_factor"][0]
    np.testing.assert_allclose(result.atoms.features["refine_shift"],
                               np.linalg.norm(result.atoms.positions - start.positions, axis=1))
    assert compare_atoms(result.atoms, truth)["recall"] == 1.0
    assert min(result.errors["moves_kept"].values()) > 0.85  # the held-out projections confirm the moves


@pytest.mark.parametrize("start_error", [0.0, 0.2])
def test_held_out_projections_undo_the_moves_they_do_not_support(truth, start_error):
    """At a low dose the refinement also fits the noise: from the true positions every move is
    noise and is undone; from perturbed ones part is kept, and the atoms end nearer the truth."""
    series = simulate_tilt_series(truth, angles=ANGLES, shape=(64, 64), dose=100.0, blur=BLUR, max_shift=0,
                                  seed=7).tilt_series
    start = perturbed(truth, scale=start_error) if start_error else truth
    free = refine_atoms(series, start, complete_rounds=0, validate_moves=False)
    checked = refine_atoms(series, start, complete_rounds=0)
    assert free.errors["moves_kept"] == {}  # not checked
    kept = checked.errors["moves_kept"]
    if start_error:
        assert 0.3 < min(kept.values()) and rms_pm(checked.atoms, truth) < 0.9 * rms_pm(free.atoms, truth)
    else:
        assert max(kept.values()) < 0.25 and rms_pm(checked.atoms, truth) < 0.5 * rms_pm(free.atoms, truth)


def test_moves_made_by_an_error_that_drifts_with_the_tilt_are_undone(truth):
    """Shifts that are wrong by 0.5 px · sin(3θ) — an alignment error that changes slowly from view
    to view and that no 3D shift explains — pull the refined atoms ~30 pm off. Folds of every
    k-th view share that error with the views they are judged against and kept 85–100 % of such
    moves (~26 pm); folds of neighbouring views see through it (measured: 7 pm)."""
    angles = np.linspace(-70, 70, 29)
    sim = simulate_tilt_series(truth, angles=angles, shape=(64, 64), dose=2000.0, blur=BLUR, max_shift=0, seed=4)
    drift = 0.5 * np.sin(3 * np.deg2rad(angles))
    told = sim.tilt_series.replace(shifts=np.stack([np.zeros_like(drift), drift], axis=1))
    every_move = refine_atoms(told, truth, complete_rounds=0, validate_moves=False)
    checked = refine_atoms(told, truth, complete_rounds=0)
    assert rms_pm(every_move.atoms, truth) > 20
    assert rms_pm(checked.atoms, truth) < 12, checked.errors["moves_kept"]


def test_partial_moves_keep_every_pair_apart():
    """Halfway along their moves two atoms would pass each other 1 Å apart: they do not; a pair
    already too near at the end (locked atoms may be) is left as it is."""
    table = min_distance_table(["Pt"])
    start = np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0], [10.0, 0.0, 0.0], [11.0, 0.0, 0.0]])
    final = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [10.0, 0.0, 0.0], [11.0, 0.0, 0.0]])
    fixed = np.array([False, False, True, True])
    moved = _partial_moves(start, final, np.full(4, 0.5), np.zeros(4, int), fixed, table)
    assert np.linalg.norm(moved[0] - moved[1]) >= table[0, 0]
    np.testing.assert_array_equal(moved[2:], final[2:])


def test_missing_atoms_are_added_and_spurious_ones_removed(truth, measured):
    rng = np.random.default_rng(7)
    missing = rng.choice(len(truth), 6, replace=False)
    outward = truth.positions[:3] / np.linalg.norm(truth.positions[:3], axis=1, keepdims=True)
    spurious = truth.positions[:3] + 2.6 * outward  # empty space just outside the surface
    kept = np.setdiff1d(np.arange(len(truth)), missing)
    positions = np.concatenate([truth.positions[kept], spurious, truth.positions[missing[:2]] + 0.2])
    species = np.concatenate([truth.species[kept], ["Fe"] * 3, ["", ""]]).astype(object)  # 2 noise-labelled peaks
    start = AtomModel(positions, species, {"non_atom": species == ""})
    result = refine_atoms(measured, start, iterations=6)
    atoms, f = result.atoms, result.atoms.features
    assert f["refine_removed"][len(kept):len(kept) + 3].all() and f["refine_removed"].sum() == 3
    assert np.all(atoms.species[f["refine_removed"]] == "") and f["non_atom"][f["refine_removed"]].all()
    real = atoms.subset(~f["non_atom"].astype(bool))
    metrics = compare_atoms(real, truth)
    assert metrics["recall"] == 1.0 and metrics["precision"] == 1.0 and metrics["species_accuracy"] == 1.0
    assert 4 <= f["refine_added"].sum() <= 6  # two of the six come back as the noise-labelled peaks
    assert set(f["refine_reason"][f["refine_added"]]) <= set(_ADDED)
    assert set(f["refine_reason"][f["refine_removed"]]) <= set(_REMOVED)
    reasons = result.errors["reasons"]
    assert sum(reasons["added"].values()) >= f["refine_added"].sum() and reasons["rejected"]["held-out test"] > 0
    assert sum(reasons["removed"].values()) >= f["refine_removed"].sum()
    assert np.all(np.isnan(f["refine_shift"][f["refine_added"]]))
    assert result.errors["added"][-1] == 0 and len(result.errors["added"]) <= 4  # of up to 12: rounds stop once complete


def test_of_two_atoms_sharing_one_atoms_signal_one_is_removed(truth, measured):
    """A second Pt 1.2 Å outside a surface Pt: each takes part of its signal, neither is too faint."""
    outermost = np.flatnonzero(truth.species == "Pt")[np.argmax(np.linalg.norm(truth.positions[truth.species == "Pt"],
                                                                                axis=1))]
    duplicate = truth.positions[outermost] * (1 + 1.2 / np.linalg.norm(truth.positions[outermost]))
    start = AtomModel(np.concatenate([truth.positions, [duplicate]]), np.append(truth.species, "Pt").astype(object))
    result = refine_atoms(measured, start, iterations=6)
    assert result.atoms.features["refine_removed"].sum() == 1
    metrics = compare_atoms(result.atoms.subset(result.atoms.species != ""), truth)
    assert metrics["recall"] == 1.0 and metrics["precision"] == 1.0


def test_an_atom_beside_a_neighbour_pulled_into_its_place_is_found(truth, measured):
    """A missing Pt whose neighbour was traced 0.8 Å towards it, nearer than min_distance."""
    missing = np.argsort(np.linalg.norm(truth.positions, axis=1))[5]
    pulled = cKDTree(truth.positions).query(truth.positions[missing], 2)[1][1]
    positions = truth.positions.copy()
    towards = positions[missing] - positions[pulled]
    positions[pulled] += 0.8 * towards / np.linalg.norm(towards)
    assert np.linalg.norm(positions[missing] - positions[pulled]) < 2.0
    kept = np.setdiff1d(np.arange(len(truth)), [missing])
    result = refine_atoms(measured, AtomModel(positions[kept], truth.species[kept]), iterations=6)
    assert result.atoms.features["refine_added"].sum() == 1
    metrics = compare_atoms(result.atoms.subset(result.atoms.species != ""), truth)
    assert metrics["recall"] == 1.0 and metrics["precision"] == 1.0


def test_a_slowly_varying_background_is_not_taken_for_atoms(truth):
    """A support-film hump (40 counts/px, 12 Å wide) beside the particle: with one constant
    level per projection the model adds atoms on its slopes; the smooth background does not."""
    amplitudes = adf_amplitudes(truth.species, 2000.0)
    clean = project_atoms(truth.positions, amplitudes, BLUR, ANGLES, (64, 64), 0.4)
    y, x = np.mgrid[0:64, 0:64]
    film = 40.0 * np.exp(-((x - 20) ** 2 + (y - 40) ** 2) / (2 * 30.0 ** 2))
    series = TiltSeries(np.random.default_rng(4).poisson(clean + film).astype(np.float32), ANGLES, 0.4)
    start = perturbed(truth, scale=0.1)
    smooth = refine_atoms(series, start, iterations=10)
    constant = refine_atoms(series, start, iterations=10, background_width=0)
    assert smooth.atoms.features["refine_added"].sum() == 0 and rms_pm(smooth.atoms, truth) < 8
    assert constant.atoms.features["refine_added"].sum() > 5  # the failure the smooth background prevents
    assert smooth.errors["r_factor"][-1] < constant.errors["r_factor"][-1]


def test_one_element(truth):
    """A monatomic particle: one height and width, missing atoms added with that element."""
    platinum = AtomModel(truth.positions, np.full(len(truth), "Pt", dtype=object))
    series = simulate_tilt_series(platinum, angles=ANGLES, shape=(64, 64), dose=1000.0, max_shift=0, seed=6).tilt_series
    start = platinum.subset(np.arange(3, len(truth)))
    result = refine_atoms(series, start, iterations=6)
    assert list(result.heights) == ["Pt"] and result.heights["Pt"] == pytest.approx(1000.0, rel=0.05)
    assert result.atoms.features["refine_added"].sum() == 3 and set(result.atoms.species) == {"Pt"}
    assert compare_atoms(result.atoms, platinum)["recall"] == 1.0


def test_height_ratio_exposes_a_wrong_species(truth, measured):
    wrong = np.flatnonzero(truth.species == "Pt")[0]
    species = truth.species.copy()
    species[wrong] = "Fe"
    result = refine_atoms(measured, AtomModel(truth.positions, species), iterations=2)
    ratio = result.atoms.features["height_ratio"]
    assert ratio[wrong] > 3  # a Pt atom fits ~6.5 Fe heights
    others = np.delete(ratio, wrong)
    assert np.percentile(np.abs(others - 1), 95) < 0.5


def test_locked_and_non_atoms_stay_put(truth, measured):
    start = perturbed(truth)
    locked = np.zeros(len(start), bool)
    locked[:5] = True
    species = start.species.copy()
    species[5:8] = ""
    atoms = AtomModel(start.positions, species, {"locked": locked})
    result = refine_atoms(measured, atoms, iterations=3, complete_rounds=0)
    moved = result.atoms.features["refine_shift"]
    assert np.all(moved[:8] == 0) and np.all(moved[8:] > 0)
    assert np.all(np.isnan(result.atoms.features["height_ratio"][5:8]))
    assert list(result.atoms.species) == list(species)


def test_model_projections_match_the_data(truth, measured):
    result = refine_atoms(measured, truth, iterations=1)
    model = result.model_projections(measured)
    assert model.shape == measured.projections.shape and model.dtype == np.float32
    residual = measured.projections - model
    assert np.abs(residual).mean() < 0.2 * np.abs(measured.projections - result.background).mean()


def test_bad_input_and_cancel(truth, measured):
    with pytest.raises(InputError, match="classify the atoms first"):
        refine_atoms(measured, AtomModel(truth.positions))
    with pytest.raises(InputError, match="TiltSeries"):
        refine_atoms(measured.projections, truth)
    with pytest.raises(InputError, match="not among the elements"):
        refine_atoms(measured, truth, elements=("Pt",))
    with pytest.raises(InputError, match="not among the elements"):
        refine_atoms(measured, truth, elements="Pt")  # a string is a comma-separated list, not letters
    with pytest.raises(InputError, match="unknown element"):
        refine_atoms(measured, truth, elements="Fe,Xx")

    def cancel(fraction, message):
        if fraction > 0.2:
            raise Cancelled

    with pytest.raises(Cancelled):
        refine_atoms(measured, truth, iterations=5, progress=cancel)


def test_a_rewidened_species_image_is_the_image_made_at_the_new_width(truth, measured):
    """The width search changes a species' width in Fourier space instead of projecting its atoms
    again: the result must be the projection made directly at that width, narrower or wider."""
    index = (truth.species == "Pt").astype(int)
    heights, scale = np.array([300.0, 2000.0]), np.ones(measured.n_angles)
    model = _Model(measured, truth.positions, index, heights, np.array([0.45, 0.6]), scale)
    images = model.species_projections(truth.positions)
    for new_width in (0.5, 0.75):
        direct = _Model(measured, truth.positions, index, heights, np.array([0.45, new_width]),
                        scale).species_projections(truth.positions)[1]
        rewidened = model.rewidened(images[1], 0.6, new_width)
        assert np.abs(rewidened - direct).max() < 1e-3 * direct.max()
        assert not np.allclose(rewidened, images[1], atol=1e-2 * direct.max())


@pytest.mark.parametrize("blur", [0.45, 0.65, 0.85])
def test_the_start_width_lies_between_the_widths_tried(blur):
    """The start width is the parabola's minimum, not the nearest of the five widths tried
    (0.3 … 1.0 Å): each blur here lies between two of them."""
    atoms = fcc_particle(radius=6.0, seed=1)
    series = simulate_tilt_series(atoms, angles=np.linspace(-70, 70, 15), shape=(48, 48), dose=None, blur=blur,
                                  max_shift=0.0).tilt_series
    start = refine_atoms(series, atoms, iterations=0, complete_rounds=0, validate_moves=False)
    assert start.widths["Pt"] == pytest.approx(blur, rel=0.05)


def test_progress_only_moves_forward_and_names_each_pass(truth, measured):
    """Fractions reported through every cycle, pass and removal step never go back; the messages
    say which pass an iteration count belongs to (a settling pass runs a third of them)."""
    seen, messages = [], []

    def progress(fraction, message=""):
        seen.append(fraction)
        messages.append(message)

    refine_atoms(measured, perturbed(truth), iterations=6, progress=progress)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert "completion round 1: settling positions: iteration 2 of 2" in messages
    assert "refining positions (pass 1): iteration 6 of 6" in messages
    assert any(m.startswith("checking the moves on held-out views 1 of ") for m in messages)


def test_no_atom_is_added_below_the_minimum_distance(truth):
    """The data hold a Pt 1.7 Å outside a surface Pt, nearer than two Pt atoms can be (2.31 Å):
    what the Gaussian model cannot otherwise explain (channelling, say). No pair of the refined
    model comes nearer than its minimum distance (an atom added there moves its neighbour out to
    that distance, and the report counts that pair); with the minimum lowered to 1.2 Å the extra atom is added where the data put
    it, and the pair stays that near."""
    platinum = np.flatnonzero(truth.species == "Pt")
    outermost = platinum[np.argmax(np.linalg.norm(truth.positions[platinum], axis=1))]
    ghost = truth.positions[outermost] * (1 + 1.7 / np.linalg.norm(truth.positions[outermost]))
    data = AtomModel(np.concatenate([truth.positions, [ghost]]), np.append(truth.species, "Pt").astype(object))
    series = simulate_tilt_series(data, angles=ANGLES, shape=(64, 64), dose=2000.0, max_shift=0, seed=8).tilt_series
    table = min_distance_table("Fe,Pt")
    for min_distance in (None, 1.2):
        result = refine_atoms(series, truth, iterations=6, min_distance=min_distance)
        real = result.atoms.subset(result.atoms.species != "")
        index = (real.species == "Pt").astype(int)
        gap = np.linalg.norm(real.positions[real.features["refine_added"]] - ghost, axis=1)
        if min_distance is None:
            assert len(close_pairs(real.positions, index, table)) == 0
            # the ghost's neighbour is held at the minimum distance, and the report counts the pair
            held = len(close_pairs(real.positions, index, table * 1.01))
            assert result.errors["pairs_at_minimum_distance"] == held >= 1
        else:
            assert np.any(gap < 0.3)  # the control: the test would see an atom added there
            assert len(close_pairs(real.positions, index, table)) > 0


def footprint_sums(s, r):
    """The five candidate sums of ``_held_out_test`` for footprint ``s`` and residual patches ``r``
    ``(n, m, w, w)``."""
    n, m = r.shape[:2]
    return np.stack([np.sum(s * r, axis=(2, 3)), np.broadcast_to(np.sum(s * s), (n, m)),
                     np.sum(s ** 2 * r ** 2, axis=(2, 3)), np.sum(s ** 3 * r, axis=(2, 3)),
                     np.broadcast_to(np.sum(s ** 4), (n, m))])


def test_held_out_test_holds_its_rate_on_noise_correlated_between_pixels():
    """Noise smoothed over neighbouring pixels (resampled, denoised) makes a footprint's sum vary
    more than independent pixels would: without the residual's correlation the test passes tens of
    times more noise candidates than on white noise, with it as rarely. White noise has a correlation
    of about 1, noise shifted by half a pixel with a cubic spline (as alignment resamples) more."""
    rng = np.random.default_rng(1)
    n, m, w = 32, 2000, 7
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.4) ** 2)
    s = (g[:, None] * g[None])[None, None]  # (1, 1, 7, 7)
    fold = rng.permutation(n) % 4
    white = rng.normal(size=(n, 96, 96))
    smooth = ndimage.gaussian_filter(white, (0, 1.0, 1.0))
    smooth /= smooth.std()
    shifted = np.stack([ndimage.shift(image, (0.5, 0.5), order=3, mode="wrap") for image in white])
    corner = rng.integers(0, 96 - w, size=(2, n, m))
    rows = corner[0][..., None, None] + np.arange(w)[:, None]
    cols = corner[1][..., None, None] + np.arange(w)[None, :]

    def sums(noise):
        return footprint_sums(s, noise[np.arange(n)[:, None, None, None], rows, cols])  # patches (n, m, 7, 7)

    assert _residual_correlation(white, 1.4) < 1.05
    assert _residual_correlation(shifted, 1.4) > 1.15
    correlation = _residual_correlation(smooth, 1.4)
    assert correlation > 3
    assert _held_out_test(sums(white), fold, 1.5)[1].mean() < 0.002
    assert _held_out_test(sums(smooth), fold, 1.5)[1].mean() > 0.01
    assert _held_out_test(sums(smooth), fold, 1.5, correlation)[1].mean() < 0.002


def test_held_out_test_rejects_noise_and_a_residual_only_some_projections_show():
    """Candidate sums built from a Gaussian footprint s and a residual r, projections in 4 folds:
    pure noise passes rarely; an atom seen in every projection passes with its height; a
    residual that a quarter of the projections show (model error, e.g. channelling near a zone
    axis) gets a quarter of that height, below the half-height bar of the completion step."""
    rng = np.random.default_rng(0)
    n, m = 32, 2000
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.4) ** 2)
    s = (g[:, None] * g[None])[None, None]  # (1, 1, 7, 7)
    fold = rng.permutation(n) % 4

    def sums(signal):
        return footprint_sums(s, signal[:, :, None, None] * s + rng.normal(size=(n, m, 7, 7)))

    noise = _held_out_test(sums(np.zeros((n, m))), fold, 2.0)[1]
    atom = _held_out_test(sums(np.full((n, m), 1.0)), fold, 2.0)
    some = _held_out_test(sums((np.arange(n) % 4 == 0)[:, None] * np.ones(m)), fold, 2.0)[0]
    assert noise.mean() < 0.01
    assert atom[1].mean() > 0.95 and np.median(atom[0]) == pytest.approx(1.0, rel=0.1)
    assert np.median(some) == pytest.approx(0.25, abs=0.05)


def test_the_report_counts_additions_and_removals_by_reason(truth, measured):
    from napari_aet.pipeline import _refinement_report

    start = AtomModel(truth.positions[3:], truth.species[3:])  # three atoms missing
    report = _refinement_report(refine_atoms(measured, start, iterations=4), measured)
    expected = {"n_added", "n_removed", "heights", "widths_A", "final_r_factor", "shift_A", "worst_projections"}
    assert expected <= set(report)
    reasons = report["reasons"]
    assert set(reasons) == {"added", "removed", "rejected"} and set(reasons["added"]) == set(_ADDED)
    assert sum(reasons["added"].values()) - sum(reasons["removed"].values()) == report["n_added"] - report["n_removed"]
    assert report["n_added"] >= 3
    assert report["pairs_at_minimum_distance"] == 0  # fcc neighbours 2.7 Å apart, the minimum 2.1–2.3 Å


def test_the_start_width_is_not_widened_by_missing_atoms():
    """With half the atoms missing, the model as it is fits best with its atoms twice too wide
    (they take up their missing neighbours' signal, and hide them from the completion); judged
    after one completion, the start width stays near the atoms' own."""
    particle = fcc_particle(radius=8.0, seed=3)
    truth = AtomModel(particle.positions, np.full(len(particle), "Pt", dtype=object))
    series = simulate_tilt_series(truth, angles=np.linspace(-70, 70, 21), shape=(56, 56), dose=40, blur=0.5,
                                  max_shift=0.0, seed=3).tilt_series
    half = truth.subset(np.random.default_rng(3).random(len(truth)) < 0.5)
    as_it_is = refine_atoms(series, half, iterations=0, complete_rounds=0, validate_moves=False)
    completed = refine_atoms(series, half, iterations=0, complete_rounds=1, validate_moves=False)
    assert as_it_is.widths["Pt"] > 1.5 * 0.5
    assert completed.widths["Pt"] == pytest.approx(0.5, rel=0.1)


def test_worst_projections_stand_far_above_the_others():
    rng = np.random.default_rng(0)
    misfit = 1 + 0.05 * rng.standard_normal(40)
    assert len(worst_projections(misfit)) == 0
    misfit[[7, 30]] = 2.4, 1.8  # two bad images
    assert worst_projections(misfit).tolist() == [7, 30]
    misfit[12] = 1.45  # far out, but not 1.5 times the median
    assert worst_projections(misfit).tolist() == [7, 30]
