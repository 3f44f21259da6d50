"""The undo history of hand edits (Qt-free), small enough to keep in the study after every edit.

An edit step turns the atoms ``before`` into ``after`` the way napari's Points layer changes
them (and :func:`napari_aet.edit.changes` reads them): some atoms are deleted, some of the others
change (position, label, any column), new atoms are appended. :class:`EditStep` keeps only those
rows, so a step that relabels one atom of 10,000 holds two rows; undo applies it backwards to
the current atoms, redo forwards. :class:`UndoStack` is the editor's history; :func:`keep_history`
stores it in a time point (``TimePoint.undo_history``, saved with the study and in its hand-edit
autosave), :func:`history_of` reads it back, so Ctrl+Z after reopening a study — even one whose
napari was killed — undoes the last edit made before.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .model import AtomModel, InputError, utc_now


def _default(dtype, n) -> np.ndarray:
    """The value a column absent from some atoms has there: zero (False) for numbers, "" otherwise."""
    return np.zeros(n, dtype) if np.dtype(dtype).kind in "biuf" else np.full(n, "", dtype=object)


def _column(atoms: AtomModel, name, dtype) -> np.ndarray:
    return atoms.features[name] if name in atoms.features else _default(dtype, len(atoms))


def _differ(a, b) -> np.ndarray:
    """Per-row inequality of two columns; NaN equals NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return (a != b) & ~(np.isnan(a) & np.isnan(b))
    return np.asarray(a != b, dtype=bool).reshape(len(a))


def _common_dtype(a, b):
    """A dtype that holds values of both: numpy's for numbers, object for anything else."""
    return np.result_type(a, b) if np.dtype(a).kind in "biuf" and np.dtype(b).kind in "biuf" else object


def _set_rows(atoms: AtomModel, index, rows: AtomModel, columns) -> AtomModel:
    """A copy of ``atoms`` whose rows ``index`` are ``rows``, with exactly the feature ``columns``
    (a column new to ``atoms`` is filled with its default elsewhere)."""
    positions, species = atoms.positions.copy(), atoms.species.copy()
    positions[index], species[index] = rows.positions, rows.species
    features = {}
    for name in columns:
        values = rows.features.get(name)
        dtype = values.dtype if values is not None else atoms.features[name].dtype
        column = _column(atoms, name, dtype)
        column = column.astype(_common_dtype(column.dtype, dtype))
        if values is not None:
            column[index] = values
        features[name] = column
    return AtomModel(positions, species, features)


def _insert_rows(atoms: AtomModel, index, rows: AtomModel) -> AtomModel:
    """``atoms`` with ``rows`` put in at ``index`` (indices of the result, ascending)."""
    n = len(atoms) + len(rows)
    new = np.zeros(n, bool)
    new[index] = True
    slots = AtomModel(np.zeros((n, 3)), np.full(n, "", dtype=object),
                      {name: _default(column.dtype, n) for name, column in atoms.features.items()})
    slots = _set_rows(slots, ~new, atoms, list(atoms.features))
    return _set_rows(slots, new, rows, list(dict.fromkeys([*atoms.features, *rows.features])))


def _as_dict(atoms: AtomModel) -> dict:
    return {"positions": atoms.positions, "species": atoms.species, "features": dict(atoms.features),
            "dtypes": {name: column.dtype.str for name, column in atoms.features.items()}}


def _from_dict(record: dict) -> AtomModel:
    """Inverse of :func:`_as_dict`, also after a JSON round trip (which turns arrays into lists)."""
    return AtomModel(np.asarray(record["positions"], float).reshape(-1, 3), np.asarray(record["species"], object),
                     {name: np.asarray(values, dtype=np.dtype(record["dtypes"][name]))
                      for name, values in record["features"].items()})


