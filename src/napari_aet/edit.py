"""Hand edits of an atom model: re-labelling, the log of what changed, the review queue.

Positions are (x, y, z) in Å in the specimen frame, origin at the rotation centre
(docs/conventions.md); atom indices are rows of the :class:`~napari_aet.model.AtomModel`.
Atoms a person placed, moved or labelled carry ``edited=True`` and ``locked=True``, which
:func:`~napari_aet.classify.classify_atoms` (keeps their species) and
:func:`~napari_aet.refine.refine_atoms` (keeps them in place) respect. Every change between two
versions of the atoms becomes an edit-log entry: a JSON-able dict with ``action`` ("delete",
"move", "relabel", "add"), ``index`` and a UTC ``time``, so nothing edited is lost silently.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from .model import ATOMIC_NUMBERS, AtomModel, InputError, check_elements

#: The label of a point that is "not an atom" (stored as species "" with ``non_atom=True``,
#: the convention of classify_atoms).
NON_ATOM = "non-atom"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _flags(atoms: AtomModel, name) -> np.ndarray:
    """A copy of boolean feature ``name`` (all False where absent)."""
    return np.array(atoms.features.get(name, np.zeros(len(atoms), bool)), dtype=bool)


def labels(atoms: AtomModel) -> np.ndarray:
    """Per-atom labels: the species, or :data:`NON_ATOM` where ``non_atom`` is True."""
    return np.where(_flags(atoms, "non_atom"), NON_ATOM, atoms.species.astype(str)).astype(object)


def model_elements(atoms: AtomModel) -> tuple[str, ...]:
    """The element symbols present in the model, lightest first ("" excluded)."""
    return tuple(sorted(set(atoms.species.tolist()) - {""}, key=ATOMIC_NUMBERS.__getitem__))


def mark_edited(atoms: AtomModel, index) -> AtomModel:
    """A copy with atoms ``index`` (indices or boolean mask) flagged ``edited`` and ``locked``."""
    edited, locked = _flags(atoms, "edited"), _flags(atoms, "locked")
    edited[index] = True
    locked[index] = True
    return atoms.with_features(edited=edited, locked=locked)


def relabel(atoms: AtomModel, index, label: str) -> AtomModel:
    """A copy with atoms ``index`` labelled ``label``: an element symbol or :data:`NON_ATOM`.

    Sets ``species`` ("" for a non-atom) and ``non_atom``, clears ``ambiguous`` (as
    classify_atoms does for locked atoms) and marks the atoms edited and locked. The
    classifier's own columns (``confidence``, ``class_index``, ``intensity``) are kept.
    """
    if label != NON_ATOM:
        check_elements([label])
    species = atoms.species.copy()
    species[index] = "" if label == NON_ATOM else label
    non_atom, ambiguous = _flags(atoms, "non_atom"), _flags(atoms, "ambiguous")
    non_atom[index] = label == NON_ATOM
    ambiguous[index] = False
    changed = AtomModel(atoms.positions, species, {**atoms.features, "non_atom": non_atom, "ambiguous": ambiguous})
    return mark_edited(changed, index)


def changes(before: AtomModel, after: AtomModel, removed=(), *, tolerance=1e-6) -> list[dict]:
    """Edit-log entries of what changed from ``before`` to ``after``.

    Atoms are matched by order, as napari's Points layer keeps it: ``before`` without the
    indices ``removed`` pairs with the first atoms of ``after``; atoms of ``after`` beyond them
    were added, atoms of ``before`` beyond ``after``'s length were deleted. Entries, in this
    order (positions are [x, y, z] Å, labels as in :func:`labels`):

    * ``{"action": "delete", "index": i, "position", "label"}`` — ``i`` indexes ``before``;
    * ``{"action": "move", "index": j, "old", "new"}`` — moved more than ``tolerance`` Å;
    * ``{"action": "relabel", "index": j, "old", "new"}`` — the label changed, or was confirmed
      (``old == new``) by locking the atom;
    * ``{"action": "add", "index": j, "position", "label"}`` — ``j`` indexes ``after``;

    each with ``"time"`` (UTC, ISO 8601).
    """
    kept = np.delete(np.arange(len(before)), np.asarray(removed, dtype=np.intp))
    n = min(len(kept), len(after))
    old, new = kept[:n], np.arange(n)
    deleted = np.setdiff1d(np.arange(len(before)), old)
    shift = np.linalg.norm(after.positions[new] - before.positions[old], axis=1)
    moved = np.flatnonzero(shift > tolerance)
    old_labels, new_labels = labels(before), labels(after)
    confirmed = ~_flags(before, "locked")[old] & _flags(after, "locked")[new]
    relabelled = np.flatnonzero((old_labels[old] != new_labels[new]) | confirmed)
    added = np.arange(n, len(after))
    time = utc_now()
    xyz = before.positions.tolist(), after.positions.tolist()
    return ([{"action": "delete", "index": int(i), "position": xyz[0][i], "label": old_labels[i], "time": time}
             for i in deleted]
            + [{"action": "move", "index": int(j), "old": xyz[0][old[j]], "new": xyz[1][j], "time": time}
               for j in moved]
            + [{"action": "relabel", "index": int(j), "old": old_labels[old[j]], "new": new_labels[j],
                "time": time} for j in relabelled]
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


def review_queue(atoms: AtomModel) -> np.ndarray:
    """Indices of the atoms still to review — ``ambiguous`` and not ``locked`` — lowest
    ``confidence`` first (ties by index). Empty when the atoms were never classified."""
    if "ambiguous" not in atoms.features:
        return np.zeros(0, dtype=np.intp)
    todo = np.flatnonzero(_flags(atoms, "ambiguous") & ~_flags(atoms, "locked"))
    return todo[np.argsort(_confidence(atoms)[todo], kind="stable")]


def queue_step(atoms: AtomModel, current=None, step=1) -> tuple[int | None, int, int]:
    """The atom ``step`` places from ``current`` in the :func:`review_queue`.

    ``current`` need not be in the queue any more (e.g. it was just labelled): its place is
    where its (confidence, index) would sort, so ``step=0`` then gives the atom after it,
    ``step=1`` too, and ``step=-1`` the one before. With ``current`` None: the first
    (``step >= 0``) or the last atom. The result is clamped to the queue.

    Returns (atom index or None if the queue is empty, its position in the queue, queue length).
    """
    queue = review_queue(atoms)
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
