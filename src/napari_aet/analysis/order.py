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
labels are then smoothed by the majority of the atom and its 12 nearest sites, ``smoothing`` times.
An ordered atom whose element is not the one its sublattice holds in that order is an anti-site.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..model import ATOMIC_NUMBERS, AtomModel, InputError
from .lattice import Lattice

#: Signs of f_l in η_x, η_y, η_z (rows), over sublattices 0–3 (columns).
WAVES = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
AXES = "xyz"
#: Phase-and-variant labels; their index is the integer code used internally.
LABELS = (("A1", ""), *(("L10", a) for a in AXES),
          *(("L12", f"{kind}:{j}") for kind in ("A3B", "AB3") for j in range(4)))
#: Defaults measured on :mod:`napari_aet.simulate_alloy` (benchmarks/bench_analysis.py).
DEFAULT_RADIUS = 1.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_SMOOTHING = 1


def fcc_sublattice(sites) -> np.ndarray:
    """Simple-cubic sublattice index 0–3 of fcc sites ``(N, 3)`` (integers, units of a/2)."""
    parity = np.asarray(sites) % 2
    return 2 * parity[:, 0] + parity[:, 1]


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


def _majority(codes, neighbours, passes):
    """Each atom takes the most frequent code among itself and its neighbours (ties keep its own)."""
    n_codes = len(LABELS)
    for _ in range(passes):
        padded = np.append(codes, -1)
        votes = np.zeros((len(codes), n_codes + 1), np.int32)
        np.add.at(votes, (np.repeat(np.arange(len(codes)), neighbours.shape[1]), padded[neighbours].ravel()), 1)
        votes = votes[:, :n_codes]
        best = np.argmax(votes, axis=1)
        keep = votes[np.arange(len(codes)), codes] >= votes[np.arange(len(codes)), best]
        codes = np.where(keep, codes, best)
    return codes


def classify_order(atoms: AtomModel, lattice: Lattice, *, radius=DEFAULT_RADIUS, threshold=DEFAULT_THRESHOLD,
                   smoothing=DEFAULT_SMOOTHING) -> AtomModel:
    """Order parameters, phase (A1, L10, L12), variant and anti-sites of every atom.

    Parameters as :func:`order_parameters`, and threshold : order parameter above which an atom
    is ordered; smoothing : passes of the majority filter over the atom and its 12 nearest sites.

    Returns the atoms with the columns of :func:`order_parameters` and ``phase``, ``variant``
    ("x"/"y"/"z": L1₀ c axis in the crystal frame; "A3B:j"/"AB3:j": L1₂ with the minority element
    on sublattice j; "" for A1) and ``antisite`` (bool).
    """
    atoms = order_parameters(atoms, lattice, radius=radius)
    f = atoms.features
    is_l12 = (f["order_L12"] >= threshold) & (f["order_L12"] >= f["order_L10"])
    is_l10 = ~is_l12 & (f["order_L10"] >= threshold)
    code = np.zeros(len(atoms), np.int64)
    code[is_l10] = 1 + np.searchsorted(list(AXES), f["variant_L10"][is_l10].astype(str))
    l12_names = [v for p, v in LABELS if p == "L12"]
    code[is_l12] = 4 + np.array([l12_names.index(v) for v in f["variant_L12"][is_l12]], dtype=np.int64)
    first_shell, sites = site_neighbours(atoms, lattice, 0.75)
    code = _majority(code, first_shell, smoothing)
    phase = np.array([p for p, _ in LABELS], dtype=object)[code]
    variant = np.array([v for _, v in LABELS], dtype=object)[code]
    return atoms.with_features(phase=phase, variant=variant,
                               antisite=_antisites(atoms, sites, phase, variant))


def _antisites(atoms, sites, phase, variant) -> np.ndarray:
    """Ordered atoms whose element differs from the one the local order puts on their sublattice."""
    _, heavy = alloy_elements(atoms)
    sub = fcc_sublattice(sites)
    eta = np.stack([atoms.features[f"eta_{a}"] for a in AXES], axis=1)
    axis = np.searchsorted(list(AXES), np.where(phase == "L10", variant, "x").astype(str))
    sign = np.sign(eta[np.arange(len(atoms)), axis])
    ideal_l10 = WAVES[axis, sub] * sign > 0
    kind, j = np.char.partition(np.where(phase == "L12", variant, "A3B:0").astype(str), ":")[:, ::2].T
    on_j = sub == j.astype(int)
    ideal_l12 = np.where(kind == "A3B", on_j, ~on_j)
    ideal = np.where(phase == "L10", ideal_l10, ideal_l12)
    known = atoms.species != ""
    return (phase != "A1") & known & ((atoms.species == heavy) != ideal)
