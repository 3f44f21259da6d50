"""Local chemical order of a binary fcc alloy A–B: L1₀ and L1₂ order parameters, phase and variant.

The fcc lattice splits into four simple-cubic sublattices l = 0…3 (site parities (000), (011),
(101), (110) in units of a/2). For each atom, f_l is the fraction of B (the heavier element) on
sublattice l among the sites within ``radius`` (× a) of its site, itself included. The three
concentration waves of wave vector along the cube axes are

    η_x = ½(f₀ + f₁ − f₂ − f₃),   η_y = ½(f₀ − f₁ + f₂ − f₃),   η_z = ½(f₀ − f₁ − f₂ + f₃).

Perfect L1₀ with its c axis along k has |η_k| = 1 and the other two 0; perfect L1₂ (A₃B or AB₃)
has |η_x| = |η_y| = |η_z| = ½; a random alloy has all three near 0. With |η| sorted as
m₁ ≥ m₂ ≥ m₃:

    order_L10 = m₁ − m₂ (variant: the axis of m₁),    order_L12 = min(1, 2 m₃)

(variant: A₃B when η_x η_y η_z > 0, else AB₃, and the sublattice of the minority element from the
signs). Both are 1 for the perfect crystal and 0 for the other ordered phase. An atom is L1₂ when
order_L12 ≥ ``threshold`` and ≥ order_L10, else L1₀ when order_L10 ≥ ``threshold``, else A1; the
labels are then smoothed by the majority of the atom and its 12 nearest sites, and the ordered
regions, which a window shrinks, grow back into A1 atoms that touch them and carry the element
their order puts on that site (:func:`classify_order`). An ordered atom whose element is not the
one its sublattice holds in that order is an anti-site.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..model import ATOMIC_NUMBERS, AtomModel, InputError
from .lattice import Lattice

#: Signs of f_l in η_x, η_y, η_z (rows), over sublattices 0–3 (columns).
WAVES = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
AXES = "xyz"
#: Labels (phase, variant, sign of the wave: which of two anti-phase domains); index = label code.
LABELS = (("A1", "", 0), *(("L10", a, sign) for a in AXES for sign in (1, -1)),
          *(("L12", f"{kind}:{j}", 0) for kind in ("A3B", "AB3") for j in range(4)))
#: Defaults measured on :mod:`napari_aet.simulate_alloy` (benchmarks/bench_analysis.py).
DEFAULT_RADIUS = 1.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_GROW = 2
DEFAULT_CONTACTS = 3


def _ideal_heavy() -> np.ndarray:
    """Whether each label puts the heavier element on each sublattice, ``(n_labels, 4)``."""
    rows = [np.zeros(4, bool)]
    rows += [WAVES[k] * sign > 0 for k in range(3) for sign in (1, -1)]
    rows += [(np.arange(4) == j) == (kind == "A3B") for kind in ("A3B", "AB3") for j in range(4)]
    return np.array(rows)


def fcc_sublattice(sites) -> np.ndarray:
    """Simple-cubic sublattice index 0–3 of fcc sites ``(N, 3)`` (integers, units of a/2)."""
    parity = np.asarray(sites) % 2
    return 2 * parity[:, 0] + parity[:, 1]


IDEAL = _ideal_heavy()


def alloy_elements(atoms: AtomModel) -> tuple[str, str]:
    """The two elements (lighter A, heavier B) of a binary alloy; InputError otherwise."""
    present = sorted(set(atoms.species.tolist()) - {""}, key=ATOMIC_NUMBERS.get)
    if len(present) != 2:
        found = ", ".join(present) or "no classified atoms"
        raise InputError(f"the chemical-order analysis needs exactly two elements (a binary alloy such as "
                         f"Fe,Pt), found {found}")
    return present[0], present[1]


def site_neighbours(atoms: AtomModel, lattice: Lattice, radius):
    """Indices ``(N, k)`` of the sites within ``radius`` × a of each atom's site (itself first;
    N marks an absent site)."""
    sites = np.stack([atoms.features[f"site_{c}"] for c in "ijk"], axis=1)
    ideal = lattice.site_positions(sites, atoms.features["grain"])
    shell = np.stack(np.meshgrid(*(np.arange(-3, 4),) * 3, indexing="ij"), -1).reshape(-1, 3)
    shell = shell[shell.sum(axis=1) % 2 == 0] if lattice.kind == "fcc" else shell
    k = int(np.count_nonzero(np.linalg.norm(shell, axis=1) / 2 <= radius + 1e-6))
    _, idx = cKDTree(ideal).query(ideal, k=min(k, len(ideal)),
                                  distance_upper_bound=(radius + 0.05) * lattice.constant)
    return idx, sites


def order_parameters(atoms: AtomModel, lattice: Lattice, *, radius=DEFAULT_RADIUS) -> AtomModel:
    """Per-atom concentration waves and L1₀ / L1₂ order parameters (see the module docstring).

    atoms : the output of :func:`~napari_aet.analysis.lattice.fit_lattice` (site columns), with two
        elements. lattice : its fcc :class:`Lattice`. radius : neighbourhood radius in units of a
        (1.3: the site and its 42 nearest sites, three shells).

    Returns the atoms with columns ``eta_x``, ``eta_y``, ``eta_z``, ``order_L10``, ``order_L12`` in
    [0, 1] (float32), ``variant_L10`` and ``variant_L12``.
    """
    if lattice.kind != "fcc":
        raise InputError(f"L1₀ / L1₂ order needs an fcc lattice, got {lattice.kind}")
    _, heavy = alloy_elements(atoms)
    idx, sites = site_neighbours(atoms, lattice, radius)
    known = atoms.species != ""
    is_b = (atoms.species == heavy) & known
    onehot = np.vstack([np.eye(4)[fcc_sublattice(sites)] * known[:, None], np.zeros((1, 4))])
    count = onehot[idx].sum(axis=1)
    heavy_count = (onehot * np.append(is_b, False)[:, None])[idx].sum(axis=1)
    local = heavy_count.sum(axis=1, keepdims=True) / np.maximum(count.sum(axis=1, keepdims=True), 1)
    fraction = np.where(count > 0, heavy_count / np.maximum(count, 1), local)
    eta = 0.5 * fraction @ WAVES.T
    size = np.sort(np.abs(eta), axis=1)
    signs = np.where(eta >= 0, 1, -1)
    a3b = np.prod(signs, axis=1) > 0
    minority = signs * np.where(a3b, 1, -1)[:, None]
    sublattice = 2 * (minority[:, 0] < 0) + (minority[:, 1] < 0)
    return atoms.with_features(
        eta_x=eta[:, 0].astype(np.float32), eta_y=eta[:, 1].astype(np.float32), eta_z=eta[:, 2].astype(np.float32),
        order_L10=(size[:, 2] - size[:, 1]).astype(np.float32),
        order_L12=np.minimum(1.0, 2 * size[:, 0]).astype(np.float32),
        variant_L10=np.array(list(AXES))[np.argmax(np.abs(eta), axis=1)].astype(object),
        variant_L12=np.char.add(np.where(a3b, "A3B:", "AB3:"), sublattice.astype(str)).astype(object))


def _window_codes(features, threshold) -> np.ndarray:
    """Label codes (index into :data:`LABELS`) from the thresholded window order parameters."""
    eta = np.stack([features[f"eta_{a}"] for a in AXES], axis=1)
    axis = np.argmax(np.abs(eta), axis=1)
    l10 = 1 + 2 * axis + (eta[np.arange(len(eta)), axis] < 0)
    kind = np.char.partition(features["variant_L12"].astype(str), ":")
    l12 = 7 + 4 * (kind[:, 0] == "AB3") + kind[:, 2].astype(int)
    is_l12 = (features["order_L12"] >= threshold) & (features["order_L12"] >= features["order_L10"])
    is_l10 = ~is_l12 & (features["order_L10"] >= threshold)
    return np.where(is_l12, l12, np.where(is_l10, l10, 0))


def _neighbour_votes(codes, neighbours) -> np.ndarray:
    """How many of each atom's neighbours carry each label, ``(N, n_labels)``."""
    n_labels = len(LABELS)
    eye = np.vstack([np.eye(n_labels, dtype=np.int32), np.zeros((1, n_labels), np.int32)])
    return eye[np.append(codes, n_labels)[neighbours]].sum(axis=1)


