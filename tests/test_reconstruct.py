"""Reconstruction: geometry agreement, accuracy on simulated particles, the live API, bad input."""

import numpy as np
import pytest
from scipy import ndimage

from napari_aet.geometry import (
    Projector,
    render_atoms,
    rotation_matrices,
    specimen_to_voxel,
)
from napari_aet.model import AtomModel, InputError
from napari_aet.progress import Cancelled
from napari_aet.reconstruct import (
    METHODS,
    iterate,
    parameters,
    reconstruct,
    to_reconstruction,
)
from napari_aet.reconstruct.genfire import (
    BoxFFT,
    _stage_limits,
    grid_size,
    r_free_selection,
)
from napari_aet.reconstruct.gridding import fourier_coverage, grid_projections
from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series

N = 32
BLUR = 0.55
FULL_RANGE = np.linspace(-90, 90, 45, endpoint=False)


def relative_error(volume, truth):
    return np.linalg.norm(volume - truth) / np.linalg.norm(truth)


@pytest.fixture(scope="module")
def particle():
    return fcc_particle(radius=5.5, seed=1)


def simulate(atoms, angles, shape=(N, N)):
    return simulate_tilt_series(atoms, angles=angles, shape=shape, dose=None, max_shift=0, blur=BLUR).tilt_series


@pytest.fixture(scope="module")
def full_series(particle):
    return simulate(particle, FULL_RANGE)


@pytest.fixture(scope="module")
def truth(particle, full_series):
    return render_atoms(particle.positions, adf_amplitudes(particle.species, 1.0), BLUR, (N, N, N),
                        full_series.pixel_size)


def test_projector_adjoint_dot_product():
    rng = np.random.default_rng(0)
    for angles in (np.linspace(-70, 70, 7), rng.uniform(-90, 90, (5, 3))):
        projector = Projector((12, 16, 20), angles)
        x = rng.random((12, 16, 20)).astype(np.float32)
        y = rng.random(projector.projection_shape).astype(np.float32)
        assert np.vdot(projector.forward(x), y) == pytest.approx(np.vdot(x, projector.adjoint(y)), rel=1e-5)


def genfire_rotation(phi, theta, psi):
    """GENFIRE-Python's matrix (fillInFourierGrid), transcribed independently of our geometry."""
    phi, theta, psi = np.deg2rad([phi, theta, psi])
    c, s = np.cos, np.sin
    return np.array([
        [c(psi) * c(theta) * c(phi) - s(psi) * s(phi), c(psi) * c(theta) * s(phi) + s(psi) * c(phi), -c(psi) * s(theta)],
        [-s(psi) * c(theta) * c(phi) - c(psi) * s(phi), -s(psi) * c(theta) * s(phi) + c(psi) * c(phi), s(psi) * s(theta)],
        [s(theta) * c(phi), s(theta) * s(phi), c(theta)]])


def test_rotation_agrees_with_genfire_and_single_tilt_is_about_y():
    for euler in ([0, 35, 0], [20, -50, 75]):
        assert np.allclose(rotation_matrices(np.array([euler]))[0], genfire_rotation(*euler))
    # GENFIRE's single tilt (0, theta, 0): the specimen point (x, y, z) goes to u = x cos - z sin, v = y
    m = rotation_matrices(np.array([30.0]))[0]
    x, y, z = 2.0, 1.0, 3.0
    assert np.allclose(m[:2] @ [x, y, z], [x * np.cos(np.pi / 6) - z * np.sin(np.pi / 6), y])


@pytest.mark.parametrize("shape, thickness", [((N, N), None), ((31, 40), 21)])
def test_off_centre_atom_comes_back_where_it_was(shape, thickness):
    """No flip, mirror or off-by-one on any axis, also for odd, non-square images and a thin volume."""
    atom = AtomModel([[3.2, -1.6, 2.4]], ["Pt"])
    series = simulate(atom, np.linspace(-70, 70, 29), shape)
    for method in METHODS:
        params = {"thickness": thickness} | ({} if method == "wbp" else {"n_iterations": 10})
        volume = reconstruct(series, method, **params).volume
        expected = np.round(specimen_to_voxel(atom.positions, volume.shape, series.pixel_size)[0])
        assert np.array_equal(np.unravel_index(np.argmax(volume), volume.shape), expected), method


