"""Atomic-model refinement against the measured projections.

The model: every atom is a Gaussian of its species' height ``A_s`` (integrated counts per
projection) and width ``sigma_s`` (Å), projected through the one geometry of
:mod:`napari_aet.geometry`; projection i is ``k_i * sum(atoms) + b_i`` with a per-projection
intensity scale ``k_i`` (mean 1) and a background ``b_i`` that varies slowly across the image
(probe tails, support film, detector offsets). The refinement minimises the squared
difference between these simulated projections and the measured ones:

* heights, scales and background levels are linear: solved exactly in every iteration; the
  background's slow variation is the residual low-passed at ``background_width`` Å;
* positions: Gauss-Newton with preconditioned conjugate directions: each atom's 3x3 normal
  matrix (summed over all projections) preconditions the gradient, and the step length along
  the conjugate direction is the exact minimiser of the linearised error, since atoms that
  overlap in projection must share the residual between them;
* widths: a parabolic line search in log(sigma) per species every few iterations.

Unlike the reconstruction, the projections carry no missing wedge, so a faint atom next to
a bright one is no longer pulled along the beam by its neighbour's elongated image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy import fft, ndimage
from scipy.spatial import cKDTree

from .backprojection import weighted_backprojection
from .elements import close_pairs, enforce_min_distance, min_distance_table
from .geometry import atom_footprints, rotation_matrices, voxel_to_specimen
from .model import ATOMIC_NUMBERS, AtomModel, InputError, TiltSeries, check_elements
from .progress import report, sub_progress
from .projections import apply_alignment
from .threads import fft_workers, map_threads

#: Largest position change of one atom in one iteration (Å): keeps a step inside the basin.
_MAX_STEP = 0.25
#: The model is complete when a completion round adds fewer than this fraction of its atoms.
_COMPLETE = 0.005

#: Completion rounds and removals alternate at most this often: a removed atom may have hidden
#: a missing one, and a new atom may leave a neighbour unsupported.
_CYCLES = 3

#: Relative slack of the minimum distance: pairs are pushed this much beyond it, and a pair
#: nearer than it by less counts as kept apart (not as a pair the removal steps judge).
_MARGIN = 1e-3
#: A pair within this fraction above its minimum distance is counted as held there by
#: :func:`_separate` (``errors["pairs_at_minimum_distance"]``): the data pulled the two nearer.
_AT_WALL = 0.01

#: Why atoms are added (a residual peak, a peak the input classified as noise or the refinement
#: removed), removed (sharing one atom's signal, too faint, nearer than physics allows) and why
#: candidates are rejected.
_ADDED = ("residual peak", "non-atom peak")
_REMOVED = ("crowded", "too faint", "too close")
_REJECTED = ("held-out test", "minimum distance")

#: Widths tried first (Å, evenly spaced in log σ); the parabola's minimum through the best of them
#: starts the per-species search (:func:`_choose_width`).
_START_WIDTHS = tuple(np.geomspace(0.3, 1.0, 5))

#: Fractions of a species' moves tried on the held-out projections, and the number of folds the
#: projections are split into (:func:`_validated_moves`): at most :data:`_MOVE_FOLDS`, of two
#: projections or more each, and no check with fewer than :data:`_MOVE_MIN_FOLDS` folds.
_MOVE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
_MOVE_FOLDS = 8
_MOVE_MIN_FOLDS = 4


@dataclass
class Refinement:
    """What :func:`refine_atoms` found.

    atoms : the refined model (non-atoms and locked atoms unmoved) with features
        ``refine_shift`` (Å moved), ``height_ratio`` (the atom's own best-fitting height over
        its species' height: about 1 for a right species, far from 1 for a wrong one) and the
        flags ``refine_added`` / ``refine_removed`` (see :func:`refine_atoms`).
    heights, widths : per element, integrated counts per projection and Gaussian sigma (Å).
    scale : ``(n_angles,)`` per-projection intensity scale.
    background : ``(n_angles, ny, nx)`` float32 background of each projection (counts/px).
    errors : ``r_factor`` (sum |measured - model| / sum |measured - background|) before each
        iteration and at the end, ``rms_step`` (Å) of the positions in each iteration, and the
        numbers of atoms ``added`` per completion round and ``removed`` at the end,
        ``reasons`` (see :func:`refine_atoms`), ``moves_kept``: per element, the fraction of
        its atoms' moves the held-out projections support (:func:`_validated_moves`; empty when
        the moves were not checked), and ``projection_misfit``: each projection's RMS residual over
        their median (:func:`worst_projections`).
    precision : per element, the half-set estimate of the refined positions' RMS error in pm along
        ``x``, ``y``, ``z`` and ``3d``, and its number of ``atoms``
        (:func:`napari_aet.precision.half_set_precision`; empty unless it was estimated); each
        atom's own estimate is then the feature ``half_set_error`` (Å).
    """

    atoms: AtomModel
    heights: dict
    widths: dict
    scale: np.ndarray
    background: np.ndarray
    errors: dict = field(default_factory=dict)
    precision: dict = field(default_factory=dict)

    def model_projections(self, series: TiltSeries) -> np.ndarray:
        """The simulated projections ``(n_angles, ny, nx)`` float32 of the refined model."""
        model = _Model.from_refinement(self, series)
        return model.combine(model.species_projections(model.positions)).astype(np.float32)


class _Model:
    """The atoms being refined, the measured projections and the model's parameters."""

    def __init__(self, series: TiltSeries, positions, species_index, heights, widths, scale, smooth=None,
                 background_width=0.0):
        self.series = series
        self.data = series.projections
        self.positions = positions
        self.species_index = species_index
        self.heights = heights
        self.widths = widths
        self.scale = scale
        self.smooth = np.zeros(self.data.shape, np.float32) if smooth is None else smooth  # slow background part
        self.offset = np.zeros(len(self.data))  # and its level per projection
        self.background_width = background_width
        self._kept = []  # (positions, sigma, footprints) of the last two calls of model_footprints

    @property
    def background(self) -> np.ndarray:
        """``(n, ny, nx)`` float32 background of each projection."""
        return self.smooth + self.offset[:, None, None].astype(np.float32)

    @classmethod
    def from_refinement(cls, refinement: Refinement, series: TiltSeries):
        atoms = refinement.atoms.subset(refinement.atoms.species != "")
        elements = list(refinement.heights)
        index = np.array([elements.index(s) for s in atoms.species])
        return cls(series, atoms.positions, index, np.array([refinement.heights[e] for e in elements]),
                   np.array([refinement.widths[e] for e in elements]), refinement.scale, refinement.background)

    def footprints(self, positions, sigma, derivatives=False, half_width=None):
        """:func:`~napari_aet.geometry.atom_footprints` of atoms at ``positions`` ``(N, 3)`` Å with
        widths ``sigma`` (Å) in this series' geometry."""
        s = self.series
        return atom_footprints(positions, sigma, s.angles, self.data.shape[1:], s.pixel_size, s.tilt_axis,
                               -s.shifts, derivatives, half_width)

    def model_footprints(self, positions) -> list:
        """The footprints, with derivatives, of the model's atoms at ``positions`` ``(N, 3)`` Å with
        their species' widths, one per projection. The last two sets are kept: the gradient, the
        search direction and the next trial step of an iteration use the same positions, and a
        rejected step returns to the previous ones."""
        sigma = self.widths[self.species_index]
        for kept in self._kept:
            if np.array_equal(kept[0], positions) and np.array_equal(kept[1], sigma):
                return kept[2]
        footprints = list(self.footprints(positions, sigma, derivatives=True))
        self._kept = [(positions.copy(), sigma, footprints), *self._kept[:1]]
        return footprints

    def species_projections(self, positions) -> np.ndarray:
        """Unit-height projections ``(S, n, ny, nx)`` float32 of each species' atoms at ``positions``."""
        return self._splat(self.model_footprints(positions), self.species_index, len(self.heights))

    def rewidened(self, images, width, new_width) -> np.ndarray:
        """Unit-height species projections ``images`` ``(..., ny, nx)`` made with Gaussian width
        ``width`` (Å), changed to ``new_width``: a Gaussian blurred by a Gaussian is a Gaussian, so
        each image's spectrum is multiplied by exp(-2 pi^2 (new_width^2 - width^2) |q|^2). The
        images are padded by four of the wider sigmas so no atom's tail wraps around an edge."""
        ny, nx = images.shape[-2:]
        pad = int(np.ceil(4 * max(width, new_width) / self.series.pixel_size))
        shape = (fft.next_fast_len(ny + pad, real=True), fft.next_fast_len(nx + pad, real=True))
        q2 = (fft.fftfreq(shape[0], self.series.pixel_size)[:, None] ** 2
              + fft.rfftfreq(shape[1], self.series.pixel_size)[None, :] ** 2)
        factor = np.exp(-2 * np.pi ** 2 * (new_width ** 2 - width ** 2) * q2).astype(np.float32)
        spectrum = fft.rfft2(images, s=shape, workers=fft_workers()) * factor
        return fft.irfft2(spectrum, s=shape, workers=fft_workers())[..., :ny, :nx].astype(np.float32)

    def _splat(self, footprints, species_index, n_species) -> np.ndarray:
        """``(n_species, n, ny, nx)`` float32 unit-height projections of atoms of ``species_index``
        ``(N,)`` from their ``footprints`` (one per projection)."""
        out = np.empty((n_species, *self.data.shape), dtype=np.float32)
        ones = np.ones(len(species_index))

        def one(i):
            out[:, i] = footprints[i].splat(ones, out[:, i].shape, species_index)

        map_threads(one, range(len(footprints)))
        return out

    def combine(self, species) -> np.ndarray:
        """Model projections ``(n, ny, nx)`` from species projections and the current parameters."""
        return self.scale[:, None, None] * np.einsum("s,snyx->nyx", self.heights, species) + self.background

    def r_factor(self, residual) -> float:
        """sum |model - data| / sum |data - background| over every pixel."""
        return float(np.abs(residual).sum() / np.abs(self.data - self.background).sum())

    def update_background(self, species):
        """Low-pass the data minus the atoms at ``background_width`` Å into the slow background."""
        if self.background_width > 0:
            atoms = self.scale[:, None, None] * np.einsum("s,snyx->nyx", self.heights, species)
            sigma = self.background_width / self.series.pixel_size
            self.smooth = np.stack(map_threads(partial(ndimage.gaussian_filter, sigma=sigma, mode="nearest"),
                                               self.data - atoms))

    def solve_linear(self, species, rounds=3) -> float:
        """Heights, scales and backgrounds that best fit the data given the species projections
        ``(S, n, ny, nx)``; returns the squared error. Works on per-projection sums only: the
        centred Gram matrices of the species images and their products with the data."""
        n_pixels = self.data[0].size
        flat_p = species.reshape(len(species), len(self.data), -1)
        flat_d = (self.data - self.smooth).reshape(len(self.data), -1)
        p_mean, d_mean = flat_p.mean(axis=2, dtype=np.float64), flat_d.mean(axis=1, dtype=np.float64)
        gram = (np.einsum("snm,tnm->nst", flat_p, flat_p, dtype=np.float64)
                - n_pixels * p_mean.T[:, :, None] * p_mean.T[:, None, :])  # (n, S, S)
        cross = np.einsum("snm,nm->ns", flat_p, flat_d, dtype=np.float64) - n_pixels * p_mean.T * d_mean[:, None]
        data_energy = np.einsum("nm,nm->n", flat_d, flat_d, dtype=np.float64) - n_pixels * d_mean ** 2
        for _ in range(rounds):
            self.heights = np.linalg.lstsq(np.einsum("n,nst->st", self.scale ** 2, gram),
                                           cross.T @ self.scale, rcond=None)[0]
            self.scale = cross @ self.heights / np.maximum(np.einsum("s,nst,t->n", self.heights, gram, self.heights),
                                                           1e-30)
            mean_scale = self.scale.mean()
            self.scale, self.heights = self.scale / mean_scale, self.heights * mean_scale
        self.offset = d_mean - self.scale * (p_mean.T @ self.heights)
        fitted = np.einsum("s,nst,t->n", self.heights, gram, self.heights)
        return float(np.sum(self.scale ** 2 * fitted - 2 * self.scale * (cross @ self.heights) + data_energy))

    def gradient(self, residual):
        """From ``residual`` = model - data ``(n, ny, nx)``: the gradient ``(N, 3)`` of half the
        squared error with respect to the positions (Å), each atom's own Gauss-Newton normal
        matrix ``(N, 3, 3)`` (the preconditioner) and its height ratio ``(N,)``."""
        footprints = self.model_footprints(self.positions)
        # per projection and atom, in image pixels: the residual's derivatives along x and y and the
        # entries xx, yy, xy of the unit-amplitude normal matrix; the residual under the footprint
        # and the footprint's squared norm
        gx, gy, hxx, hyy, hxy, overlap, norm = np.empty((7, len(footprints), len(self.positions)))

        def one(i):
            f = footprints[i]
            along_x = f.gather_along_x(residual[i], np.stack([f.wx, f.dwx], -1))  # (N, w, 2)
            syy, sxx = np.sum(f.wy ** 2, 1), np.sum(f.wx ** 2, 1)
            gx[i], gy[i] = np.sum(f.wy * along_x[..., 1], 1), np.sum(f.dwy * along_x[..., 0], 1)
            hxx[i], hyy[i] = syy * np.sum(f.dwx ** 2, 1), np.sum(f.dwy ** 2, 1) * sxx
            hxy[i] = np.sum(f.wy * f.dwy, 1) * np.sum(f.wx * f.dwx, 1)
            overlap[i], norm[i] = np.sum(f.wy * along_x[..., 0], 1), syy * sxx

        map_threads(one, range(len(footprints)))
        amplitude = self.heights[self.species_index]
        c = self.scale[:, None] * amplitude  # (n, N) each atom's amplitude in each projection
        jx, jy = np.stack([f.jacobian for f in footprints], 1)  # (n, 3) each: d(image x, y) / d(x, y, z)
        gradient = np.einsum("in,ik->nk", c * gx, jx) + np.einsum("in,ik->nk", c * gy, jy)
        outer = jx[:, :, None] * jy[:, None, :]
        normal = (np.einsum("in,ik,il->nkl", c ** 2 * hxx, jx, jx) + np.einsum("in,ik,il->nkl", c ** 2 * hyy, jy, jy)
                  + np.einsum("in,ikl->nkl", c ** 2 * hxy, outer + outer.transpose(0, 2, 1)))
        excess = (self.scale @ overlap) / np.maximum(self.scale ** 2 @ norm, 1e-30)  # model over data, in heights
        height_ratio = 1.0 - excess / np.maximum(amplitude, 1e-30)
        return gradient, normal, height_ratio

    def directional(self, direction) -> np.ndarray:
        """The model's change ``(n, ny, nx)`` per unit step of the atoms along ``direction`` ``(N, 3)`` Å."""
        out = np.empty(self.data.shape)
        amplitude = self.heights[self.species_index]
        footprints = self.model_footprints(self.positions)

        def one(i):
            f = footprints[i]
            dx, dy = (direction @ f.jacobian.T).T * self.scale[i] * amplitude
            out[i] = f.splat_shift(dx, dy, out.shape[1:])

        map_threads(one, range(len(footprints)))
        return out

    def search_width(self, s, species, error, log_step=0.1) -> tuple[np.ndarray, float]:
        """Parabolic line search of species ``s``'s width in log(sigma); returns the species
        projections and error at the accepted width."""
        def trial(steps):  # species s at its width times exp(steps * log_step)
            widths = self.widths.copy()
            widths[s] *= np.exp(steps * log_step)
            images = species.copy()
            images[s] = self.rewidened(species[s], self.widths[s], widths[s])
            return widths, images, self._trial_error(images)

        trials = {sign: trial(sign) for sign in (-1, 1)}
        e_minus, e_plus = trials[-1][2], trials[1][2]
        curvature = e_minus + e_plus - 2 * error
        if curvature > 0:
            trials[0] = trial(np.clip(0.5 * (e_minus - e_plus) / curvature, -2.0, 2.0))
        best = min(trials.values(), key=lambda t: t[2])
        if best[2] < error:
            self.widths = best[0]
            return best[1], self.solve_linear(best[1])
        self.solve_linear(species)
        return species, error

    def _trial_error(self, species):
        saved = self.heights.copy(), self.scale.copy(), self.offset.copy()
        error = self.solve_linear(species)
        self.heights, self.scale, self.offset = saved
        return error


