"""The "6 Edit atoms" widget under Xvfb: review queue, labels, napari's point edits, the log."""

from __future__ import annotations

import numpy as np
import pytest
from napari import save_layers

from napari_aet._napari import screenshot
from napari_aet._napari._base import show_layer
from napari_aet._napari.edit import EditWidget
from napari_aet._napari.trace import free_atoms_name, has_manual_edits
from napari_aet.atom_labels import NON_ATOM
from napari_aet._napari.layers import ELEMENT_COLOURS, atoms_from_layer, atoms_layer
from napari_aet.simulate import fcc_particle

VOXEL = 0.5  # Å
SHAPE = (32, 32, 32)


def ambiguous_atoms():
    """55 classified FePt atoms; atoms 3, 1, 2 ambiguous, in that order of doubt."""
    atoms = fcc_particle(radius=6.0, seed=2)
    confidence = np.full(len(atoms), 0.95)
    confidence[[3, 1, 2]] = [0.1, 0.2, 0.5]
    return atoms.with_features(confidence=confidence, ambiguous=confidence < 0.6,
                               non_atom=np.zeros(len(atoms), bool))


@pytest.fixture
def edited(make_napari_viewer, qtbot):
    """A viewer with :func:`ambiguous_atoms` and the Edit widget on them."""
    atoms = ambiguous_atoms()
    viewer = make_napari_viewer()
    layer = show_layer(viewer, atoms_layer(atoms, SHAPE, VOXEL))
    widget = EditWidget(viewer)
    qtbot.addWidget(widget)
    return viewer, layer, widget, atoms


def button(widget, label):
    """The label button of ``label`` (its text is the label and its key)."""
    layout = widget.label_buttons
    (found,) = [layout.itemAt(k).widget() for k in range(layout.count())
                if layout.itemAt(k).widget().text().split(" (")[0] == label]
    return found


def button_texts(widget):
    return [widget.label_buttons.itemAt(k).widget().text() for k in range(widget.label_buttons.count())]


def test_buttons_follow_the_model(edited):
    _, layer, widget, _ = edited
    assert button_texts(widget) == ["Fe (1)", "Pt (2)", f"{NON_ATOM} (0)"]
    assert widget.review_status.text() == "3 ambiguous atom(s) to review"
    features = layer.features.copy()
    features.loc[0, "element"] = "Au"  # as a Classify run with Fe,Pt,Au would
    layer.features = features
    assert button_texts(widget) == ["Fe (1)", "Pt (2)", "Au (3)", f"{NON_ATOM} (0)"]
    # the old buttons are gone at once, not left drawn full size over the step until the event
    # loop deletes them (a grey block over the editor in the workbench, seen in a user audit)
    from qtpy.QtWidgets import QPushButton

    labels = [b.text() for b in widget.findChildren(QPushButton) if b.text().endswith(("(1)", "(2)", "(3)", "(0)"))]
    assert sorted(labels) == sorted(button_texts(widget))


def test_review_queue_centres_selects_labels_and_advances(edited):
    viewer, layer, widget, atoms = edited
    widget.next_button.click()
    assert widget.current == 3 and layer.selected_data == {3}
    world = atoms.positions[3][::-1]  # (z, y, x) Å
    np.testing.assert_allclose(viewer.scene.camera.center, world, atol=1e-6)
    np.testing.assert_allclose(viewer.dims.point, world, atol=VOXEL / 2)  # the slice holding the atom
    assert "atom 3" in widget.review_status.text() and "confidence 0.10" in widget.review_status.text()
    assert "3 left" in widget.review_status.text()
    widget.next_button.click()
    assert widget.current == 1
    widget.previous_button.click()
    assert widget.current == 3
    other = "Fe" if atoms.species[3] == "Pt" else "Pt"
    button(widget, other).click()  # labels atom 3, locks it, moves on to atom 1
    assert widget.current == 1 and layer.selected_data == {1}
    assert "2 left" in widget.review_status.text()
    row = layer.features.iloc[3]
    assert row["element"] == other and row["locked"] and row["edited"] and not row["ambiguous"]
    np.testing.assert_allclose(layer.face_color[3], ELEMENT_COLOURS[other])
    assert widget.log[-1]["action"] == "relabel" and widget.log[-1]["index"] == 3
    assert widget.log[-1]["new"] == other and widget.log[-1]["old"] == atoms.species[3]
    button(widget, NON_ATOM).click()
    assert layer.features["non_atom"][1] and layer.features["element"][1] == ""
    assert widget.current == 2
    button(widget, "Fe").click()
    assert widget.review_status.text() == "0 ambiguous atom(s) to review"
    assert [e["index"] for e in widget.log] == [3, 1, 2]
    assert not layer.features["locked"][np.r_[0, 4:len(atoms)]].any()