def _majority(codes, neighbours) -> np.ndarray:
    """Each atom takes the most frequent label among itself and its neighbours (ties keep its own)."""
    votes = _neighbour_votes(codes, neighbours)
    votes[np.arange(len(codes)), codes] += 1
    best = np.argmax(votes, axis=1)
    keep = votes[np.arange(len(codes)), codes] >= votes[np.arange(len(codes)), best]
    return np.where(keep, codes, best)


def _grow(codes, matches, neighbours, passes, min_contacts, fill_contacts) -> np.ndarray:
    """Grow ordered regions into A1 atoms that touch at least ``min_contacts`` atoms of one ordered
    label and whose element fits it, ``passes`` times; then A1 atoms with ``fill_contacts`` such
    neighbours join whatever their element (anti-sites)."""
    rows = np.arange(len(codes))
    for contacts, must_match in [(min_contacts, True)] * passes + [(fill_contacts, False)]:
        votes = _neighbour_votes(codes, neighbours)[:, 1:]
        label = 1 + np.argmax(votes, axis=1)
        join = (codes == 0) & (votes.max(axis=1) >= contacts)
        if must_match:
            join &= matches[rows, label]
        codes = np.where(join, label, codes)
    return codes


def classify_order(atoms: AtomModel, lattice: Lattice, *, radius=DEFAULT_RADIUS, threshold=DEFAULT_THRESHOLD,
                   grow=DEFAULT_GROW, min_contacts=DEFAULT_CONTACTS, fill_contacts=7) -> AtomModel:
    """Order parameters, phase (A1, L10, L12), variant and anti-sites of every atom.

    Parameters as :func:`order_parameters`, and
    threshold : window order parameter above which an atom starts as ordered.
    grow, min_contacts, fill_contacts : after a majority filter over each atom and its 12 nearest
        sites, ordered regions grow ``grow`` times into A1 atoms touching at least ``min_contacts``
        atoms of one ordered label whose element fits that order; then A1 atoms touching
        ``fill_contacts`` atoms of one label join it whatever their element.

    Returns the atoms with the columns of :func:`order_parameters` and ``phase``, ``variant``
    ("x"/"y"/"z": L1₀ c axis in the crystal frame; "A3B:j"/"AB3:j": L1₂ with the minority element
    on sublattice j; "" for A1) and ``antisite`` (bool).
    """
    atoms = order_parameters(atoms, lattice, radius=radius)
    codes = _window_codes(atoms.features, threshold)
    first_shell, sites = site_neighbours(atoms, lattice, 0.75)
    sublattice = fcc_sublattice(sites)
    _, heavy = alloy_elements(atoms)
    matches = IDEAL[:, sublattice].T == (atoms.species == heavy)[:, None]
    codes = _majority(codes, first_shell[:, 1:])
    codes = _grow(codes, matches, first_shell[:, 1:], grow, min_contacts, fill_contacts)
    known = atoms.species != ""
    wrong = ~matches[np.arange(len(codes)), codes]
    return atoms.with_features(phase=np.array([p for p, _, _ in LABELS], dtype=object)[codes],
                               variant=np.array([v for _, v, _ in LABELS], dtype=object)[codes],
                               antisite=(codes > 0) & known & wrong)