def check_inputs(series, atoms, elements=None) -> tuple[np.ndarray, list]:
    """Raise :class:`InputError` unless ``atoms`` can be refined against ``series``; returns the mask
    of real (classified) atoms and the elements present, lightest first (or in ``elements``' order)."""
    if not isinstance(series, TiltSeries):
        raise InputError(f"refine_atoms needs the TiltSeries the atoms were reconstructed from, got "
                         f"{type(series).__name__}")
    if not isinstance(atoms, AtomModel):
        raise InputError(f"refine_atoms needs an AtomModel, got {type(atoms).__name__}")
    real = atoms.species != ""
    if not np.any(real):
        raise InputError("no classified atoms to refine: classify the atoms first (every atom has species '')")
    present = sorted(set(atoms.species[real].tolist()), key=ATOMIC_NUMBERS.get)
    if elements is not None:
        missing = set(present) - set(elements)
        if missing:
            raise InputError(f"atoms carry species {sorted(missing)} not among the elements {list(elements)}")
        present = [e for e in elements if e in present]
    return real, present


def _choose_width(model: _Model, progress, missing=None):
    """Start every species at the width that fits the data best: the least error among
    :data:`_START_WIDTHS` (evenly spaced in log σ), refined by a parabola through it and its
    neighbours, so that a start between two grid widths does not snap to either (the atoms are
    projected once at the narrowest and widened, :meth:`_Model.rewidened`).

    missing : ``missing(model, residual)`` -> positions ``(M, 3)`` Å and species ``(M,)`` of the
        atoms a completion round would add to ``model`` (None: each width is judged by the model
        as it is). Atoms the model lacks are fitted best by widening the atoms it has: Pt alone at
        4 counts per atom, 115 of 201 atoms classified, fits best at 1.0 Å where the true atoms
        fit best at 0.57 Å, and atoms that wide hide the missing ones from the completion. So each
        width is judged by the error of the model completed at it (benchmarks/RESULTS.md §11).
    """
    narrowest = min(_START_WIDTHS)
    model.widths = np.full(len(model.heights), narrowest)
    narrow = model.species_projections(model.positions)
    errors = []
    for i, width in enumerate(_START_WIDTHS):
        report(progress, i / len(_START_WIDTHS), f"atom width {width:.2f} Å")
        species = model.rewidened(narrow, narrowest, width)
        errors.append(model._trial_error(species) if missing is None else
                      _completed_error(model, species, width, missing))
    model.widths = np.full(len(model.heights), np.exp(_parabola_minimum(np.log(_START_WIDTHS), errors)))


