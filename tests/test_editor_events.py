"""The atom editor driven as a person drives it: mouse drags and clicks on the real canvas, key
presses, with the atoms of a study (napari 0.9 under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_aet import workflow
from napari_aet._napari._base import show_layer, study_tag, tag_as_study
from napari_aet._napari._study import set_session
from napari_aet._napari.edit import EditWidget
from napari_aet.atom_labels import NON_ATOM, labels
from napari_aet.classify import classify_atoms
from napari_aet.geometry import render_atoms, specimen_to_voxel
from napari_aet._napari.layers import (EDITED_BORDER, LOCKED_BORDER, atoms_from_layer, atoms_layer, restyle_atoms,
                                       volume_layer)
from napari_aet.model import AtomModel, Reconstruction
from napari_aet.project import Project, TimePoint
from napari_aet.review import orthogonal_slices
from napari_aet.session import StudySession
from napari_aet.simulate import adf_amplitudes, fcc_particle

VOXEL = 0.5  # Å
SHAPE = (32, 32, 32)
NOISE = np.array([[5.5, 5.5, 5.5], [-5.5, 5.5, -5.5], [5.5, -5.5, 5.5]])  # Å, outside the particle


def classified_study():
    """A reconstruction of a 55-atom FePt particle, its classified atoms (atoms 3, 1, 2 made
    ambiguous, in that order of doubt) and 3 ambiguous non-atoms (the most doubtful of all)."""
    truth = fcc_particle(radius=6.0, seed=2)
    volume = render_atoms(truth.positions, adf_amplitudes(truth.species, 1.0), 0.5, SHAPE, VOXEL)
    reconstruction = Reconstruction(volume, VOXEL)
    atoms = classify_atoms(reconstruction, truth, "Fe,Pt")
    features = {k: np.concatenate([v, np.resize(v[:1], len(NOISE))]) for k, v in atoms.features.items()}
    features["non_atom"][-len(NOISE):] = True
    features["ambiguous"][-len(NOISE):] = True
    features["confidence"][-len(NOISE):] = 0.01
    features["confidence"][[3, 1, 2]] = [0.1, 0.2, 0.5]
    features["ambiguous"][[3, 1, 2]] = True
    atoms = AtomModel(np.vstack([atoms.positions, NOISE]), np.append(atoms.species, [""] * len(NOISE)), features)
    return truth, reconstruction, atoms


@pytest.fixture(scope="module")
def study_data():
    return classified_study()


@pytest.fixture
def editor(make_napari_viewer, qtbot, tmp_path, study_data):
    """A shown viewer with the study's volume and atoms, and the Edit widget on them."""
    truth, reconstruction, atoms = study_data
    session = StudySession(Project([TimePoint("t0", reconstruction=reconstruction, atoms=atoms)]))
    session.save(tmp_path / "study.aet")
    viewer = make_napari_viewer()
    set_session(viewer, session)
    show_layer(viewer, volume_layer(reconstruction))
    layer = show_layer(viewer, tag_as_study(atoms_layer(atoms, SHAPE, VOXEL), session, "atoms"))
    widget = EditWidget(viewer)
    qtbot.addWidget(widget)
    viewer.window.resize(900, 800)
    viewer.window.show()
    QApplication.processEvents()
    return viewer, layer, widget, session


def canvas_of(viewer):
    return viewer.window._qt_viewer.canvas.native


def to_canvas(viewer, world):
    """Canvas pixel (x, y) of a world point (z, y, x) Å in the 2D view."""
    camera = viewer.scene.camera
    offset = (np.asarray(world)[-2:] - np.asarray(camera.center)[-2:]) * camera.zoom
    native = canvas_of(viewer)
    return native.width() / 2 + offset[1], native.height() / 2 + offset[0]


