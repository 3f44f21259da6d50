"""How precisely the projections fix the refined atoms: half-set refinement.

The refined atoms are refined again — positions, each species' height and width, per-projection
scale and background; no completion, no move check — once against the even and once against the
odd projections, both starting from the refined positions. Where the noise is independent
between projections, the two halves' positions differ by twice the noise-limited error of a
refinement on all of them, so half their difference estimates that error, per atom and axis,
without a ground truth (the half-set idea of cryo-EM's Fourier shell correlation, applied to
positions). On the simulated sample it matches the true RMS error (benchmarks/RESULTS.md §5).

What it cannot see is error both halves share: an atom missing, spurious or of the wrong species,
and image-model error common to every projection (channelling along a zone axis, a support film,
a measured probe). It is a lower bound on the error, not the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import ATOMIC_NUMBERS, AtomModel, InputError, TiltSeries
from .progress import sub_progress

#: Fewest projections for the estimate: each half needs enough views to fix three coordinates.
MIN_ANGLES = 8
_AXES = ("x", "y", "z")


@dataclass
class PositionPrecision:
    """The half-set estimate of the refined positions' noise-limited error.

    per_element : element -> ``{"x", "y", "z", "3d"}``: RMS error in pm over its atoms, and
        ``"atoms"``: how many (locked and hand-placed atoms do not move, so do not count).
    atom_error : ``(N,)`` Å, per input atom, half the distance between its two half-set positions
        (an estimate of its 3D error, scattered like one draw of it); NaN for non-atoms and fixed atoms.
    """

    per_element: dict
    atom_error: np.ndarray


def describe_precision(per_element: dict) -> str:
    """One line for a person from :attr:`PositionPrecision.per_element`, e.g.
    "Fe 17 pm (x 7, y 6, z 14), Pt 3 pm (x 2, y 1, z 2)"."""
    return ", ".join(f"{element} {v['3d']:.0f} pm (" + ", ".join(f"{a} {v[a]:.0f}" for a in _AXES) + ")"
                     for element, v in per_element.items())


def half_set_precision(series: TiltSeries, atoms: AtomModel, *, elements=None, iterations=15, width_every=3,
                       background_width=4.0, min_distance=None, progress=None) -> PositionPrecision:
    """Estimate the error of refined ``atoms`` (x, y, z Å about the rotation centre) from the tilt
    ``series`` they were refined against (its alignment included), by refining them again against
    the even and the odd projections in tilt order (:meth:`TiltSeries.half_sets`;
    :func:`napari_aet.refine.refine_atoms` with
    ``complete_rounds=0``, ``validate_moves=False`` and the given ``iterations``, ``width_every``,
    ``background_width`` and ``min_distance``). Needs :data:`MIN_ANGLES` projections or more.
    Progress messages start "precision, half set 1 of 2: " (then 2 of 2), so that the half-set
    refinements' counts are not taken for those of the refinement itself.
    """
    from .refine import refine_atoms

    if series.n_angles < MIN_ANGLES:
        raise InputError(f"the half-set precision needs at least {MIN_ANGLES} projections, got {series.n_angles}")
    options = {"elements": elements, "iterations": iterations, "width_every": width_every,
               "background_width": background_width, "min_distance": min_distance, "complete_rounds": 0,
               "validate_moves": False}
    halves = [refine_atoms(series.subset(half), atoms, **options,
                           progress=sub_progress(progress, start / 2, (start + 1) / 2,
                                                 f"precision, half set {start + 1} of 2: ")).atoms.positions
              for start, half in enumerate(series.half_sets())]
    difference = (halves[0] - halves[1]) / 2
    fixed = np.zeros(len(atoms), bool)
    for name in ("locked", "placed"):
        fixed |= np.asarray(atoms.features.get(name, fixed), bool)
    moving = (atoms.species != "") & ~fixed
    atom_error = np.where(moving, np.linalg.norm(difference, axis=1), np.nan)
    per_element = {}
    for element in sorted(set(atoms.species[moving].tolist()), key=ATOMIC_NUMBERS.get):
        own = difference[moving & (atoms.species == element)]
        rms = 100 * np.sqrt(np.mean(own ** 2, axis=0))
        per_element[element] = {**dict(zip(_AXES, rms.tolist())), "3d": float(np.sqrt(np.sum(rms ** 2))),
                                "atoms": len(own)}
    return PositionPrecision(per_element, atom_error)
