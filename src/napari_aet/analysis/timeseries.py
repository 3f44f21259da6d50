"""One particle at several times: register every time onto the first, then track sites and nuclei.

:func:`follow_particle` chains :func:`~.registration.register_atoms`, :func:`~.tracking.track_sites`
and :func:`~.tracking.track_nuclei` on analysed atom models (with a ``nucleus`` column and a
fitted lattice); ``napari-aet track`` and the *8 Time series* widget both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import InputError
from ..progress import ProgressCallback, report
from .nuclei import phase_order
from .registration import RigidTransform, register_atoms
from .tracking import NucleusTracks, SiteTracks, track_nuclei, track_sites


@dataclass
class FollowedParticle:
    """transforms : per time, onto time 0 (identity for time 0). positions : per time, the atoms in
    time 0's frame ``(N_t, 3)`` Å. sites, nuclei : the site and nucleus tracks."""

    transforms: list
    positions: list
    sites: SiteTracks
    nuclei: NucleusTracks


def follow_particle(times, lattices, *, max_distance=None, change=0.1,
                    progress: ProgressCallback = None) -> FollowedParticle:
    """Register, track sites and link nuclei.

    times : analysed :class:`AtomModel` per time, in time order (column ``nucleus``).
    lattices : their fitted :class:`Lattice` (None, amorphous, is refused). max_distance : largest site move between times (Å;
    default half the nearest-neighbour distance). change : relative size change for grew / shrank.
    """
    times, lattices = list(times), list(lattices)
    if len(times) < 2:
        raise InputError(f"tracking needs at least two time points, got {len(times)}")
    amorphous = [t for t, lattice in enumerate(lattices) if lattice is None]
    if amorphous:
        raise InputError(f"time point(s) {amorphous} were analysed without a lattice (amorphous): tracking "
                         "registers the times by their lattices and follows ordered nuclei, so it needs a "
                         "lattice (analyse with lattice auto, fcc or bcc)")
    missing = [t for t, atoms in enumerate(times) if "nucleus" not in atoms.features]
    if missing:
        raise InputError(f"time point(s) {missing} have not been analysed (no nucleus column)")
    transforms = [RigidTransform(np.eye(3), np.zeros(3), 0.0, len(times[0]), 1.0)]
    for t in range(1, len(times)):
        report(progress, (t - 1) / (len(times) - 1) * 0.9, f"registering time point {t + 1} of {len(times)} onto the first…")
        transforms.append(register_atoms(times[t], times[0], lattices[t], lattices[0]))
    report(progress, 0.9, "tracking sites and nuclei…")
    limit = 0.5 * lattices[0].r1 if max_distance is None else float(max_distance)
    positions = [transform.apply(atoms.positions) for transform, atoms in zip(transforms, times)]
    sites = track_sites(positions, max_distance=limit)
    nuclei = track_nuclei([atoms.features["nucleus"].astype(int) for atoms in times], sites, change=change,
                          orders=[phase_order(atoms) for atoms in times])
    report(progress, 1.0, "tracking done")
    return FollowedParticle(transforms, positions, sites, nuclei)


def atoms_nucleus_tracks(followed: FollowedParticle, times) -> list:
    """Per time, each atom's nucleus track (-1 outside nuclei), ``(N_t,)`` arrays. A merged nucleus
    carries the track that continues through it, its largest predecessor's (the first of equals)."""
    rows = followed.nuclei
    out = []
    for t, atoms in enumerate(times):
        labels = atoms.features["nucleus"].astype(int)
        before = rows.time == t - 1
        previous = dict(zip(rows.nucleus_track[before], zip(rows.n_atoms[before], -rows.nucleus[before])))
        here = np.flatnonzero((rows.time == t) & (rows.nucleus >= 0))  # a merged nucleus: the continuing track last
        here = np.array(sorted(here, key=lambda row: previous.get(rows.nucleus_track[row], (0, 0))), dtype=int)
        lookup = np.full(max(labels.max(initial=-1) + 1, 1), -1)
        lookup[rows.nucleus[here]] = rows.nucleus_track[here]
        out.append(np.where(labels >= 0, lookup[np.maximum(labels, 0)], -1))
    return out
