"""Atoms as profiles sorted into classes: class averages, distances to them, and the confidence
margin between an atom's best and second-best class.

The arithmetic of profile classification, shared by :mod:`napari_aet.classify` (which iterates
it) and :mod:`napari_aet.edit` (which labels an atom placed by hand). Profiles are ``(N, M)``
rows of :func:`napari_aet.sampling.local_profiles` (volume units); labels are class indices
``(N,)`` in 0..C-1 (class 0 = non-atom, i = the i-th element).
"""

from __future__ import annotations

import numpy as np

#: Weight (in atoms) of the global brightness in a local brightness scale (pseudo-count).
_SHRINK = 5.0


def class_means(profiles, label, n_classes, neighbours):
    """Leave-one-out class average profiles seen by each atom ``(N, C, M)``.

    neighbours : sparse ``(N, N)`` 0/1 matrix (no diagonal), or None (global averages).
    With neighbours, the global averages are scaled by the atom's local brightness: the
    least-squares scale of its neighbouring element atoms' profiles p onto their class
    averages mu, ``s = (sum p.mu + k) / (sum mu.mu + k)``, shrunk towards 1 by ``k`` =
    ``_SHRINK`` average atoms where few neighbours exist. Slow drift is multiplicative, so
    one scale per neighbourhood estimated from every element atom in it is far less noisy
    than separate local averages per class; non-atoms (noise) do not follow it.
    """
    onehot = np.eye(n_classes, dtype=np.float32)[label]  # (N, C)
    own = onehot[:, :, None] * profiles[:, None, :]  # (N, C, M): the atom's own contribution
    count = onehot.sum(axis=0)[None] - onehot
    mean = ((onehot.T @ profiles)[None] - own) / np.maximum(count, 1)[..., None]
    if neighbours is None:
        return mean
    rows, element = np.arange(len(label)), label > 0
    own_mean = mean[rows, label]  # (N, M)
    fit = np.where(element, np.einsum("nm,nm->n", profiles, own_mean), 0.0)
    norm = np.where(element, np.einsum("nm,nm->n", own_mean, own_mean), 0.0)
    k = _SHRINK * (norm[element].mean() if np.any(element) else 1.0)
    scale = (neighbours @ fit + k) / (neighbours @ norm + k)
    return mean * scale.astype(np.float32)[:, None, None]


def profile_distances(profiles, means):
    """Squared distances ``(N, C)`` of each atom's profile to each class average it sees."""
    return np.einsum("ncm,ncm->nc", profiles[:, None] - means, profiles[:, None] - means)


def confidence_margin(profiles, label, active, neighbours):
    """Posterior margin ``(N,)`` (0..1) between each atom's class ``label`` and its nearest rival.

    active : ``(C,)`` bool, the classes in use; neighbours : as for :func:`class_means`.

    For a pair of classes (a, b) the log-odds of an atom is ``(d_b - d_a) / (2 s_ab**2)`` where
    d are squared distances to the class averages and ``s_ab**2`` is the variance of the
    profiles, about their own class average, along the direction a -> b (pooled over the
    members of a and b). The margin is ``tanh(log_odds / 2)`` = p_best - p_second of the pair;
    1 where no rival class has members to measure the spread.
    """
    n_classes = len(active)
    means = class_means(profiles, label, n_classes, neighbours)
    dist = profile_distances(profiles, means)  # (N, C)
    gap = np.sqrt(np.maximum(np.einsum("nacm,nacm->nac", means[:, :, None] - means[:, None],
                                       means[:, :, None] - means[:, None]), 1e-30))  # (N, C, C)
    rows = np.arange(len(label))
    own_gap = gap[rows, label]  # (N, C): |mu_own - mu_c|
    # projection of the atom on the own -> c axis, measured from its own class average
    along = (dist - dist[rows, label][:, None] - own_gap ** 2) / (2 * own_gap)  # (N, C), minus sign folded
    var = np.full((n_classes, n_classes), np.inf)
    for a in np.flatnonzero(active):
        for b in np.flatnonzero(active):
            residuals = np.concatenate([along[label == a, b], along[label == b, a]])
            if a != b and residuals.size > 1:
                var[a, b] = max(np.mean(residuals ** 2), 1e-30)
    log_odds = (dist - dist[rows, label][:, None]) / (2 * var[label])
    log_odds[rows, label] = np.inf
    log_odds[:, ~active] = np.inf
    margin = np.tanh(np.min(log_odds, axis=1) / 2)
    return np.where(np.isfinite(margin), margin, 1.0)
