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
signs). Both are 1 for the perfect crystal and 0 for the other ordered phase.

Phase and variant (:func:`classify_order`): the window order parameters, thresholded and smoothed
by a majority filter, *detect* ordered regions — seeds at ``threshold`` say where a label may go,
core atoms at ``core_threshold`` that a region is there (both thresholds times sqrt(k / n) for a
window with n of its k sites present: at the surface fewer sites make a chance order likelier);
each atom's own element *delineates* them.
An atom whose element is the one a label puts on its sublattice fits that label; a Potts labelling
of all atoms at once (A1, or an ordered label within ``radius`` of its seeds or cores; cores fixed)
weighs each atom's log-likelihood of its element under the label (anti-sites with probability
``antisite_fraction``) against the random alloy, plus ``boundary_cost`` per nearest-neighbour bond
between different labels, and is minimised by alpha-expansion (:mod:`.potts`). Regions are then
opened (each atom must be in or next to an atom whose 12 neighbours all share its label), a region
without a core atom or whose evidence does not pay for its boundary with A1 is dropped, and A1 atoms
mostly surrounded by one ordered label join it. An ordered atom whose element is not the one its sublattice holds in
that order is an anti-site.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..model import ATOMIC_NUMBERS, AtomModel, InputError
from .lattice import Lattice
from .potts import potts_labels

#: Signs of f_l in η_x, η_y, η_z (rows), over sublattices 0–3 (columns).
WAVES = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]])
AXES = "xyz"
#: Labels (phase, variant, sign of the wave: which of two anti-phase domains); index = label code.
LABELS = (("A1", "", 0), *(("L10", a, sign) for a in AXES for sign in (1, -1)),
          *(("L12", f"{kind}:{j}", 0) for kind in ("A3B", "AB3") for j in range(4)))
#: Defaults measured on :mod:`napari_aet.simulate_alloy` (benchmarks/bench_analysis.py).
DEFAULT_RADIUS = 1.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_CORE_THRESHOLD = 0.7
DEFAULT_ANTISITE_FRACTION = 0.03
DEFAULT_BOUNDARY_COST = 0.1


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
    return _window_order(atoms, lattice, radius)[1]