def test_label_without_selection_is_a_message(edited):
    _, layer, widget, _ = edited
    layer.selected_data = set()
    button(widget, "Fe").click()
    assert widget.message.text().startswith("⚠ select points")
    assert widget.log == []


def test_moved_added_and_deleted_points_are_marked_and_logged(edited):
    _, layer, widget, atoms = edited
    data = layer.data.copy()
    data[7] += [0, 0, 2]  # 2 voxels = 1 Å along x
    layer.data = data
    assert layer.features["edited"][7] and layer.features["locked"][7]
    assert layer.features["edited"].sum() == 1
    (move,) = widget.log
    assert move["action"] == "move" and move["index"] == 7
    np.testing.assert_allclose(np.subtract(move["new"], move["old"]), [1.0, 0, 0])
    np.testing.assert_allclose(atoms_from_layer(layer).positions[7], atoms.positions[7] + [1.0, 0, 0])

    layer.add([16, 16, 20])  # a point 2 Å along x from the centre (no volume to snap it to)
    added = len(atoms)
    assert layer.features["placed"][added] and layer.features["edited"][added]
    assert not layer.features["locked"][added]  # its label is left to the classifier
    assert widget.message.text().startswith("⚠ no volume to snap to") and "; added 1 point(s)" in widget.message.text()
    assert widget.log[-1]["action"] == "add" and widget.log[-1]["index"] == added
    np.testing.assert_allclose(widget.log[-1]["position"], [2.0, 0.0, 0.0])

    layer.selected_data = {5, 9}
    layer.remove_selected()
    deleted = widget.log[-2:]
    assert [(e["action"], e["index"]) for e in deleted] == [("delete", 5), ("delete", 9)]
    np.testing.assert_allclose(deleted[1]["position"], atoms.positions[9])
    assert deleted[1]["label"] == atoms.species[9]
    assert len(layer.data) == len(atoms) - 1
    assert layer.metadata["aet"]["edits"] is widget.log
    assert "4 edit(s) logged; last: delete atom 9" in widget.log_status.text()


def test_a_replaced_model_is_logged_not_locked(edited):
    _, layer, widget, atoms = edited
    layer.data = layer.data[:40] + 1.0  # a new model, as a Trace re-run writes it
    (entry,) = widget.log
    assert (entry["action"], entry["old_count"], entry["new_count"]) == ("replace", len(atoms), 40)
    assert not layer.features["locked"].any() and not layer.features["edited"].any()


def test_a_drag_is_one_log_entry(edited):
    _, layer, widget, atoms = edited
    layer.selected_data = {7}
    start = layer.data[7].copy()
    for k in range(4):  # the steps of a mouse drag in napari's select mode
        layer._move({7}, start + [0, 0.5 * k, 0])
    (move,) = widget.log
    np.testing.assert_allclose(move["old"], atoms.positions[7])
    np.testing.assert_allclose(np.subtract(move["new"], move["old"]), [0, 0.75, 0])  # 1.5 voxels along y
    assert layer.features["locked"][7] and layer.features["locked"].sum() == 1


def test_the_log_survives_a_replaced_metadata(edited):
    _, layer, widget, _ = edited
    layer.selected_data = {0}
    button(widget, "Pt").click()
    viewer = widget.viewer
    # what a Classify re-run does: the same layer's data, metadata and features written anew
    assert show_layer(viewer, atoms_layer(atoms_from_layer(layer), SHAPE, VOXEL)) is layer
    assert [e["index"] for e in layer.metadata["aet"]["edits"]] == [0]  # no entry for the rewrite
    assert layer.metadata["aet"]["edits"] is widget.log


