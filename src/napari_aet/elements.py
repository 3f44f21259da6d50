"""Per-element physical facts: atomic radii and the shortest distance two atoms can have.

No two atoms of a real sample sit closer than a fraction of the sum of their radii, so the
traced and refined models must not either. :data:`RADII` holds, for every element the tool
knows, the smaller of two radii (Å):

* the metallic radius, half the nearest-neighbour distance in the element's own crystal at
  room temperature, for the metals in :data:`_METALLIC` (e.g. Fe 1.24, Pd 1.375, Ta 1.43);
* the covalent radius of Cordero et al., Dalton Trans. 2008, 2832 (single bonds; low-spin for
  Mn, Fe, Co) for every element (e.g. Si 1.11, Pt 1.36).

The minimum distance of a pair is :data:`MIN_DISTANCE_FRACTION` (0.85) of the sum of the two
radii: Fe-Fe 2.11 Å, Fe-Pt 2.21 Å, Pt-Pt 2.31 Å, Pd-Pd 2.34 Å, Ta-Ta 2.43 Å, Si-Si 1.89 Å —
below the shortest distance in the elements' crystals, alloys and amorphous forms (bcc Fe
2.48 Å, Si 2.35 Å, fcc Pt 2.77 Å, L1_0 FePt 2.7 Å, amorphous Ta from about 2.5 Å), above what
two atoms sharing one atom's signal come to. Every function takes the user's override: one number for every
pair, or a mapping from pairs to Å.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial import cKDTree

from .model import ATOMIC_NUMBERS, InputError, check_elements

#: Covalent radii (Å) of Cordero et al. 2008, in order of atomic number (H .. U).
_COVALENT = dict(zip(ATOMIC_NUMBERS, [
    0.31, 0.28, 1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58, 1.66, 1.41, 1.21, 1.11, 1.07, 1.05, 1.02, 1.06,
    2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22, 1.22, 1.20, 1.19, 1.20, 1.20, 1.16,
    2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46, 1.42, 1.39, 1.45, 1.44, 1.42, 1.39, 1.39, 1.38, 1.39, 1.40,
    2.44, 2.15, 2.07, 2.04, 2.03, 2.01, 1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92, 1.89, 1.90, 1.87, 1.87, 1.75,
    1.70, 1.62, 1.51, 1.44, 1.41, 1.36, 1.36, 1.32, 1.45, 1.46, 1.48, 1.40, 1.50, 1.50, 2.60, 2.21, 2.15, 2.06,
    2.00, 1.96]))

#: Metallic radii (Å): half the nearest-neighbour distance in the element's crystal.
_METALLIC = {"Mg": 1.60, "Al": 1.43, "Ti": 1.45, "V": 1.31, "Cr": 1.25, "Fe": 1.24, "Co": 1.25, "Ni": 1.245,
             "Cu": 1.28, "Zn": 1.33, "Zr": 1.59, "Nb": 1.43, "Mo": 1.36, "Ru": 1.32, "Rh": 1.345, "Pd": 1.375,
             "Ag": 1.445, "Hf": 1.56, "Ta": 1.43, "W": 1.37, "Re": 1.37, "Os": 1.34, "Ir": 1.355, "Pt": 1.385,
             "Au": 1.44}

#: Radius (Å) of each element: the smaller of its metallic and covalent radii.
RADII = {e: min(r, _METALLIC.get(e, r)) for e, r in _COVALENT.items()}

#: The minimum distance of a pair is this fraction of the sum of the two radii.
MIN_DISTANCE_FRACTION = 0.85


def _pair_key(key) -> tuple[str, str]:
    """("Fe", "Pt") from a key "Fe-Pt", ("Fe", "Pt") or "Pt" (= Pt-Pt)."""
    parts = key.split("-") if isinstance(key, str) else list(key)
    parts = [str(p).strip() for p in parts]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise InputError(f"min_distance key {key!r} is not a pair of elements: expected e.g. 'Fe-Pt' or 'Pt'")
    check_elements(set(parts))
    return parts[0], parts[1]


def pair_name(key) -> str:
    """A pair key as text, "Fe-Pt" (from "Fe-Pt", ("Fe", "Pt") or "Pt" = "Pt-Pt")."""
    return "-".join(_pair_key(key))


#: Largest minimum distance (Å) accepted: nearest neighbours in solids lie within 1.5-3.5 Å.
MAX_MIN_DISTANCE = 5.0


def _distance(name, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of Å, got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a positive number of Å, got {value}")
    if value > MAX_MIN_DISTANCE:
        raise InputError(f"{name} {value:g} Å: no two neighbouring atoms are that far apart (a minimum distance "
                         f"is at most {MAX_MIN_DISTANCE:g} Å, e.g. 2.2)")
    return value


def parse_min_distance(text) -> float | dict[str, float]:
    """A user's minimum-distance override from text (the command line, a batch plan): one number of
    Å for every pair (``"2.2"``), or pairs (``"Ta=2.2"``, ``"Fe-Pt=2.3,Pt=2.4"``) overriding the
    table for those pairs only, as :func:`min_distance_table` takes it."""
    text = str(text).strip()
    if "=" not in text:
        return _distance("the minimum distance (a number, or pairs such as 'Fe-Pt=2.3,Pt=2.4')", text)
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"minimum distance {item!r}: expected PAIR=Å, e.g. 'Fe-Pt=2.3' or 'Pt=2.4'")
        a, b = _pair_key(key.strip())
        pairs[f"{a}-{b}"] = _distance(f"the minimum distance of {a}-{b}", value)
    return pairs


def min_distance_table(elements, min_distance=None) -> np.ndarray:
    """The shortest allowed distance (Å) between atoms of each pair of ``elements``.

    elements : element symbols (e.g. ``("Fe", "Pt")`` or ``"Fe,Pt"``), any order.
    min_distance : None = :data:`MIN_DISTANCE_FRACTION` of the sum of the :data:`RADII`; a
        number = that many Å for every pair; a mapping from pairs (``"Fe-Pt"``,
        ``("Fe", "Pt")``, or ``"Pt"`` for Pt-Pt) to Å overrides those pairs only.

    Returns a symmetric ``(S, S)`` float64 array in the order of ``elements``.
    """
    elements = check_elements(elements)
    radii = np.array([RADII[e] for e in elements])
    table = MIN_DISTANCE_FRACTION * (radii[:, None] + radii[None, :])
    if min_distance is None:
        return table
    if not isinstance(min_distance, Mapping):
        return np.full_like(table, _distance("min_distance", min_distance))
    for key, value in min_distance.items():
        a, b = _pair_key(key)
        if a in elements and b in elements:
            i, j = elements.index(a), elements.index(b)
            table[i, j] = table[j, i] = _distance(f"min_distance[{key!r}]", value)
    return table


#: The elements' minimum distances over the pixel size, in pixels: when even the longest is below
#: the first, or even the shortest above the second, the pixel size is almost surely in the wrong
#: unit (nm typed for Å, or Å for nm). AET data sample them at 2-10 (e.g. FePt 2.1-2.3 Å, Ce-O 1.1-3.5 Å at
#: 0.3-0.8 Å per pixel).
PIXELS_PER_MIN_DISTANCE = (1.0, 25.0)


#: Minimum distances (Å) of any elements, for a pixel-size check before the elements are known:
#: an O–O pair (1.12 Å) and a Ce–O one (3.47 Å) bound those of :func:`min_distance_table`'s pairs.
ANY_ELEMENTS_MIN_DISTANCES = np.array([1.12, 3.47])


def check_pixel_size(pixel_size, elements=None, min_distance=None):
    """InputError when the pixel size ``pixel_size`` (Å) is almost surely in the wrong unit: the
    longest minimum distance of the elements' pairs (:func:`min_distance_table`, with the user's
    ``min_distance``; :data:`ANY_ELEMENTS_MIN_DISTANCES` while ``elements`` is None) under
    :data:`PIXELS_PER_MIN_DISTANCE`'s first value in pixels, or the shortest over its second. A
    series in the wrong unit would otherwise run for hours or make atoms up."""
    table = ANY_ELEMENTS_MIN_DISTANCES if elements is None else min_distance_table(elements, min_distance)
    atoms = "atoms (of any elements: no elements given)" if elements is None else \
        f"atoms of {','.join(check_elements(elements))}"
    low, high = PIXELS_PER_MIN_DISTANCE
    longest, shortest = float(table.max()) / float(pixel_size), float(table.min()) / float(pixel_size)
    if longest < low:
        raise InputError(f"pixel size {pixel_size:g} Å: {atoms} are {table.max():.2f} Å apart at the most, "
                         f"{longest:.2f} pixels, too few to tell them apart; is the pixel size in Å (not nm or pm)?")
    if shortest > high:
        raise InputError(f"pixel size {pixel_size:g} Å: {atoms} {table.min():.2f} Å apart would be {shortest:.0f} "
                         "pixels apart, far finer sampling than atomic resolution needs; is the pixel size in Å "
                         "(a value in nm is 10 times smaller)?")


def close_pairs(positions, species_index, table, others=None, others_index=None) -> np.ndarray:
    """Pairs of atoms nearer than their minimum distance.

    positions : ``(N, 3)`` Å; species_index : ``(N,)`` rows of ``table``
        (:func:`min_distance_table`).
    others, others_index : a second set ``(M, 3)``, ``(M,)``: pairs (i in positions, j in
        others) instead of pairs within ``positions``.

    Returns ``(P, 2)`` int indices; within one set each pair once, ``i < j``.
    """
    positions = np.asarray(positions, float).reshape(-1, 3)
    species_index = np.asarray(species_index, int)
    tree = cKDTree(positions)
    reach = float(np.max(table)) if np.size(table) else 0.0
    if others is None:
        pairs = tree.query_pairs(reach, output_type="ndarray")
        j_index, second = species_index, positions
    else:
        second = np.asarray(others, float).reshape(-1, 3)
        j_index = np.asarray(others_index, int)
        found = tree.sparse_distance_matrix(cKDTree(second), reach, output_type="ndarray")
        pairs = np.stack([found["i"], found["j"]], axis=1).astype(np.int64)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    distance = np.linalg.norm(positions[pairs[:, 0]] - second[pairs[:, 1]], axis=1)
    return pairs[distance < table[species_index[pairs[:, 0]], j_index[pairs[:, 1]]]]


def enforce_min_distance(positions, score, min_distance, species_index=None) -> np.ndarray:
    """Boolean mask of the atoms kept so that no two kept atoms are closer than ``min_distance``.

    Of any too-close pair the one with the higher ``score`` wins (ties broken by position),
    resolved globally: the result equals greedy suppression in score order, so it does not
    depend on the order of the input. Vectorised: each round keeps every atom that beats all
    its undecided neighbours and drops their neighbours.
    positions : ``(N, 3)``; score : ``(N,)``; min_distance in the units of ``positions``: one
    number, or an ``(S, S)`` table per pair of species (:func:`napari_aet.elements.min_distance_table`)
    with each atom's row in ``species_index`` ``(N,)``.
    """
    n = len(positions)
    if species_index is None:
        pairs = cKDTree(positions).query_pairs(min_distance, output_type="ndarray")
    else:
        pairs = close_pairs(positions, species_index, np.asarray(min_distance))
    # a strict total order: rank by score, then lexicographically by position
    order = np.lexsort((*positions.T[::-1], score))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    state = np.zeros(n, dtype=np.int8)  # 0 undecided, 1 kept, -1 dropped
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    while True:
        live = (state[i] == 0) & (state[j] == 0)
        i, j = i[live], j[live]
        beaten = np.zeros(n, dtype=bool)
        beaten[i[rank[j] > rank[i]]] = True
        winners = (state == 0) & ~beaten
        state[winners] = 1
        state[j[winners[i]]] = -1
        if not np.any(state == 0):
            return state == 1
