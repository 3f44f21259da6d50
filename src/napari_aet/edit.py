"""Hand edits of an atom model: re-labelling, the log of what changed, the review queue.

Positions are (x, y, z) in Å in the specimen frame, origin at the rotation centre
(docs/conventions.md); atom indices are rows of the :class:`~napari_aet.model.AtomModel`.
Atoms a person moved or labelled carry ``edited=True`` and ``locked=True``, which
:func:`~napari_aet.classify.classify_atoms` (keeps their species) and
:func:`~napari_aet.refine.refine_atoms` (keeps them in place) respect. An atom a person placed
(:func:`place_atoms`) carries ``edited`` and ``placed``: refinement keeps it, while its label
stays the classifier's until the person sets one. Every change between two versions of the
atoms becomes an edit-log entry: a JSON-able dict with ``action`` ("delete", "move",
"relabel", "lock", "unlock", "add"; "undo" and "redo" from :class:`napari_aet.undo.UndoStack`),
``index`` and a UTC ``time``, so nothing edited is lost silently. From Python, :func:`move`,
:func:`delete`, :func:`add` and :func:`relabel` make the edited model and
:func:`napari_aet.workflow.edit_atoms` makes it a study's atoms, logged and undoable, as the
napari editor does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .atom_labels import NON_ATOM, flag, labels, model_elements
from .class_profiles import confidence_margin
from .geometry import specimen_to_voxel, voxel_to_specimen
from .model import AtomModel, InputError, Reconstruction, check_elements, utc_now
from .sampling import atom_window, fit_peaks, local_profiles

#: Confidence below which a placed atom's label is flagged ``ambiguous`` (classify_atoms' default).
AMBIGUITY_THRESHOLD = 0.8


def mark_edited(atoms: AtomModel, index) -> AtomModel:
    """A copy with atoms ``index`` (indices or boolean mask) flagged ``edited`` and ``locked``."""
    edited, locked = flag(atoms, "edited"), flag(atoms, "locked")
    edited[index] = True
    locked[index] = True
    return atoms.with_features(edited=edited, locked=locked)


def set_locked(atoms: AtomModel, index, locked: bool) -> AtomModel:
    """A copy with atoms ``index`` locked (marked edited too) or unlocked (left to the classifier
    and refinement again; still marked edited)."""
    if locked:
        return mark_edited(atoms, index)
    flags = flag(atoms, "locked")
    flags[index] = False
    return atoms.with_features(locked=flags)


def relabel(atoms: AtomModel, index, label: str, *, lock=True) -> AtomModel:
    """A copy with atoms ``index`` labelled ``label``: an element symbol or :data:`NON_ATOM`.

    Sets ``species`` ("" for a non-atom) and ``non_atom``, clears ``ambiguous`` (as
    classify_atoms does for locked atoms) and marks the atoms edited and locked. The
    classifier's own columns (``confidence``, ``class_index``, ``intensity``) are kept.
    ``lock=False`` (a label decided by a rule, e.g. :func:`move_class_boundary`): the atoms are
    marked edited only, stay ``ambiguous`` if they were, and a Classify re-run may change them.
    """
    if label != NON_ATOM:
        check_elements([label])
    species = atoms.species.copy()
    species[index] = "" if label == NON_ATOM else label
    non_atom, ambiguous, edited = flag(atoms, "non_atom"), flag(atoms, "ambiguous"), flag(atoms, "edited")
    non_atom[index] = label == NON_ATOM
    if not lock:
        edited[index] = True
        return AtomModel(atoms.positions, species, {**atoms.features, "non_atom": non_atom, "edited": edited})
    ambiguous[index] = False
    changed = AtomModel(atoms.positions, species, {**atoms.features, "non_atom": non_atom, "ambiguous": ambiguous})
    return mark_edited(changed, index)


def move_class_boundary(atoms: AtomModel, lower: str, upper: str, old: float, new: float) -> AtomModel:
    """A copy in which the intensity boundary between labels ``lower`` and ``upper`` (as in
    :func:`labels`) moved from ``old`` to ``new`` (integrated intensity, volume units): the
    unlocked atoms of those labels whose ``intensity`` lies between the two take the label on
    their side of ``new`` — :func:`relabel` with ``lock=False``. Locked atoms keep theirs."""
    if "intensity" not in atoms.features:
        raise InputError("the atoms carry no intensity: classify them first")
    intensity, names = np.asarray(atoms.features["intensity"], float), labels(atoms)
    target = lower if new > old else upper
    crossed = np.isin(names, [lower, upper]) & (names != target) & ~flag(atoms, "locked") & \
        (intensity >= min(old, new)) & (intensity <= max(old, new))
    return relabel(atoms, np.flatnonzero(crossed), target, lock=False)


def move(atoms: AtomModel, index, positions) -> AtomModel:
    """A copy with atoms ``index`` at ``positions`` (``(len(index), 3)`` x, y, z Å), marked
    ``edited`` and ``locked`` (Classify keeps their label, Refine their place)."""
    index = np.atleast_1d(np.asarray(index, dtype=np.intp))
    moved = atoms.positions.copy()
    moved[index] = np.asarray(positions, dtype=float).reshape(len(index), 3)
    return mark_edited(AtomModel(moved, atoms.species, atoms.features), index)


def delete(atoms: AtomModel, index) -> AtomModel:
    """A copy without atoms ``index`` (pass the same ``index`` as ``removed`` to :func:`changes`
    or :func:`napari_aet.workflow.edit_atoms`)."""
    index = np.atleast_1d(np.asarray(index, dtype=np.intp))
    if np.any((index < 0) | (index >= len(atoms))) or len(np.unique(index)) != len(index):
        raise InputError(f"atoms to delete must be distinct indices from 0 to {len(atoms) - 1}, got {index.tolist()}")
    return atoms.subset(np.setdiff1d(np.arange(len(atoms)), index))


def add(atoms: AtomModel, positions, reconstruction: Reconstruction | None = None, *, snap=True,
        min_distance=None) -> AtomModel:
    """A copy with atoms appended at ``positions`` (``(n, 3)`` x, y, z Å), as the napari editor
    adds them: moved onto the volume's nearest peak (:func:`snap_to_peak`, with a
    ``reconstruction`` and ``snap``), then labelled by the classifier (:func:`place_atoms`).
    Their other feature columns get False, NaN, 0 or "" by type. InputError if one lands nearer
    to an atom than their minimum distance (:func:`crowding`, ``min_distance`` as there): the
    peak is already an atom's."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    if reconstruction is not None and snap:
        positions = np.array([snap_to_peak(reconstruction, p) for p in positions]).reshape(-1, 3)
    n = len(positions)
    features = {name: np.concatenate([column, _blank(column, n)]) for name, column in atoms.features.items()}
    grown = AtomModel(np.vstack([atoms.positions, positions]), np.append(atoms.species, [""] * n), features)
    placed = place_atoms(grown, np.arange(len(atoms), len(atoms) + n), reconstruction)
    crowded = crowding(placed, np.arange(len(atoms), len(atoms) + n), min_distance)
    if crowded:
        raise InputError(f"not added: {'; '.join(crowded)}")
    return placed