def mouse(viewer, kind, x, y, held=True):
    """Send one Qt mouse event to the canvas, as the window system does."""
    native = canvas_of(viewer)
    kinds = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    left = Qt.MouseButton.LeftButton
    event = QMouseEvent(kinds[kind], QPointF(x, y), QPointF(native.mapToGlobal(QPoint(int(x), int(y)))),
                        Qt.MouseButton.NoButton if kind == "move" else left,
                        left if held and kind != "release" else Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(native, event)
    QApplication.processEvents()


def drag(viewer, start, end, steps=5):
    """Press at canvas pixel ``start``, move in ``steps`` to ``end``, release."""
    mouse(viewer, "press", *start)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        mouse(viewer, "move", *(np.asarray(start) + t * np.subtract(end, start)))
    mouse(viewer, "release", *end, held=False)


def key(viewer, name, modifiers=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(canvas_of(viewer), getattr(Qt.Key, f"Key_{name}"), modifiers)
    QApplication.processEvents()


CTRL, SHIFT = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier


def view_slice_of(viewer, layer, index):
    """A 2D view on the z slice of atom ``index``, centred on it."""
    viewer.dims.ndisplay = 2
    world = layer.data_to_world(layer.data[index])
    viewer.dims.set_point(0, world[0])
    viewer.scene.camera.center = world
    viewer.scene.camera.zoom = 20.0  # canvas pixels per Å
    QApplication.processEvents()
    return world


def test_a_mouse_drag_is_logged_locked_and_undoable(editor):
    viewer, layer, widget, session = editor
    workflow.record(session.point, "analyse", {}, 0.0)  # an analysis of the atoms before the edit
    atom = 20
    old = atoms_from_layer(layer).positions[atom]
    world = view_slice_of(viewer, layer, atom)
    layer.mode = "select"
    start = to_canvas(viewer, world)
    drag(viewer, start, (start[0] + 30, start[1]))  # 30 px = 1.5 Å along x
    (move,) = widget.log
    assert move["action"] == "move" and move["index"] == atom
    np.testing.assert_allclose(move["old"], old)
    np.testing.assert_allclose(np.subtract(move["new"], move["old"]), [1.5, 0, 0], atol=0.1)
    assert layer.features["edited"][atom] and layer.features["locked"][atom]
    assert layer.features["locked"].sum() == 1
    np.testing.assert_allclose(layer.border_color[atom], LOCKED_BORDER)  # visibly marked
    assert layer.border_width[atom] > 0 and np.count_nonzero(layer.border_width) == 1
    np.testing.assert_allclose(session.point.atoms.positions[atom], move["new"])  # into the study
    assert session.point.edits == widget.log and workflow.status(session.point)["analyse"] == "stale"

    key(viewer, "Z", CTRL)
    np.testing.assert_allclose(atoms_from_layer(layer).positions[atom], old, atol=1e-9)
    assert not layer.features["locked"].any()
    assert widget.log[-1]["action"] == "undo" and widget.log[-1]["entries"][0]["index"] == atom
    np.testing.assert_allclose(session.point.atoms.positions[atom], old, atol=1e-9)
    key(viewer, "Z", CTRL | SHIFT)
    np.testing.assert_allclose(atoms_from_layer(layer).positions[atom], move["new"], atol=1e-9)
    assert layer.features["locked"][atom] and widget.log[-1]["action"] == "redo"


def test_a_drag_onto_a_neighbour_is_kept_but_said(editor):
    """Moving an atom onto another (the duplicate that broke g(r)) is not silent."""
    viewer, layer, widget, session = editor
    atoms = atoms_from_layer(layer)
    real = np.flatnonzero(atoms.species != "")
    offsets = atoms.positions[real, None] - atoms.positions[None, real]
    same_plane = (np.abs(offsets[..., 2]) < 0.05) & (np.linalg.norm(offsets, axis=2) > 0)
    i, j = real[np.argwhere(same_plane)[0]]  # two atoms in one z slice
    world = view_slice_of(viewer, layer, i)
    layer.mode = "select"
    drag(viewer, to_canvas(viewer, world), to_canvas(viewer, layer.data_to_world(layer.data[j])))
    assert widget.log[-1]["action"] == "move" and widget.log[-1]["index"] == i
    message = widget.message.text()
    assert message.startswith("⚠ moved onto a neighbour:") and "moved 1 point(s)" in message


def drawn_fraction(viewer, layer):
    """Fraction of the canvas that ``layer`` changes (rendered with and without it)."""
    from napari_aet._napari import screenshot

    shown = screenshot(viewer)
    layer.visible = False
    hidden = screenshot(viewer)
    layer.visible = True
    return np.mean(np.any(shown != hidden, axis=-1)), shown


def test_non_atoms_are_not_drawn_in_2d_or_3d_nor_reviewed(editor, study_data):
    from napari_aet._napari import screenshot

    viewer, layer, widget, _ = editor
    _, _, atoms = study_data
    viewer.layers["reconstruction"].visible = False
    real = show_layer(viewer, atoms_layer(atoms.subset(~atoms.features["non_atom"]), SHAPE, VOXEL, name="real"),
                      visible=False)
    for ndisplay in (3, 2):
        viewer.dims.ndisplay = ndisplay
        viewer.dims.set_point(0, NOISE[0, 2])  # in 2D, the slice through a non-atom
        viewer.reset_view()
        fraction, with_hidden = drawn_fraction(viewer, layer)
        assert ndisplay == 2 or fraction > 0.01  # the atoms are drawn (in 2D none is on that slice)
        layer.visible, real.visible = False, True
        assert np.array_equal(with_hidden, screenshot(viewer))  # the same picture: not a pixel of a non-atom drawn
        layer.visible, real.visible = True, False
        for show in (True, False):  # as Classify's "show non-atoms" box does
            layer.metadata["aet"]["show_non_atoms"] = show
            restyle_atoms(layer)
            if show:
                assert np.mean(np.any(screenshot(viewer) != with_hidden, axis=-1)) > 1e-4  # now they are drawn
    viewer.layers.remove(real)

    non_atoms = set(np.flatnonzero(atoms.features["non_atom"]))
    viewer.layers.selection.active = layer  # keys act on the selected layer
    visited = []
    for _ in range(5):  # 3 atoms to review, then the end of the queue
        key(viewer, "N")
        visited.append(widget.current)
    assert visited and not non_atoms & set(visited)  # the 3 most doubtful points are hidden non-atoms
    assert sorted(set(visited)) == sorted(set(np.flatnonzero(atoms.features["ambiguous"])) - non_atoms)
    assert layer.size[visited].min() > 0


def state(layer):
    """Positions, labels and locks of the layer's atoms."""
    return state_of(atoms_from_layer(layer))


def state_of(atoms):
    return atoms.positions.round(9).tolist(), labels(atoms).tolist(), atoms.features["locked"].tolist()


def test_keys_label_lock_delete_add_and_undo_redo_each(editor):
    viewer, layer, widget, session = editor
    view_slice_of(viewer, layer, 8)
    viewer.layers.selection.active = layer
    layer.mode = "select"
    other = {"Fe": ("Pt", "2"), "Pt": ("Fe", "1")}

    def select(index):
        layer.selected_data = {index}

    freed = layer.data_to_world(layer.data[8])  # atom 8 is deleted below: its peak is free

    def click_add():  # a click in add mode 0.3 Å from that peak
        layer.mode = "add"
        x, y = to_canvas(viewer, freed)
        mouse(viewer, "press", x + 6, y)
        mouse(viewer, "release", x + 6, y, held=False)
        layer.mode = "select"

    species = atoms_from_layer(layer).species
    edits = [
        ("relabel", lambda: (select(5), key(viewer, other[species[5]][1]))),
        ("relabel", lambda: (select(6), key(viewer, "0"))),
        ("lock", lambda: (select(7), key(viewer, "L"))),  # confirming a label locks it
        ("unlock", lambda: (select(7), key(viewer, "L"))),
        ("delete", lambda: (select(8), key(viewer, "Delete"))),
        ("add", click_add),
    ]
    for action, do in edits:
        before = state(layer)
        do()
        after = state(layer)
        assert after != before and widget.log[-1]["action"] == action
        key(viewer, "Z", CTRL)
        assert state(layer) == before and widget.log[-1]["action"] == "undo"
        assert widget.log[-1]["entries"][-1]["action"] == action
        key(viewer, "Z", CTRL | SHIFT)
        assert state(layer) == after and widget.log[-1]["action"] == "redo"
        assert state_of(session.point.atoms) == after  # the study holds what is shown
    labels_now = state(layer)[1]
    assert labels_now[5] == other[species[5]][0] and labels_now[6] == NON_ATOM
    assert [e["action"] for e in session.point.edits if e["action"] not in ("undo", "redo")] == \
        [action for action, _ in edits]


def test_the_keys_work_whatever_layer_is_selected_while_the_editor_is_shown(editor):
    viewer, layer, widget, session = editor
    volume = viewer.layers["reconstruction"]
    before = state(layer)
    widget.show()
    viewer.layers.selection.active = volume  # the volume selected, the atoms' selection kept
    layer.selected_data = {5}
    key(viewer, "0")
    assert labels(atoms_from_layer(layer))[5] == NON_ATOM and widget.log[-1]["action"] == "relabel"
    key(viewer, "Z", CTRL)
    assert state(layer) == before and state_of(session.point.atoms) == before
    key(viewer, "N")  # the review queue: the camera goes to the most doubtful drawn atom
    assert widget.current == 3
    widget.hide()  # hidden (or closed), the editor leaves the other layers' keys alone
    viewer.layers.selection.active = volume
    logged = len(widget.log)
    key(viewer, "L")
    assert len(widget.log) == logged and state(layer) == before


def test_the_status_bar_names_the_editors_keys_not_napari_modes_they_replace(editor):
    """napari's "use <2> for add points" where 2 labels an atom Pt: the hint names the editor's key."""
    viewer, layer, widget, _ = editor
    widget.show()
    viewer.layers.selection.active = layer
    key(viewer, "4")  # napari's key for pan/zoom (not the editor's: two elements): a mode change
    assert layer.mode == "pan_zoom"
    for shown in (layer.help, viewer.help):
        assert "<1> Fe" in shown and "<2> Pt" in shown and "<0> non-atom" in shown and "<L> lock" in shown
        assert "use <2>" not in shown and "use <3> for select points" in shown  # 3 is napari's still
    volume = viewer.layers["reconstruction"]
    viewer.layers.selection.active = volume
    assert "<2> Pt" in viewer.help and "use <2> for transform" not in viewer.help
    widget.hide()  # the keys unbound from the other layers: napari's hints back
    assert "use <2> for transform" in volume.help and "<2> Pt" in layer.help
    widget.close()


EDIT_THEN_WAIT = """
import sys, time
import napari
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication
from napari_aet._napari._base import show_layer, tag_as_study
from napari_aet._napari._study import set_session
from napari_aet._napari.edit import EditWidget
from napari_aet._napari.layers import atoms_layer
from napari_aet.session import StudySession

session = StudySession.open(sys.argv[1])
viewer = napari.Viewer()
set_session(viewer, session)
point, volume = session.point, session.point.reconstruction
layer = show_layer(viewer, tag_as_study(atoms_layer(point.atoms, volume.volume.shape, volume.voxel_size),
                                        session, "atoms"))
widget = EditWidget(viewer)
QApplication.processEvents()
for atom, key in ((5, Qt.Key.Key_0), (7, Qt.Key.Key_L)):  # label atom 5 a non-atom, then lock atom 7
    layer.selected_data = {atom}
    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key)
    QApplication.processEvents()
print(widget.log[-1]["action"], flush=True)
time.sleep(120)
"""


def test_edits_and_their_undo_history_survive_kill_9(make_napari_viewer, tmp_path, study_data):
    """napari killed after two key-press edits: reopening restores both, and Ctrl+Z undoes the
    last one, then the one before; Ctrl+Shift+Z redoes it."""
    import os
    import signal
    import subprocess
    import sys

    _, reconstruction, atoms = study_data
    path = tmp_path / "study.aet"
    StudySession(Project([TimePoint("t0", reconstruction=reconstruction, atoms=atoms)])).save(path)
    script = tmp_path / "edit_then_wait.py"
    script.write_text(EDIT_THEN_WAIT)
    process = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "lock"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    reopened = StudySession.open(path)
    assert reopened.recovered
    assert labels(reopened.point.atoms)[5] == NON_ATOM and reopened.point.atoms.features["locked"][[5, 7]].all()
    assert [(e["action"], e["index"]) for e in reopened.point.edits] == [("relabel", 5), ("lock", 7)]
    assert labels(StudySession(reopened.study).point.atoms).tolist()[:5] == labels(atoms).tolist()[:5]

    viewer = make_napari_viewer()
    set_session(viewer, reopened)
    layer = show_layer(viewer, tag_as_study(atoms_layer(reopened.point.atoms, SHAPE, VOXEL), reopened, "atoms"))
    widget = EditWidget(viewer)
    viewer.window.show()
    edited = state(layer)
    key(viewer, "Z", CTRL)  # the lock of atom 7, made before the kill
    assert widget.log[-1]["action"] == "undo" and widget.log[-1]["entries"][0]["index"] == 7
    assert not atoms_from_layer(layer).features["locked"][7] and labels(atoms_from_layer(layer))[5] == NON_ATOM
    key(viewer, "Z", CTRL)  # the label of atom 5
    assert state(layer) == state_of(atoms) and state_of(reopened.point.atoms) == state_of(atoms)
    key(viewer, "Z", CTRL | SHIFT)
    key(viewer, "Z", CTRL | SHIFT)
    assert state(layer) == edited


@pytest.mark.parametrize(("ndisplay", "element"), [(2, "Fe"), (3, "Pt")])
def test_a_click_adds_an_atom_at_the_peak_labelled_by_the_classifier(editor, study_data, ndisplay, element):
    """In 2D a click 0.4 Å off a peak; in 3D a click on the ray through it, seen obliquely."""
    viewer, layer, widget, session = editor
    truth, _, _ = study_data
    gone = int(np.flatnonzero(truth.species == element)[3])
    view_slice_of(viewer, layer, gone)
    viewer.layers.selection.active = layer
    layer.selected_data = {gone}
    key(viewer, "Delete")  # the atom is missing from the model; its peak stays in the volume
    world = np.asarray(layer.data_to_world(specimen_to_voxel(truth.positions[gone:gone + 1], SHAPE, VOXEL)[0]))
    viewer.dims.ndisplay = ndisplay
    centre = world
    if ndisplay == 3:  # the ray through the canvas centre crosses the atom; napari puts the point 3 Å off
        direction = np.array([1.0, 0.37, 0.21])  # (z, y, x): no other atom on the ray
        viewer.scene.camera.set_view_direction(direction)
        centre = world + 3.0 * direction
        viewer.dims.set_point(range(3), centre)  # napari adds on the ray near this point
    viewer.scene.camera.center = centre
    viewer.scene.camera.zoom = 20.0
    QApplication.processEvents()
    layer.mode = "add"
    native = canvas_of(viewer)
    x, y = to_canvas(viewer, world + [0, 0.3, -0.3]) if ndisplay == 2 else (native.width() / 2, native.height() / 2)
    mouse(viewer, "press", x, y)
    mouse(viewer, "release", x, y, held=False)
    added = atoms_from_layer(layer).subset([len(layer.data) - 1])
    np.testing.assert_allclose(added.positions[0], truth.positions[gone], atol=0.05)
    assert added.species[0] == truth.species[gone]  # from its profile, not from another atom
    features = {k: v[0] for k, v in added.features.items()}
    assert features["placed"] and features["edited"] and not features["locked"]
    assert features["confidence"] > 0.8 and not features["ambiguous"] and not features["non_atom"]
    entry = widget.log[-1]
    assert entry["action"] == "add" and entry["label"] == truth.species[gone]
    np.testing.assert_allclose(entry["position"], added.positions[0])
    np.testing.assert_allclose(layer.border_color[-1], EDITED_BORDER)  # marked, not as locked


def test_a_click_on_an_atoms_own_peak_adds_nothing_and_says_why(editor):
    """The click snaps onto the peak of an atom already there (0.1 Å from it before): nothing is
    added or logged, and the message names the atom and the minimum distance."""
    viewer, layer, widget, session = editor
    before, log = atoms_from_layer(layer), list(widget.log)
    world = view_slice_of(viewer, layer, 0)
    viewer.layers.selection.active = layer
    layer.mode = "add"
    x, y = to_canvas(viewer, np.asarray(world) + [0, 0.3, -0.3])
    mouse(viewer, "press", x, y)
    mouse(viewer, "release", x, y, held=False)
    after = atoms_from_layer(layer)
    assert len(after) == len(before) and np.array_equal(after.positions, before.positions)
    assert widget.log == log and len(session.point.atoms) == len(before)
    message = widget.message.text()
    where = ", ".join(f"{v:.1f}" for v in before.positions[0])
    assert message.startswith("⚠ not added:") and f"atom at ({where}) Å" in message and "at least" in message


def test_two_editors_of_one_window_log_each_edit_once(editor, qtbot):
    """The workbench's Edit step and a docked editor on the same atoms: the one shown last edits,
    the other is greyed out; hidden, it hands back. Each edit is logged once (both logged: an add
    was also a "move", its undo also a "replace")."""
    viewer, layer, first, session = editor
    second = EditWidget(viewer)
    qtbot.addWidget(second)
    assert not second.isEnabled() and second.layer is None  # not shown yet: the first edits
    second.show()
    QApplication.processEvents()
    assert second.isEnabled() and not first.isEnabled() and first.layer is None
    freed = view_slice_of(viewer, layer, 8)
    viewer.layers.selection.active = layer
    layer.mode = "select"
    logged = len(session.point.edits)
    layer.selected_data = {8}
    key(viewer, "Delete")
    layer.mode = "add"
    x, y = to_canvas(viewer, freed)
    mouse(viewer, "press", x + 6, y)
    mouse(viewer, "release", x + 6, y, held=False)
    layer.mode = "select"
    key(viewer, "Z", CTRL)
    assert [e["action"] for e in session.point.edits[logged:]] == ["delete", "add", "undo"]
    assert second.message.text().startswith("undo")
    second.hide()
    assert first.isEnabled() and first.layer is layer and not second.isEnabled()
    layer.selected_data = {5}
    key(viewer, "0")
    assert [e["action"] for e in session.point.edits[logged:]] == ["delete", "add", "undo", "relabel"]


def test_a_study_file_opened_with_file_open_is_a_copy_and_the_editor_says_how_to_edit_it(editor, tmp_path):
    viewer, layer, widget, session = editor
    assert widget.study_status.text().startswith("edits saved into the study")
    viewer.open(tmp_path / "study.aet", plugin="napari-aet")  # the fixture's study, read again
    assert widget.atoms_input.currentText() == layer.name  # the study's atoms stay the input
    widget.atoms_input.setCurrentText("t0: atoms")
    assert widget.layer is viewer.layers["t0: atoms"]
    assert "a copy read from a study file" in widget.study_status.text()
    assert "AET workbench's Open…" in widget.study_status.text()


def test_a_second_study_opened_in_the_window_is_the_one_the_steps_work_on(make_napari_viewer, study_data, tmp_path):
    """Open… study A, then study B: B's atoms and edits are the steps' input and shown, A's layers
    are removed (they passed as B's: Analyse then replaced B's edited atoms by A's)."""
    from napari_aet._napari._base import study_layer_name
    from napari_aet.project import save_project

    _, reconstruction, atoms = study_data
    save_project(tmp_path / "a.aet", Project([TimePoint("t0", reconstruction=reconstruction, atoms=atoms)]))
    edited = atoms.subset(np.arange(1, len(atoms)))
    save_project(tmp_path / "b.aet", Project([TimePoint("t0", reconstruction=reconstruction, atoms=edited,
                                                        edits=[{"action": "delete", "index": 0}])]))
    viewer = make_napari_viewer()
    _, workbench = viewer.window.add_plugin_dock_widget("napari-aet", "AET workbench")
    workbench.open_study(tmp_path / "a.aet")
    first = [layer for layer in viewer.layers if layer.visible]
    workbench.open_study(tmp_path / "b.aet")
    session = workbench.session
    name = study_layer_name(viewer, session, "atoms")
    assert name is not None and len(viewer.layers[name].data) == len(edited)
    assert workbench.steps["7 Analyse"].atoms_input.currentText() == name
    editor = workbench.steps["6 Edit"]
    assert editor.layer == viewer.layers[name] and editor.log == [{"action": "delete", "index": 0}]
    assert first and all(study_tag(layer)[0] == session.id for layer in viewer.layers)  # A's removed
    assert all(layer.visible for layer in viewer.layers)  # B's shown (A's same-named hidden ones took its data)


def test_review_keys_centre_zoom_and_show_the_atom_beside_the_class_averages(editor, study_data):
    viewer, layer, widget, _ = editor
    truth, reconstruction, atoms = study_data
    viewer.layers.selection.active = layer
    key(viewer, "N")
    assert widget.current == 3
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], atoms.positions[3][1::-1], atol=1e-6)  # (y, x)
    assert viewer.scene.camera.zoom >= 30.0
    np.testing.assert_allclose(viewer.dims.point, atoms.positions[3][::-1], atol=VOXEL / 2)
    axes = widget.views.figure.axes
    assert not widget.views.isHidden() and len(axes) == 3 * 4  # the atom, Fe, Pt, non-atom
    assert [ax.get_ylabel() for ax in axes[::3]] == ["atom 3", "Fe", "Pt", NON_ATOM]
    np.testing.assert_allclose(axes[0].images[0].get_array(),
                               orthogonal_slices(reconstruction, atoms.positions[[3]])[0, 0])
    key(viewer, "N")
    key(viewer, "P")
    assert widget.current == 3 and widget.views.figure.axes[0].get_ylabel() == "atom 3"
    np.testing.assert_allclose(widget.views.figure.axes[0].images[0].get_array(),
                               orthogonal_slices(reconstruction, atoms.positions[[3]])[0, 0])