def _completed_error(model: _Model, species, width, missing) -> float:
    """The squared error of ``model`` with every species at ``width`` Å (its unit-height
    projections ``species``) and the atoms ``missing`` finds added, background included; the
    model's parameters are left as they were."""
    saved = model.widths, model.heights.copy(), model.scale.copy(), model.offset.copy(), model.smooth
    model.widths = np.full(len(model.heights), width)
    model.solve_linear(species)
    model.update_background(species)
    model.solve_linear(species)
    added, added_species = missing(model, model.combine(species) - model.data)
    if len(added):
        footprints = list(model.footprints(added, width))
        species = species + model._splat(footprints, added_species, len(model.heights))
        model.solve_linear(species)
        model.update_background(species)
    error = model.solve_linear(species)
    model.widths, model.heights, model.scale, model.offset, model.smooth = saved
    return error


def _pair_keys(pairs, n) -> np.ndarray:
    return pairs[:, 0] * n + pairs[:, 1]


def _separate(positions, species_index, fixed, table, exempt, rounds=10) -> np.ndarray:
    """``positions`` ``(N, 3)`` Å with every pair nearer than its minimum distance (``table``)
    pushed apart along the line joining them to that distance, each atom half the way (a free
    atom all of it when its partner is ``fixed``); repeated while a push brings others too near.
    Pairs in ``exempt`` (:func:`_pair_keys`: already nearer than that before, one of them
    perhaps spurious, which the removal steps judge) are left alone."""
    positions = positions.copy()
    for _ in range(rounds):
        pairs = close_pairs(positions, species_index, table)
        pairs = pairs[~(fixed[pairs[:, 0]] & fixed[pairs[:, 1]]) & ~np.isin(_pair_keys(pairs, len(positions)), exempt)]
        if len(pairs) == 0:
            break
        i, j = pairs.T
        apart = positions[j] - positions[i]
        distance = np.maximum(np.linalg.norm(apart, axis=1, keepdims=True), 1e-6)
        push = apart / distance * (table[species_index[i], species_index[j]][:, None] * (1 + _MARGIN) - distance)
        share_i = np.where(fixed[i], 0.0, np.where(fixed[j], 1.0, 0.5))[:, None]
        move = np.zeros_like(positions)
        np.add.at(move, i, -share_i * push)
        np.add.at(move, j, (1 - share_i) * push)
        positions += move
    return positions


