"""Rigid registration of one atom model onto another, without an initial guess.

Both models have a fitted lattice (:func:`~napari_aet.analysis.lattice.fit_lattice`). If the moving
particle is the fixed one rotated by Q, its lattice rotation is Q·R_fixed·G for one of the 24 cubic
symmetries G, so the candidate rotations onto the fixed frame are R_fixed·G·R_movingᵀ. Each
candidate starts from the centroid difference and is improved by trimmed iterative closest points
(mutual nearest neighbours within a shrinking distance, median translation); the lattice-vector
ambiguity of the translation is resolved by trying the 12 (fcc) or 8 (bcc) nearest-neighbour
shifts. The candidate matching most atoms of the same element wins, and rotation and translation
are refined by least squares (Kabsch) on its matched pairs, dropping pairs more than three median
distances apart. Atoms that changed (surface, nuclei) simply stay unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..model import AtomModel, InputError
from .lattice import Lattice, ideal_bonds, cubic_rotations, kabsch


@dataclass
class RigidTransform:
    """x_fixed = rotation @ x_moving + translation (Å). residual : rms distance (Å) of the matched
    atoms after the transform; n_matched : how many pairs; matched_fraction : of the moving atoms."""

    rotation: np.ndarray
    translation: np.ndarray
    residual: float = 0.0
    n_matched: int = 0
    matched_fraction: float = 0.0

    def apply(self, positions) -> np.ndarray:
        return np.asarray(positions) @ self.rotation.T + self.translation

    @property
    def angle(self) -> float:
        """Rotation angle in degrees."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1) / 2, -1, 1))))

    def to_dict(self) -> dict:
        return {"rotation": self.rotation.tolist(), "translation_A": self.translation.tolist(),
                "rotation_angle_deg": self.angle, "residual_A": self.residual, "n_matched": self.n_matched,
                "matched_fraction": self.matched_fraction}


class _Target:
    """The fixed atoms with their k-d tree, for many queries."""

    def __init__(self, atoms: AtomModel):
        self.positions, self.species, self.tree = atoms.positions, atoms.species, cKDTree(atoms.positions)

    def pairs(self, moved, limit):
        """Mutual nearest pairs (moved index, fixed index) at most ``limit`` apart."""
        distance, nearest = self.tree.query(moved, distance_upper_bound=limit)
        found = np.flatnonzero(np.isfinite(distance))
        _, back = cKDTree(moved).query(self.positions[nearest[found]])
        mutual = back == found
        return found[mutual], nearest[found[mutual]]

    def translation(self, moved, translation, r1):
        """Median translation of mutual nearest pairs, over shrinking distance limits."""
        for limit in (0.7 * r1, 0.5 * r1, 0.3 * r1):
            i, j = self.pairs(moved + translation, limit)
            if len(i):
                translation = translation + np.median(self.positions[j] - moved[i] - translation, axis=0)
        return translation

    def score(self, moved, species, limit):
        """Matched pairs of the same element."""
        i, j = self.pairs(moved, limit)
        return int(np.count_nonzero(species[i] == self.species[j]))


def register_atoms(moving: AtomModel, fixed: AtomModel, moving_lattice: Lattice, fixed_lattice: Lattice, *,
                   max_candidates_atoms=4000, seed=0) -> RigidTransform:
    """The rigid transform carrying ``moving`` onto ``fixed`` (see the module docstring).

    Parameters
    ----------
    moving, fixed : atom models (x, y, z Å) of the same particle at two times.
    moving_lattice, fixed_lattice : their fitted lattices (same kind).
    max_candidates_atoms : the candidates are compared on at most this many moving atoms (a random
        subset drawn with ``seed``); the winner is refined on all atoms.
    """
    if moving_lattice.kind != fixed_lattice.kind:
        raise InputError(f"cannot register an {moving_lattice.kind} particle onto an {fixed_lattice.kind} one")
    if len(moving) < 4 or len(fixed) < 4:
        raise InputError("registration needs at least 4 atoms at each time")
    r1 = fixed_lattice.r1
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(moving), size=min(max_candidates_atoms, len(moving)), replace=False)
    sub, sub_species = moving.positions[pick], moving.species[pick]
    target = _Target(fixed)
    centroid = fixed.positions.mean(axis=0)
    candidates = []
    for symmetry in cubic_rotations():
        rotation = fixed_lattice.rotation @ symmetry @ moving_lattice.rotation.T
        moved = sub @ rotation.T
        translation = target.translation(moved, centroid - moving.positions.mean(axis=0) @ rotation.T, r1)
        candidates.append((target.score(moved + translation, sub_species, 0.3 * r1), rotation, translation))
    _, rotation, start = max(candidates, key=lambda c: c[0])
    moved = sub @ rotation.T
    steps = np.vstack([np.zeros(3), ideal_bonds(fixed_lattice.kind) @ fixed_lattice.rotation.T * r1])
    shifted = [target.translation(moved, start + step, r1) for step in steps]
    translation = max(shifted, key=lambda t: target.score(moved + t, sub_species, 0.3 * r1))
    pos = moving.positions
    for _ in range(4):
        i, j = target.pairs(pos @ rotation.T + translation, 0.5 * r1)
        distance = np.linalg.norm(pos[i] @ rotation.T + translation - fixed.positions[j], axis=1)
        keep = distance <= max(3 * np.median(distance), 1e-3)
        a, b = pos[i[keep]], fixed.positions[j[keep]]
        rotation = kabsch(a - a.mean(axis=0), b - b.mean(axis=0))
        translation = b.mean(axis=0) - a.mean(axis=0) @ rotation.T
    i, j = target.pairs(pos @ rotation.T + translation, 0.5 * r1)
    residual = np.linalg.norm(pos[i] @ rotation.T + translation - fixed.positions[j], axis=1)
    return RigidTransform(rotation, translation, float(np.sqrt(np.mean(residual ** 2))) if len(i) else np.nan,
                          len(i), len(i) / len(moving))