@dataclass
class EditStep:
    """One undoable edit, as the rows it changed.

    entries : its edit-log entries (:func:`napari_aet.edit.changes`).
    removed : indices (into the atoms before) of the deleted atoms; deleted : those atoms.
    changed : indices (into the atoms after) of the kept atoms that changed; old, new : those
        atoms before and after.
    added : the atoms appended at the end.
    columns_before, columns_after : the feature columns before and after, in order.
    """

    entries: list
    removed: np.ndarray
    deleted: AtomModel
    changed: np.ndarray
    old: AtomModel
    new: AtomModel
    added: AtomModel
    columns_before: list
    columns_after: list

    @classmethod
    def between(cls, before: AtomModel, after: AtomModel, entries: list[dict]) -> EditStep:
        """The step from ``before`` to ``after``, whose deleted atoms are the ``index`` of the
        "delete" ``entries``; the kept atoms, in order, are the first atoms of ``after``."""
        removed = np.array(sorted(e["index"] for e in entries if e["action"] == "delete"), dtype=np.intp)
        kept = np.delete(np.arange(len(before)), removed)
        if len(kept) > len(after):
            raise InputError(f"{len(before)} atoms before, {len(removed)} deleted, but {len(after)} after: "
                             "every atom missing after an edit must be logged as deleted")
        first, rest = before.subset(kept), after.subset(np.arange(len(kept)))
        differ = np.any(first.positions != rest.positions, axis=1) | (first.species != rest.species)
        for name in dict.fromkeys([*before.features, *after.features]):
            dtype = (before.features.get(name) if name in before.features else after.features[name]).dtype
            differ |= _differ(_column(first, name, dtype), _column(rest, name, dtype))
        changed = np.flatnonzero(differ)
        return cls([dict(e) for e in entries], removed, before.subset(removed), changed, first.subset(changed),
                   rest.subset(changed), after.subset(np.arange(len(kept), len(after))),
                   list(before.features), list(after.features))

    def undo(self, atoms: AtomModel) -> AtomModel:
        """The atoms before this step, from ``atoms`` as it left them (later columns kept)."""
        kept = len(atoms) - len(self.added)
        if kept < 0 or (len(self.changed) and self.changed[-1] >= kept):
            raise InputError(f"the atoms changed since this edit ({len(atoms)} atoms): it cannot be undone")
        columns = [c for c in atoms.features if c not in set(self.columns_after) - set(self.columns_before)]
        columns += [c for c in self.columns_before if c not in columns]
        atoms = _set_rows(atoms.subset(np.arange(kept)), self.changed, self.old, columns)
        return _insert_rows(atoms, self.removed, self.deleted)

    def redo(self, atoms: AtomModel) -> AtomModel:
        """The atoms after this step, from ``atoms`` as it found them (later columns kept)."""
        if len(self.removed) and self.removed[-1] >= len(atoms):
            raise InputError(f"the atoms changed since this edit ({len(atoms)} atoms): it cannot be redone")
        kept = atoms.subset(np.delete(np.arange(len(atoms)), self.removed))
        if len(self.changed) and self.changed[-1] >= len(kept):
            raise InputError(f"the atoms changed since this edit ({len(atoms)} atoms): it cannot be redone")
        columns = [c for c in atoms.features if c not in set(self.columns_before) - set(self.columns_after)]
        columns += [c for c in self.columns_after if c not in columns]
        kept = _set_rows(kept, self.changed, self.new, columns)
        return _insert_rows(kept, np.arange(len(kept), len(kept) + len(self.added)), self.added)

    def to_dict(self) -> dict:
        """A JSON-able dict (arrays as arrays; the project file stores them as lists)."""
        return {"entries": self.entries, "removed": self.removed, "changed": self.changed,
                "deleted": _as_dict(self.deleted), "old": _as_dict(self.old), "new": _as_dict(self.new),
                "added": _as_dict(self.added), "columns_before": self.columns_before,
                "columns_after": self.columns_after}

    @classmethod
    def from_dict(cls, record: dict) -> EditStep:
        return cls(list(record["entries"]), np.asarray(record["removed"], dtype=np.intp),
                   _from_dict(record["deleted"]), np.asarray(record["changed"], dtype=np.intp),
                   _from_dict(record["old"]), _from_dict(record["new"]), _from_dict(record["added"]),
                   list(record["columns_before"]), list(record["columns_after"]))


class UndoStack:
    """The edit steps done and undone, to undo and redo them.

    :meth:`record` each step with its log entries (a step that continues the last one, such as
    the next move of a drag, :meth:`amend` s it instead); :meth:`undo` and :meth:`redo` take the
    atoms shown now and give the atoms to show and the log entry that says so — ``{"action":
    "undo"/"redo", "entries": [the step's entries], "time"}`` — so the edit log stays the
    complete history.
    """

    def __init__(self, done=(), undone=()):
        self._done: list[EditStep] = list(done)
        self._undone: list[EditStep] = list(undone)

    def record(self, before: AtomModel, after: AtomModel, entries: list[dict]):
        """A new step from ``before`` to ``after``; nothing is left to redo."""
        self._done.append(EditStep.between(before, after, entries))
        self._undone.clear()

    def amend(self, before: AtomModel, after: AtomModel, entries: list[dict]):
        """The last step, which left the atoms ``before``, now ends at ``after``, with log ``entries``."""
        self._done[-1] = EditStep.between(self._done[-1].undo(before), after, entries)

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    def undo(self, atoms: AtomModel) -> tuple[AtomModel, dict]:
        """(``atoms`` without the last step, its log entry); InputError if nothing to undo."""
        return self._move("undo", self._done, self._undone, atoms)

    def redo(self, atoms: AtomModel) -> tuple[AtomModel, dict]:
        """(``atoms`` with the last undone step again, its log entry); InputError if nothing to redo."""
        return self._move("redo", self._undone, self._done, atoms)

    @staticmethod
    def _move(action, source: list, target: list, atoms: AtomModel) -> tuple[AtomModel, dict]:
        """Apply the last step of ``source`` (``action``: "undo" or "redo") and move it to ``target``."""
        if not source:
            raise InputError(f"nothing to {action}")
        step = source[-1]
        result = getattr(step, action)(atoms)  # the stacks change only once the step applied
        target.append(source.pop())
        return result, {"action": action, "entries": step.entries, "time": utc_now()}

    def to_dict(self) -> dict:
        """The steps as JSON-able dicts: ``{"done": [...], "undone": [...]}``."""
        return {"done": [step.to_dict() for step in self._done], "undone": [step.to_dict() for step in self._undone]}

    @classmethod
    def from_dict(cls, record: dict) -> UndoStack:
        return cls([EditStep.from_dict(s) for s in record.get("done", [])],
                   [EditStep.from_dict(s) for s in record.get("undone", [])])


def keep_history(point, stack: UndoStack):
    """Store ``stack`` in the time point (``point.undo_history``), with the stage records it
    belongs to: a stage run since makes it void (see :func:`history_of`)."""
    point.undo_history = {"stages": copy.deepcopy(point.stages), **stack.to_dict()}


def history_of(point) -> UndoStack:
    """The undo history kept in the time point, or an empty one if none was kept or a stage ran
    since (its steps were made on other atoms)."""
    kept = point.undo_history
    if not kept or kept.get("stages") != point.stages:
        return UndoStack()
    return UndoStack.from_dict(kept)
