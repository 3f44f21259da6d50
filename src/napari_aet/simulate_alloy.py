"""Synthetic binary-alloy particles with planted ordered nuclei, and one particle across annealing times.

An fcc particle (an ellipsoid, so that no symmetry maps it onto itself) holds a chemically random
(A1) matrix with spherical nuclei of L1₀ or L1₂ order planted in it. :func:`annealing_series` gives
the same particle at several times: nuclei grow, shrink, dissolve and appear, a few surface atoms
come and go, and the particle is re-mounted (randomly rotated and shifted) each time. Every atom
carries its truth: ``site`` (the same id at every time), ``true_phase``, ``true_variant``,
``true_nucleus`` (index into the planted nuclei, -1 for the matrix; planted nuclei of one phase and
variant that touch are one nucleus, labelled by the first of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from .analysis.order import AXES, fcc_sublattice
from .model import AtomModel, InputError, check_elements
from .simulate import FEPT_LATTICE


@dataclass(frozen=True)
class PlantedNucleus:
    """A spherical ordered region. centre : Å in the particle's crystal frame; radius : Å;
    phase : "L10" (variant "x", "y" or "z": the c axis) or "L12" (variant "A3B:j" or "AB3:j", the
    minority element on sublattice j of :func:`fcc_sublattice`)."""

    centre: tuple
    radius: float
    phase: str
    variant: str


def ordered_is_heavy(sites, phase, variant) -> np.ndarray:
    """Where the heavier element (B) sits in a perfect crystal of ``phase`` and ``variant``."""
    sites = np.asarray(sites)
    if phase == "L10":
        if variant not in AXES:
            raise InputError(f"L10 variant must be x, y or z (the c axis), got {variant!r}")
        return sites[:, AXES.index(variant)] % 2 == 0
    if phase == "L12":
        kind, _, j = variant.partition(":")
        if kind not in ("A3B", "AB3") or j not in "0123" or not j:
            raise InputError(f"L12 variant must be A3B:j or AB3:j with j in 0-3, got {variant!r}")
        on_j = fcc_sublattice(sites) == int(j)
        return on_j if kind == "A3B" else ~on_j
    raise InputError(f"planted phase must be L10 or L12, got {phase!r}")


def _ellipsoid_sites(radius, lattice):
    n = int(np.ceil(2 * radius / lattice)) + 2
    grid = np.stack(np.meshgrid(*(np.arange(-n, n + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[grid.sum(axis=1) % 2 == 0]
    r = sites * (lattice / 2)
    inside = np.sum((r / (radius * np.array([1.0, 0.9, 0.8]))) ** 2, axis=1) <= 1
    return sites[inside], r[inside]


def alloy_particle(radius=24.0, lattice=FEPT_LATTICE, elements=("Fe", "Pt"), nuclei=(), composition=0.5,
                   jitter=0.05, rotation=None, shift=(0.0, 0.0, 0.0), keep=None, seed=0) -> AtomModel:
    """An fcc A–B particle with a random (A1) matrix and planted ordered nuclei.

    Parameters
    ----------
    radius : semi-axes radius × (1, 0.9, 0.8) Å of the ellipsoidal particle.
    lattice : lattice constant a (Å). elements : (A, B), lighter first.
    nuclei : :class:`PlantedNucleus` list; later ones overwrite earlier ones where they overlap.
        Nuclei of one phase and variant with nearest-neighbour sites in contact form one nucleus
        (``true_nucleus`` = the smallest index among them), as they would in a crystal.
    composition : fraction of B in the matrix (drawn per site, the same for a given ``seed``).
    jitter : Gaussian displacement of every atom, Å rms per axis.
    rotation : 3×3 matrix applied to the particle (crystal -> specimen); None: identity.
    shift : Å added after the rotation. keep : boolean mask over the sites to keep (None: all).
    seed : matrix species and jitter.
    """
    elements = check_elements(elements)
    if len(elements) != 2:
        raise InputError(f"an alloy particle needs two elements, got {','.join(elements)}")
    light, heavy = elements
    sites, r = _ellipsoid_sites(radius, lattice)
    rng = np.random.default_rng(seed)
    is_heavy = rng.random(len(sites)) < composition
    phase = np.full(len(sites), "A1", dtype=object)
    variant = np.full(len(sites), "", dtype=object)
    label = np.full(len(sites), -1)
    for index, nucleus in enumerate(nuclei):
        inside = np.linalg.norm(r - np.asarray(nucleus.centre, float), axis=1) <= nucleus.radius
        is_heavy[inside] = ordered_is_heavy(sites[inside], nucleus.phase, nucleus.variant)
        phase[inside], variant[inside], label[inside] = nucleus.phase, nucleus.variant, index
    label = _join_touching(r, label, lattice, nuclei)
    keep = np.ones(len(sites), bool) if keep is None else np.asarray(keep, bool)
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, float)
    positions = (r + rng.normal(scale=jitter, size=r.shape)) @ rotation.T + np.asarray(shift, float)
    return AtomModel(positions, np.where(is_heavy, heavy, light).astype(object),
                     {"site": np.arange(len(sites)), "true_phase": phase, "true_variant": variant,
                      "true_nucleus": label}).subset(keep)


def _join_touching(r, label, lattice, nuclei):
    """``label`` with planted nuclei of one phase and variant whose sites are nearest neighbours
    (at ``r``, Å) relabelled as one, by the smallest index among them."""
    n = len(nuclei)
    if n < 2:
        return label
    pairs = cKDTree(r).query_pairs(1.1 * lattice / np.sqrt(2), output_type="ndarray")
    a, b = label[pairs[:, 0]], label[pairs[:, 1]]
    kinds = np.array([f"{nucleus.phase}:{nucleus.variant}" for nucleus in nuclei], dtype=object)
    touching = (a >= 0) & (b >= 0) & (a != b)
    touching[touching] = kinds[a[touching]] == kinds[b[touching]]
    graph = coo_matrix((np.ones(touching.sum()), (a[touching], b[touching])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    first = np.full(n, n)
    np.minimum.at(first, component, np.arange(n))
    return np.where(label >= 0, first[component[np.maximum(label, 0)]], -1)


#: The annealing scenario of :func:`annealing_series`: (centre in units of the particle radius, phase,
#: variant, nucleus radius in Å at each of three times, 0 = absent).
SCENARIO = (
    ((0.5, 0.0, 0.0), "L10", "z", (5.5, 6.5, 7.5)),       # grows
    ((-0.5, 0.0, 0.0), "L10", "x", (7.5, 6.5, 5.5)),      # shrinks
    ((0.0, 0.45, 0.0), "L12", "A3B:0", (6.5, 6.5, 6.5)),  # stable
    ((0.0, -0.45, 0.0), "L10", "y", (6.5, 5.5, 0.0)),     # shrinks, then dissolves
    ((-0.1, -0.1, -0.45), "L10", "z", (0.0, 5.5, 6.5)),   # appears, then grows
)

#: A second scenario, with a merge and a split: two L1₀ "z" nuclei 15.8 Å apart (at radius 24 Å)
#: grow into one; an L1₀ "x" dumbbell shrinks into two; an L1₂ nucleus stays.
MERGE_SPLIT = (
    ((0.45, 0.33, 0.0), "L10", "z", (6.0, 8.5, 9.5)),      # apart, merged with the next, grows
    ((0.45, -0.33, 0.0), "L10", "z", (6.0, 8.5, 9.5)),
    ((-0.45, 0.33, 0.0), "L10", "x", (8.5, 6.0, 6.0)),     # one with the next, splits, stable
    ((-0.45, -0.33, 0.0), "L10", "x", (8.5, 6.0, 6.0)),
    ((0.0, 0.0, -0.5), "L12", "A3B:0", (6.5, 6.5, 6.5)),   # stable
)

#: The scenarios by name, and the events of their nucleus tracks over three times (one tuple per
#: track, as :func:`napari_aet.analysis.tracking.track_nuclei` reports them, sorted).
SCENARIOS = {"annealing": SCENARIO, "merge-split": MERGE_SPLIT}
SCENARIO_EVENTS = {
    "annealing": sorted([("present", "grew", "grew"), ("present", "shrank", "shrank"),
                         ("present", "stable", "stable"), ("present", "shrank", "dissolved"),
                         ("appeared", "grew")]),
    "merge-split": sorted([("present", "merged", "grew"), ("present", "merged"), ("present", "split", "stable"),
                           ("split", "stable"), ("present", "stable", "stable")]),
}


def annealing_series(radius=24.0, n_times=3, surface_turnover=0.02, jitter=0.05, max_shift=5.0,
                     seed=0, scenario="annealing") -> list[AtomModel]:
    """One particle at ``n_times`` (≤ 3) annealing times following ``scenario``, a name in
    :data:`SCENARIOS` (:data:`SCENARIO` or :data:`MERGE_SPLIT`).

    Each time the particle is rotated at random and shifted by up to ``max_shift`` Å, and a fraction
    ``surface_turnover`` of the surface sites is missing (drawn anew each time). The matrix species
    stay the same at every time; the nuclei change as in the scenario.
    """
    if not 1 <= n_times <= 3:
        raise InputError(f"the annealing scenario has 1 to 3 times, got {n_times}")
    if scenario not in SCENARIOS:
        raise InputError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    planted_nuclei = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    _, r = _ellipsoid_sites(radius, FEPT_LATTICE)
    counts = cKDTree(r).query_ball_point(r, 1.2 * FEPT_LATTICE / np.sqrt(2), return_length=True)
    surface = counts < 13
    series = []
    for t in range(n_times):
        nuclei = [PlantedNucleus(tuple(np.multiply(centre, radius)), radii[t], phase, variant)
                  for centre, phase, variant, radii in planted_nuclei if radii[t] > 0]
        keep = ~(surface & (rng.random(len(r)) < surface_turnover))
        atoms = alloy_particle(radius, nuclei=nuclei, jitter=0, rotation=Rotation.random(random_state=rng).as_matrix(),
                               shift=rng.uniform(-max_shift, max_shift, 3), keep=keep, seed=seed)
        atoms.positions += rng.normal(scale=jitter, size=atoms.positions.shape)
        planted = [i for i, (*_, radii) in enumerate(planted_nuclei) if radii[t] > 0]
        label = atoms.features["true_nucleus"]
        atoms.features["true_nucleus"] = np.where(label >= 0, np.take(planted, np.maximum(label, 0)), -1)
        series.append(atoms)
    return series