def drawn_histogram(widget, layer):
    """The editor's histogram drawn on a 400×160 canvas: (canvas, data x -> widget point)."""
    canvas = widget.histogram.canvas
    widget.histogram.show()
    canvas.resize(400, 160)
    widget._show_histogram(atoms_from_layer(layer))
    canvas.draw()
    (ax,) = widget.histogram.figure.axes
    ratio = canvas.devicePixelRatioF()

    def pixel(x):  # data x -> widget (x, y) in the middle of the axes
        px, py = ax.transData.transform((x, np.mean(ax.get_ylim())))
        return QPoint(int(round(px / ratio)), int(round(canvas.height() - py / ratio)))

    return canvas, pixel


def drag_across(qtbot, canvas, pixel, start, end):
    """A left-button drag on the canvas from data x ``start`` to ``end``, through the middle."""
    left = Qt.MouseButton.LeftButton
    qtbot.mousePress(canvas, left, pos=pixel(start))
    qtbot.mouseMove(canvas, pos=pixel((start + end) / 2))
    qtbot.mouseMove(canvas, pos=pixel(end))
    qtbot.mouseRelease(canvas, left, pos=pixel(end))


def test_brushing_the_histogram_selects_the_atoms_of_that_intensity(editor, study_data, qtbot):
    viewer, layer, widget, _ = editor
    _, _, atoms = study_data
    intensity = atoms.features["intensity"]
    pt = atoms.species == "Pt"
    low, high = intensity[pt].min() * 0.99, intensity[pt].max() * 1.01  # the Pt peak
    canvas, pixel = drawn_histogram(widget, layer)
    drag_across(qtbot, canvas, pixel, low, high)
    expected = np.flatnonzero((intensity >= low) & (intensity <= high) & ~atoms.features["non_atom"])
    assert set(layer.selected_data) == set(expected.tolist()) and len(expected) == np.count_nonzero(pt)
    assert widget.message.text().startswith(f"selected {len(expected)} atom(s)")


