"""The labelling of a graph's nodes that minimises a Potts energy, by alpha-expansion with min-cuts.

    E(l) = Σ_i D_i(l_i) + w · #{edges (i, j) with l_i ≠ l_j}

D is a per-node cost of each label (e.g. a negative log-likelihood), w the cost of one edge whose two
ends differ. Alpha-expansion (Boykov, Veksler & Zabih 2001) lets every node at once either keep its
label or take label α, which is a binary problem solved exactly by one minimum s–t cut
(Kolmogorov & Zabih 2004); α runs over the labels until no move lowers E. The result is a local
minimum that no set of nodes taking one label together can lower, within a factor 2 of the global
minimum for non-negative costs (costs are rounded to 1/1000 for the integer max-flow).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from ..model import InputError

#: Costs are rounded to integers in units of 1 / SCALE for the max-flow (scipy needs integer capacities).
SCALE = 1000


def potts_energy(costs, edges, weight, labels) -> float:
    """E(labels) for ``costs`` ``(N, n_labels)``, ``edges`` ``(M, 2)`` and the edge ``weight``."""
    return float(costs[np.arange(len(labels)), labels].sum()
                 + weight * np.count_nonzero(labels[edges[:, 0]] != labels[edges[:, 1]]))


def _expansion(costs, edges, weight, labels, alpha) -> np.ndarray:
    """Which nodes take ``alpha`` in the best expansion move (one min-cut)."""
    n = len(labels)
    i, j = edges[:, 0], edges[:, 1]
    differ = weight * (labels[i] != labels[j])          # E00: both keep
    i_moves = weight * (labels[j] != alpha)             # E10: i takes alpha, j keeps
    j_moves = weight * (labels[i] != alpha)             # E01: i keeps, j takes alpha
    # E(x_i, x_j) = E00 + (E10 - E00) x_i - E10 x_j + (E01 + E10 - E00) (1 - x_i) x_j
    gain = costs[:, alpha] - costs[np.arange(n), labels]
    gain += np.bincount(i, i_moves - differ, n) - np.bincount(j, i_moves, n)
    pair = np.rint(SCALE * (j_moves + i_moves - differ)).astype(np.int64)
    blocked = ~np.isfinite(gain)  # alpha forbidden here: more than any cut could save
    gain = np.rint(SCALE * np.where(blocked, 0, gain)).astype(np.int64)
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    gain[blocked] = np.rint(SCALE * (3 * weight * degree[blocked] + 1)).astype(np.int64)
    source, sink = n, n + 1
    nodes = np.arange(n)
    rows = np.concatenate([i, np.full(n, source), nodes])
    cols = np.concatenate([j, nodes, np.full(n, sink)])
    capacity = np.concatenate([pair, np.maximum(gain, 0), np.maximum(-gain, 0)])
    keep = capacity > 0
    graph = sparse.csr_matrix((capacity[keep].astype(np.int32), (rows[keep], cols[keep])), shape=(n + 2, n + 2))
    flow = maximum_flow(graph, source, sink).flow
    residual = (graph - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    stays = np.zeros(n + 2, bool)
    stays[breadth_first_order(residual, source, directed=True, return_predecessors=False)] = True
    return ~stays[:n]


def potts_labels(costs, edges, weight, initial=None, max_cycles=10) -> np.ndarray:
    """The labels (N,) that minimise the Potts energy, by alpha-expansion.

    Parameters
    ----------
    costs : (N, n_labels) float, cost of each label at each node (only differences along a row matter;
        ``inf``: the label is forbidden there; ``initial`` must be allowed).
    edges : (M, 2) int, node pairs, each undirected edge once.
    weight : cost of one edge whose ends carry different labels (≥ 0, in the units of ``costs``).
    initial : (N,) starting labels (default: each node's cheapest label).
    max_cycles : at most this many passes over all labels.
    """
    costs = np.asarray(costs, float)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    labels = np.argmin(costs, axis=1) if initial is None else np.asarray(initial, np.int64).copy()
    if not np.all(np.isfinite(costs[np.arange(len(labels)), labels])):
        raise InputError("the initial labels must be allowed there (a finite cost)")
    if weight < 0:
        raise InputError(f"the edge weight must be at least 0, got {weight}")
    energy = potts_energy(costs, edges, weight, labels)
    for _ in range(max_cycles):
        improved = False
        for alpha in range(costs.shape[1]):
            moved = _expansion(costs, edges, weight, labels, alpha)
            if not moved.any():
                continue
            trial = np.where(moved, alpha, labels)
            trial_energy = potts_energy(costs, edges, weight, trial)
            if trial_energy < energy - 1e-9:
                labels, energy, improved = trial, trial_energy, True
        if not improved:
            break
    return labels