def test_gridded_data_match_the_3d_fourier_transform():
    """The Fourier slice orientation: gridded projections = 3D FFT of the volume they came from."""
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:N, :N, :N] - N // 2
    volume = np.zeros((N, N, N), np.float32)
    for cx, cy, cz in rng.uniform(-6, 6, (4, 3)):  # smooth blobs, off centre and asymmetric
        volume += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * 2.0**2))
    n = 3 * N
    padded = np.zeros((n, n, n), np.float32)
    padded[:N, :N, :N] = volume
    spectrum = np.fft.rfftn(np.roll(padded, (-(N // 2),) * 3, axis=(0, 1, 2))).reshape(-1)

    def misfit(angles, gridded_angles):
        data = grid_projections(Projector(volume.shape, angles).forward(volume), gridded_angles, n, cutoff=0.5)
        low = data.frequency < n / 8
        exact = spectrum[data.index[low]]
        return np.abs(data.values[low] - exact).sum() / np.abs(exact).sum()

    assert misfit(np.zeros((1, 3)), np.zeros((1, 3))) < 1e-5  # the 0° slice lies on the grid: exact
    angles = np.array([[0, 40, 0], [30, -60, 110]], float)
    assert misfit(angles, angles) < 0.08  # off-grid samples: interpolation error only
    assert misfit(angles, angles * [1, -1, 1]) > 0.4  # a mirrored orientation would be caught


def test_box_fft_is_the_padded_fft():
    rng = np.random.default_rng(2)
    box = rng.random((6, 8, 10)).astype(np.float32)
    n = 24
    padded = np.zeros((n, n, n), np.float32)
    padded[:6, :8, :10] = box
    fft = BoxFFT(box.shape, n)
    spectrum = fft.forward(box)
    assert np.allclose(spectrum, np.fft.rfftn(padded), rtol=1e-4, atol=1e-3)
    assert np.allclose(fft.inverse(spectrum), box, atol=1e-5)
    assert grid_size((6, 8, 10), 3) % 2 == 0 and grid_size((6, 8, 10), 3) >= 30


@pytest.mark.parametrize("method, limit", [("wbp", 0.22), ("resire", 0.06), ("genfire", 0.07)])
def test_noiseless_full_range_reconstruction_is_accurate(full_series, truth, method, limit):
    params = {} if method == "wbp" else {"n_iterations": 30}
    result = reconstruct(full_series, method, **params)
    assert result.volume.shape == (N, N, N) and result.volume.dtype == np.float32
    assert result.voxel_size == full_series.pixel_size and result.method == method
    assert relative_error(result.volume, truth) < limit
    assert set(params) <= set(result.parameters) and result.errors["r_factor"]


def test_iterative_errors_fall(full_series):
    for method, params in (("genfire", {}), ("resire", {})):
        errors = reconstruct(full_series, method, n_iterations=15, **params).errors
        assert len(errors["r_factor"]) == 15 and errors["r_factor"][-1] < 0.5 * errors["r_factor"][0]
    genfire = reconstruct(full_series, "genfire", n_iterations=15).errors
    assert len(genfire["r_free"]) == 15 and genfire["r_free"][-1] < genfire["r_free"][0]
    assert "r_free" not in reconstruct(full_series, "genfire", n_iterations=3, r_free_fraction=0).errors


def test_r_free_withholds_the_fraction_in_every_shell():
    rng = np.random.default_rng(3)
    frequency = rng.random(20000)
    eligible = rng.random(20000) < 0.8
    chosen = r_free_selection(frequency, eligible, 10, 0.05, seed=0)
    assert not np.any(chosen & ~eligible)
    shells = np.minimum((frequency * 10).astype(int), 10)
    for s in range(10):
        assert np.count_nonzero(chosen & (shells == s)) == int(0.05 * np.count_nonzero(eligible & (shells == s)))
    assert np.array_equal(chosen, r_free_selection(frequency, eligible, 10, 0.05, seed=0))


def test_euler_and_single_axis_paths_agree(particle, truth, full_series):
    """The same tilts about the specimen x axis, as Euler angles (90, theta, -90) on the general path."""
    euler = np.stack([np.full_like(FULL_RANGE, 90.0), FULL_RANGE, np.full_like(FULL_RANGE, -90.0)], axis=1)
    assert np.allclose(rotation_matrices(euler)[:, 0], [1, 0, 0])  # tilt axis = specimen x
    series = simulate(particle, euler)
    for method in METHODS:
        params = {} if method == "wbp" else {"n_iterations": 20}
        general = reconstruct(series, method, **params).volume
        single = reconstruct(full_series, method, **params).volume
        assert relative_error(general, single) < (0.25 if method == "wbp" else 0.1), method
        assert relative_error(general, truth) < (0.2 if method == "wbp" else 0.08), method
    errors = reconstruct(series, "genfire", n_iterations=4).errors  # general path: final R-factor only
    assert len(errors["fourier_error"]) == 4 and len(errors["r_factor"]) == 1 and errors["r_factor"][0] < 0.2


def test_limited_range_keeps_support_thickness_and_wbp_start(particle, truth):
    series = simulate(particle, np.linspace(-70, 70, 29))
    support = ndimage.binary_dilation(truth > 0.01 * truth.max(), iterations=2)
    result = reconstruct(series, "genfire", n_iterations=20, support=support, initial="wbp",
                         resolution="extension")
    assert not result.volume[~support].any() and result.volume.min() >= 0
    assert relative_error(result.volume, truth) < 0.25
    thin = reconstruct(series, "resire", n_iterations=5, thickness=20)
    assert thin.volume.shape == (20, N, N)


def test_cancel_and_keep_current(full_series):
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 3:
            raise Cancelled

    for method in ("genfire", "resire"):
        seen.clear()
        with pytest.raises(Cancelled):
            reconstruct(full_series, method, progress=progress, n_iterations=10)
        assert seen == pytest.approx([0.0, 0.1, 0.2])

        states = iterate(full_series, method, n_iterations=10)
        for state in states:
            if state.iteration == 4:
                break
        kept = to_reconstruction(state, full_series, method, {"n_iterations": 10})
        assert kept.volume is state.volume and kept.metadata == {"iterations_run": 4, "completed": False}
        assert len(next(iter(kept.errors.values()))) == 4
        assert kept.parameters["n_iterations"] == 4 and kept.parameters["n_iterations_requested"] == 10


def test_parameters_record_defaults_and_reject_unknown():
    used = parameters("genfire", n_iterations=7)
    assert used["n_iterations"] == 7 and used["oversampling"] == 3.0 and used["cutoff"] == 0.5
    with pytest.raises(InputError, match="does not take parameter"):
        parameters("resire", oversampling=2)
    with pytest.raises(InputError, match="unknown reconstruction method"):
        parameters("art")


@pytest.mark.parametrize("change, params, message", [
    ({"shifts": np.ones((11, 2))}, {}, "apply the alignment first"),
    ({"tilt_axis": 5.0}, {}, "apply the alignment first"),
    ({}, {"oversampling": 0.5}, "oversampling must be >= 1"),
    ({}, {"support": np.ones((N, N, N - 1))}, "support has shape"),
    ({}, {"n_iterations": 0}, "n_iterations must be"),
    ({}, {"cutoff": 0}, "cutoff"),
    ({}, {"resolution": "sometimes"}, "resolution must be one of"),
    ({"angles": np.tile([[0.0, 10.0, 0.0]], (11, 1))}, {}, "duplicates"),
])
def test_bad_input_is_explained(particle, change, params, message):
    series = simulate(particle, np.linspace(-60, 60, 11)).replace(**change)
    with pytest.raises(InputError, match=message):
        iterate(series, "genfire", **params)  # at once, before the first step is asked for


def test_bad_angles_are_refused_by_the_series(particle):
    series = simulate(particle, np.linspace(-60, 60, 11))
    with pytest.raises(InputError, match="duplicates"):
        series.replace(angles=np.r_[np.linspace(-60, 50, 10), -420.0])  # -60° modulo 360°
    with pytest.raises(InputError, match="duplicates"):
        series.replace(angles=np.r_[np.linspace(-60, 50, 10), 50.0])
    with pytest.raises(InputError, match="step must lie in"):
        reconstruct(series, "resire", step=2.5)


def test_fourier_coverage_shows_the_missing_wedge(particle):
    series = simulate(particle, np.linspace(-60, 60, 41))
    coverage = fourier_coverage(series.replace(shifts=np.ones((41, 2))))  # amplitudes: alignment-free
    c = N // 2
    assert coverage.shape == (N, N, N) and coverage[c, c, c] > 0
    assert np.all(coverage[c, c, c + 1:c + 12] > 0)  # along kx (in every tilt plane): measured
    assert not np.any(coverage[c + 3:, c, c]) and not np.any(coverage[:c - 3, c, c])  # along kz: the wedge
    assert np.array_equal(coverage > 0, (coverage > 0)[::-1, ::-1, ::-1][np.ix_(*[np.roll(np.arange(N), 1)] * 3)])


def test_genfire_result_is_best_of_final_stage_with_r_free_points_restored(full_series):
    states = list(iterate(full_series, "genfire", n_iterations=12, resolution="full", r_free_fraction=0))
    assert [s.final for s in states] == [False] * 12 + [True]
    best = int(np.argmin(states[-1].errors["fourier_error"]))
    assert states[-1].volume is states[best].volume  # no R-free: the best iterate itself

    states = list(iterate(full_series, "genfire", n_iterations=12, resolution="extension_suppression"))
    errors = states[-1].errors["fourier_error"]
    limits = _stage_limits("extension_suppression", 12)
    final_stage = [i for i in range(12) if np.all(limits[i:] == limits[-1])]
    chosen = min(final_stage, key=lambda i: errors[i])
    assert not any(states[-1].volume is s.volume for s in states[:-1])  # withheld points put back
    assert relative_error(states[-1].volume, states[chosen].volume) < 0.05


def test_accelerated_resire_fits_the_data_sooner(full_series):
    plain = reconstruct(full_series, "resire", n_iterations=12, step=1.0).errors["r_factor"]
    fast = reconstruct(full_series, "resire", n_iterations=12, step=1.0, accelerate=True).errors["r_factor"]
    assert fast[-1] < 0.7 * plain[-1]
    with pytest.raises(InputError, match=r"\(0, 1\] with accelerate=True"):
        reconstruct(full_series, "resire", accelerate=True, step=1.5)
