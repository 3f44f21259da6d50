"""Fit an fcc or bcc lattice to an atom model without an initial guess.

* Nearest-neighbour distance r₁: the median of the pair distances in the first shell (pairs
  shorter than 1.2 × the median nearest-neighbour distance) — the first peak of the pair
  distribution function. Lattice constant a = √2·r₁ (fcc) or 2r₁/√3 (bcc) unless given.
* Orientation: every atom's bonds to its first-shell neighbours are compared with the ideal bond
  directions (fcc ⟨110⟩, bcc ⟨111⟩). Candidate rotations come from pairs of bonds of single atoms;
  the one aligning most bonds within 10° wins and is refined by least squares (Kabsch) on all
  aligned bonds. Of the 24 cubic-symmetry equivalents the rotation closest to the identity is
  kept, so crystal axis k is the one nearest specimen axis k.
* Grains: atoms whose bonds fit the orientation form a grain; the rest are fitted again, up to
  ``max_grains`` times. Each atom also gets its own orientation from its bonds (``misorientation``:
  angle to its grain's orientation, degrees).
* Sites: positions are rounded to the nearest lattice site (integer coordinates in units of a/2 in
  the grain's crystal frame); the origin (and a, unless given) is refined by least squares.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations, product

import numpy as np
from scipy.spatial import cKDTree

from ..model import AtomModel, InputError

KINDS = ("fcc", "bcc")
#: Outer limit of the first neighbour shell in units of r₁ (halfway to the second shell).
SHELL_LIMIT = {"fcc": 1.2, "bcc": 1.07}
#: Largest angle (degrees) between a bond and an ideal bond direction for the bond to count as aligned.
ALIGNED_DEG = 10.0
#: Smallest share of aligned bonds for a lattice to fit.
MIN_ALIGNED = 0.5


class LatticeMisfit(InputError):
    """The lattice ``kind`` does not fit: only ``fraction`` of the bonds are aligned (< :data:`MIN_ALIGNED`)."""

    def __init__(self, kind, fraction):
        self.kind, self.fraction = kind, fraction
        article = "an" if kind == "fcc" else "a"
        super().__init__(f"{article} {kind} lattice does not fit these atoms: only {fraction:.0%} of the "
                         f"nearest-neighbour bonds lie within {ALIGNED_DEG:g}° of {article} {kind} bond direction "
                         "(expected most); try the other lattice, lattice \"none\" for an amorphous sample "
                         "(pair distribution, coordination and Q4/Q6 without a lattice), or check the atom model")


def ideal_bonds(kind) -> np.ndarray:
    """Unit vectors of the first-shell bonds in the crystal frame, ``(12, 3)`` fcc or ``(8, 3)`` bcc."""
    if kind == "fcc":
        bonds = {tuple(np.roll(v, k)) for v in product((1, -1), (1, -1), (0,)) for k in range(3)}
        return np.array(sorted(bonds), float) / np.sqrt(2)
    return np.array(list(product((1, -1), repeat=3)), float) / np.sqrt(3)


def cubic_rotations() -> np.ndarray:
    """The 24 proper rotations of the cube, ``(24, 3, 3)``."""
    mats = []
    for perm in permutations(range(3)):
        for signs in product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                mats.append(m)
    return np.array(mats)


def nearest_neighbour_distance(positions) -> float:
    """r₁ (Å): median pair distance in the first neighbour shell (the first peak of the PDF)."""
    if len(positions) < 4:
        raise InputError(f"{len(positions)} atoms are too few to fit a lattice: need at least 4")
    dist, _ = cKDTree(positions).query(positions, k=min(13, len(positions)))
    first = dist[:, 1:]
    return float(np.median(first[first < 1.2 * np.median(first[:, 0])]))


def kabsch(source, target, weights=None) -> np.ndarray:
    """Rotation R (3×3, det +1) minimising Σ w |R sᵢ − tᵢ|²; batched when the inputs are
    ``(..., n, 3)``."""
    w = np.ones(source.shape[:-1]) if weights is None else weights
    h = np.einsum("...n,...ni,...nj->...ij", w, target, source)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, 2] *= d[..., None]
    return u @ vt


@dataclass
class Lattice:
    """A fitted lattice; one rotation and origin per grain.

    kind : "fcc" or "bcc". constant : lattice constant a (Å). r1 : nearest-neighbour distance (Å).
    rotations : ``(n_grains, 3, 3)``; column k is crystal axis k in the specimen frame (x, y, z).
    origins : ``(n_grains, 3)`` Å, a lattice site of each grain.
    aligned_fraction : share of first-shell bonds within 10° of an ideal bond direction.
    rms_displacement : root-mean-square distance of the atoms from their sites (Å).
    """

    kind: str
    constant: float
    r1: float
    rotations: np.ndarray
    origins: np.ndarray
    aligned_fraction: float
    rms_displacement: float

    @property
    def rotation(self) -> np.ndarray:
        """The first (largest) grain's rotation."""
        return self.rotations[0]

    def site_positions(self, sites, grain) -> np.ndarray:
        """Positions (Å, (x, y, z)) of integer sites (units of a/2) of the given grains."""
        return self.origins[grain] + np.einsum("nij,nj->ni", self.rotations[grain], sites) * self.constant / 2

    @classmethod
    def from_dict(cls, d) -> Lattice:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(d["kind"], float(d["lattice_constant_A"]), float(d["nearest_neighbour_A"]),
                       np.array(d["rotations"], float).reshape(-1, 3, 3), np.array(d["origins_A"], float).reshape(-1, 3),
                       float(d["aligned_bond_fraction"]), float(d["rms_displacement_A"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"lattice record is incomplete or malformed ({exc}): expected the output of "
                             "napari-aet analyze") from None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lattice_constant_A": self.constant, "nearest_neighbour_A": self.r1,
                "rotations": self.rotations.tolist(), "origins_A": self.origins.tolist(),
                "aligned_bond_fraction": self.aligned_fraction, "rms_displacement_A": self.rms_displacement}


def first_shell(positions, r1, kind):
    """Neighbour indices ``(N, k)`` (N where absent) and bond vectors ``(N, k, 3)`` (Å) of the first shell."""
    k = 12 if kind == "fcc" else 8
    dist, idx = cKDTree(positions).query(positions, k=min(k + 1, len(positions)),
                                         distance_upper_bound=SHELL_LIMIT[kind] * r1)
    idx = idx[:, 1:]
    present = np.isfinite(dist[:, 1:])
    idx = np.where(present, idx, len(positions))
    padded = np.vstack([positions, np.full((1, 3), np.nan)])
    bonds = padded[idx] - positions[:, None]
    return idx, np.where(present[..., None], bonds, 0.0), present


def _best_alignment(rotation, bonds, ideal):
    """For bonds ``(..., 3)`` (unit): cosine to the nearest rotated ideal direction and its index."""
    cos = bonds @ (rotation @ ideal.T)
    best = np.argmax(cos, axis=-1)
    return np.take_along_axis(cos, best[..., None], -1)[..., 0], best


def _seed_rotations(bonds, present, ideal, n_seeds, rng):
    """Candidate rotations from pairs of bonds of up to ``n_seeds`` well-coordinated atoms."""
    counts = present.sum(axis=1)
    atoms = np.flatnonzero(counts >= min(len(ideal), counts.max()) - 1)
    atoms = rng.choice(atoms, size=min(n_seeds, len(atoms)), replace=False)
    unit = bonds[atoms] / np.maximum(np.linalg.norm(bonds[atoms], axis=-1, keepdims=True), 1e-12)
    target_cos = 0.5 if len(ideal) == 12 else 1 / 3  # angle between neighbouring bonds: 60° fcc, 70.5° bcc
    e1 = ideal[0]
    e2 = ideal[np.argmin(np.abs(ideal @ e1 - target_cos))]
    first = unit[:, 0]
    cos = np.einsum("ni,nki->nk", first, unit)
    cos[~present[atoms]] = 10
    second = unit[np.arange(len(atoms)), np.argmin(np.abs(cos - target_cos), axis=1)]
    target = np.stack([first, second, np.cross(first, second)], axis=1)
    source = np.broadcast_to(np.stack([e1, e2, np.cross(e1, e2)]), target.shape)
    return kabsch(source, target)


def _fit_orientation(bonds, present, ideal, rng, n_seeds=64):
    """The rotation aligning most bonds, refined by least squares; and each atom's aligned-bond share."""
    unit = bonds / np.maximum(np.linalg.norm(bonds, axis=-1, keepdims=True), 1e-12)
    sample = unit[present]
    sample = sample[rng.choice(len(sample), size=min(6000, len(sample)), replace=False)]
    seeds = _seed_rotations(bonds, present, ideal, n_seeds, rng)
    cos_limit = np.cos(np.radians(ALIGNED_DEG))
    scores = [(_best_alignment(r, sample, ideal)[0] > cos_limit).sum() for r in seeds]
    rotation = seeds[int(np.argmax(scores))]
    for _ in range(3):
        cos, best = _best_alignment(rotation, unit, ideal)
        ok = present & (cos > cos_limit)
        rotation = kabsch(ideal[best[ok]], unit[ok])
    cos, best = _best_alignment(rotation, unit, ideal)
    aligned = present & (cos > cos_limit)
    return canonical_rotation(rotation), aligned


def canonical_rotation(rotation) -> np.ndarray:
    """Of the 24 cubic equivalents ``rotation @ g`` the one closest to the identity."""
    candidates = rotation @ cubic_rotations()
    return candidates[int(np.argmax(np.trace(candidates, axis1=1, axis2=2)))]


def round_to_sites(crystal, kind) -> np.ndarray:
    """Nearest lattice sites (integers, units of a/2) of crystal-frame coordinates ``(N, 3)`` in a/2.

    fcc sites have an even coordinate sum; bcc sites are all even or all odd.
    """
    if kind == "fcc":
        sites = np.rint(crystal)
        odd = sites.sum(axis=1) % 2 != 0
        error = crystal - sites
        worst = np.argmax(np.abs(error), axis=1)
        rows = np.flatnonzero(odd)
        sites[rows, worst[rows]] += np.where(error[rows, worst[rows]] > 0, 1, -1)
        return sites.astype(np.int64)
    even = 2 * np.rint(crystal / 2)
    odd = 2 * np.rint((crystal - 1) / 2) + 1
    use_odd = np.linalg.norm(crystal - odd, axis=1) < np.linalg.norm(crystal - even, axis=1)
    return np.where(use_odd[:, None], odd, even).astype(np.int64)


def _fit_sites(positions, rotation, origin, constant, fit_constant, kind):
    """Sites, origin and lattice constant by alternating rounding and least squares."""
    for _ in range(3):
        sites = round_to_sites((positions - origin) @ rotation / (constant / 2), kind)
        ideal = sites @ rotation.T / 2  # site positions in units of a, before the origin
        if fit_constant:
            design = np.hstack([np.tile(np.eye(3), (len(sites), 1)), ideal.reshape(-1, 1)])
            solution = np.linalg.lstsq(design, positions.reshape(-1), rcond=None)[0]
            origin, constant = solution[:3], float(solution[3])
        else:
            origin = np.mean(positions - ideal * constant, axis=0)
    return sites, origin, constant


def fit_lattice(atoms: AtomModel, *, kind="fcc", lattice_constant=None, max_grains=4, min_grain=50,
                seed=0) -> tuple[AtomModel, Lattice]:
    """Fit an fcc or bcc lattice (orientation, origin, constant; several grains) to ``atoms``.

    Parameters
    ----------
    atoms : positions (x, y, z) in Å.
    kind : "fcc" or "bcc".
    lattice_constant : a in Å; None: from the first peak of the pair distribution (and refined).
    max_grains, min_grain : at most this many grains, each of at least this many atoms.
    seed : for the random choice of seed atoms and bonds.

    Returns
    -------
    The atoms with new columns ``site_i``, ``site_j``, ``site_k`` (site coordinates in units of a/2
    in the grain's crystal frame), ``grain``, ``misorientation`` (degrees), ``displacement_x/_y/_z``
    and ``displacement`` (Å, atom minus site), and the :class:`Lattice`.
    Raises :class:`LatticeMisfit` (an InputError) when fewer than half of the bonds align with the lattice.
    """
    if kind not in KINDS:
        raise InputError(f"lattice must be one of {', '.join(KINDS)}, got {kind!r}")
    positions = atoms.positions
    r1 = nearest_neighbour_distance(positions)
    factor = np.sqrt(2) if kind == "fcc" else 2 / np.sqrt(3)
    if lattice_constant is not None and not lattice_constant > 0:
        raise InputError(f"lattice constant must be a positive number of Å, got {lattice_constant}")
    constant = float(lattice_constant) if lattice_constant else r1 * factor
    rng = np.random.default_rng(seed)
    ideal = ideal_bonds(kind)
    _, bonds, present = first_shell(positions, constant / factor, kind)
    n = len(positions)
    grain = np.full(n, -1)
    rotations, origins, aligned_bonds = [], [], 0
    while len(rotations) < max_grains:
        free = grain < 0
        if free.sum() < (min_grain if rotations else 4):
            break
        rotation, aligned = _fit_orientation(bonds[free], present[free], ideal, rng)
        fits = aligned.sum(axis=1) >= np.maximum(0.5 * present[free].sum(axis=1), 1)
        if fits.sum() < (min_grain if rotations else 1):
            break
        members = np.flatnonzero(free)[fits]
        grain[members] = len(rotations)
        rotations.append(rotation)
        aligned_bonds += aligned[fits].sum()  # only the bonds of the atoms that joined the grain
    aligned_fraction = aligned_bonds / max(present.sum(), 1)
    if aligned_fraction < MIN_ALIGNED:
        raise LatticeMisfit(kind, float(aligned_fraction))
    if np.any(grain < 0):  # poorly coordinated atoms join the grain of their nearest assigned atom
        assigned = np.flatnonzero(grain >= 0)
        _, nearest = cKDTree(positions[assigned]).query(positions[grain < 0])
        grain[grain < 0] = grain[assigned[nearest]]
    rotations = np.array(rotations)
    sites = np.zeros((n, 3), np.int64)
    origins = np.zeros((len(rotations), 3))
    constants = []
    for g, rotation in enumerate(rotations):
        members = grain == g
        pos = positions[members]
        start = pos[np.argmin(np.linalg.norm(pos - pos.mean(axis=0), axis=1))]
        sites[members], origins[g], c = _fit_sites(pos, rotation, start, constant, not lattice_constant, kind)
        constants.append((c, members.sum()))
    constant = float(sum(c * m for c, m in constants) / n)
    lattice = Lattice(kind, constant, constant / factor, rotations, origins, float(aligned_fraction), 0.0)
    displacement = positions - lattice.site_positions(sites, grain)
    lattice.rms_displacement = float(np.sqrt(np.mean(np.sum(displacement ** 2, axis=1))))
    misorientation = _misorientation(bonds, present, rotations[grain], ideal)
    fitted = atoms.with_features(
        site_i=sites[:, 0], site_j=sites[:, 1], site_k=sites[:, 2], grain=grain,
        misorientation=misorientation.astype(np.float32),
        displacement_x=displacement[:, 0], displacement_y=displacement[:, 1], displacement_z=displacement[:, 2],
        displacement=np.linalg.norm(displacement, axis=1))
    return fitted, lattice


def _misorientation(bonds, present, grain_rotations, ideal) -> np.ndarray:
    """Angle (degrees) between each atom's own bond-fitted orientation and its grain's."""
    unit = bonds / np.maximum(np.linalg.norm(bonds, axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("nki,nij,mj->nkm", unit, grain_rotations, ideal)
    best = np.argmax(cos, axis=-1)
    local = kabsch(ideal[best], unit, present.astype(float))
    relative = np.einsum("nji,njk->nik", grain_rotations, local)
    cos_angle = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    angle = np.degrees(np.arccos(cos_angle))
    return np.where(present.sum(axis=1) >= 3, angle, np.nan)
