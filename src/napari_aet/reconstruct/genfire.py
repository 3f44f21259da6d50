"""GENFIRE: GENeralized Fourier Iterative REconstruction (Pryor et al., Sci. Rep. 2017).

The projections are gridded onto the Fourier grid of a cube ``oversampling`` times the
volume (:mod:`.gridding`); the iteration alternates between Fourier space (the measured
points replaced by the gridded data) and real space (the volume box as support, an
optional tighter support, positivity).

Choices that differ from GENFIRE-Python 1.1.11, deliberately (see ``docs/reconstruction.md``):

* Inverse-distance gridding weights, as GENFIRE's paper and MATLAB code state (the Python
  version uses inverse squared distance).
* Only the volume box is kept in real space, so the FFTs are pruned: the forward transform
  zero-pads the box axis by axis and the inverse computes only the box, about half the work
  of a full ``n^3`` FFT pair, with float32/complex64 throughout.
* Errors compare complex values (GENFIRE-Python compares magnitudes only).
* Resolution extension/suppression is on by default, as in GENFIRE-Python: on noisy data it
  gives a clearly lower error against the truth than enforcing every point at every iteration.
* The result is the best iterate of the final stage of the schedule (the constraint set the
  run is meant to end with), judged by the error on all working measured points. Earlier
  stages enforce other data, and on noisy data their "best" fits noise; this is what
  GENFIRE-Python's per-stage reset amounts to, made explicit.
* R-free points are withheld while iterating, then restored (within the final stage's
  resolution) in one last Fourier constraint step, so the result uses every measurement
  (GENFIRE-Python never puts them back).
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from ..backprojection import check_aligned, relative_residual, volume_shape
from ..geometry import Projector
from ..model import InputError, TiltSeries
from ._common import IterationState, check_count, check_volume
from .gridding import GriddedData, grid_projections
from .wbp import starting_volume
from ..threads import fft_workers

#: Enforced resolution (fraction of Nyquist) of each stage, GENFIRE's schedules.
RESOLUTION_SCHEDULES = {
    "full": np.array([np.inf]),
    "extension": np.concatenate([1 - np.arange(0.95, -0.15, -0.15), [1.15] * 3]),
    "extension_suppression": 1 - np.concatenate([np.arange(0.95, -0.25, -0.15), np.arange(-0.15, 0.95, 0.1)]),
}


class BoxFFT:
    """Real FFT pair between a volume box ``(nz, ny, nx)`` and the rfft half grid of an ``n^3``
    cube that holds the box at its corner, pruned axis by axis (zero rows are never transformed,
    rows outside the box never computed). The spectrum lives in one reused complex64 buffer."""

    def __init__(self, shape, n):
        self.shape, self.n = tuple(shape), n
        self._grid = None

    def forward(self, volume) -> np.ndarray:
        """``(n, n, n//2 + 1)`` complex64 spectrum of a float32 box: the internal buffer, valid
        until the next call."""
        nz, ny, _ = self.shape
        if self._grid is None:
            self._grid = np.zeros((self.n, self.n, self.n // 2 + 1), np.complex64)
        planes = self._grid[:nz]
        planes[:, :ny] = fft.rfft(volume, n=self.n, axis=2, workers=fft_workers())
        planes[:, ny:] = 0
        _in_place(fft.fft(planes, axis=1, workers=fft_workers(), overwrite_x=True), planes)
        self._grid[nz:] = 0
        self._grid = fft.fft(self._grid, axis=0, workers=fft_workers(), overwrite_x=True)
        return self._grid

    def inverse(self, spectrum) -> np.ndarray:
        """The float32 box of the inverse transform; ``spectrum`` is overwritten."""
        nz, ny, nx = self.shape
        planes = fft.ifft(spectrum, axis=0, workers=fft_workers(), overwrite_x=True)[:nz]
        planes = _in_place(fft.ifft(planes, axis=1, workers=fft_workers(), overwrite_x=True), planes)[:, :ny]
        return np.ascontiguousarray(fft.irfft(planes, n=self.n, axis=2, workers=fft_workers())[:, :, :nx])


def _in_place(result, target):
    """``target`` holding ``result`` (scipy may or may not have transformed in place)."""
    if not np.shares_memory(result, target):
        target[...] = result
    return target


def grid_size(shape, oversampling) -> int:
    """Even, FFT-friendly size of the cube that holds ``shape`` ``oversampling`` times over."""
    n = fft.next_fast_len(int(np.ceil(oversampling * max(shape))), real=True)
    while n % 2:
        n = fft.next_fast_len(n + 1, real=True)
    return n


def r_free_selection(frequency, eligible, nyquist_shells, fraction, seed) -> np.ndarray:
    """Boolean mask withholding ``fraction`` of the eligible points in each resolution shell.

    frequency : ``|k|`` as a fraction of Nyquist; ``nyquist_shells`` shells span [0, 1]
    (GENFIRE uses one per voxel of the unpadded half-size). Random, deterministic per seed.
    """
    shell = np.minimum((frequency * nyquist_shells).astype(np.int64), nyquist_shells)
    counts = np.bincount(shell[eligible], minlength=nyquist_shells + 1)
    # eligible points sorted by shell and randomly within a shell (ineligible ones sort last)
    key = np.where(eligible, shell + np.random.default_rng(seed).random(len(shell)), np.inf)
    order = np.argsort(key)[: counts.sum()]
    rank_in_shell = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    chosen = np.zeros(len(shell), bool)
    chosen[order[rank_in_shell < np.repeat(np.floor(fraction * counts), counts)]] = True
    return chosen


def _stage_limits(schedule, n_iterations) -> np.ndarray:
    """Enforced resolution (fraction of Nyquist) at each iteration, stages spread as in GENFIRE."""
    if schedule not in RESOLUTION_SCHEDULES:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTION_SCHEDULES)}, got {schedule!r}")
    limits = RESOLUTION_SCHEDULES[schedule]
    starts, first = np.unique(np.round(np.linspace(1, n_iterations, len(limits))), return_index=True)
    stage = np.searchsorted(starts, np.arange(1, n_iterations + 1), side="right") - 1
    return limits[first][stage]


def iterate_genfire(series: TiltSeries, n_iterations=50, oversampling=3.0, cutoff=0.5, support=None,
                    positivity=True, resolution="extension_suppression", r_free_fraction=0.05, seed=0, initial="zeros",
                    thickness=None, track_r_factor=None):
    """A generator of :class:`IterationState`, one per GENFIRE iteration, then the final result.

    Checks the input and grids the data at once (InputError is raised here, not at the first step).

    series : aligned TiltSeries, single tilts or Euler angles.
    n_iterations : iterations. oversampling : padded cube size / volume size (>= 1).
    cutoff : gridding interpolation radius in voxels of the padded grid.
    support : optional ``(nz, ny, nx)`` mask inside the volume box. positivity : clip negatives.
    resolution : "full", "extension" or "extension_suppression" (GENFIRE's schedules).
    r_free_fraction : fraction of measured points withheld (per resolution shell) for R-free; 0 = off.
    seed : for the R-free choice. initial : "zeros", "wbp" or an ``(nz, ny, nx)`` array.
    thickness : nz in voxels (default nx).
    track_r_factor : re-project every iteration for a real-space R-factor curve (about 10 % more
        CPU time at 128³); otherwise only the final volume gets one. None = track when the tilts
        share one axis (fast projector), not for general Euler angles (slow projector).

    errors : "r_factor" (real-space, re-projected vs measured), "fourier_error" (on the working
    measured points) and "r_free" (on the withheld points), one value per iteration (for an
    untracked R-factor, one value: the final volume's). The final state (``final=True``)
    holds the best iterate of the schedule's final stage with the withheld points restored.
    """
    check_aligned(series)
    n_iterations = check_count("n_iterations", n_iterations)
    if not oversampling >= 1:
        raise InputError(f"oversampling must be >= 1 (padded grid / volume size), got {oversampling}")
    if not 0 <= r_free_fraction < 1:
        raise InputError(f"r_free_fraction must lie in [0, 1), got {r_free_fraction}")
    limits = _stage_limits(resolution, n_iterations)
    shape = volume_shape(series, thickness)
    mask = check_volume("support", support, shape, bool)
    start = starting_volume(series, initial, shape, thickness)
    n = grid_size(shape, oversampling)
    box = BoxFFT(shape, n)
    data = grid_projections(series.projections, series.angles, n, cutoff)
    data = _shift_to_box_corner(data, shape)
    frequency = data.frequency / (n / 2)
    kx = data.coordinates[:, 0]
    withheld = r_free_selection(frequency, (kx > 0) & (kx < n // 2), max(shape) // 2, r_free_fraction, seed)
    work_index, work_values, n_enforced = _by_stage(data, frequency, ~withheld, limits)
    free_index, free_values, n_free = _by_stage(data, frequency, withheld, limits)
    n_free_final = n_free[-1]
    changes = np.nonzero(limits != limits[-1])[0]
    final_stage = changes[-1] + 2 if len(changes) else 1  # first iteration of the last stage
    del data

    def constrain(volume):
        if mask is not None:
            volume *= mask
        if positivity:
            np.maximum(volume, 0, out=volume)
        return volume

    projector = Projector(shape, series.angles, series.projections.shape[1:])
    if track_r_factor is None:
        track_r_factor = projector.single_axis

    def steps():
        """The iterations; validation and gridding above run when iterate_genfire is called."""
        spectrum = box.forward(constrain(start))
        errors = {"fourier_error": []} | ({"r_free": []} if len(free_index) else {}) | {"r_factor": []}
        best, best_error = None, np.inf
        for iteration in range(1, n_iterations + 1):
            flat = spectrum.reshape(-1)
            flat[work_index[: n_enforced[iteration - 1]]] = work_values[: n_enforced[iteration - 1]]
            volume = constrain(box.inverse(spectrum))
            spectrum = box.forward(volume)
            flat = spectrum.reshape(-1)
            errors["fourier_error"].append(relative_residual(work_values, flat[work_index]))
            if len(free_index):
                errors["r_free"].append(relative_residual(free_values, flat[free_index]))
            if track_r_factor:
                errors["r_factor"].append(relative_residual(series.projections, projector.forward(volume)))
            if iteration >= final_stage and errors["fourier_error"][-1] < best_error:
                best, best_error = volume, errors["fourier_error"][-1]
            yield IterationState(iteration, n_iterations, volume, {k: list(v) for k, v in errors.items()})
        if len(free_index):
            spectrum = box.forward(best)
            flat = spectrum.reshape(-1)
            flat[work_index[: n_enforced[-1]]] = work_values[: n_enforced[-1]]
            flat[free_index[:n_free_final]] = free_values[:n_free_final]
            best = constrain(box.inverse(spectrum))
        if not track_r_factor:
            errors["r_factor"].append(relative_residual(series.projections, projector.forward(best)))
        yield IterationState(n_iterations, n_iterations, best, errors, final=True)

    return steps()


def _by_stage(data: GriddedData, frequency, selected, limits):
    """Indices and values of the ``selected`` points ordered so that the points enforced at
    resolution ``limits[t]`` are the first ``count[t]``: grouped by the stage limits, and by
    memory position within a group (sequential access for the scatter and gather)."""
    steps = np.unique(limits)
    group = np.searchsorted(steps, frequency[selected], side="left")
    index = data.index[selected]
    order = np.lexsort((index, group))
    count = np.searchsorted(group[order], np.searchsorted(steps, limits), side="right")
    return index[order], data.values[selected][order], count


def _shift_to_box_corner(data: GriddedData, shape) -> GriddedData:
    """Data for the volume box at the grid corner (centre voxel ``n_i // 2``) instead of at index 0."""
    centre = np.array([shape[2] // 2, shape[1] // 2, shape[0] // 2])  # (x, y, z)
    phase = np.exp(-2j * np.pi * (data.coordinates @ centre) / data.n)
    return GriddedData(data.index, (data.values * phase).astype(np.complex64), data.n)
