"""Volume metrics: R-factor, Fourier shell correlation, half-set FSC."""

import numpy as np
import pytest

from napari_aet.analysis.volume_metrics import fourier_shell_correlation, r_factor, resolution_from_fsc
from napari_aet.model import InputError
from napari_aet.reconstruct import reconstruct
from napari_aet.simulate import fcc_particle, simulate_tilt_series
from napari_aet.workflow import half_set_fsc


@pytest.fixture(scope="module")
def series():
    atoms = fcc_particle(radius=5.5, seed=2)
    return simulate_tilt_series(atoms, angles=np.linspace(-72, 72, 37), shape=(32, 32), dose=None,
                                max_shift=0).tilt_series


def test_fsc_of_identical_independent_and_filtered_volumes():
    rng = np.random.default_rng(0)
    a = rng.random((24, 24, 24)).astype(np.float32)
    frequency, fsc = fourier_shell_correlation(a, a, voxel_size=0.5)
    assert np.allclose(fsc, 1, atol=1e-5)
    assert frequency[0] == 0 and frequency[-1] == pytest.approx(1.0)  # Nyquist of 0.5 Å voxels
    _, independent = fourier_shell_correlation(a, rng.random(a.shape))
    assert np.all(np.abs(independent[2:]) < 0.25)
    # the same signal plus independent noise: high at low frequency, falling off
    signal = np.fft.irfftn(np.fft.rfftn(a) * np.exp(-np.sum(np.meshgrid(
        np.fft.fftfreq(24) ** 2, np.fft.fftfreq(24) ** 2, np.fft.rfftfreq(24) ** 2, indexing="ij"), axis=0) * 60),
        a.shape)
    noisy = [signal + 0.02 * rng.standard_normal(a.shape) for _ in range(2)]
    _, fsc = fourier_shell_correlation(*noisy)
    assert fsc[1] > 0.9 and fsc[-1] < 0.3
    assert 2 < resolution_from_fsc(*fourier_shell_correlation(*noisy)) < 24
    with pytest.raises(InputError, match="same 3D shape"):
        fourier_shell_correlation(a, a[:-1])


def test_r_factor_of_good_and_bad_volumes(series):
    result = reconstruct(series, "resire", n_iterations=30)
    good = r_factor(series, result)
    assert good == pytest.approx(result.errors["r_factor"][-1], rel=1e-4) and good < 0.1
    assert r_factor(series, np.zeros_like(result.volume)) == pytest.approx(1.0)
    assert r_factor(series, result.volume[:, ::-1]) > 3 * good  # a mirrored particle does not fit


def test_half_set_fsc(series):
    fractions = []
    frequency, fsc = half_set_fsc(series, "resire", n_iterations=20,
                                  progress=lambda f, m: fractions.append(f))
    assert frequency[-1] == pytest.approx(0.5 / series.pixel_size)
    assert fsc[1] > 0.9 and fractions[-1] == pytest.approx(1.0) and max(fractions[:20]) <= 0.5
    with pytest.raises(InputError, match="at least 4"):
        half_set_fsc(series.replace(projections=series.projections[:3], angles=series.angles[:3],
                                    shifts=series.shifts[:3]), "wbp")