def _window_order(atoms: AtomModel, lattice: Lattice, radius):
    """The window :func:`order_parameters` used (:func:`site_neighbours`, ``(N, k)``) and its result."""
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
    return idx, atoms.with_features(
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


def _window_scale(window, n_atoms) -> np.ndarray:
    """Per atom, sqrt(full window / sites present in its window) ``(N,)``: a window order parameter
    from n sites varies by chance as 1/sqrt(n), so a window cut by the surface or a vacancy needs a
    higher value to be as significant as a full one."""
    present = np.count_nonzero(window < n_atoms, axis=1)  # at least the atom itself
    return np.sqrt(window.shape[1] / present)


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


def _bonds(neighbours) -> np.ndarray:
    """Nearest-neighbour bonds ``(M, 2)``, each once, from the neighbour lists (N marks no atom)."""
    n = len(neighbours)
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    cols = neighbours.ravel()
    keep = (cols < n) & (rows < cols)
    return np.stack([rows[keep], cols[keep]], axis=1)


def _labels_within(codes, window) -> np.ndarray:
    """Whether an atom of each label (columns) lies in each atom's window (rows), ``(N, n_labels)``."""
    onehot = np.vstack([np.eye(len(LABELS), dtype=bool), np.zeros((1, len(LABELS)), bool)])
    return onehot[np.append(codes, len(LABELS))[window]].any(axis=1)


def _evidence(matches, is_heavy, known, antisite_fraction) -> np.ndarray:
    """Log-likelihood ratio of each atom's element under each label against the random alloy,
    ``(N, n_labels)`` (column 0, A1: 0). An ordered label predicts the element that fits it, with
    probability 1 − ``antisite_fraction``; the random alloy, the particle's composition."""
    heavy_fraction = np.mean(is_heavy[known]) if known.any() else 0.5
    random = np.where(is_heavy, heavy_fraction, 1 - heavy_fraction)
    ordered = np.where(matches, 1 - antisite_fraction, antisite_fraction)
    evidence = np.log(ordered) - np.log(random)[:, None]
    evidence[:, 0] = 0
    evidence[~known] = 0
    return evidence


def _opening(codes, neighbours) -> np.ndarray:
    """Ordered atoms stay only if they, or a neighbour of their label, have all their neighbours
    of their label (a region at least two shells thick); the others become A1."""
    padded = np.append(codes, -1)
    absent = neighbours == len(codes)
    same = (padded[neighbours] == codes[:, None]) | absent
    interior = np.append((codes > 0) & same.all(axis=1), False)
    near = (interior[neighbours] & same & ~absent).any(axis=1)
    return np.where(interior[:-1] | near, codes, 0)


def _supported(codes, cores, evidence, bonds, boundary_cost) -> np.ndarray:
    """Ordered regions (connected atoms of one label) that hold a core atom of their label and whose
    evidence exceeds the cost of their bonds to A1 atoms (they lower the energy as a whole); the
    others become A1."""
    n = len(codes)
    a, b = bonds[:, 0], bonds[:, 1]
    same = (codes[a] == codes[b]) & (codes[a] > 0)
    graph = sparse.coo_matrix((np.ones(same.sum()), (a[same], b[same])), shape=(n, n))
    _, region = connected_components(graph, directed=False)
    gain = np.bincount(region, evidence[np.arange(n), codes], region.max() + 1)
    ends = np.concatenate([a[(codes[a] > 0) & (codes[b] == 0)], b[(codes[b] > 0) & (codes[a] == 0)]])
    boundary = np.bincount(region[ends], minlength=region.max() + 1)
    has_core = np.zeros(region.max() + 1, bool)
    has_core[region[(cores == codes) & (codes > 0)]] = True
    return np.where(has_core[region] & (gain[region] > boundary_cost * boundary[region]), codes, 0)


def _fill_antisites(codes, neighbours, fill_contacts) -> np.ndarray:
    """A1 atoms touching at least ``fill_contacts`` atoms of one ordered label join it."""
    votes = _neighbour_votes(codes, neighbours)[:, 1:]
    join = (codes == 0) & (votes.max(axis=1) >= fill_contacts)
    return np.where(join, 1 + np.argmax(votes, axis=1), codes)


def classify_order(atoms: AtomModel, lattice: Lattice, *, radius=DEFAULT_RADIUS, threshold=DEFAULT_THRESHOLD,
                   core_threshold=DEFAULT_CORE_THRESHOLD, antisite_fraction=DEFAULT_ANTISITE_FRACTION,
                   boundary_cost=DEFAULT_BOUNDARY_COST, fill_contacts=7) -> AtomModel:
    """Order parameters, phase (A1, L10 or L12), variant and anti-sites of every atom.

    Parameters as :func:`order_parameters`, and
    threshold : window order parameter above which an atom with a full window seeds an ordered
        region (times sqrt(k / n) when only n of the window's k sites hold an atom, capped at 1).
    core_threshold : a region is kept only if it holds a core atom, one whose window order parameter
        is at least this, scaled alike (after the same majority filter).
    antisite_fraction : expected fraction of atoms of the wrong element inside an ordered region.
    boundary_cost : cost of one nearest-neighbour bond between different labels, in units of the
        log-likelihood of one atom's element (nats).
    fill_contacts : an A1 atom touching this many atoms of one ordered label joins it whatever its
        element (an anti-site).

    The core atoms (window label at ``core_threshold``, majority of each atom and its 12 nearest
    sites) keep their label; every other atom within ``radius`` × a of seeds (the same at
    ``threshold``) or cores of a label may take that label. See the module docstring for the energy
    and the steps after it.

    Returns the atoms with the columns of :func:`order_parameters` and ``phase``, ``variant``
    ("x"/"y"/"z": L1₀ c axis in the crystal frame; "A3B:j"/"AB3:j": L1₂ with the minority element
    on sublattice j; "" for A1) and ``antisite`` (bool).
    """
    if not 0 < antisite_fraction < 0.5:
        raise InputError(f"the anti-site fraction must be between 0 and 0.5, got {antisite_fraction}")
    if boundary_cost < 0:
        raise InputError(f"the boundary cost must be at least 0, got {boundary_cost}")
    window, atoms = _window_order(atoms, lattice, radius)
    first_shell, sites = site_neighbours(atoms, lattice, 0.75)
    neighbours = first_shell[:, 1:]
    _, heavy = alloy_elements(atoms)
    known = atoms.species != ""
    is_heavy = (atoms.species == heavy) & known
    matches = IDEAL[:, fcc_sublattice(sites)].T == is_heavy[:, None]
    scale = _window_scale(window, len(atoms))
    seeds, cores = (_majority(_window_codes(atoms.features, np.minimum(level * scale, 1.0)), neighbours)
                    for level in (threshold, core_threshold))
    evidence = _evidence(matches, is_heavy, known, antisite_fraction)
    allowed = _labels_within(seeds, window) | _labels_within(cores, window)
    allowed[:, 0] = True
    allowed[cores > 0] = np.eye(len(LABELS), dtype=bool)[cores[cores > 0]]  # cores keep their label
    bonds = _bonds(neighbours)
    codes = potts_labels(np.where(allowed, -evidence, np.inf), bonds, boundary_cost, initial=cores)
    codes = _supported(_opening(codes, neighbours), cores, evidence, bonds, boundary_cost)
    codes = _fill_antisites(codes, neighbours, fill_contacts)
    wrong = ~matches[np.arange(len(codes)), codes]
    return atoms.with_features(phase=np.array([p for p, _, _ in LABELS], dtype=object)[codes],
                               variant=np.array([v for _, v, _ in LABELS], dtype=object)[codes],
                               antisite=(codes > 0) & known & wrong)