def _refine_positions(model: _Model, fixed, origin, reach, iterations, width_every, tolerance, history, progress,
                      table, label="refining positions"):
    """Run the position updates (and width searches) on ``model``, each atom staying within
    ``reach`` Å of its ``origin`` ``(N, 3)`` and no pair nearer than its minimum distance
    (``table``, :func:`_separate`); returns the final species projections and each atom's
    height ratio. ``label`` names the pass in the progress messages."""
    exempt = _pair_keys(close_pairs(model.positions, model.species_index, table * (1 - _MARGIN)),
                        len(model.positions))
    species = model.species_projections(model.positions)
    error = model.solve_linear(species)
    direction = preconditioned = previous = None
    shrink, height_ratio = 1.0, np.ones(len(model.positions))
    for it in range(iterations):
        report(progress, it / iterations, f"{label}: iteration {it + 1} of {iterations}")
        if width_every and it % width_every == 0:
            for s in range(len(model.heights)):
                species, error = model.search_width(s, species, error)
            direction = None
        if model.background_width > 0:
            model.update_background(species)
            error = model.solve_linear(species)
        residual = model.combine(species) - model.data
        history["r_factor"].append(model.r_factor(residual))
        gradient, normal, height_ratio = model.gradient(residual)
        gradient[fixed] = 0.0
        damped = normal + 1e-3 * np.einsum("aii->ai", normal)[..., None] * np.eye(3) + 1e-12 * np.eye(3)
        new_preconditioned = np.linalg.solve(damped, gradient[..., None])[..., 0]
        if direction is None:
            direction = -new_preconditioned
        else:  # Polak-Ribiere+, preconditioned
            beta = max(0.0, np.sum(new_preconditioned * (gradient - previous))
                       / max(np.sum(preconditioned * previous), 1e-30))
            direction = -new_preconditioned + beta * direction
        preconditioned, previous = new_preconditioned, gradient
        change = model.directional(direction)
        alpha = shrink * -np.sum(residual * change) / max(np.sum(change * change), 1e-30)
        step = alpha * direction
        length = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, _MAX_STEP / np.maximum(length, 1e-30))
        away = model.positions + step - origin
        distance = np.linalg.norm(away, axis=1, keepdims=True)
        step = origin + away * np.minimum(1.0, reach / np.maximum(distance, 1e-30)) - model.positions
        saved = model.positions, model.heights, model.scale, model.offset
        model.positions = _separate(model.positions + step, model.species_index, fixed, table, exempt)
        trial_species = model.species_projections(model.positions)
        trial_error = model.solve_linear(trial_species)
        if trial_error < error:
            species, error, shrink = trial_species, trial_error, min(1.0, 2 * shrink)
            rms = float(np.sqrt(np.mean(np.sum(step ** 2, axis=1))))
        else:  # the linearisation overshot: undo, restart the conjugate directions with a shorter step
            model.positions, model.heights, model.scale, model.offset = saved
            direction, shrink, rms = None, 0.5 * shrink, 0.0
        history["rms_step"].append(rms)
        if 0 < rms < tolerance:
            break
    return species, height_ratio


def _candidate_sums(model: _Model, residual, positions, species_index) -> np.ndarray:
    """Per projection and candidate, the sums over the footprint ``s`` (unit height times the
    projection's scale) of one extra atom at each of ``positions``, with ``r`` = measured - model
    (``residual`` = model - measured): ``(5, n, M)`` of s.r, s.s, s²r², s³r and s⁴."""
    footprints = model.footprints(positions, model.widths[species_index])
    sums = np.empty((5, model.series.n_angles, len(positions)))
    for i, f in enumerate(footprints):
        s = model.scale[i] * f.wy[:, :, None] * f.wx[:, None, :]
        r = -f.gather(residual[i])
        s2 = s * s
        sums[:, i] = [np.einsum("apq,apq->a", s, r), s2.sum(axis=(1, 2)), np.einsum("apq,apq->a", s2, r * r),
                      np.einsum("apq,apq->a", s2 * s, r), np.einsum("apq,apq->a", s2, s2)]
    return sums


def _held_out_test(sums, fold, significance, correlation=1.0):
    """Heights ``(M,)`` of candidate atoms fitted on every projection, and whether each passes
    a cross-validated test: every projection is held out once (``fold`` ``(n,)``: its fold),
    the candidate's height is fitted on the other folds, and the decreases of the held-out
    folds' squared errors on adding it, summed, must exceed ``significance`` times their
    standard deviation. The deviation comes from the residual left once the candidate is added,
    which holds the model's own error as well as the noise, pixel by pixel; ``correlation``
    (:func:`_residual_correlation`) scales its variance for residuals correlated between pixels."""
    per_fold = np.stack([sums[:, fold == k].sum(axis=1) for k in range(fold.max() + 1)], axis=1)  # (5, K, M)
    total = per_fold.sum(axis=1)
    sr, ss, ssrr, sssr, ssss = per_fold
    fit = (total[0] - sr) / np.maximum(total[1] - ss, 1e-30)  # (K, M): without fold k
    gain = np.sum(2 * fit * sr - fit ** 2 * ss, axis=0)
    left = np.maximum(ssrr - 2 * fit * sssr + fit ** 2 * ssss, 0.0)  # sum s² (r - h s)² over fold k
    deviation = 2 * np.sqrt(correlation * np.sum(fit ** 2 * left, axis=0))
    height = total[0] / np.maximum(total[1], 1e-30)
    return height, (height > 0) & (gain > significance * deviation)


