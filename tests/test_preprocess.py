"""Pre-processing against simulated data with known drift, background and noise-free truth."""

import numpy as np
import pytest

from napari_aet import background, frames, preprocess
from napari_aet.model import InputError
from napari_aet.simulate import fcc_particle, simulate_tilt_series

ANGLES = np.linspace(-60, 60, 7)
SHAPE = (96, 96)


@pytest.fixture(scope="module")
def atoms():
    return fcc_particle(radius=12.0, seed=2)


def smooth_background(level, shape=SHAPE):
    """The simulator's background map (counts per pixel)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    return level * (1 + 0.5 * np.sin(2 * np.pi * (0.7 * xx + 0.3 * yy)))


def clean_projections(atoms, dose, **kwargs):
    noiseless = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=None, seed=1, **kwargs)
    return noiseless.tilt_series.projections * dose


def test_register_frames_recovers_drift(atoms):
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=300, max_shift=1, n_frames=5,
                                frame_drift=0.7, background=10, seed=1)
    summed, drift = frames.register_frames(data.frames)
    assert summed.shape == data.tilt_series.projections.shape and drift.shape == data.frame_drift.shape
    assert np.sqrt(np.mean(np.sum((drift - data.frame_drift) ** 2, axis=-1))) < 0.1
    assert abs(summed.sum() / data.frames.sum() - 1) < 0.01  # counts kept
    merged, info = frames.merge_frames(data.frames)
    np.testing.assert_allclose(info["frame_drift"], drift)
    assert info["n_frames"] == 5 and np.array_equal(merged, summed)


def test_register_frames_rejects_single_frames():
    with pytest.raises(InputError, match="frame stacks"):
        frames.register_frames(np.ones((3, 16, 16)))
    with pytest.raises(InputError, match="only one frame"):
        frames.register_frames(np.ones((3, 1, 16, 16)))


def test_smooth_background_is_removed(atoms):
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=300, max_shift=1, background=10, seed=1)
    truth = smooth_background(10)
    for method, tolerance in (("constant", 4.0), ("smooth", 0.5)):
        out = background.subtract_background(data.tilt_series, method=method)
        estimated = data.tilt_series.projections - out.projections
        assert np.sqrt(np.mean((estimated - truth) ** 2)) < tolerance
        assert len(out.metadata["background"]["levels"]) == len(ANGLES)
    with pytest.raises(InputError, match="unknown"):
        background.subtract_background(data.tilt_series, method="rolling ball")


def test_background_model_is_chosen_by_the_data(atoms):
    """A background fixed to the detector but brighter in some tilts is fitted as one shape with a
    scale per tilt; one whose slope turns from tilt to tilt, as a polynomial per projection."""
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=300, max_shift=1, seed=1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]] / SHAPE[1]
    scaled = np.linspace(0.7, 1.3, len(ANGLES))[:, None, None] * smooth_background(10)
    turn = np.linspace(0, np.pi, len(ANGLES))[:, None, None]
    varying = 10 + 8 * (np.cos(turn) * (xx - 0.5) + np.sin(turn) * (yy - 0.5))
    for truth, model in ((scaled, "scaled"), (varying, "each")):
        series = data.tilt_series.replace(projections=(data.tilt_series.projections + rng.poisson(truth)))
        out = background.subtract_background(series, method="smooth", model=None, degree=None)
        record = out.metadata["background"]
        assert record["model"] == model and set(record["prediction_errors"]) == {"each", "shared", "scaled"}
        estimated = series.projections - out.projections
        assert np.sqrt(np.mean((estimated - truth) ** 2)) < 0.3
    with pytest.raises(InputError, match="model"):
        background.subtract_background(series, method="smooth", model="rolling ball")


def test_background_needs_room_outside_the_particle(atoms):
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=(62, 62), dose=300, max_shift=0, seed=1)
    with pytest.raises(InputError, match="fills the field of view"):
        background.subtract_background(data.tilt_series)


def test_normalise_intensity_equalises_totals(atoms):
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=None, max_shift=1, seed=1)
    scale = np.linspace(0.7, 1.3, len(ANGLES))
    series = data.tilt_series.replace(projections=data.tilt_series.projections * scale[:, None, None])
    out = preprocess.normalise_intensity(series)
    totals = out.projections.sum(axis=(1, 2))
    assert np.ptp(totals) < 1e-4 * totals.mean()
    factors = np.array(out.metadata["normalisation"]["factors"])
    assert np.ptp(factors * scale) < 1e-3 * np.mean(factors * scale)  # the factors undo the scaling
    np.testing.assert_allclose(preprocess.relative_totals(series), scale / scale.mean(), rtol=1e-4)
    below_zero = series.replace(projections=series.projections - 2 * series.projections.mean())
    assert np.all(np.isnan(preprocess.relative_totals(below_zero)))  # reported, not raised
    with pytest.raises(InputError, match="no positive total"):
        preprocess.normalise_intensity(below_zero)


@pytest.mark.parametrize("method", ["nlmeans", "wavelet"])
def test_denoise_reduces_error_without_bias(atoms, method):
    if method == "wavelet":
        pytest.importorskip("pywt")
    dose, level = 150, 2.0
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=dose, max_shift=0, background=level,
                                seed=1)
    truth = clean_projections(atoms, dose, max_shift=0) + smooth_background(level)
    out = preprocess.denoise(data.tilt_series, method=method)
    noisy_error = np.mean((data.tilt_series.projections - truth) ** 2)
    assert np.mean((out.projections - truth) ** 2) < 0.5 * noisy_error
    background = truth < 2 * level
    assert abs(out.projections[background].mean() / truth[background].mean() - 1) < 0.05
    assert out.metadata["denoise"]["method"] == method
    assert preprocess.denoise(data.tilt_series) is data.tilt_series  # "none" is the default


def test_inverse_anscombe_is_unbiased():
    rng = np.random.default_rng(0)
    lam = np.array([0.2, 1.0, 4.0, 30.0, 1000.0])
    mean_transform = [preprocess.anscombe(rng.poisson(m, 400_000)).mean() for m in lam]
    np.testing.assert_allclose(preprocess.inverse_anscombe(mean_transform), lam, rtol=0.02)


def test_denoise_rejects_background_subtracted_data(atoms):
    data = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=100, max_shift=0, background=5, seed=1)
    subtracted = background.subtract_background(data.tilt_series)
    with pytest.raises(InputError, match="raw counts"):
        preprocess.denoise(subtracted, method="nlmeans")


def test_scan_distortion_correction_moves_features_by_the_matrix():
    image = np.zeros((2, 64, 64), dtype=np.float32)
    image[:, 32 + 10, 32 + 20] = 1  # a point at (x, y) = (20, 10) about the centre
    matrix = np.array([[1.05, 0.02], [0.0, 0.97]])
    out = preprocess.correct_scan_distortion(image, matrix)
    assert out.shape == image.shape
    cy, cx = (np.array(np.unravel_index(np.argmax(out[0]), (64, 64))) - 32)
    expected_x, expected_y = matrix @ [20, 10]
    assert abs(cx - expected_x) <= 0.5 and abs(cy - expected_y) <= 0.5
    with pytest.raises(InputError, match="2x2"):
        preprocess.correct_scan_distortion(image, np.eye(3))


def test_particle_mask_on_a_noise_free_zero_background():
    """A border of exact zeros has no measurable noise: the mask must still hug the particle."""
    image = np.zeros((64, 64))
    image[24:40, 20:44] = 50.0
    mask = background.particle_mask(image)
    assert mask[24:40, 20:44].all()
    assert mask.mean() < 0.4  # the 16x24 block grown by blur tails above 1% and the margin: ~0.31; without a floor ~0.75


def test_particle_mask_ignores_isolated_noise_peaks():
    """Only the particle's connected region is kept: a noise peak far away would pull a centre of mass."""
    rng = np.random.default_rng(0)
    image = rng.normal(10.0, 1.0, (96, 96))
    image[40:56, 40:56] += 20.0
    image[5:8, 85:88] += 20.0  # a small bright blob far from the particle
    mask = background.particle_mask(image)
    assert mask[40:56, 40:56].all() and not mask[5:8, 85:88].any()