def crowding(atoms: AtomModel, index, min_distance=None) -> list[str]:
    """Which of atoms ``index`` (just added) lie nearer to another atom than the pair's minimum
    distance (:func:`napari_aet.elements.min_distance_table`; ``min_distance``: None for the
    physical table, one number or pairs as there): one phrase each, e.g. "a Ta atom 0.10 Å from
    the Ta atom at (1.2, -3.4, 5.6) Å (atoms of this pair are at least 2.43 Å apart)". Atoms
    without an element (unlabelled, non-atoms) are not judged and do not count."""
    from scipy.spatial import cKDTree

    from .elements import min_distance_table

    index = np.atleast_1d(np.asarray(index, dtype=np.intp))
    species = atoms.species.astype(str)
    labelled = np.flatnonzero(species != "")
    others = np.setdiff1d(labelled, index)
    judged = index[species[index] != ""]
    if not len(others) or not len(judged):
        return []
    elements = sorted(set(species[labelled]))
    table = min_distance_table(elements, min_distance)
    order = {e: k for k, e in enumerate(elements)}
    tree = cKDTree(atoms.positions[others])
    phrases = []
    for i in judged:
        near = others[tree.query_ball_point(atoms.positions[i], table.max())]
        distance = np.linalg.norm(atoms.positions[near] - atoms.positions[i], axis=1)
        limit = table[order[species[i]], [order[species[j]] for j in near]]
        crowded = np.flatnonzero(distance < limit)
        if len(crowded):
            k = crowded[np.argmin(distance[crowded])]
            where = ", ".join(f"{v:.1f}" for v in atoms.positions[near[k]])
            phrases.append(f"a {species[i]} atom {distance[k]:.2f} Å from the {species[near[k]]} atom at ({where}) Å "
                           f"(atoms of this pair are at least {limit[k]:.2f} Å apart)")
    return phrases


