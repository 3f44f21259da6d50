"""Potts labelling by alpha-expansion: exact on two labels, never above the start, forbidden labels kept out."""

import itertools

import numpy as np

from napari_aet.analysis.potts import potts_energy, potts_labels


def _random_problem(rng, n, n_labels):
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.4]
    return rng.normal(size=(n, n_labels)), np.array(pairs).reshape(-1, 2), rng.uniform(0.1, 1.5)


def test_two_labels_reach_the_global_minimum():
    rng = np.random.default_rng(0)
    for _ in range(20):
        costs, edges, weight = _random_problem(rng, 9, 2)
        found = potts_energy(costs, edges, weight, potts_labels(costs, edges, weight, initial=np.zeros(9, int)))
        best = min(potts_energy(costs, edges, weight, np.array(labels))
                   for labels in itertools.product(range(2), repeat=9))
        assert found <= best + 1e-2  # costs are rounded to 1/1000 for the max-flow


def test_more_labels_never_above_the_start_and_within_twice_the_minimum():
    rng = np.random.default_rng(1)
    for _ in range(10):
        _, edges, weight = _random_problem(rng, 7, 3)
        costs = rng.uniform(0, 2, size=(7, 3))  # non-negative: the factor-2 bound of alpha-expansion holds
        start = rng.integers(0, 3, 7)
        found = potts_energy(costs, edges, weight, potts_labels(costs, edges, weight, initial=start))
        best = min(potts_energy(costs, edges, weight, np.array(labels))
                   for labels in itertools.product(range(3), repeat=7))
        assert best - 1e-9 <= found <= min(potts_energy(costs, edges, weight, start), 2 * best + 1e-2)


def _chain_minimum(costs, weight):
    """The exact minimum of a Potts energy on a chain (dynamic programming)."""
    total = costs[0].copy()
    for row in costs[1:]:
        total = row + np.minimum(total, total.min() + weight)
    return total.min()


def test_a_noisy_chain_is_smoothed_to_its_exact_minimum_and_forbidden_labels_stay_out():
    truth = np.repeat([0, 1, 0], 30)
    rng = np.random.default_rng(2)
    observed = np.where(rng.random(90) < 0.2, 1 - truth, truth)
    costs = np.where(np.arange(2)[None, :] == observed[:, None], 0.0, 1.0)
    edges = np.stack([np.arange(89), np.arange(1, 90)], axis=1)
    labels = potts_labels(costs, edges, 1.5, initial=np.zeros(90, int))
    assert abs(potts_energy(costs, edges, 1.5, labels) - _chain_minimum(costs, 1.5)) < 1e-2
    assert np.mean(labels == truth) > np.mean(observed == truth)
    costs[30:40, 1] = np.inf  # label 1 forbidden on ten nodes, whatever the data say
    labels = potts_labels(costs, edges, 1.5, initial=np.zeros(90, int))
    assert np.all(labels[30:40] == 0) and np.mean(labels[40:60] == 1) > 0.9