def with_spikes(series, level, seed=5):
    """``series`` with 12 single-pixel spikes at ``level`` times its brightest pixel (random places),
    two at the image's edges and one hot pixel at that level in every projection; and the set of
    their (projection, row, column)."""
    rng = np.random.default_rng(seed)
    projections, top = series.projections.copy(), series.projections.max()
    n, ny, nx = projections.shape
    where = {(int(rng.integers(n)), int(rng.integers(4, ny - 4)), int(rng.integers(4, nx - 4))) for _ in range(12)}
    where |= {(i, ny // 5, nx // 7) for i in range(n)} | {(0, 0, 0), (1, ny - 1, nx // 2)}  # hot; at the edges
    for i, y, x in where:
        projections[i, y, x] = level * top
    return series.replace(projections=projections), where


@pytest.mark.parametrize("dose", [None, 400, 4])
def test_spikes_are_replaced_and_atoms_never_are(atoms, dose):
    clean = simulate_tilt_series(atoms, angles=ANGLES, shape=SHAPE, dose=dose, max_shift=2, seed=1).tilt_series
    assert preprocess.replace_spikes(clean) is clean  # nothing found: the very same series
    sparse = simulate_tilt_series(fcc_particle(radius=4.0, seed=0), angles=ANGLES, shape=(160, 160), dose=dose,
                                  seed=1).tilt_series  # a few atoms in a wide field, the noise its local maxima
    assert preprocess.replace_spikes(sparse) is sparse
    if dose == 4:
        return  # a spike ten times a 4-count maximum is not told from noise: not asked for
    spiked, where = with_spikes(clean, 3.0)
    out = preprocess.replace_spikes(spiked)
    assert {tuple(p) for p in out.metadata["spikes"]} == where
    i, y, x = np.array(sorted(where)).T
    assert np.all(out.projections[i, y, x] <= clean.projections.max())  # each is now like its neighbours
    untouched = np.ones(clean.projections.shape, bool)
    untouched[i, y, x] = False
    np.testing.assert_array_equal(out.projections[untouched], spiked.projections[untouched])