def test_dragging_a_class_boundary_relabels_the_unlocked_atoms_it_crosses(editor, study_data, qtbot):
    viewer, layer, widget, _ = editor
    _, _, atoms = study_data
    intensity = atoms.features["intensity"]
    pt = np.flatnonzero(atoms.species == "Pt")
    canvas, pixel = drawn_histogram(widget, layer)
    [(lower, upper, line)] = [b for b in widget._boundaries if b[:2] == ("Fe", "Pt")]
    start, target = line.get_xdata()[0], np.median(intensity[pt])  # into the middle of the Pt peak
    drag_across(qtbot, canvas, pixel, start, target)
    after = atoms_from_layer(layer)
    changed = np.flatnonzero(after.species != atoms.species)
    assert len(changed) > 0 and set(after.species[changed]) == {"Fe"} and set(changed) <= set(pt)
    kept = np.setdiff1d(pt, changed)  # the release lands within a pixel of the target
    assert intensity[changed].max() <= target * 1.02 and intensity[kept].min() >= target * 0.98
    assert not after.features["locked"].any() and after.features["edited"][changed].all()
    assert [e["action"] for e in widget.log] == ["relabel"] * len(changed)
    assert layer.selected_data == set()  # the brush did not fire
    key(viewer, "Z", CTRL)
    np.testing.assert_array_equal(atoms_from_layer(layer).species, atoms.species)


