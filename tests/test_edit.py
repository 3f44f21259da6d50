"""Hand edits of atom models (napari_aet.edit): re-labelling, the edit log, the review queue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_aet import edit
from napari_aet.classify import classify_atoms
from napari_aet.atom_labels import NON_ATOM, labels, model_elements
from napari_aet.geometry import render_atoms
from napari_aet.model import AtomModel, InputError, Reconstruction
from napari_aet.simulate import adf_amplitudes, fcc_particle


@pytest.fixture(scope="module")
def particle():
    """A small FePt particle (55 atoms)."""
    return fcc_particle(radius=6.0, seed=2)


def reviewed(atoms, confidence, ambiguous):
    return atoms.with_features(confidence=np.asarray(confidence, float), ambiguous=np.asarray(ambiguous, bool))


def test_relabel_sets_species_non_atom_and_locks(particle):
    atoms = particle.with_features(non_atom=np.zeros(len(particle), bool), ambiguous=np.ones(len(particle), bool))
    out = edit.relabel(atoms, [0, 3], "Pt")
    out = edit.relabel(out, [5], NON_ATOM)
    assert list(out.species[[0, 3]]) == ["Pt", "Pt"] and out.species[5] == ""
    assert out.features["non_atom"][5] and not out.features["non_atom"][[0, 3]].any()
    assert labels(out)[5] == NON_ATOM
    edited = np.zeros(len(atoms), bool)
    edited[[0, 3, 5]] = True
    np.testing.assert_array_equal(out.features["edited"], edited)
    np.testing.assert_array_equal(out.features["locked"], edited)
    np.testing.assert_array_equal(out.features["ambiguous"], ~edited)
    np.testing.assert_array_equal(out.species[~edited], atoms.species[~edited])
    assert not atoms.features["locked"].any()  # the input is not modified
    with pytest.raises(InputError, match="unknown element"):
        edit.relabel(atoms, [0], "Xx")


def test_model_elements_lightest_first():
    atoms = AtomModel(np.zeros((4, 3)), ["Pt", "", "Fe", "Pt"])
    assert model_elements(atoms) == ("Fe", "Pt")


def test_changes_detect_delete_move_relabel_add(particle):
    before = particle.with_features(non_atom=np.zeros(len(particle), bool))
    after = before.subset(np.delete(np.arange(len(before)), [2, 7]))  # atoms 2 and 7 deleted
    positions = after.positions.copy()
    positions[4] += [0.5, 0.0, 0.0]  # atom 4 of `after` (5 of `before`) moved by 0.5 Å
    after = AtomModel(np.vstack([positions, [[1.0, 2.0, 3.0]]]),
                      np.append(after.species, "Fe"),
                      {k: np.append(v, v[0]) for k, v in after.features.items()})
    after = edit.relabel(after, [10], NON_ATOM)
    log = edit.changes(before, after, removed=[2, 7])
    json.dumps(log)  # JSON-able
    by_action = {a: [e for e in log if e["action"] == a] for a in ("delete", "move", "relabel", "add")}
    assert [e["index"] for e in by_action["delete"]] == [2, 7]
    assert by_action["delete"][0]["position"] == before.positions[2].tolist()
    assert by_action["delete"][1]["label"] == before.species[7]
    (move,) = by_action["move"]
    assert move["index"] == 4 and move["old"] == before.positions[5].tolist()
    np.testing.assert_allclose(np.subtract(move["new"], move["old"]), [0.5, 0, 0])
    (change,) = by_action["relabel"]
    assert change == {"action": "relabel", "index": 10, "old": before.species[12], "new": NON_ATOM,
                      "time": change["time"]}
    (add,) = by_action["add"]
    assert add["index"] == len(after) - 1 and add["position"] == [1.0, 2.0, 3.0] and add["label"] == "Fe"
    assert all(e["time"].endswith("+00:00") for e in log)
    assert edit.changes(before, before) == []


def test_changes_by_order_when_removed_is_unknown(particle):
    shorter = particle.subset(np.arange(len(particle) - 2))
    assert [e["index"] for e in edit.changes(particle, shorter)] == [len(particle) - 2, len(particle) - 1]
    assert {e["action"] for e in edit.changes(particle, shorter)} == {"delete"}


def test_replacement_entry(particle):
    entry = edit.replacement(particle, particle.subset(np.arange(10)))
    assert (entry["action"], entry["old_count"], entry["new_count"]) == ("replace", len(particle), 10)
    json.dumps(entry)


def test_consecutive_moves_of_the_same_atoms_merge():
    log = [{"action": "relabel", "index": 1, "old": "Fe", "new": "Pt", "time": "t0"}]
    step = [{"action": "move", "index": 3, "old": [0, 0, 0], "new": [1, 0, 0], "time": "t1"}]
    edit.append_to_log(log, step)
    edit.append_to_log(log, [{"action": "move", "index": 3, "old": [1, 0, 0], "new": [2, 0, 0], "time": "t2"}])
    assert log[1] == {"action": "move", "index": 3, "old": [0, 0, 0], "new": [2, 0, 0], "time": "t2"}
    edit.append_to_log(log, [{"action": "move", "index": 4, "old": [0, 0, 0], "new": [1, 1, 1], "time": "t3"}])
    assert len(log) == 3  # another atom: a new entry


def test_review_queue_lowest_confidence_first_without_locked(particle):
    n = len(particle)
    confidence = np.linspace(1.0, 0.0, n)
    ambiguous = confidence < 0.3
    atoms = reviewed(particle, confidence, ambiguous)
    queue = edit.review_queue(atoms)
    np.testing.assert_array_equal(queue, np.flatnonzero(ambiguous)[::-1])
    locked = edit.mark_edited(atoms, [queue[0], queue[2]])
    np.testing.assert_array_equal(edit.review_queue(locked), np.delete(queue, [0, 2]))
    assert len(edit.review_queue(particle)) == 0  # never classified: nothing to review


def test_queue_step_moves_on_from_a_labelled_atom(particle):
    confidence = np.array([0.9, 0.2, 0.5, 0.1, 0.5] + [0.95] * (len(particle) - 5))
    atoms = reviewed(particle, confidence, confidence < 0.6)  # queue: 3, 1, 2, 4
    assert edit.queue_step(atoms) == (3, 0, 4)
    assert edit.queue_step(atoms, None, -1) == (4, 3, 4)
    assert edit.queue_step(atoms, 3, 1) == (1, 1, 4)
    assert edit.queue_step(atoms, 2, -1) == (1, 1, 4)
    assert edit.queue_step(atoms, 4, 1) == (4, 3, 4)  # clamped at the end
    done = edit.relabel(atoms, [1], "Fe")  # 1 labelled: queue 3, 2, 4
    assert edit.queue_step(done, 1, 0) == (2, 1, 3)
    assert edit.queue_step(done, 1, 1) == (2, 1, 3)
    assert edit.queue_step(done, 1, -1) == (3, 0, 3)
    assert edit.queue_step(edit.relabel(atoms, [1, 2, 3, 4], "Fe"), 4, 1) == (None, 0, 0)


def test_hand_labels_survive_a_classify_rerun(particle):
    volume = render_atoms(particle.positions, adf_amplitudes(particle.species, 1.0), 0.5, (40, 40, 40), 0.4)
    recon = Reconstruction(volume, 0.4)
    first = classify_atoms(recon, particle.with_features(), "Fe,Pt")
    assert np.mean(first.species == particle.species) > 0.95
    n = len(first)
    wrong = np.where(first.species[:4] == "Fe", "Pt", "Fe")
    edited = first
    for k in range(4):  # deliberately wrong labels, one by one
        edited = edit.relabel(edited, [k], wrong[k])
    peak = [[7.0, 7.0, 7.0]]  # a point in empty space, labelled by hand as not an atom
    edited = edit.relabel(AtomModel(np.vstack([edited.positions, peak]), np.append(edited.species, "Fe"),
                               {k: np.append(v, v[0]) for k, v in edited.features.items()}), [n], NON_ATOM)
    again = classify_atoms(recon, edited, "Fe,Pt")
    np.testing.assert_array_equal(again.species[:4], wrong)
    assert again.species[n] == "" and again.features["non_atom"][n]
    hand = np.r_[0:4, n]
    assert again.features["locked"][hand].all() and again.features["edited"][hand].all()
    assert not again.features["locked"][4:n].any()
    assert np.mean(again.species[4:n] == first.species[4:n]) > 0.95


def test_review_queue_skips_undrawn_non_atoms(particle):
    confidence = np.full(len(particle), 0.9)
    confidence[[1, 2, 3]] = [0.3, 0.1, 0.2]
    non_atom = np.zeros(len(particle), bool)
    non_atom[2] = True  # the most doubtful is a (hidden) non-atom
    atoms = reviewed(particle, confidence, confidence < 0.5).with_features(non_atom=non_atom)
    np.testing.assert_array_equal(edit.review_queue(atoms), [3, 1])
    np.testing.assert_array_equal(edit.review_queue(atoms, include_non_atoms=True), [2, 3, 1])
    assert edit.queue_step(atoms, None, 1) == (3, 0, 2)


def test_lock_and_unlock_are_logged_as_such(particle):
    locked = edit.set_locked(particle, [4, 6], True)
    assert locked.features["locked"][[4, 6]].all() and locked.features["edited"][[4, 6]].all()
    assert [(e["action"], e["index"], e["label"]) for e in edit.changes(particle, locked)] == \
        [("lock", 4, particle.species[4]), ("lock", 6, particle.species[6])]
    positions = particle.positions.copy()
    positions[3] += 0.5
    moved = edit.mark_edited(AtomModel(positions, particle.species, particle.features), [3])
    assert [e["action"] for e in edit.changes(particle, moved)] == ["move"]  # the move locks, unlogged
    free = edit.set_locked(locked, [6], False)
    assert not free.features["locked"][6] and free.features["edited"][6]  # still marked as touched
    (entry,) = edit.changes(locked, free)
    assert (entry["action"], entry["index"]) == ("unlock", 6)


@pytest.fixture(scope="module")
def volume_of(particle):
    """The particle rendered at 0.4 Å voxels, and its classified atoms."""
    recon = Reconstruction(render_atoms(particle.positions, adf_amplitudes(particle.species, 1.0), 0.5,
                                        (40, 40, 40), 0.4), 0.4)
    return recon, classify_atoms(recon, particle, "Fe,Pt")


def test_snap_to_peak_and_brightest_on_ray(particle, volume_of):
    recon, _ = volume_of
    atom = particle.positions[21]  # a Pt atom alone on the ray below
    np.testing.assert_allclose(edit.snap_to_peak(recon, atom + [0.3, -0.4, 0.2]), atom, atol=0.03)
    direction = np.array([0.21, 0.37, 1.0]) / np.linalg.norm([0.21, 0.37, 1.0])  # (x, y, z)
    offsets = particle.positions - atom
    off_ray = np.linalg.norm(offsets - np.outer(offsets @ direction, direction), axis=1)
    assert np.sort(off_ray)[1] > 1.0  # no other atom within 1 Å of the ray
    np.testing.assert_allclose(edit.brightest_on_ray(recon, atom + 4.0 * direction, direction), atom, atol=0.03)
    with pytest.raises(InputError, match="outside the volume"):
        edit.snap_to_peak(recon, [50.0, 0.0, 0.0])


def test_a_click_near_a_light_atom_stays_on_it_beside_a_heavy_one(particle, volume_of):
    recon, _ = volume_of
    fe, pt = np.flatnonzero(particle.species == "Fe"), np.flatnonzero(particle.species == "Pt")
    gaps = np.linalg.norm(particle.positions[fe, None] - particle.positions[None, pt], axis=2)
    light, heavy = np.unravel_index(np.argmin(gaps), gaps.shape)  # a Fe atom and its nearest Pt neighbour
    towards = particle.positions[pt[heavy]] - particle.positions[fe[light]]
    click = particle.positions[fe[light]] + 0.9 * towards / np.linalg.norm(towards)  # 0.9 Å towards the Pt
    assert recon.volume.max() > 0 and gaps.min() < 3.0
    np.testing.assert_allclose(edit.snap_to_peak(recon, click), particle.positions[fe[light]], atol=0.05)


def test_an_atom_is_not_added_onto_or_beside_another(particle, volume_of):
    """A click snapping onto an atom's peak, or a position nearer than the pair's physical minimum
    distance, adds nothing: the message names the atom and the distance."""
    recon, classified = volume_of
    where = ", ".join(f"{v:.1f}" for v in classified.positions[21])
    with pytest.raises(InputError, match=rf"not added: a (Fe|Pt) atom 0\.0\d Å from the Pt atom at \({where}\) Å "
                                         r"\(atoms of this pair are at least 2\.\d\d Å"):
        edit.add(classified, [particle.positions[21] + [0.3, -0.4, 0.2]], recon)
    beside = classified.positions[21] + [1.2, 0.0, 0.0]
    with pytest.raises(InputError, match=rf"1.20 Å from the Pt atom at \({where}\)"):
        edit.add(classified, [beside], recon, snap=False)
    assert len(edit.add(classified, [beside], recon, snap=False, min_distance=1.0)) == len(classified) + 1
    gone = edit.delete(classified, [21])  # its peak is free again: the click adds it back
    back = edit.add(gone, [particle.positions[21] + [0.3, -0.4, 0.2]], recon)
    np.testing.assert_allclose(back.positions[-1], particle.positions[21], atol=0.03)
    assert edit.crowding(back, [len(back) - 1]) == []


def test_placed_atoms_are_labelled_by_the_classifier_not_locked(particle, volume_of):
    recon, classified = volume_of
    wrong = np.where(classified.species == "Fe", "Pt", "Fe")  # placed atoms come in with a stale label
    index = [np.flatnonzero(particle.species == "Fe")[0], np.flatnonzero(particle.species == "Pt")[0]]
    stale = AtomModel(classified.positions, np.where(np.isin(np.arange(len(particle)), index), wrong,
                                                     classified.species), classified.features)
    placed = edit.place_atoms(stale, index, recon)
    np.testing.assert_array_equal(placed.species[index], particle.species[index])
    features = placed.features
    assert features["placed"][index].all() and features["edited"][index].all()
    assert not features["locked"].any() and np.count_nonzero(features["placed"]) == 2
    assert (features["confidence"][index] > 0.8).all() and not features["ambiguous"][index].any()
    np.testing.assert_array_equal(features["class_index"][index], [1, 2])
    # measured as Classify measured them (the same matched filter, from the other atoms)
    np.testing.assert_allclose(features["intensity"][index], classified.features["intensity"][index], rtol=0.01)
    unlabelled = edit.place_atoms(stale, index, None)  # no volume: left for Classify
    assert list(unlabelled.species[index]) == ["", ""]


def test_refinement_keeps_an_atom_placed_by_hand(particle):
    from napari_aet.refine import refine_atoms
    from napari_aet.simulate import simulate_tilt_series

    series = simulate_tilt_series(particle, angles=np.linspace(-70, 70, 15), shape=(48, 48), dose=2000.0,
                                  max_shift=0.0, seed=1).tilt_series
    empty = [[0.0, 0.0, 9.0]]  # outside the particle: nothing in the data supports an atom there
    atoms = AtomModel(np.vstack([particle.positions, empty]), np.append(particle.species, "Pt"))
    free = refine_atoms(series, atoms, iterations=2, complete_rounds=1)
    assert free.atoms.features["refine_removed"][-1]  # an unsupported free atom is removed
    placed = edit.place_atoms(atoms, [len(particle)], None)
    placed = AtomModel(placed.positions, atoms.species, placed.features)  # labelled Pt by hand, not locked
    kept = refine_atoms(series, placed, iterations=2, complete_rounds=1).atoms
    assert not kept.features["refine_removed"][-1] and kept.species[-1] == "Pt"
    np.testing.assert_allclose(kept.positions[-1], empty[0])


def test_a_moved_class_boundary_relabels_the_unlocked_atoms_it_crosses(particle):
    n = len(particle)
    intensity = np.where(particle.species == "Pt", 10.0, 3.0) + np.linspace(0, 1, n)
    atoms = particle.with_features(intensity=intensity, non_atom=np.zeros(n, bool), ambiguous=np.ones(n, bool))
    pt = np.flatnonzero(particle.species == "Pt")
    faint = pt[intensity[pt] <= 10.5]
    locked = edit.relabel(atoms, faint[:1], "Pt")  # a label set by hand
    moved = edit.move_class_boundary(locked, "Fe", "Pt", 6.5, 10.5)  # up, into the Pt peak
    changed = np.flatnonzero(moved.species != locked.species)
    np.testing.assert_array_equal(changed, faint[1:])
    assert set(moved.species[changed]) == {"Fe"} and len(changed) > 0
    assert moved.features["edited"][changed].all() and not moved.features["locked"][changed].any()
    assert moved.features["ambiguous"][changed].all()  # still to review
    log = edit.changes(locked, moved)
    assert [(e["action"], e["index"], e["new"]) for e in log] == [("relabel", int(j), "Fe") for j in changed]
    back = edit.move_class_boundary(moved, "Fe", "Pt", 10.5, 6.5)  # and down again
    np.testing.assert_array_equal(back.species, locked.species)
    with pytest.raises(InputError, match="no intensity"):
        edit.move_class_boundary(particle, "Fe", "Pt", 1.0, 2.0)
