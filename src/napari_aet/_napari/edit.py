"""Hand correction of an atoms layer: napari's Points tools and keys edit, this widget labels,
locks, logs, undoes and saves every edit into the study.

napari's own Points tools add, delete and move points (a mouse drag in select mode included);
the widget listens to the layer's data events and, through :mod:`napari_aet.edit`, marks moved
atoms ``edited`` and ``locked``, snaps added ones to the volume's peak and lets the classifier
label them, and logs every change in ``layer.metadata["aet"]["edits"]``. When the layer shows
the study's current atoms (``metadata["aet"]["study_id"]`` and ``["study_point"]``), each edit
is written into the study and autosaved (:meth:`napari_aet.session.StudySession.edited`).

Keys on the watched layer, and while the editor is shown whatever layer is selected (Labels
layers keep their own): 1, 2, … label the selected atoms with the model's elements, lightest
first, 0 as non-atom; L locks (or unlocks) them; Ctrl+Z / Ctrl+Shift+Z undo / redo; N / P go to
the next / previous atom of the review queue.

One editor of a viewer edits at a time (the workbench's 6 Edit step and a docked 6 Edit atoms
are two): the one shown last, or the other when it is hidden; the other is greyed out and
watches nothing, so each edit is logged once.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import numpy as np
from matplotlib.widgets import SpanSelector
from qtpy.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from .. import workflow
from ..atom_labels import NON_ATOM, labels, model_elements
from ..edit import (
    append_to_log,
    brightest_on_ray,
    crowding,
    changes,
    in_intensity_range,
    mark_edited,
    move_class_boundary,
    place_atoms,
    queue_step,
    relabel,
    replacement,
    set_locked,
    snap_to_peak,
)
from ..geometry import specimen_to_voxel
from .layers import atoms_from_layer, label_colours, reconstruction_from_layer, restyle_atoms
from ..model import AtomModel, InputError
from ..review import PLANES, class_average_slices, orthogonal_slices
from ..undo import UndoStack, history_of, keep_history
from ._base import (LayerSelector, follows_study, is_atoms, is_volume, layer_type, scrolled_layout,
                    study_layer_name, study_tag)
from .classify import class_boundaries
from .key_help import KeyHelp
from ._plots import PlotCanvas
from ._study import session_for

#: Actions of the data events napari sends before a change: the moment to take the "before" snapshot.
_BEFORE = ("adding", "removing", "changing")
#: Buttons per row of the label buttons.
_ROW = 4
#: Keys bound on the watched layer, besides the digits of the labels.
_KEYS = {"l": "toggle_lock", "Control-z": "undo", "Control-Shift-z": "redo", "n": "next", "p": "previous"}
#: How near (canvas pixels) a press must be to a class boundary of the histogram to drag it.
_GRAB = 6
#: Zoom (canvas pixels per Å) the review goes to at least: a neighbourhood of ~10 Å fills a 300-px canvas.
REVIEW_ZOOM = 30.0
#: The editors of each viewer, the one editing first.
_EDITORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class EditWidget(QWidget):
    """Label, lock, log, undo and save hand edits of an atoms layer; review its ambiguous atoms.

    * Moving points with napari's tools marks them ``edited`` and ``locked``; an added point is
      snapped to the peak of the volume near it (2D) or the brightest point along the view ray
      (3D) and labelled by the classifier (:func:`napari_aet.edit.place_atoms`); every
      addition, deletion and move is logged (see :func:`napari_aet.edit.changes`).
    * One button (and key) per element of the model, and "non-atom", re-label the selected points.
    * Undo / Redo (and Ctrl+Z / Ctrl+Shift+Z) step through the edits, each logged.
    * "Previous" / "Next ambiguous" (P / N) centre and zoom the view on the drawn atoms of
      :func:`napari_aet.edit.review_queue`, set the slice and select them; a panel shows the
      atom's three orthogonal local slices next to each class's average
      (:mod:`napari_aet.review`); labelling the atom under review moves on to the next.
    * A histogram of the drawn atoms' intensities by label: dragging across it selects those
      atoms; dragging a class boundary re-labels the unlocked atoms it crosses
      (:func:`napari_aet.edit.move_class_boundary`).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer = None
        self.current = None  # atom under review
        self.history = UndoStack()
        self._before = None  # the layer's atoms before the change being notified
        self._changing = False  # between napari's "changing" and "changed": a drag in progress
        self._writing = False  # the widget itself is writing the layer
        self.atoms_input = LayerSelector(napari_viewer, is_atoms,  # the study's current atoms first
                                         follow_new=follows_study(self.session, "atoms"),
                                         preferred=lambda: study_layer_name(napari_viewer, self.session, "atoms"))
        self.atoms_input.currentTextChanged.connect(self.watch)
        session_for(napari_viewer).changed.connect(self._on_study)
        self._elsewhere = []  # (viewer or layer, keys) bound while the editor is shown
        self._key_help = KeyHelp(napari_viewer)  # the status bar's key hints, ours where we bind
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.watch)
            event.connect(self._bind_keys_elsewhere)

        self.label_buttons = QGridLayout()
        self.lock_button = QPushButton("Lock / unlock (L)")
        self.undo_button = QPushButton("Undo (Ctrl+Z)")
        self.redo_button = QPushButton("Redo (Ctrl+Shift+Z)")
        self.previous_button = QPushButton("Previous (P)")
        self.next_button = QPushButton("Next ambiguous (N)")
        self.lock_button.clicked.connect(self.toggle_lock)
        self.undo_button.clicked.connect(self.undo)
        self.redo_button.clicked.connect(self.redo)
        self.previous_button.clicked.connect(lambda: self.review(-1))
        self.next_button.clicked.connect(lambda: self.review(1))
        self.study_status = QLabel("")
        self.review_status = QLabel("")
        self.message = QLabel("")
        self.log_status = QLabel("")
        for label in (self.study_status, self.review_status, self.message, self.log_status):
            label.setWordWrap(True)
        self.views = PlotCanvas(height=2.4)
        self.views.setVisible(False)  # until an atom is under review
        self.histogram = PlotCanvas(height=1.6)
        self.histogram.setVisible(False)  # until the atoms carry intensities
        self._brush = None
        self._histogram_groups, self._histogram_artists = None, []
        self._boundaries = []  # (lower label, upper label, matplotlib line) of the histogram
        self._dragged = None  # the boundary being dragged: (lower, upper, line, where it started)
        for event, callback in (("button_press_event", self._grab_boundary), ("motion_notify_event", self._drag_boundary),
                                ("button_release_event", self._drop_boundary)):
            self.histogram.canvas.mpl_connect(event, callback)  # before the brush's: they come first

        row = QHBoxLayout()
        row.addWidget(QLabel("atoms"))
        row.addWidget(self.atoms_input)
        history = QHBoxLayout()
        for button in (self.lock_button, self.undo_button, self.redo_button):
            history.addWidget(button)
        review = QHBoxLayout()
        review.addWidget(self.previous_button)
        review.addWidget(self.next_button)
        layout = scrolled_layout(self)
        layout.addLayout(row)
        layout.addWidget(self.study_status)
        layout.addWidget(QLabel("label the selected points (keys 1, 2, …; 0 non-atom):"))
        layout.addLayout(self.label_buttons)
        layout.addLayout(history)
        layout.addLayout(review)
        for label in (self.review_status, self.message, self.log_status):
            layout.addWidget(label)
        layout.addWidget(self.views)
        layout.addWidget(self.histogram)
        layout.addStretch()
        self._editors().append(weakref.ref(self))
        if self._edits():
            self.watch()
        else:  # another editor of this viewer edits until this one is shown
            self._let_go()

    # --- the watched layer ---------------------------------------------------------------------
    @property
    def session(self):
        """The viewer's study session (:func:`~napari_aet._napari._study.session_for`)."""
        return session_for(self.viewer)

    @property
    def log(self) -> list:
        """The edit log of the watched layer (``layer.metadata["aet"]["edits"]``)."""
        return self.layer.metadata["aet"].setdefault("edits", [])

    def in_study(self) -> bool:
        """Whether the watched layer shows the atoms of the viewer's study's current time point."""
        return self.layer is not None and study_tag(self.layer) == (self.session.id, self.session.point.name, "atoms")

    def _on_study(self, what):
        """When another time point became current (or a study was opened), watch its atoms."""
        if what == "study":
            self.atoms_input.select_study_result(study_layer_name(self.viewer, self.session, "atoms"), self.session)
            self.watch()

    def watch(self, event=None):
        """Follow the layer chosen in the selector (called when it or the layer list changes), when
        this editor is the one that edits."""
        layer = self.atoms_input.layer()
        if layer == self.layer or not self._edits():  # == sees through napari's proxies of docked widgets
            return
        self._unwatch()
        self.layer, self.current = layer, None
        self.history = history_of(self.session.point) if self.in_study() else UndoStack()
        if layer is not None:
            for emitter, callback in self._connections():
                emitter.connect(callback)
            self._log_kept = self.log
            self._before = atoms_from_layer(layer)
            restyle_atoms(layer, self._before)
        self._make_label_buttons()
        self._show_histogram(None if layer is None else self._before)
        self._show_status()

    def _unwatch(self):
        """Disconnect from the watched layer and unbind the editor's keys there."""
        if self.layer is not None:
            for emitter, callback in self._connections():
                emitter.disconnect(callback)
            for key in self._keys():
                self.layer.bind_key(key, None, overwrite=True)

    def _connections(self):
        events = self.layer.events
        return ((events.data, self._on_data), (events.features, self._on_features),
                (events.metadata, self._on_metadata))

    def _label_keys(self) -> dict:
        """Key -> label of the watched layer: 1, 2, … its elements (lightest first, nine at most),
        0 non-atom."""
        elements = self._elements if self.layer is not None else ()
        return {**{str(k + 1): name for k, name in enumerate(elements[:9])}, "0": NON_ATOM}

    def _keys(self) -> dict:
        """Key -> action of the watched layer: the labels' keys, then :data:`_KEYS`."""
        keys = {key: (lambda name=name: self.label_selected(name)) for key, name in self._label_keys().items()}
        return {**keys, **{key: getattr(self, action) for key, action in _KEYS.items()}}

    def _make_label_buttons(self):
        """One button per element of the model, and "non-atom"; the keys bound to match."""
        while self.label_buttons.count():  # gone at once: deleteLater alone leaves them drawn, full size,
            old = self.label_buttons.takeAt(0).widget()  # over the step until the event loop runs again
            old.hide()
            old.setParent(None)
            old.deleteLater()
        self._elements = model_elements(self._before) if self.layer is not None else ()
        self._bind_keys_elsewhere()
        if self.layer is None:
            return
        key_of = {name: key for key, name in self._label_keys().items()}
        for k, name in enumerate((*self._elements, NON_ATOM)):
            key = key_of.get(name, "")
            button = QPushButton(f"{name} ({key})" if key else name)
            button.clicked.connect(lambda _=False, name=name: self.label_selected(name))
            self.label_buttons.addWidget(button, k // _ROW, k % _ROW)
        for digit in "123456789":  # none left over from a model with more elements
            self.layer.bind_key(digit, None)
        for key, action in self._keys().items():
            self.layer.bind_key(key, lambda _layer, action=action: action(), overwrite=True)

    # --- one editor edits at a time -------------------------------------------------------------
    def _editors(self) -> list:
        """This viewer's live editors (weak references), the one editing first."""
        viewer = getattr(self.viewer, "__wrapped__", self.viewer)
        refs = _EDITORS.setdefault(viewer, [])
        refs[:] = [ref for ref in refs if ref() is not None]
        return refs

    def _edits(self) -> bool:
        """Whether this is the viewer's editor that edits (see the module docstring)."""
        refs = self._editors()
        return bool(refs) and refs[0]() is self

    def _take_over(self):
        """Become the viewer's editing editor: the previous one lets go of its layer first."""
        refs = self._editors()
        if refs and refs[0]() is self:
            return
        previous = refs[0]() if refs else None
        refs[:] = [weakref.ref(self), *[ref for ref in refs if ref() is not self]]
        if previous is not None:
            previous._let_go()
        self.setEnabled(True)
        self.message.setText("")
        self.watch()

    def _let_go(self):
        """Stop watching the layer (another editor edits it now) and grey out."""
        self._unwatch()
        self.layer, self.current = None, None
        self._bind_keys_elsewhere()
        self.setEnabled(False)
        self._show_status()  # no numbers of a layer it no longer watches
        self.message.setText("the other atom editor of this window edits now (the workbench's 6 Edit step or the "
                             "docked 6 Edit atoms): show only this one to edit here")

    def showEvent(self, event):
        super().showEvent(event)
        self._take_over()
        self._bind_keys_elsewhere()

    def hideEvent(self, event):
        super().hideEvent(event)
        others = [ref() for ref in self._editors()[1:]]
        if self._edits() and others:  # the other editor, shown or not, edits from now on
            next((e for e in others if e.isVisible()), others[0])._take_over()
        self._bind_keys_elsewhere()

    def _bind_keys_elsewhere(self, event=None):
        """While the editor is shown its keys work whatever layer is selected: they are bound on
        the viewer and on its layers besides the watched one (bound as long as it is watched),
        except Labels layers, whose own keys paint and undo painting. Hidden or closed, the
        editor unbinds them there. The status bar's key hints follow (:mod:`.key_help`)."""
        for target, keys in self._elsewhere:
            for key in keys:
                target.bind_key(key, None)
        self._elsewhere = []
        self._key_help.clear()
        if self.layer is None:
            return
        if not self.isVisible():
            self._key_help.show([self.layer], self._key_hints())
            return
        keys = self._keys()
        others = [layer for layer in self.viewer.layers if layer_type(layer) != "labels" and layer != self.layer]
        for target in (self.viewer, *others):
            for key, action in keys.items():
                target.bind_key(key, lambda _target, action=action: action(), overwrite=True)
            self._elsewhere.append((target, list(keys)))
        self._key_help.show([self.layer, *others], self._key_hints())

    def _key_hints(self) -> dict:
        """The editor's keys as the status bar names them -> what they do."""
        return {**self._label_keys(), "L": "lock", "N": "next ambiguous", "P": "previous", "Ctrl+Z": "undo"}

    # --- napari's edits ------------------------------------------------------------------------
    def _on_data(self, event):
        """Snapshot before a change; after it, mark added and moved atoms and log everything.

        A change of the whole data with a different number of points (``layer.data = ...``, as a
        re-run of Trace does; napari's tools add and remove instead) replaces the model: it is
        logged as such, and its atoms are not marked as edits.
        """
        if self._writing:
            return
        if event.action in _BEFORE:
            self._before, self._changing = atoms_from_layer(self.layer), True
            return
        self._changing = False
        before, after = self._before, atoms_from_layer(self.layer)
        removed = event.data_indices if event.action == "removed" else ()
        if len(removed) or len(after) != len(before):
            self.current = None  # indices have shifted
        if self._shows_the_study(after):  # a stage's result, already in the study, being shown: no edit
            self._before = after
            self.history = history_of(self.session.point)  # void if the stage ran since the last edit
            self._show_status(after)
            return
        if event.action == "changed" and len(after) != len(before):
            self._commit(before, after, [replacement(before, after)], undoable=False)
            return
        entries = changes(before, after, removed)
        moved = [e["index"] for e in entries if e["action"] == "move"]
        added = [e["index"] for e in entries if e["action"] == "add"]
        if moved:
            after = mark_edited(after, moved)
        earlier = self.message.text()
        given = workflow.min_distance_given(self.session.point) if self.in_study() else None
        if added:
            after = self._place(after, added)
            crowded = crowding(after, added, given)
            if crowded:  # the click snapped onto an atom's peak, or too near one: nothing changes
                self._show_atoms(before)
                self.message.setText(f"⚠ not added: {'; '.join(crowded)}. Click on an unoccupied peak")
                return
            for entry in entries:
                if entry["action"] == "add":
                    entry.update(position=after.positions[entry["index"]].tolist(),
                                 label=labels(after)[entry["index"]])
        self._commit(before, after, entries)
        done = {"added": [labels(after)[i] or "unlabelled" for i in added], "moved": moved,
                "deleted": [e for e in entries if e["action"] == "delete"]}
        said = [f"{what} {len(items)} point(s)" + (f" ({', '.join(items)})" if what == "added" else "")
                for what, items in done.items() if items]
        warning = self.message.text() if self.message.text() != earlier else ""  # e.g. no volume to snap to
        crowded = crowding(after, moved, given) if moved else []
        if crowded:  # kept (a drag may pass by a neighbour), but not silently
            warning = f"⚠ moved onto a neighbour: {'; '.join(crowded)}; drag it away or undo (Ctrl+Z)"
        if said:  # what just happened, not the message of an earlier action
            self.message.setText("; ".join([warning, *said] if warning else said))

    def _shows_the_study(self, atoms) -> bool:
        """Whether ``atoms`` (the layer just changed) are the study's current atoms: a stage put
        its result into the study before showing it, while an edit is written into the study
        only after it happened."""
        if not self.in_study() or self.session.point.atoms is None:
            return False
        study = self.session.point.atoms
        return len(study) == len(atoms) and np.allclose(study.positions, atoms.positions, rtol=0, atol=1e-6)

    def _place(self, atoms, added):
        """Snap ``added`` atoms to the volume's peak near where they were put and label them."""
        reconstruction = self._reconstruction()
        if reconstruction is None:
            self.message.setText("⚠ no volume to snap to: the atom stays where it was put, unlabelled")
            return place_atoms(atoms, added, None)
        positions = atoms.positions.copy()
        direction = self._view_direction()
        try:
            for j in added:  # one click adds one point
                positions[j] = snap_to_peak(reconstruction, positions[j]) if direction is None else \
                    brightest_on_ray(reconstruction, positions[j], direction)
        except InputError as error:
            self.message.setText(f"⚠ {error}: the atom stays where it was put")
            positions = atoms.positions
        return place_atoms(AtomModel(positions, atoms.species, atoms.features), added, reconstruction)

    def _reconstruction(self):
        """The volume the atoms were traced in: the study's, else a volume layer of the same grid."""
        if self.in_study() and self.session.point.reconstruction is not None:
            return self.session.point.reconstruction
        shape = tuple(self.layer.metadata["aet"]["volume_shape"])
        for layer in self.viewer.layers:
            if is_volume(layer) and np.shape(layer.data) == shape:
                return reconstruction_from_layer(layer)
        return None

    def _view_direction(self):
        """The viewing direction (x, y, z) in 3D display, None in 2D."""
        if self.viewer.dims.ndisplay != 3:
            return None
        view = np.asarray(self.viewer.scene.camera.view_direction if hasattr(self.viewer, "scene")
                          else self.viewer.camera.view_direction)  # (z, y, x) world
        return view[::-1]

    def _on_features(self, event=None):
        """Keep the snapshot and the label buttons current when the features change (e.g. Classify
        ran) — but not during a drag, whose every step napari announces as a features change."""
        if self._writing or self._changing or len(self.layer.features) != len(self.layer.data):
            return
        self._before = atoms_from_layer(self.layer)
        restyle_atoms(self.layer, self._before)
        if model_elements(self._before) != self._elements:
            self._make_label_buttons()
        self._show_histogram(self._before)

    def _on_metadata(self, event=None):
        """Put the edit log back if the layer's metadata was replaced (e.g. by a Classify re-run)."""
        meta = self.layer.metadata.get("aet")
        if meta is not None:
            meta.setdefault("edits", self._log_kept)
        self._log_kept = self.log

    @contextmanager
    def _writing_layer(self):
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def _show_atoms(self, atoms):
        """Write ``atoms`` (positions, features and look) to the layer."""
        meta = self.layer.metadata["aet"]
        data = specimen_to_voxel(atoms.positions, meta["volume_shape"], meta["voxel_size"])
        with self._writing_layer():
            if len(data) != len(self.layer.data) or not np.allclose(data, self.layer.data):
                self.layer.selected_data = set()
                self.layer.data = data
            self.layer.features = atoms.to_frame().drop(columns=["x", "y", "z"])
            restyle_atoms(self.layer, atoms)
        self._before = atoms
        self._show_histogram(atoms)

    def _commit(self, before, after, entries, undoable=True):
        """Show ``after``, log ``entries``, keep the step for undo, and save it into the study."""
        if not entries:
            return
        self._show_atoms(after)
        log = self.log
        length = len(log)
        append_to_log(log, entries)
        if not undoable:
            self.history = UndoStack()
        elif len(log) == length and self.history.can_undo:  # the next step of the same drag
            self.history.amend(before, after, log[-len(entries):])
        else:
            self.history.record(before, after, entries)
        self._save(after)

    def _save(self, atoms):
        """Write the atoms and the log into the study (autosaved), when the layer is part of it."""
        if self.in_study():
            point = self.session.point
            point.atoms, point.edits = atoms, list(self.log)
            workflow.mark_edited_atoms_stale(point)
            keep_history(point, self.history)
            self.session.edited()
        self._show_status(atoms)

    # --- labels, locks, undo -------------------------------------------------------------------
    def _selection(self):
        if self.layer is None or not self.layer.selected_data:
            self.message.setText("⚠ select points first (napari's select tool), or press Next ambiguous")
            return None
        return sorted(self.layer.selected_data)

    def label_selected(self, label):
        """Label the selected points ``label`` (an element or "non-atom"), lock and log them;
        if the atom under review was among them, go on to the next one."""
        index = self._selection()
        if index is None:
            return
        before = atoms_from_layer(self.layer)
        after = relabel(before, index, label)
        self._commit(before, after, changes(before, after))
        self.message.setText(f"labelled {len(index)} point(s) {label}")
        if self.current in index:
            self.review(0)

    def toggle_lock(self):
        """Lock the selected points, or unlock them if all are locked."""
        index = self._selection()
        if index is None:
            return
        before = atoms_from_layer(self.layer)
        lock = not np.all(before.features.get("locked", np.zeros(len(before), bool))[index])
        after = set_locked(before, index, lock)
        self._commit(before, after, changes(before, after))
        self.message.setText(f"{'locked' if lock else 'unlocked'} {len(index)} point(s)")

    def undo(self):
        """Undo the last edit (logged as "undo")."""
        self._step_history(self.history.undo, self.history.can_undo, "undo")

    def redo(self):
        """Redo the last undone edit (logged as "redo")."""
        self._step_history(self.history.redo, self.history.can_redo, "redo")

    def _step_history(self, step, possible, what):
        if self.layer is None or not possible:
            self.message.setText(f"⚠ nothing to {what}")
            return
        try:
            atoms, entry = step(atoms_from_layer(self.layer))
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        self.current = None
        self._show_atoms(atoms)
        self.log.append(entry)
        self.message.setText(f"{what}: " + ", ".join(e["action"] for e in entry["entries"]))
        self._save(atoms)

    # --- review --------------------------------------------------------------------------------
    def next(self):
        self.review(1)

    def previous(self):
        self.review(-1)

    def review(self, step):
        """Go ``step`` atoms along the review queue (0: the next after a just-labelled atom)."""
        if self.layer is None:
            self.message.setText("⚠ no atoms layer: trace atoms first")
            return
        atoms = atoms_from_layer(self.layer)
        self.current, _, _ = queue_step(atoms, self.current, step, include_non_atoms=self._non_atoms_drawn())
        if self.current is not None:
            world = self.layer.data_to_world(self.layer.data[self.current])
            camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera  # napari < 0.9
            camera.center = world
            camera.zoom = max(camera.zoom, REVIEW_ZOOM)
            self.viewer.dims.set_point(range(self.viewer.dims.ndim - 3, self.viewer.dims.ndim), world)
            self.viewer.layers.selection.active = self.layer
            self.layer.selected_data = {self.current}
        self._show_views(atoms)
        self._show_status(atoms)

    def _show_views(self, atoms):
        """The atom under review on three orthogonal planes, above each class's average, on one
        colour scale (nothing without a volume)."""
        reconstruction = self._reconstruction()
        shown = reconstruction is not None and self.current is not None
        self.views.setVisible(shown)
        if not shown:
            return
        rows = {f"atom {self.current}": orthogonal_slices(reconstruction, atoms.positions[[self.current]])[0],
                **class_average_slices(reconstruction, atoms)}
        low, high = min(v.min() for v in rows.values()), max(v.max() for v in rows.values())
        axes = self.views.figure.axes
        if [ax.get_ylabel() for ax in axes[len(PLANES)::len(PLANES)]] == list(rows)[1:]:  # same classes:
            for ax, image in zip(axes, (plane for planes in rows.values() for plane in planes), strict=True):
                ax.images[0].set_data(image)  # new pictures in the same axes (a full redraw is slow)
                ax.images[0].set_clim(low, high)
            axes[0].set_ylabel(list(rows)[0], fontsize=7)
            self.views.draw(relayout=False)
            return
        axes = self.views.subplots(len(rows), len(PLANES))
        for r, (name, planes) in enumerate(rows.items()):
            for c, (plane, _) in enumerate(PLANES):
                ax = axes[r * len(PLANES) + c]
                ax.imshow(planes[c], cmap="magma", vmin=low, vmax=high, origin="lower")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(plane, fontsize=7)
                if c == 0:
                    ax.set_ylabel(name, fontsize=7)
        self.views.draw()

    def _show_histogram(self, atoms):
        """The drawn atoms' integrated intensities, stacked by label; brushing a range selects them.

        The axes, legend and brush are made anew only when the labels change; otherwise the bars
        and boundaries are replaced in place (a full matplotlib redraw after every edit is slow).
        """
        shown = atoms is not None and "intensity" in atoms.features and len(atoms) > 0
        self.histogram.setVisible(shown)
        if not shown:
            return
        intensity, names = np.asarray(atoms.features["intensity"], float), labels(atoms)
        drawn = self._non_atoms_drawn() | ~np.asarray(atoms.features.get("non_atom", np.zeros(len(atoms), bool)), bool)
        drawn &= np.isfinite(intensity)  # atoms refinement added have no measured intensity yet
        self.histogram.setVisible(bool(np.any(drawn)))
        if not np.any(drawn):
            return
        groups = [name for name in (*model_elements(atoms), NON_ATOM) if np.any(drawn & (names == name))]
        bins = np.histogram_bin_edges(intensity[drawn], bins=min(60, max(10, int(drawn.sum()) // 10)))
        tops = np.cumsum([np.histogram(intensity[drawn & (names == name)], bins)[0] for name in groups], axis=0)
        fresh = self._histogram_groups != groups or not self.histogram.figure.axes
        if fresh:
            (ax,) = self.histogram.subplots()
            ax.set_xlabel("integrated intensity (drag: select a range; drag a dashed line: move a boundary)",
                          fontsize=7)
            if self._brush is not None:
                self._brush.disconnect_events()  # the brush of the previous drawing
            self._brush = SpanSelector(ax, self.select_intensity_range, "horizontal", minspan=0,
                                       props={"facecolor": "white", "alpha": 0.3})
        else:
            (ax,) = self.histogram.figure.axes
            for artist in self._histogram_artists:
                artist.remove()
        self._histogram_groups = groups
        colours = label_colours(model_elements(atoms))
        self._histogram_artists = [
            ax.stairs(top, bins, baseline=tops[k - 1] if k else 0, fill=True, label=name, color=colours[name])
            for k, (name, top) in enumerate(zip(groups, tops))]
        in_groups = drawn & np.isin(names, groups)
        index = np.array([groups.index(name) for name in names[in_groups]])
        self._boundaries = [(groups[lower], groups[upper], ax.axvline(threshold, color="white", lw=1, ls="--"))
                            for lower, upper, threshold in class_boundaries(intensity[in_groups], index)]
        self._histogram_artists += [line for _, _, line in self._boundaries]
        ax.relim(visible_only=True)  # not the brush's hidden rectangle
        ax.autoscale_view()
        if fresh:
            ax.legend(fontsize=6)
        self.histogram.draw()  # laid out anew: the counts' tick labels may have grown wider

    def _grab_boundary(self, event):
        """A press near a class boundary starts dragging it (and keeps the brush out of it)."""
        if event.inaxes is None or event.button != 1:
            return
        near = [(abs(event.inaxes.transData.transform((line.get_xdata()[0], 0))[0] - event.x), k)
                for k, (_, _, line) in enumerate(self._boundaries)]
        if near and min(near)[0] <= _GRAB * self.histogram.canvas.device_pixel_ratio:
            lower, upper, line = self._boundaries[min(near)[1]]
            self._dragged = (lower, upper, line, line.get_xdata()[0])
            self._brush.set_active(False)

    def _drag_boundary(self, event):
        if self._dragged is not None and event.xdata is not None:
            self._dragged[2].set_xdata([event.xdata, event.xdata])
            self.histogram.canvas.draw_idle()

    def _drop_boundary(self, event):
        """Releasing a dragged boundary re-labels the unlocked atoms it crossed."""
        if self._dragged is None:
            return
        lower, upper, line, start = self._dragged
        self._dragged = None
        self._brush.set_active(True)
        self.move_boundary(lower, upper, start, line.get_xdata()[0])

    def move_boundary(self, lower, upper, old, new):
        """Move the intensity boundary between ``lower`` and ``upper`` from ``old`` to ``new``:
        :func:`napari_aet.edit.move_class_boundary`, logged and undoable."""
        before = atoms_from_layer(self.layer)
        after = move_class_boundary(before, lower, upper, old, new)
        entries = changes(before, after)
        self._commit(before, after, entries)
        self.message.setText(f"boundary {lower}|{upper} moved from {old:.3g} to {new:.3g}: "
                             f"{len(entries)} unlocked atom(s) re-labelled")
        if not entries:
            self._show_histogram(after)  # the line back where the atoms put it

    def select_intensity_range(self, low, high):
        """Select the drawn atoms whose integrated intensity lies in [low, high]."""
        atoms = atoms_from_layer(self.layer)
        index = in_intensity_range(atoms, low, high, include_non_atoms=self._non_atoms_drawn())
        self.viewer.layers.selection.active = self.layer
        self.layer.selected_data = set(index.tolist())
        self.message.setText(f"selected {len(index)} atom(s) of intensity {low:.3g}–{high:.3g}")

    def _non_atoms_drawn(self) -> bool:
        return bool(self.layer.metadata["aet"].get("show_non_atoms", False))

    def _study_line(self) -> str:
        """Where the watched layer's edits go."""
        if self.in_study():
            return f"edits saved into the study ({self.session.point.name})"
        study_id, point, _ = study_tag(self.layer)
        if point is not None and study_id != self.session.id:  # read from a study file, not opened as the study
            return ("⚠ this layer is a copy read from a study file (File > Open): its edits stay in the layer; to "
                    "edit the study itself, open the file with the AET workbench's Open…")
        return "⚠ this layer is not part of the study: its edits stay in the layer"

    def _show_status(self, atoms=None):
        if self.layer is None:
            for label in (self.study_status, self.review_status, self.log_status):
                label.setText("")
            return
        self.study_status.setText(self._study_line())
        atoms = atoms_from_layer(self.layer) if atoms is None else atoms
        atom, position, left = queue_step(atoms, self.current, 0, include_non_atoms=self._non_atoms_drawn())
        if self.current is None or left == 0:
            self.review_status.setText(f"{left} ambiguous atom(s) to review")
        else:
            confidence = atoms.features.get("confidence", np.full(len(atoms), np.nan))[self.current]
            state = "to review" if atom == self.current else "done"
            self.review_status.setText(f"atom {self.current} ({labels(atoms)[self.current] or 'unlabelled'}, "
                                       f"confidence {confidence:.2f}, {state}); {left} left to review")
        log = self.log
        text = f"{len(log)} edit(s) logged"
        if log:
            text += f"; last: {log[-1]['action']}" + (f" atom {log[-1]['index']}" if "index" in log[-1] else "")
        self.log_status.setText(text)
        self.undo_button.setEnabled(self.history.can_undo)
        self.redo_button.setEnabled(self.history.can_redo)
