"""How well a traced atom model matches a reference (ground truth or another model).

Match rule: after removing one global translation, a found atom and a true atom match when
each is the other's nearest neighbour and they are at most ``max_distance`` apart. The
translation is the median displacement of the matched pairs, re-estimated twice.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..model import AtomModel


def mutual_nearest_pairs(a, b, max_distance):
    """Index pairs ``(ia, ib)`` of points of ``a`` ``(N, 3)`` and ``b`` ``(M, 3)`` that are each
    other's nearest neighbour and at most ``max_distance`` apart."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    dist_ab, nn_ab = cKDTree(b).query(a)
    _, nn_ba = cKDTree(a).query(b)
    ia = np.flatnonzero((nn_ba[nn_ab] == np.arange(len(a))) & (dist_ab <= max_distance))
    return ia, nn_ab[ia]


def compare_atoms(found: AtomModel, truth: AtomModel, *, max_distance=1.0, remove_translation=True) -> dict:
    """Recall, precision, position error and species accuracy of ``found`` against ``truth``.

    found, truth : atom models (x, y, z Å). Atoms of ``found`` whose feature ``non_atom`` is
        True are left out.
    max_distance : largest distance (Å) of a matched pair.
    remove_translation : estimate and remove a global shift of ``found`` first (start from the
        centroid difference, then the median displacement of matched pairs, twice).

    Returns a dict: ``n_true``, ``n_found``, ``n_matched``, ``recall`` (matched / true),
    ``precision`` (matched / found), ``rms_error_pm`` (root-mean-square 3D distance of matched
    pairs, pm), ``species_accuracy`` (fraction of matched pairs whose found atom has a species,
    and it equals the true one; NaN when none has a species), ``n_species_compared`` and
    ``translation`` (Å, (x, y, z), added to ``found``).
    """
    if "non_atom" in found.features:
        found = found.subset(~found.features["non_atom"].astype(bool))
    pos, ref = found.positions, truth.positions
    shift = np.zeros(3)
    if remove_translation and len(pos) and len(ref):
        shift = ref.mean(axis=0) - pos.mean(axis=0)
        for radius in (2 * max_distance, max_distance, max_distance):
            i, j = mutual_nearest_pairs(pos + shift, ref, radius)
            if len(i):
                shift = np.median(ref[j] - pos[i], axis=0)
    i, j = mutual_nearest_pairs(pos + shift, ref, max_distance)
    error = np.linalg.norm(pos[i] + shift - ref[j], axis=1)
    labelled = found.species[i] != ""
    n_species = int(np.count_nonzero(labelled))
    return {
        "n_true": len(ref), "n_found": len(pos), "n_matched": len(i),
        "recall": len(i) / len(ref) if len(ref) else float("nan"),
        "precision": len(i) / len(pos) if len(pos) else float("nan"),
        "rms_error_pm": float(np.sqrt(np.mean(error ** 2)) * 100) if len(i) else float("nan"),
        "species_accuracy": (float(np.mean(found.species[i][labelled] == truth.species[j][labelled]))
                             if n_species else float("nan")),
        "n_species_compared": n_species,
        "translation": tuple(float(t) for t in shift),
    }
