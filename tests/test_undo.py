"""The undo history of hand edits (napari_aet.undo): steps kept as the rows they changed, exact
undo and redo, and a history that survives the study file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_aet import edit
from napari_aet.atom_labels import NON_ATOM
from napari_aet.geometry import render_atoms
from napari_aet.model import AtomModel, InputError, Reconstruction
from napari_aet.project import Project, TimePoint, load_project, save_project
from napari_aet.simulate import adf_amplitudes, fcc_particle
from napari_aet.undo import EditStep, UndoStack, history_of, keep_history


@pytest.fixture(scope="module")
def particle():
    """A small FePt particle (55 atoms) with a float column holding NaNs and a text column."""
    atoms = fcc_particle(radius=6.0, seed=2)
    confidence = np.linspace(0, 1, len(atoms))
    confidence[::7] = np.nan
    return atoms.with_features(confidence=confidence, site=np.array([f"s{k}" for k in range(len(atoms))], object))


def same(a: AtomModel, b: AtomModel):
    """Whether two atom models are equal: positions, species and every column (NaN equal to NaN)."""
    assert len(a) == len(b) and list(a.features) == list(b.features)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.species, b.species)
    for name in a.features:
        np.testing.assert_array_equal(a.features[name], b.features[name], err_msg=name)
        assert a.features[name].dtype == b.features[name].dtype, name
    return True


def step_of(before, after, removed=()):
    return before, after, edit.changes(before, after, removed)


def edits(particle, reconstruction=None):
    """(before, after, entries) of each kind of edit, chained: relabel, lock, delete two and move
    one, add one placed by the classifier's rule (a column new to the model)."""
    one = edit.relabel(particle, [3], NON_ATOM)
    two = edit.set_locked(one, [9], True)
    kept = two.subset(np.delete(np.arange(len(two)), [4, 20]))
    three = edit.mark_edited(AtomModel(kept.positions + (np.arange(len(kept)) == 10)[:, None] * 0.3, kept.species,
                                       kept.features), [10])
    grown = AtomModel(np.vstack([three.positions, [[0.2, 0.1, 0.0]]]), np.append(three.species, ""),
                      {k: np.append(v, v[:1]) for k, v in three.features.items()})
    four = edit.place_atoms(grown, [len(three)], reconstruction)
    return [step_of(particle, one), step_of(one, two), step_of(two, three, [4, 20]), step_of(three, four)]


def test_a_step_keeps_only_the_rows_it_changed_and_undoes_and_redoes_exactly(particle):
    for before, after, entries in edits(particle):
        step = EditStep.between(before, after, entries)
        assert len(step.old) + len(step.deleted) + len(step.added) <= 3  # never the whole model
        assert same(step.undo(after), before) and same(step.redo(before), after)
    relabel = EditStep.between(*edits(particle)[0])
    assert relabel.changed.tolist() == [3] and len(relabel.deleted) == len(relabel.added) == 0


def test_a_column_a_step_added_goes_with_its_undo(particle):
    before, after, entries = edits(particle)[-1]
    assert "placed" not in before.features and "placed" in after.features
    step = EditStep.between(before, after, entries)
    assert len(step.added) == 1 and len(step.old) == 0  # the new column's zeros elsewhere are not rows
    assert same(step.undo(after), before) and same(step.redo(before), after)


def test_undo_stack_logs_and_steps_back_and_forth(particle):
    (a, one, first), (_, two, second) = edits(particle)[:2]
    stack = UndoStack()
    stack.record(a, one, first)
    stack.record(one, two, second)
    atoms, entry = stack.undo(two)
    assert same(atoms, one) and entry["action"] == "undo" and entry["entries"] == second
    atoms, entry = stack.undo(atoms)
    assert same(atoms, a) and entry["entries"][0]["action"] == "relabel"
    assert not stack.can_undo
    with pytest.raises(InputError, match="nothing to undo"):
        stack.undo(atoms)
    atoms, entry = stack.redo(atoms)
    assert same(atoms, one) and entry["action"] == "redo"
    json.dumps(entry)
    stack.record(one, two, second)  # a new edit: nothing left to redo
    assert not stack.can_redo
    with pytest.raises(InputError, match="cannot be undone"):
        stack.undo(a.subset(np.arange(2)))  # not the atoms the step left


def test_a_drag_amends_its_step(particle):
    moved = [particle.positions + (np.arange(len(particle)) == 5)[:, None] * d for d in (0.1, 0.2, 0.3)]
    models = [particle] + [edit.mark_edited(AtomModel(p, particle.species, particle.features), [5]) for p in moved]
    stack = UndoStack()
    stack.record(models[0], models[1], edit.changes(models[0], models[1]))
    for previous, now in zip(models[1:], models[2:]):
        stack.amend(previous, now, edit.changes(models[0], now))
    atoms, _ = stack.undo(models[-1])
    assert same(atoms, particle) and not stack.can_undo


def test_the_history_is_kept_in_the_study_file_while_its_stages_stand(particle, tmp_path):
    chain = edits(particle)
    stack = UndoStack()
    for before, after, entries in chain:
        stack.record(before, after, entries)
    last = chain[-1][1]
    stack.undo(last)  # one step undone: the redo survives too
    point = TimePoint("t0", atoms=chain[-1][0], stages={"trace": {"status": "done", "parameters": {}}})
    keep_history(point, stack)
    path = save_project(tmp_path / "study.aet", Project([point]))
    (reopened,) = load_project(path).time_points
    history = history_of(reopened)
    atoms, _ = history.redo(reopened.atoms)
    assert same(atoms, last)
    for before, _, _ in reversed(chain):
        atoms, _ = history.undo(atoms)
        assert same(atoms, before)
    reopened.stages["trace"]["parameters"] = {"min_distance": 2.5}  # traced again since
    assert not history_of(reopened).can_undo