def test_edited_points_render(edited, tmp_path):
    viewer, layer, widget, _ = edited
    layer.selected_data = {0, 1, 2}
    button(widget, NON_ATOM).click()
    layer.selected_data = set()
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    shown = screenshot(viewer, tmp_path / "edited.png")
    layer.visible = False
    empty = screenshot(viewer)
    assert np.all(empty == empty[:1, :1])  # nothing drawn: uniform background
    assert np.mean(np.any(shown != empty, axis=-1)) > 0.02


def test_docked_from_the_plugin_menu(make_napari_viewer, qtbot):
    """Docked, the widget sees the viewer through napari's public-only proxy."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-aet", "6 Edit atoms")
    layer = show_layer(viewer, atoms_layer(ambiguous_atoms(), SHAPE, VOXEL))
    assert isinstance(widget, EditWidget) and widget.atoms_input.currentText() == "atoms"
    widget.next_button.click()
    viewer.add_image(np.zeros((4, 4)), name="unrelated")  # keeps the review going
    widget.next_button.click()
    assert widget.current == 1
    layer.data = layer.data + np.eye(len(layer.data), 1, -4)  # atom 4 one voxel further on each axis
    layer.data = layer.data + np.eye(len(layer.data), 1, -4)
    log = layer.metadata["aet"]["edits"]
    assert [(e["action"], e["index"]) for e in log] == [("move", 4)]  # one entry per drag
    np.testing.assert_allclose(np.subtract(log[0]["new"], log[0]["old"]), [1.0, 1.0, 1.0])  # 2 voxels
    assert list(np.flatnonzero(layer.features["locked"])) == [4]


def test_deletions_alone_keep_a_trace_rerun_off_the_layer(edited):
    viewer, layer, widget, _ = edited
    assert free_atoms_name(viewer) == "atoms"
    layer.selected_data = {5}
    layer.remove_selected()  # leaves no edited/locked flag, only the log entry
    assert not layer.features["locked"].any() and len(widget.log) == 1
    assert has_manual_edits(layer) and free_atoms_name(viewer) == "atoms 2"


def test_the_log_is_saved_and_continued(edited, tmp_path):
    viewer, layer, widget, atoms = edited
    layer.selected_data = {5}
    layer.remove_selected()
    layer.selected_data = {0}
    button(widget, "Pt").click()
    saved_log = [dict(e) for e in widget.log]
    path = str(tmp_path / "edited.aet")
    assert save_layers(path, [layer], plugin="napari-aet") == [path]

    [reopened] = viewer.open(path, plugin="napari-aet")
    assert reopened.name == "atoms: atoms" and widget.atoms_input.currentText() == "atoms: atoms"
    assert widget.layer == reopened and widget.log == saved_log
    np.testing.assert_array_equal(reopened.features["locked"], layer.features["locked"])
    np.testing.assert_allclose(atoms_from_layer(reopened).positions, atoms_from_layer(layer).positions, atol=1e-9)
    reopened.selected_data = {9}
    reopened.remove_selected()
    assert widget.log[:2] == saved_log and widget.log[2]["action"] == "delete"
    assert reopened.metadata["aet"]["edits"] is widget.log


def test_atoms_without_a_measured_intensity_do_not_break_the_histogram(make_napari_viewer, qtbot):
    """Refinement adds atoms with no integrated intensity (NaN): the editor still opens on them
    (it crashed napari before) and histograms the others."""
    atoms = ambiguous_atoms()
    intensity = np.linspace(1.0, 9.0, len(atoms))
    intensity[:4] = np.nan
    viewer = make_napari_viewer()
    show_layer(viewer, atoms_layer(atoms.with_features(intensity=intensity), SHAPE, VOXEL, name="atoms refined"))
    widget = EditWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer is not None and not widget.histogram.isHidden()
    (ax,) = widget.histogram.figure.axes
    assert ax.get_xlim()[0] < 2.0 and ax.get_xlim()[1] > 8.0  # the finite intensities