def _residual_correlation(residual, sigma, reach=4) -> float:
    """How much a footprint-weighted sum of ``residual`` ``(n, ny, nx)`` pixels varies beyond what
    independent pixels would give: sum over lags (dy, dx) up to ``reach`` pixels of the residual's
    autocorrelation coefficient times exp(-|lag|^2 / (4 sigma^2)), the overlap of two Gaussian
    footprints of width ``sigma`` (pixels) that far apart. About 1 for Poisson noise; more where
    the images were resampled (alignment's sub-pixel shifts), denoised, or the model's error is
    smooth (a film's material outside the box, channelling). Never below 1."""
    centred = residual - residual.mean(axis=(1, 2), keepdims=True)
    shape = tuple(fft.next_fast_len(n + reach, real=True) for n in residual.shape[1:])
    spectrum = fft.rfft2(centred, s=shape, workers=fft_workers())
    power = np.einsum("nyx,nyx->yx", spectrum, spectrum.conj()).real
    autocorrelation = fft.irfft2(power, s=shape, workers=fft_workers())
    if autocorrelation[0, 0] <= 0:
        return 1.0
    lags = np.arange(-reach, reach + 1)
    coefficient = autocorrelation[np.ix_(lags % shape[0], lags % shape[1])] / autocorrelation[0, 0]
    overlap = np.exp(-(lags[:, None] ** 2 + lags[None, :] ** 2) / (4 * sigma ** 2))
    return max(1.0, float(np.sum(coefficient * overlap)))


def _missing_atom_candidates(model: _Model, residual, shortest, extra) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(M, 3)`` Å of possible atoms the model lacks and whether each comes from
    ``extra``: peaks of the back-projected residual (measured - model) and the positions
    ``extra`` (e.g. peaks classified as noise), between 0.75 and 2 ``shortest`` (the shortest
    minimum distance, Å) from the nearest atom of the model (a neighbour pulled into a missing
    atom's place sits nearer than the minimum distance to it; once the atom is added the two are
    pushed apart, :func:`_separate`)."""
    series = model.series.replace(projections=(-residual).astype(np.float32))
    if np.any(series.shifts != 0) or series.tilt_axis != 0:
        series = apply_alignment(series)
    volume = weighted_backprojection(series)
    voxel = series.pixel_size
    volume = ndimage.gaussian_filter(volume, model.widths.min() / voxel)
    peaks = (ndimage.maximum_filter(volume, size=3) == volume) & (volume > 0)
    positions = np.concatenate([voxel_to_specimen(np.argwhere(peaks), volume.shape, voxel), extra])
    from_extra = np.arange(len(positions)) >= len(positions) - len(extra)
    distance = cKDTree(model.positions).query(positions)[0]
    near = (distance >= 0.75 * shortest) & (distance <= 2 * shortest)
    return positions[near], from_extra[near]


def _crowded(model: _Model, height_ratio, fixed, table) -> np.ndarray:
    """Free atoms sharing one atom's signal with a neighbour nearer than their minimum distance
    (``table``, Å per species pair): of such a pair, the one with the lower height ratio when it
    is below 1 (an atom at least as bright as its species is pulled by a mislabelled or missing
    neighbour instead, and stays)."""
    score = np.where(fixed, np.inf, height_ratio)
    return ~fixed & (height_ratio < 1) & ~enforce_min_distance(model.positions, score, table, model.species_index)


def _too_faint(model: _Model, height_ratio, fixed) -> np.ndarray:
    """Free atoms whose own least-squares height is below half the lightest species' height."""
    return ~fixed & (height_ratio * model.heights[model.species_index] < 0.5 * model.heights.min())


def _too_close(model: _Model, height_ratio, fixed, table) -> np.ndarray:
    """Free atoms nearer to another than their minimum distance: of each such pair, the one with
    the smaller own height (a locked atom always stays)."""
    own = np.where(fixed, np.inf, height_ratio * model.heights[model.species_index])
    return ~fixed & ~enforce_min_distance(model.positions, own, table, model.species_index)


def _missing_atoms(model: _Model, residual, table, fixed, significance, extra, fold, history):
    """The atoms the model lacks: positions ``(M, 3)`` Å, species indices ``(M,)`` and whether
    each came from ``extra``.

    A candidate is an atom when its least-squares height exceeds half the lightest species'
    height (the decision boundary between nothing and that species) and it passes
    :func:`_held_out_test` with the projections' ``fold``; it gets the species whose height is nearest
    to its own. Of candidates nearer to each other than their minimum distance the higher
    stays (``table``: minimum distances, Å per species pair); one nearer than that to a locked
    atom is dropped. ``history["reasons"]["rejected"]`` counts the candidates turned down by
    each rule.
    """
    candidates, from_extra = _missing_atom_candidates(model, residual, table.min(), extra)
    light = int(np.argmin(model.heights))
    lightest = np.full(len(candidates), light)
    correlation = _residual_correlation(residual, model.widths[light] / model.series.pixel_size)
    history["residual_correlation"].append(correlation)
    height, significant = _held_out_test(_candidate_sums(model, residual, candidates, lightest), fold,
                                         significance, correlation)
    accept = significant & (height > 0.5 * model.heights.min())
    rejected = history["reasons"]["rejected"]
    rejected["held-out test"] += int(np.count_nonzero(~accept))
    candidates, from_extra, height = candidates[accept], from_extra[accept], height[accept]
    species = np.argmin(np.abs(height[:, None] - model.heights[None]), axis=1)
    keep = enforce_min_distance(candidates, height, table, species)
    pairs = close_pairs(candidates, species, table, model.positions, model.species_index)
    keep[pairs[fixed[pairs[:, 1]], 0]] = False
    rejected["minimum distance"] += int(np.count_nonzero(~keep))
    return candidates[keep], species[keep], from_extra[keep]


#: A projection fits worst when its RMS residual is more than this many times the median ...
MISFIT_RATIO = 1.5
#: ... and this many robust deviations (1.4826 × the median absolute deviation) above it: on clean
#: simulations the worst projection stood 2.1 deviations and 1.14 times above, two blurred or
#: sheared ones 9–23 deviations and 1.7–2.5 times (benchmarks/RESULTS.md §5).
MISFIT_DEVIATIONS = 6.0


def worst_projections(misfit) -> np.ndarray:
    """Indices of the projections that fit the refined model far worse than the others, worst
    first, from ``misfit`` ``(n,)`` (each projection's RMS residual over the median, the
    ``projection_misfit`` of :class:`Refinement`.errors): a bad image (scan drift, blur,
    contamination) or where the image model is poorest (a zone axis, a film's highest tilts)."""
    misfit = np.asarray(misfit, dtype=np.float64)
    deviation = 1.4826 * np.median(np.abs(misfit - np.median(misfit)))
    worst = np.flatnonzero((misfit > MISFIT_RATIO * np.median(misfit))
                           & (misfit - np.median(misfit) > MISFIT_DEVIATIONS * deviation))
    return worst[np.argsort(-misfit[worst])]


def describe_moves_kept(moves_kept: dict) -> str:
    """One line for a person: the fraction of each element's refinement moves that held-out
    projections supported (``errors["moves_kept"]`` of a :class:`Refinement`)."""
    if not moves_kept:
        return ""
    return "moves kept (checked on held-out projections): " + ", ".join(
        f"{e} {f:.0%}" for e, f in moves_kept.items())


