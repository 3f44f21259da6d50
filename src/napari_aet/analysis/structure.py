"""General structure of an atom model, crystalline or not: pair distribution, coordination and
bond-orientational order.

* g(r): the histogram of pair distances divided by N·ρ·4πr²Δr, with ρ = N / (volume of the convex
  hull); it tends to 1 inside a large particle and falls off at the particle's size. Large models
  count the distances from a random subset of 4,000 atoms.
* Partial g_ab(r) for every pair of elements (b atoms around a atoms, over the density of b).
* Coordination number: neighbours closer than ``cutoff``: 1.2 r₁ (between the first and second fcc
  shells) with a fitted lattice, the first minimum of g(r) without one.
* Q4, Q6: Steinhardt bond-orientational order averaged over the atom and its neighbours (Lechner &
  Dellago 2008): q_lm(i) = mean over bonds of Y_lm(r̂_ij), q̄_lm(i) = mean of q_lm over i and its
  neighbours, Q_l(i) = sqrt(4π/(2l+1) Σ_m |q̄_lm(i)|²), divided by the value of a perfect fcc
  crystal (Q4 = 0.1909, Q6 = 0.5745), so an fcc atom gives 1.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import ConvexHull, QhullError, cKDTree
from scipy.special import sph_harm_y

from ..model import AtomModel, InputError
from .lattice import ideal_bonds, nearest_neighbour_distance


def _volume(positions) -> float:
    """Convex-hull volume (Å³), or the bounding box's for a flat or degenerate set."""
    try:
        return ConvexHull(positions).volume
    except QhullError:
        return np.ptp(positions, axis=0).prod() or 1.0


def _pair_histograms(positions, codes, n_codes, edges, max_centres, seed):
    """Pair-distance histograms ``(n_codes, n_codes, n_bins)``: [a, b] counts the atoms of code b at
    edges[k] < d ≤ edges[k+1] from the centres of code a, the centres being at most ``max_centres``
    atoms drawn with ``seed``; and the number of centres of each code."""
    n = len(positions)
    pick = np.random.default_rng(seed).choice(n, size=min(n, max_centres), replace=False)
    pairs = cKDTree(positions[pick]).sparse_distance_matrix(cKDTree(positions), edges[-1], output_type="ndarray")
    k = np.searchsorted(edges, pairs["v"], side="left") - 1
    pairs, k = pairs[k >= 0], k[k >= 0]  # an atom and itself (d = 0) left out
    n_bins = len(edges) - 1
    index = (codes[pick][pairs["i"]] * n_codes + codes[pairs["j"]]) * n_bins + k
    counts = np.bincount(index, minlength=n_codes * n_codes * n_bins).reshape(n_codes, n_codes, n_bins)
    return counts.astype(float), np.bincount(codes[pick], minlength=n_codes)


def _binned(positions, codes, n_codes, r_max, bin_width, max_centres, seed):
    """Bin centres r (Å), the shell volumes 4πr²Δr over the hull volume, and :func:`_pair_histograms`."""
    edges = np.arange(0.0, r_max + bin_width, bin_width)
    r = 0.5 * (edges[1:] + edges[:-1])
    return r, 4 * np.pi * r ** 2 * bin_width / _volume(positions), \
        *_pair_histograms(positions, codes, n_codes, edges, max_centres, seed)