def _blank(column: np.ndarray, n: int) -> np.ndarray:
    """``n`` empty values of ``column``'s type: False, NaN, 0 or ""."""
    kind = np.asarray(column).dtype.kind
    if kind == "b":
        return np.zeros(n, bool)
    if kind == "f":
        return np.full(n, np.nan, column.dtype)
    if kind in "iu":
        return np.zeros(n, column.dtype)
    return np.full(n, "", dtype=object)


def changes(before: AtomModel, after: AtomModel, removed=(), *, tolerance=1e-6) -> list[dict]:
    """Edit-log entries of what changed from ``before`` to ``after``.

    Atoms are matched by order, as napari's Points layer keeps it: ``before`` without the
    indices ``removed`` pairs with the first atoms of ``after``; atoms of ``after`` beyond them
    were added, atoms of ``before`` beyond ``after``'s length were deleted. Entries, in this
    order (positions are [x, y, z] Å, labels as in :func:`labels`):

    * ``{"action": "delete", "index": i, "position", "label"}`` — ``i`` indexes ``before``;
    * ``{"action": "move", "index": j, "old", "new"}`` — moved more than ``tolerance`` Å;
    * ``{"action": "relabel", "index": j, "old", "new"}`` — the label changed;
    * ``{"action": "lock", "index": j, "label"}`` — the atom was locked as it was (its label
      confirmed; a move or relabel locks the atom without a lock entry);
    * ``{"action": "unlock", "index": j}`` — the atom was locked and is not any more;
    * ``{"action": "add", "index": j, "position", "label"}`` — ``j`` indexes ``after``;

    each with ``"time"`` (UTC, ISO 8601).
    """
    kept = np.delete(np.arange(len(before)), np.asarray(removed, dtype=np.intp))
    n = min(len(kept), len(after))
    old, new = kept[:n], np.arange(n)
    deleted = np.setdiff1d(np.arange(len(before)), old)
    shift = np.linalg.norm(after.positions[new] - before.positions[old], axis=1)
    moved = shift > tolerance
    old_labels, new_labels = labels(before), labels(after)
    relabelled = old_labels[old] != new_labels[new]
    locked = np.flatnonzero(~flag(before, "locked")[old] & flag(after, "locked")[new] & ~relabelled & ~moved)
    moved, relabelled = np.flatnonzero(moved), np.flatnonzero(relabelled)
    unlocked = np.flatnonzero(flag(before, "locked")[old] & ~flag(after, "locked")[new])
    added = np.arange(n, len(after))
    time = utc_now()
    xyz = before.positions.tolist(), after.positions.tolist()
    return ([{"action": "delete", "index": int(i), "position": xyz[0][i], "label": old_labels[i], "time": time}
             for i in deleted]
            + [{"action": "move", "index": int(j), "old": xyz[0][old[j]], "new": xyz[1][j], "time": time}
               for j in moved]
            + [{"action": "relabel", "index": int(j), "old": old_labels[old[j]], "new": new_labels[j],
                "time": time} for j in relabelled]
            + [{"action": "lock", "index": int(j), "label": new_labels[j], "time": time} for j in locked]
            + [{"action": "unlock", "index": int(j), "time": time} for j in unlocked]
            + [{"action": "add", "index": int(j), "position": xyz[1][j], "label": new_labels[j], "time": time}
               for j in added])