def _model_part(model: _Model, index, positions) -> _Model:
    """A model of the projections ``index`` only, with ``model``'s species, heights and widths."""
    return _Model(model.series.subset(index), positions.copy(), model.species_index, model.heights.copy(),
                  model.widths.copy(), model.scale[index].copy(), background_width=model.background_width)


def _fit_linear(model: _Model) -> tuple[np.ndarray, float]:
    """Fit ``model``'s linear parameters and background, as the refinement does, to its atoms
    where they are; returns their species projections and the squared error."""
    species = model.species_projections(model.positions)
    model.solve_linear(species)
    model.update_background(species)
    return species, model.solve_linear(species)


def _parabola_minimum(x, y) -> float:
    """The x of the least of ``y`` sampled at evenly spaced ``x``, refined by the parabola through it
    and its two neighbours (the end point itself at either end)."""
    best = int(np.argmin(y))
    if best in (0, len(y) - 1):
        return float(x[best])
    left, middle, right = y[best - 1:best + 2]
    curvature = left + right - 2 * middle
    offset = 0.5 * (left - right) / curvature if curvature > 0 else 0.0
    return float(x[best] + offset * (x[1] - x[0]))


def _angular_blocks(angles, k) -> list[np.ndarray]:
    """The projections' indices in ``k`` blocks of neighbouring views, ordered by the tilt of each
    beam direction about the y axis (θ for single-axis tilts and nearly single-axis Euler angles);
    ``angles`` ``(n,)`` or ``(n, 3)`` degrees."""
    beam = rotation_matrices(angles)[:, 2]
    return np.array_split(np.argsort(np.arctan2(beam[:, 0], beam[:, 2]), kind="stable"), k)


