"""Follow atoms and nuclei across time points registered onto the first.

* Sites: between consecutive times, atoms that are each other's nearest neighbour and at most
  ``max_distance`` apart are the same site (one-to-one). A site keeps its ``track`` id; an atom
  without a partner at the previous time starts a new track (``appeared``); an atom without a
  partner at the next time ``vanishes``.
* Nuclei: nucleus a at time t−1 and nucleus b at time t are linked when they share tracked atoms:
  at least ``min_shared`` of them and at least ``min_fraction`` of the smaller nucleus (nuclei that
  only touch share a few edge atoms). The event of b: ``appeared`` (no link back), ``merged`` (two
  or more), ``split`` (its one predecessor links to two or more), else ``grew`` / ``shrank`` when
  the atom count changes by more than ``change`` (fraction), else ``stable``. A nucleus of t−1
  without a link forward has ``dissolved``. A nucleus track continues through stable / grew /
  shrank links, through a merge in the largest predecessor and through a split in the largest part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .atom_metrics import mutual_nearest_pairs

EVENTS = ("present", "appeared", "grew", "shrank", "stable", "dissolved", "merged", "split")


@dataclass
class SiteTracks:
    """Per time point: ``track`` ids ``(N_t,)``, ``appeared`` and ``vanishes`` flags ``(N_t,)``."""

    track: list
    appeared: list
    vanishes: list


def track_sites(positions, *, max_distance=1.0) -> SiteTracks:
    """Track ids of atoms at several times, ``positions`` a list of ``(N_t, 3)`` arrays (Å), all in
    one frame (registered), in time order. max_distance : largest move of a site between times (Å)."""
    track = [np.arange(len(positions[0]))]
    appeared = [np.zeros(len(positions[0]), bool)]
    vanishes = []
    next_id = len(positions[0])
    for previous, current in zip(positions[:-1], positions[1:]):
        i, j = mutual_nearest_pairs(previous, current, max_distance)
        ids = np.full(len(current), -1)
        ids[j] = track[-1][i]
        new = ids < 0
        ids[new] = next_id + np.arange(new.sum())
        next_id += int(new.sum())
        gone = np.ones(len(previous), bool)
        gone[i] = False
        vanishes.append(gone)
        track.append(ids)
        appeared.append(new)
    vanishes.append(np.zeros(len(positions[-1]), bool))
    return SiteTracks(track, appeared, vanishes)


@dataclass
class NucleusTracks:
    """One row per nucleus track and time: ``time``, ``nucleus_track``, ``nucleus`` (-1 once gone),
    ``n_atoms``, ``event`` (one of :data:`EVENTS`) and ``mean_order`` (the nucleus's mean order
    parameter; NaN when gone or not given)."""

    time: np.ndarray
    nucleus_track: np.ndarray
    nucleus: np.ndarray
    n_atoms: np.ndarray
    event: np.ndarray
    mean_order: np.ndarray

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"time": self.time, "nucleus_track": self.nucleus_track, "nucleus": self.nucleus,
                             "n_atoms": self.n_atoms, "event": self.event, "mean_order": self.mean_order})


def _links(previous_labels, previous_tracks, labels, tracks, min_shared, min_fraction):
    """Which nuclei of two consecutive times are linked ``(n_prev, n_cur)``: they share at least
    ``min_shared`` tracked atoms and at least ``min_fraction`` of the smaller one's atoms (two
    nuclei that only touch share a few edge atoms; one that grew or merged shares most of its own)."""
    n_prev, n_cur = max(previous_labels.max(initial=-1) + 1, 0), max(labels.max(initial=-1) + 1, 0)
    _, ip, ic = np.intersect1d(previous_tracks, tracks, assume_unique=True, return_indices=True)
    a, b = previous_labels[ip], labels[ic]
    both = (a >= 0) & (b >= 0)
    shared = np.zeros((n_prev, n_cur), np.int64)
    np.add.at(shared, (a[both], b[both]), 1)
    smaller = np.minimum.outer(np.bincount(previous_labels[previous_labels >= 0], minlength=n_prev),
                               np.bincount(labels[labels >= 0], minlength=n_cur))
    return (shared >= min_shared) & (shared >= min_fraction * smaller)


def track_nuclei(nucleus_labels, tracks: SiteTracks, *, orders=None, change=0.1, min_shared=3,
                 min_fraction=0.2) -> NucleusTracks:
    """Link nuclei across times (see the module docstring).

    nucleus_labels : per time, the ``nucleus`` column ``(N_t,)`` (-1 outside nuclei).
    orders : per time, each atom's order parameter ``(N_t,)``, for the nuclei's ``mean_order``.
    tracks : the site tracks of the same atoms. change : relative size change (fraction) beyond
    which a nucleus grew or shrank. min_shared, min_fraction : tracked atoms two nuclei must share
    to be linked, in number and as a fraction of the smaller nucleus.
    """
    sizes = [np.bincount(labels[labels >= 0], minlength=max(labels.max(initial=-1) + 1, 0))
             for labels in nucleus_labels]
    rows = [(0, k, k, int(sizes[0][k]), "present") for k in range(len(sizes[0]))]
    current = np.arange(len(sizes[0]))  # nucleus track of each nucleus at the latest time
    next_track = len(sizes[0])
    for t in range(1, len(nucleus_labels)):
        linked = _links(nucleus_labels[t - 1], tracks.track[t - 1], nucleus_labels[t], tracks.track[t], min_shared,
                        min_fraction)
        new = np.full(len(sizes[t]), -1)
        for b in range(len(sizes[t])):
            parents = np.flatnonzero(linked[:, b])
            if len(parents) == 0:
                event, new[b] = "appeared", next_track
                next_track += 1
            elif len(parents) > 1:
                event = "merged"
                new[b] = current[parents[np.argmax(sizes[t - 1][parents])]]
                rows += [(t, current[p], b, int(sizes[t][b]), "merged") for p in parents if current[p] != new[b]]
            elif linked[parents[0]].sum() > 1:
                event = "split"
                siblings = np.flatnonzero(linked[parents[0]])
                largest = siblings[np.argmax(sizes[t][siblings])]
                if b == largest:
                    new[b] = current[parents[0]]
                else:
                    new[b], next_track = next_track, next_track + 1
            else:
                ratio = sizes[t][b] / max(sizes[t - 1][parents[0]], 1) - 1
                event = "grew" if ratio > change else "shrank" if ratio < -change else "stable"
                new[b] = current[parents[0]]
            rows.append((t, new[b], b, int(sizes[t][b]), event))
        rows += [(t, current[a], -1, 0, "dissolved") for a in np.flatnonzero(~linked.any(axis=1))]
        current = new
    rows.sort(key=lambda r: (r[0], r[1]))
    columns = list(zip(*rows)) if rows else [[]] * 5
    time, nucleus = np.array(columns[0], int), np.array(columns[2], int)
    mean_order = np.full(len(rows), np.nan)
    for t, labels in enumerate(nucleus_labels if orders is not None else []):
        inside = labels >= 0
        means = np.bincount(labels[inside], np.asarray(orders[t], float)[inside], len(sizes[t])) / np.maximum(sizes[t], 1)
        here = (time == t) & (nucleus >= 0)
        mean_order[here] = means[nucleus[here]]
    return NucleusTracks(time, np.array(columns[1], int), nucleus, np.array(columns[3], int),
                         np.array(columns[4], dtype=object), mean_order)