def replacement(before: AtomModel, after: AtomModel) -> dict:
    """The edit-log entry of a whole model replaced by another (e.g. a re-run of a stage):
    ``{"action": "replace", "old_count", "new_count", "time"}``; its atoms are not edits."""
    return {"action": "replace", "old_count": len(before), "new_count": len(after), "time": utc_now()}


def append_to_log(log: list, entries: list[dict]) -> list:
    """Append ``entries`` to ``log`` (in place; returned), merging a drag into one entry.

    A batch of moves of exactly the atoms the log's last entries moved (the next step of the
    same drag) updates those entries' ``new`` position and ``time`` instead of adding entries,
    so the log keeps where each drag started and ended.
    """
    n = len(entries)
    tail = log[-n:] if 0 < n <= len(log) else []
    if tail and all(e["action"] == "move" for e in (*tail, *entries)) and \
            [e["index"] for e in tail] == [e["index"] for e in entries]:
        for last, entry in zip(tail, entries, strict=True):
            last.update(new=entry["new"], time=entry["time"])
    else:
        log.extend(entries)
    return log


def _confidence(atoms: AtomModel) -> np.ndarray:
    """The classifier's per-atom ``confidence`` (zeros where the atoms were never classified)."""
    return np.asarray(atoms.features.get("confidence", np.zeros(len(atoms))), dtype=float)


def review_queue(atoms: AtomModel, *, include_non_atoms=False) -> np.ndarray:
    """Indices of the atoms still to review — ``ambiguous`` and not ``locked`` — lowest
    ``confidence`` first (ties by index). Empty when the atoms were never classified.

    include_non_atoms : whether non-atoms are reviewed too; they are not drawn unless shown, and
        the queue visits only atoms the person can see.
    """
    if "ambiguous" not in atoms.features:
        return np.zeros(0, dtype=np.intp)
    todo = flag(atoms, "ambiguous") & ~flag(atoms, "locked")
    if not include_non_atoms:
        todo &= ~flag(atoms, "non_atom")
    todo = np.flatnonzero(todo)
    return todo[np.argsort(_confidence(atoms)[todo], kind="stable")]


def in_intensity_range(atoms: AtomModel, low, high, *, include_non_atoms=False) -> np.ndarray:
    """Indices of the atoms whose integrated ``intensity`` (classify_atoms' feature, volume
    units) lies in [low, high]; non-atoms only if ``include_non_atoms`` (as in :func:`review_queue`)."""
    if "intensity" not in atoms.features:
        raise InputError("the atoms carry no intensity: classify them first")
    intensity = np.asarray(atoms.features["intensity"], float)
    chosen = (intensity >= min(low, high)) & (intensity <= max(low, high))
    if not include_non_atoms:
        chosen &= ~flag(atoms, "non_atom")
    return np.flatnonzero(chosen)