def _validated_moves(model: _Model, start, fixed, table, iterations, tolerance, progress) -> np.ndarray:
    """The fraction ``(S,)`` of its atoms' moves from ``start`` ``(N, 3)`` Å to ``model.positions``
    that each species keeps, by cross-validation over the projections.

    Where the image model is wrong (channelling along zone axes, a measured probe, a support film,
    an alignment that drifts with the tilt), the positions that fit it best can lie further from
    the atoms than where the tracing put them. Such errors change slowly from one view to the
    next, so a fold of every k-th view shares them with the views it would be judged against
    (on the measured Ta film and on a series whose shifts drift smoothly with the tilt, such folds
    kept most of the moves those errors caused; benchmarks/RESULTS.md §5). So the projections are
    split into up to :data:`_MOVE_FOLDS` folds of neighbouring views (:func:`_angular_blocks`);
    without each fold in turn,
    the free atoms (not ``fixed``) are refined again from ``start`` (a third of ``iterations``:
    enough to point each move), and the left-out fold judges them: its squared error with each
    species' atoms moved a fraction f of those moves (:data:`_MOVE_FRACTIONS`, one species at a
    time, twice over, refined by a parabola). The f
    with the least held-out error, summed over the folds, weighs the move against its scatter:
    f = s / (s + c n) for a move of signal variance s whose noise has variance n with all the
    projections and c n = K / (K - 1) n with the (K - 1) / K of them it was fitted on. With all the
    projections the species keeps s / (s + n) = c f / (c f + 1 - f) of each move. A fit without a
    block of views is also less sure along the directions those views see best, so the check
    keeps a little less than that of moves that are right (on our simulator, Fe 0.89 where the
    interleaved folds kept 0.95 or more).
    """
    n = model.series.n_angles
    k = min(_MOVE_FOLDS, n // 2)
    folds = _angular_blocks(model.series.angles, k)
    moves, judges = [], []
    for i, fold in enumerate(folds):
        fit = _model_part(model, np.setdiff1d(np.arange(n), fold), start)
        _refine_positions(fit, fixed, start, table.min() / 2, max(1, iterations // 3), 0, tolerance,
                          {"r_factor": [], "rms_step": []}, sub_progress(progress, 0.8 * i / k, 0.8 * (i + 1) / k),
                          table, f"checking the moves on held-out views {i + 1} of {k}")
        moves.append(fit.positions - start)
        judges.append(_model_part(model, fold, start))
    errors = {}

    def held_out_error(fractions):
        key = tuple(fractions)
        if key not in errors:
            step = fractions[model.species_index][:, None]
            for judge, move in zip(judges, moves):
                judge.positions = start + step * move
            errors[key] = sum(_fit_linear(judge)[1] for judge in judges)
        return errors[key]

    fractions = np.ones(len(model.heights))
    n_species = len(fractions)
    for sweep in range(1 if n_species == 1 else 2):
        for s in range(n_species):
            report(progress, 0.8 + 0.2 * (sweep * n_species + s) / (2 * n_species),
                   "checking the moves on held-out projections")
            trials = [held_out_error(np.where(np.arange(n_species) == s, f, fractions)) for f in _MOVE_FRACTIONS]
            fractions[s] = _parabola_minimum(_MOVE_FRACTIONS, trials)
    c = k / (k - 1)
    return c * fractions / (c * fractions + 1 - fractions)


def _partial_moves(start, final, fraction, species_index, fixed, table) -> np.ndarray:
    """Positions ``(N, 3)`` Å a ``fraction`` ``(N,)`` of the way from ``start`` to ``final``, pairs
    nearer than their minimum distance (``table``) pushed apart (:func:`_separate`); an atom still
    too near another after that goes all the way to ``final``, with its partner, until no pair is
    (or every atom of the pairs left is at ``final``, as the caller's locked atoms may be)."""
    positions = _separate(start + fraction[:, None] * (final - start), species_index, fixed, table, np.zeros(0, int))
    while True:
        near = np.unique(close_pairs(positions, species_index, table))
        near = near[np.any(positions[near] != final[near], axis=1)]
        if len(near) == 0:
            return positions
        positions[near] = final[near]


def _default_column(column, n):
    """``n`` values for new rows of a feature column: False, -1, NaN or "" by its type."""
    kind = column.dtype.kind
    fill = {"b": False, "i": -1, "u": 0, "f": np.nan}.get(kind, "")
    return np.full(n, fill, dtype=column.dtype if kind in "biuf" else object)


def refine_atoms(series: TiltSeries, atoms: AtomModel, *, elements=None, iterations=15, width_every=3,
                 tolerance=0.002, complete_rounds=4, min_distance=None, significance=1.5, folds=4,
                 background_width=4.0, validate_moves=True, seed=0, progress=None) -> Refinement:
    """Refine atom positions, per-species heights and widths against the measured projections.

    series : the tilt series the atoms come from, with its alignment (``shifts`` in pixels,
        ``tilt_axis`` in degrees; an aligned series has both zero). Positions are specimen
        (x, y, z) Å about the rotation centre, as in reconstruction and tracing.
    atoms : classified atoms; non-atoms (species "") are left out of the model and unmoved;
        atoms whose feature ``locked`` or ``placed`` (put there by hand, :func:`napari_aet.edit.place_atoms`)
        is True stay where they are and are never removed.
    elements : element order for the report, e.g. ``"Fe,Pt"`` or ``("Fe", "Pt")`` (default: the
        species present).
    iterations : position updates at most per pass; a pass stops earlier when the RMS step
        < ``tolerance`` Å. No atom moves further than half the shortest minimum distance from
        where its cycle (below) started: an atom pulled further is explaining a neighbour the
        model lacks, which the completion step looks for instead.
    width_every : the species widths are searched every this many iterations (0 = fixed widths
        after the initial choice).
    complete_rounds : at most this many rounds of completion, each followed by a refinement
        pass (at least one pass runs). A round settles the positions (a third of the iterations,
        within an eighth of the shortest minimum distance), then adds the atoms the model lacks
        (flagged ``refine_added``): peaks of the back-projected residual (measured - model) and
        input non-atom peaks, between 0.75 and 2 times the shortest minimum distance from the
        model, whose least-squares height exceeds half the lightest species' height and that
        pass a cross-validated test: fitted without each of ``folds`` folds of the projections
        in turn, they lower the held-out folds' error by more than ``significance`` standard
        deviations of that decrease (estimated from the residual, which holds the model's error
        as well as the noise). No atom is added nearer to another
        than their minimum distance: a free neighbour nearer than that is moved out to it (it was
        pulled into the missing atom's place), a candidate that near a locked atom is dropped.
        Rounds stop once one adds fewer than 0.5 % of the model's atoms. After the last pass,
        free atoms the data do not support become non-atoms (kept, flagged ``refine_removed``),
        each kind followed by one more pass: first the weaker of two atoms nearer than their
        minimum distance when it is fainter than its species, then atoms whose own height is
        below that half. Completion and removal then alternate (at most 3 cycles, each starting
        from the positions the last one ended at) until a cycle adds and removes fewer than
        0.5 % of the atoms together: a removed atom may have hidden a missing one. The removed
        atoms' places join the input's non-atoms as candidates. Finally, of any two free atoms
        still nearer than their minimum distance the one with the smaller own height is removed.
        0 = positions, heights and widths only.
    min_distance : shortest distance (Å) two atoms may have: None = the physical table of
        :func:`napari_aet.elements.min_distance_table` (a fraction of the sum of the two
        elements' radii); one number for every pair; or a mapping of pairs (``"Fe-Pt"``, ``"Pt"``)
        to Å overriding the table for those pairs.
    folds : the projections are split into this many folds at random (anew each round, with
        ``seed``) for the cross-validated test of each completion round's candidates.
    background_width : Å; the background may vary across each projection on this scale (the
        residual low-passed with a Gaussian of this sigma): probe tails, a support film, a slow
        detector drift. It must stay well above the atoms' width (sharp residuals are atoms);
        0 = one constant level per projection.
    validate_moves : finally, each species keeps only the part of its atoms' moves from their
        input positions that held-out projections support (:func:`_validated_moves`; added atoms
        keep theirs); the kept fractions are ``errors["moves_kept"]``. Needs 8 projections or
        more; with fewer, or False, every move is kept and ``moves_kept`` is empty.
    seed : for the held-out projections.
    progress : ``progress(fraction, message)``; raise :class:`~napari_aet.progress.Cancelled` to stop.

    Every addition, removal and rejected candidate is counted by reason in
    ``errors["reasons"]`` (``added``: :data:`_ADDED`, ``removed``: :data:`_REMOVED`,
    ``rejected``: :data:`_REJECTED`), over all rounds, and the output atoms carry the reason
    they were added or removed in the feature ``refine_reason``. ``errors["pairs_at_minimum_distance"]``
    counts the final pairs within 1 % above their minimum distance: held there against the data,
    which pulled them nearer (a pile-up in g(r) at that distance).
    """
    real, present = check_inputs(series, atoms, None if elements is None else check_elements(elements))
    if int(iterations) != iterations or iterations < 0:
        raise InputError(f"iterations must be a whole number of 0 or more, got {iterations}")
    if int(folds) != folds or not 2 <= folds <= series.n_angles:
        raise InputError(f"folds must be a whole number from 2 to the number of projections "
                         f"({series.n_angles}), got {folds}")
    table = min_distance_table(present, min_distance)
    shortest = float(table.min())
    rows = np.flatnonzero(real)  # output row of each model atom
    fixed = (atoms.features["locked"].astype(bool) | np.asarray(atoms.features.get("placed", False), bool))[real]
    model = _Model(series, atoms.positions[real].copy(), np.array([present.index(s) for s in atoms.species[real]]),
                   np.ones(len(present)), np.ones(len(present)), np.ones(series.n_angles),
                   background_width=background_width)
    passes = max(1, int(complete_rounds))
    origin = model.positions.copy()
    candidates = atoms.positions[~real]  # the input's non-atoms, and later the removed atoms

    start_fold = np.random.default_rng(seed).permutation(series.n_angles) % int(folds)  # one for every width

    def missing(trial, residual):  # what a completion round would add, without counting it
        scratch = {"residual_correlation": [], "reasons": {"rejected": dict.fromkeys(_REJECTED, 0)}}
        return _missing_atoms(trial, residual, table, fixed, significance, candidates, start_fold, scratch)[:2]

    _choose_width(model, sub_progress(progress, 0.0, 0.1), missing if complete_rounds else None)
    history = {"r_factor": [], "rms_step": [], "added": [], "removed": [], "residual_correlation": [],
               "reasons": {"added": dict.fromkeys(_ADDED, 0), "removed": dict.fromkeys(_REMOVED, 0),
                           "rejected": dict.fromkeys(_REJECTED, 0)}}
    reasons = history["reasons"]
    removed, n_added = np.zeros(len(atoms), bool), 0
    reason = np.full(len(atoms), "", dtype=object)  # why each input atom was removed, or each added one added
    added_reason = np.zeros(0, dtype=object)
    rng = np.random.default_rng(seed)
    cycles = _CYCLES if complete_rounds else 1
    spans = 1 - 0.3 ** np.arange(cycles + 1)  # progress per cycle: most of the work is in the first
    spans = 0.1 + 0.8 * spans / spans[-1]

    def drop_atoms(drop, why):
        nonlocal rows, fixed, origin, added_reason, candidates
        candidates = np.concatenate([candidates, model.positions[drop]])
        removed[rows[drop & (rows < len(atoms))]] = True
        reason[rows[drop & (rows < len(atoms))]] = why
        reasons["removed"][why] += int(np.count_nonzero(drop))
        added_reason = added_reason[~drop[rows >= len(atoms)]]
        rows, fixed, origin = rows[~drop], fixed[~drop], origin[~drop]
        model.positions, model.species_index = model.positions[~drop], model.species_index[~drop]

    for cycle in range(cycles):
        part = sub_progress(progress, spans[cycle], spans[cycle + 1])
        changed = 0
        for k in range(passes):
            stage = sub_progress(part, 0.9 * k / passes, 0.9 * (k + 1) / passes)
            if k < complete_rounds:  # settle the positions near where they are, then look for missing atoms
                _refine_positions(model, fixed, origin, shortest / 8, max(1, iterations // 3), 0, tolerance,
                                  history, sub_progress(stage, 0.0, 0.3), table,
                                  f"completion round {k + 1}: settling positions")
                report(stage, 0.3, "looking for missing and spurious atoms")
                species = model.species_projections(model.positions)
                model.update_background(species)
                model.solve_linear(species)
                residual = model.combine(species) - model.data
                fold = rng.permutation(series.n_angles) % int(folds)
                added, added_species, from_extra = _missing_atoms(model, residual, table, fixed, significance,
                                                                  candidates, fold, history)
                why = np.where(from_extra, _ADDED[1], _ADDED[0])
                for name in _ADDED:
                    reasons["added"][name] += int(np.count_nonzero(why == name))
                history["added"].append(len(added))
                changed += len(added)
                rows = np.concatenate([rows, len(atoms) + n_added + np.arange(len(added))])
                added_reason = np.concatenate([added_reason, why.astype(object)])
                n_added += len(added)
                fixed = np.concatenate([fixed, np.zeros(len(added), bool)])
                before = close_pairs(model.positions, model.species_index, table)
                model.positions = np.concatenate([model.positions, added])
                origin = np.concatenate([origin, added])
                model.species_index = np.concatenate([model.species_index, added_species])
                # a neighbour pulled into an added atom's place and the added atom move apart
                model.positions = _separate(model.positions, model.species_index, fixed, table,
                                            _pair_keys(before, len(model.positions)))
            species, height_ratio = _refine_positions(model, fixed, origin, shortest / 2, iterations, width_every,
                                                      tolerance, history, sub_progress(stage, 0.35, 1.0), table,
                                                      f"refining positions (pass {k + 1})")
            if complete_rounds and len(added) < _COMPLETE * len(model.positions):
                break
        n_dropped = 0
        judges = ((_REMOVED[0], partial(_crowded, table=table)), (_REMOVED[1], _too_faint)) if complete_rounds else ()
        for j, (why, judge) in enumerate(judges):
            # atoms the refined model does not support, judged only now (a misplaced atom's height is
            # underestimated) and one kind at a time (a crowding atom takes its neighbours' signal)
            drop = judge(model, height_ratio, fixed)
            if not np.any(drop):
                continue
            n_dropped += int(np.count_nonzero(drop))
            drop_atoms(drop, why)
            species, height_ratio = _refine_positions(model, fixed, origin, shortest / 2, iterations, 0, tolerance,
                                                      history, sub_progress(part, 0.9 + 0.05 * j, 0.95 + 0.05 * j),
                                                      table, f"refining positions after removing {why} atoms")
        if complete_rounds:
            history["removed"].append(n_dropped)
        if changed + n_dropped < _COMPLETE * len(model.positions):
            break
        origin = model.positions.copy()  # the next cycle's moves are bounded from here
    if complete_rounds:  # no pair nearer than physics allows, whatever drifted together in the last pass
        drop = _too_close(model, height_ratio, fixed, table)
        if np.any(drop):
            drop_atoms(drop, _REMOVED[2])
            species = model.species_projections(model.positions)
            model.solve_linear(species)
            height_ratio = model.gradient(model.combine(species) - model.data)[2]
            history["removed"][-1] += int(np.count_nonzero(drop))
    history["moves_kept"] = {}  # unchecked
    if validate_moves and series.n_angles >= 2 * _MOVE_MIN_FOLDS:
        added = rows >= len(atoms)
        start = model.positions.copy()
        start[~added] = atoms.positions[rows[~added]]
        kept = _validated_moves(model, start, fixed | added, table, iterations, tolerance,
                                sub_progress(progress, 0.9, 0.97))
        model.positions = _partial_moves(start, model.positions, kept[model.species_index], model.species_index,
                                         fixed, table)
        species = _fit_linear(model)[0]
        height_ratio = model.gradient(model.combine(species) - model.data)[2]
        history["moves_kept"] = dict(zip(present, kept.tolist()))
    residual = model.combine(species) - model.data
    history["r_factor"].append(model.r_factor(residual))
    history["pairs_at_minimum_distance"] = len(close_pairs(model.positions, model.species_index,
                                                           table * (1 + _AT_WALL)))
    misfit = np.sqrt(np.mean(residual.astype(np.float64) ** 2, axis=(1, 2)))
    history["projection_misfit"] = (misfit / np.median(misfit)).tolist()
    report(progress, 0.97, "building the refined model")
    new = rows >= len(atoms)  # added atoms that stayed, numbered after the input's
    rows[new] = len(atoms) + np.arange(np.count_nonzero(new))
    n_added = int(np.count_nonzero(new))
    reason = np.concatenate([reason, np.full(n_added, "", dtype=object)])
    reason[rows[new]] = added_reason
    refined = _refined_model(atoms, model, rows, removed, n_added, present, height_ratio, reason)
    report(progress, 1.0, f"refined {len(model.positions)} atoms ({n_added} added, "
                          f"{int(np.count_nonzero(removed))} removed)")
    return Refinement(refined, dict(zip(present, model.heights.tolist())), dict(zip(present, model.widths.tolist())),
                      model.scale, model.background, history)


def _refined_model(atoms: AtomModel, model: _Model, rows, removed, n_added, present, height_ratio,
                   reason) -> AtomModel:
    """The input atoms with the model's positions, removed atoms turned into non-atoms, and the
    added atoms appended; features ``refine_shift``, ``height_ratio``, ``refine_added``,
    ``refine_removed`` (NaN / False where they do not apply) and ``refine_reason`` (``reason``:
    why an atom was added or removed, "" otherwise)."""
    n = len(atoms)
    features = {name: np.concatenate([column, _default_column(column, n_added)])
                for name, column in atoms.features.items()}
    positions = np.concatenate([atoms.positions, np.zeros((n_added, 3))])
    positions[rows] = model.positions
    species = np.concatenate([atoms.species, np.full(n_added, "", dtype=object)])
    species[rows] = np.array(present, dtype=object)[model.species_index]
    removed = np.concatenate([removed, np.zeros(n_added, bool)])
    species[removed] = ""
    if "non_atom" in features:
        features["non_atom"] = species == ""
    if "class_index" in features:
        features["class_index"][removed] = 0
    shift = np.full(n + n_added, np.nan)
    shift[:n] = np.linalg.norm(positions[:n] - atoms.positions, axis=1)
    ratio = np.full(n + n_added, np.nan)
    ratio[rows] = height_ratio
    added = np.arange(n + n_added) >= n
    return AtomModel(positions, species, {**features, "refine_shift": shift, "height_ratio": ratio,
                                          "refine_added": added, "refine_removed": removed,
                                          "refine_reason": reason})