def pair_distribution(positions, *, r_max=10.0, bin_width=0.05, max_centres=4000,
                      seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Pair distribution function ``(r, g)``: bin centres (Å) and g(r) up to ``r_max`` Å.

    Distances are counted from at most ``max_centres`` atoms (a random subset drawn with ``seed``)
    to all atoms, and scaled to all atoms."""
    positions = np.asarray(positions, float)
    if len(positions) < 5:
        raise InputError(f"the pair distribution needs at least 5 atoms, got {len(positions)}")
    r, shell, counts, centres = _binned(positions, np.zeros(len(positions), int), 1, r_max, bin_width,
                                        max_centres, seed)
    return r, counts[0, 0] / (centres[0] * len(positions) * shell)


def partial_pair_distributions(positions, species, *, r_max=10.0, bin_width=0.05, max_centres=4000,
                               seed=0) -> dict:
    """Partial pair distributions g_ab(r) for every pair of elements a ≤ b (alphabetical), keyed
    "a-b": b atoms around a atoms over N_a·ρ_b·4πr²Δr, ρ_b = N_b / hull volume, so a random
    mixture gives g_ab ≈ g for every pair. Bins and centres as :func:`pair_distribution` (N_a:
    the centres of element a); an element without 2 atoms and 2 centres is left out."""
    positions = np.asarray(positions, float)
    elements, codes = np.unique(np.asarray(species, str), return_inverse=True)
    r, shell, counts, centres = _binned(positions, codes, len(elements), r_max, bin_width, max_centres, seed)
    atoms = np.bincount(codes, minlength=len(elements))
    kept = [a for a in range(len(elements)) if atoms[a] >= 2 and centres[a] >= 2]
    return {f"{elements[a]}-{elements[b]}": counts[a, b] / (centres[a] * atoms[b] * shell)
            for i, a in enumerate(kept) for b in kept[i:]}


def _smoothed(r, g, smooth) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(r, float)
    return r, gaussian_filter1d(np.asarray(g, float), smooth / (r[1] - r[0]))


def first_peak(r, g, *, smooth=0.1) -> float:
    """r (Å) of the highest point of g(r) after a Gaussian smoothing of ``smooth`` Å: the first
    neighbour shell. Smoothed, a spike one bin wide (refined pairs held at exactly their minimum
    distance, :func:`napari_aet.refine.refine_atoms`) does not outweigh the shell."""
    r, g = _smoothed(r, g, smooth)
    return float(r[np.argmax(g)])


def first_minimum(r, g, *, smooth=0.1) -> float:
    """r (Å) of the first minimum of g(r) after its first peak (:func:`first_peak`), searched up to
    1.6 × the peak's r after a Gaussian smoothing of ``smooth`` Å: the neighbour cutoff of a model
    without a lattice."""
    peak = first_peak(r, g, smooth=smooth)
    r, g = _smoothed(r, g, smooth)
    window = np.flatnonzero((r > peak) & (r <= 1.6 * peak))
    if not len(window):
        raise InputError(f"g(r) has no minimum after its first peak at {peak:.2f} Å up to {r[-1]:.1f} Å")
    return float(r[window[np.argmin(g[window])]])


def _neighbours(positions, cutoff, k=14):
    """Every atom's neighbours within ``cutoff`` Å, ``(N, k)`` indices and presence (k doubled until
    no atom has k of them)."""
    tree = cKDTree(positions)
    while True:
        dist, idx = tree.query(positions, k=min(k + 1, len(positions)), distance_upper_bound=cutoff)
        if k + 1 >= len(positions) or not np.isfinite(dist[:, -1]).any():
            return idx[:, 1:], np.isfinite(dist[:, 1:])
        k *= 2


def _q_lm(unit_bonds, present, l):
    """Mean Y_lm over each atom's bonds for m = 0 … l, ``(N, l+1)`` complex (Y_l,−m = (−1)^m Y_lm*, so
    the negative m add nothing new to |q̄_lm|²)."""
    bonds = unit_bonds[present]
    theta = np.arccos(np.clip(bonds[:, 2], -1, 1))
    phi = np.arctan2(bonds[:, 1], bonds[:, 0])
    y = np.zeros(present.shape + (l + 1,), complex)
    y[present] = sph_harm_y(l, np.arange(l + 1)[None, :], theta[:, None], phi[:, None])
    return y.sum(axis=1) / np.maximum(present.sum(axis=1), 1)[:, None]


def _q_l(mean_q, l):
    """Q_l from q̄_lm for m = 0 … l."""
    power = np.abs(mean_q[:, 0]) ** 2 + 2 * np.sum(np.abs(mean_q[:, 1:]) ** 2, axis=1)
    return np.sqrt(4 * np.pi / (2 * l + 1) * power)


def _averaged_q(positions, idx, present, l):
    padded = np.vstack([positions, np.zeros((1, 3))])
    bonds = padded[idx] - positions[:, None]
    unit = bonds / np.maximum(np.linalg.norm(bonds, axis=-1, keepdims=True), 1e-12)
    q = np.vstack([_q_lm(unit, present, l), np.zeros((1, l + 1))])
    total = q[:-1] + (q[idx] * present[..., None]).sum(axis=1)
    return _q_l(total / (1 + present.sum(axis=1))[:, None], l)


def _fcc_reference(l) -> float:
    return float(_q_l(_q_lm(ideal_bonds("fcc")[None], np.ones((1, 12), bool), l), l)[0])


def bond_order(atoms: AtomModel, *, cutoff=None) -> AtomModel:
    """Per-atom ``coordination`` and fcc-normalised ``Q4``, ``Q6`` (float32).

    cutoff : neighbour distance limit in Å; None: 1.2 × the nearest-neighbour distance r₁.
    """
    positions = atoms.positions
    cutoff = 1.2 * nearest_neighbour_distance(positions) if cutoff is None else float(cutoff)
    idx, present = _neighbours(positions, cutoff)
    idx = np.where(present, idx, len(positions))
    columns = {f"Q{l}": (_averaged_q(positions, idx, present, l) / _fcc_reference(l)).astype(np.float32)
               for l in (4, 6)}
    return atoms.with_features(coordination=present.sum(axis=1).astype(np.int64), **columns)


def analyse_structure(atoms: AtomModel, *, cutoff=None, r_max=10.0, bin_width=0.05) -> tuple[AtomModel, dict]:
    """:func:`bond_order` and a JSON-ready summary: g(r) (and the partial g_ab(r) for two or more
    elements), the neighbour cutoff, coordination and Q4 / Q6 statistics.

    cutoff : neighbour distance limit in Å; None: the first minimum of g(r) (:func:`first_minimum`),
    the usual choice for a model without a lattice.
    """
    r, g = pair_distribution(atoms.positions, r_max=r_max, bin_width=bin_width)
    cutoff = first_minimum(r, g) if cutoff is None else float(cutoff)
    atoms = bond_order(atoms, cutoff=cutoff)
    f = atoms.features
    interior = f["coordination"] >= np.percentile(f["coordination"], 50)
    partial = partial_pair_distributions(atoms.positions, atoms.species, r_max=r_max, bin_width=bin_width)
    pdf = {"r_A": np.round(r, 4).tolist(), "g": np.round(g, 5).tolist()}
    if len(partial) > 1:
        pdf["partial"] = {pair: np.round(values, 5).tolist() for pair, values in partial.items()}
    return atoms, {"pdf": pdf, "first_peak_A": first_peak(r, g), "neighbour_cutoff_A": cutoff,
                   "coordination": {"mean": float(np.mean(f["coordination"])),
                                    "histogram": np.bincount(f["coordination"]).tolist()},
                   "Q4": {"mean": float(np.mean(f["Q4"])), "interior_mean": float(np.mean(f["Q4"][interior]))},
                   "Q6": {"mean": float(np.mean(f["Q6"])), "interior_mean": float(np.mean(f["Q6"][interior]))}}