def queue_step(atoms: AtomModel, current=None, step=1, *, include_non_atoms=False) -> tuple[int | None, int, int]:
    """The atom ``step`` places from ``current`` in the :func:`review_queue` (``include_non_atoms``
    as there).

    ``current`` need not be in the queue any more (e.g. it was just labelled): its place is
    where its (confidence, index) would sort, so ``step=0`` then gives the atom after it,
    ``step=1`` too, and ``step=-1`` the one before. With ``current`` None: the first
    (``step >= 0``) or the last atom. The result is clamped to the queue.

    Returns (atom index or None if the queue is empty, its position in the queue, queue length).
    """
    queue = review_queue(atoms, include_non_atoms=include_non_atoms)
    if len(queue) == 0:
        return None, 0, 0
    if current is None:
        target = 0 if step >= 0 else len(queue) - 1
    else:
        if not 0 <= current < len(atoms):
            raise InputError(f"atom {current} does not exist: the model has {len(atoms)} atoms")
        confidence = _confidence(atoms)
        c, q = confidence[current], confidence[queue]
        place = int(np.count_nonzero((q < c) | ((q == c) & (queue < current))))
        in_queue = place < len(queue) and queue[place] == current
        target = place + step - (step > 0 and not in_queue)
    target = int(np.clip(target, 0, len(queue) - 1))
    return int(queue[target]), target, len(queue)


def snap_to_peak(reconstruction: Reconstruction, position, *, radius=1.0) -> np.ndarray:
    """The sub-voxel peak of the volume nearest a clicked position.

    position : (x, y, z) Å in the specimen frame (rotation centre at the origin).
    radius : Å; of the voxels within it of ``position`` that are local maxima (26 neighbours)
        brighter than the mean of those voxels (not a ripple of the background), the nearest is
        taken (the brightest voxel if none is: a slope), then the centre of a Gaussian fitted to the 3×3×3
        voxels around it (trace_atoms' peak fit); a fit that fails keeps the voxel. Taking the
        nearest maximum rather than the brightest voxel keeps a click on a light atom from
        jumping to the tail of a heavier neighbour.

    Returns the (x, y, z) Å of the peak.
    """
    volume, voxel = np.asarray(reconstruction.volume, np.float32), reconstruction.voxel_size
    click = specimen_to_voxel(np.reshape(np.asarray(position, float), (1, 3)), volume.shape, voxel)[0]
    if not np.all((click > -0.5) & (click < np.array(volume.shape) - 0.5)):
        raise InputError(f"position {list(np.round(position, 2))} Å lies outside the volume")
    reach = max(1, int(np.ceil(radius / voxel)))
    r = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    voxels = np.rint(click).astype(int) + offsets
    inside = np.all((voxels >= 0) & (voxels < volume.shape), axis=1) & \
        (np.linalg.norm(voxels - click, axis=1) <= radius / voxel + 0.5)
    voxels = voxels[inside]
    values = volume[tuple(voxels.T)]
    around = np.clip(voxels[:, None] + offsets[None, np.abs(offsets).max(axis=1) == 1],
                     0, np.array(volume.shape) - 1)
    peaks = np.flatnonzero((values >= volume[tuple(np.moveaxis(around, -1, 0))].max(axis=1))
                           & (values > values.mean()))
    if len(peaks):
        peak = voxels[peaks[np.argmin(np.linalg.norm(voxels[peaks] - click, axis=1))]]
    else:
        peak = voxels[np.argmax(values)]
    centre = fit_peaks(volume, peak[None], 1)[0]
    return voxel_to_specimen(centre, volume.shape, voxel)[0]