def test_a_stage_result_shown_in_the_layer_is_not_an_edit(editor, study_data):
    viewer, layer, widget, session = editor
    truth, _, atoms = study_data
    layer.selected_data = {5}
    widget.label_selected("Pt")  # a hand edit first
    edits = list(session.point.edits)
    for new in (atoms.subset(np.arange(40)), AtomModel(atoms.positions + 0.3, atoms.species, atoms.features)):
        session.point.atoms = new  # what a stage re-run does: the study first, then its layer
        show_layer(viewer, tag_as_study(atoms_layer(new, SHAPE, VOXEL), session, "atoms"))
        assert session.point.atoms is new and session.point.edits == edits  # nothing written over it
        shown = atoms_from_layer(layer)
        np.testing.assert_allclose(shown.positions, new.positions, atol=1e-9)
        np.testing.assert_array_equal(shown.species, new.species)
        assert not shown.features["locked"].any() and widget.log == edits


def test_classify_show_non_atoms_box_draws_them_and_lets_the_queue_visit_them(editor, study_data, qtbot):
    from napari_aet._napari.classify import ClassifyWidget

    viewer, layer, widget, _ = editor
    _, _, atoms = study_data
    non_atom = atoms.features["non_atom"]
    classify = ClassifyWidget(viewer)
    qtbot.addWidget(classify)
    assert np.all(layer.size[non_atom] == 0) and np.all(layer.size[~non_atom] > 0)
    classify.show_non_atoms.setChecked(True)
    classify.apply_non_atom_visibility(layer)
    assert np.all(layer.size > 0) and layer.shown.all()
    widget.next_button.click()
    assert non_atom[widget.current]  # now drawn, the most doubtful points come first
    classify.show_non_atoms.setChecked(False)
    classify.apply_non_atom_visibility(layer)
    assert np.all(layer.size[non_atom] == 0)