def brightest_on_ray(reconstruction: Reconstruction, start, direction, *, radius=1.0) -> np.ndarray:
    """The sub-voxel peak (:func:`snap_to_peak`) at the brightest point of the volume along a ray.

    start : (x, y, z) Å, a point of the ray; direction : (x, y, z), the viewing direction.
    The ray is sampled every half voxel across the whole volume (trilinear interpolation).
    Returns the (x, y, z) Å of the peak.
    """
    volume, voxel = np.asarray(reconstruction.volume, np.float32), reconstruction.voxel_size
    direction = np.asarray(direction, float)
    if not np.linalg.norm(direction) > 0:
        raise InputError("the viewing direction is zero: expected a non-zero (x, y, z) vector")
    direction = direction / np.linalg.norm(direction)
    reach = np.linalg.norm(volume.shape) * voxel
    steps = np.arange(-reach, reach, voxel / 2)
    points = np.asarray(start, float)[None] + steps[:, None] * direction[None]
    values = ndimage.map_coordinates(volume, specimen_to_voxel(points, volume.shape, voxel).T, order=1,
                                     mode="constant", cval=-np.inf)
    if not np.any(np.isfinite(values)):
        raise InputError("the clicked ray does not cross the volume")
    return snap_to_peak(reconstruction, points[np.argmax(values)], radius=radius)


def place_atoms(atoms: AtomModel, index, reconstruction: Reconstruction | None, *, box=5) -> AtomModel:
    """A copy with atoms ``index`` marked as placed by hand and labelled by the classifier.

    The placed atoms get ``edited`` and ``placed`` (refinement keeps them) but not ``locked``:
    their label is the classifier's — the element whose average profile (over the other
    classified atoms, ``box``-voxel cubes weighted by :func:`~napari_aet.sampling.atom_window`
    of the other atoms, as :func:`~napari_aet.classify.classify_atoms` weights them)
    is nearest their own, never "non-atom" since a person placed them — with classify_atoms'
    ``confidence`` margin, ``ambiguous`` below :data:`AMBIGUITY_THRESHOLD`, and their
    ``intensity``. Without a reconstruction, or in a model never classified, they stay
    unlabelled (species "").
    """
    index = np.atleast_1d(np.asarray(index, dtype=np.intp))
    edited, placed = flag(atoms, "edited"), flag(atoms, "placed")
    edited[index] = placed[index] = True
    atoms = atoms.with_features(edited=edited, placed=placed)
    species = atoms.species.copy()
    species[index] = ""
    others = np.setdiff1d(np.arange(len(atoms)), index)
    elements = model_elements(atoms.subset(others))
    if reconstruction is None or not elements or len(index) == 0:
        return AtomModel(atoms.positions, species, atoms.features)
    class_of = {e: k + 1 for k, e in enumerate(elements)}
    label = np.array([class_of.get(s, 0) for s in atoms.species], dtype=np.int64)
    profiles = local_profiles(reconstruction.volume, atoms, reconstruction.voxel_size, box=box,
                              window=atom_window(reconstruction.volume, atoms.subset(others), reconstruction.voxel_size))
    onehot = np.eye(len(elements) + 1, dtype=np.float32)[label[others]]
    means = (onehot.T @ profiles[others]) / np.maximum(onehot.sum(axis=0), 1)[:, None]
    distance = np.sum((profiles[index, None] - means[None, 1:]) ** 2, axis=2)  # elements only
    label[index] = 1 + np.argmin(distance, axis=1)
    active = np.bincount(label[others], minlength=len(elements) + 1) > 0
    confidence = confidence_margin(profiles, label, active, None)[index]
    species[index] = np.array(elements, dtype=object)[label[index] - 1]
    judged = {"confidence": confidence, "ambiguous": confidence < AMBIGUITY_THRESHOLD,
              "non_atom": np.zeros(len(index), bool), "class_index": label[index],
              "intensity": profiles[index].sum(axis=1, dtype=np.float64)}
    return AtomModel(atoms.positions, species, {**atoms.features, **{
        name: _with_values(atoms.features.get(name), index, values, len(atoms)) for name, values in judged.items()}})


def _with_values(column, index, values, n) -> np.ndarray:
    """A copy of feature ``column`` (zeros if None) with ``values`` at ``index``."""
    column = np.zeros(n, values.dtype) if column is None else np.asarray(column)
    column = column.astype(np.result_type(column, values))
    column[index] = values
    return column
