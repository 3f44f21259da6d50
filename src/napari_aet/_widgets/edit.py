"""Hand correction of an atoms layer: napari's Points tools edit, this widget labels, locks and logs.

napari's own Points tools add, delete and move points; the widget listens to the layer's data
events and, through :mod:`napari_aet.edit`, marks added and moved atoms ``edited`` and
``locked`` and logs every change (deletions with their position and label) in
``layer.metadata["aet"]["edits"]``. Buttons re-label the selected points; a review queue walks
the ambiguous atoms, most doubtful first.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..edit import (
    NON_ATOM,
    append_to_log,
    changes,
    labels,
    mark_edited,
    model_elements,
    queue_step,
    relabel,
    replacement,
)
from ..layers import atoms_from_layer, atoms_layer
from ._base import LayerSelector, is_atoms

#: Actions of the data events napari sends before a change: the moment to take the "before" snapshot.
_BEFORE = ("adding", "removing", "changing")
#: Buttons per row of the label buttons.
_ROW = 4


class EditWidget(QWidget):
    """Label, lock and log hand edits of an atoms layer; review its ambiguous atoms.

    * Moving or adding points with napari's tools marks them ``edited`` and ``locked``;
      every addition, deletion and move is logged (see :func:`napari_aet.edit.changes`).
    * One button per element of the model, and "non-atom", re-label the selected points.
    * "Previous" / "Next ambiguous" centre the view on the atoms of
      :func:`napari_aet.edit.review_queue` and select them; a label button pressed on the
      atom under review labels it, locks it and moves on to the next.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer = None
        self.current = None  # atom under review
        self._before = None  # the layer's atoms before the change being notified
        self.atoms_input = LayerSelector(napari_viewer, is_atoms)
        self.atoms_input.currentTextChanged.connect(self.watch)
        napari_viewer.layers.events.inserted.connect(self.watch)
        napari_viewer.layers.events.removed.connect(self.watch)

        self.label_buttons = QGridLayout()
        self.previous_button = QPushButton("Previous")
        self.next_button = QPushButton("Next ambiguous")
        self.previous_button.clicked.connect(lambda: self.review(-1))
        self.next_button.clicked.connect(lambda: self.review(1))
        self.review_status = QLabel("")
        self.message = QLabel("")
        self.log_status = QLabel("")
        for label in (self.review_status, self.message, self.log_status):
            label.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(QLabel("atoms"))
        row.addWidget(self.atoms_input)
        review = QHBoxLayout()
        review.addWidget(self.previous_button)
        review.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(QLabel("label the selected points:"))
        layout.addLayout(self.label_buttons)
        layout.addLayout(review)
        for label in (self.review_status, self.message, self.log_status):
            layout.addWidget(label)
        layout.addStretch()
        self.watch()

    # --- the watched layer ---------------------------------------------------------------------
    @property
    def log(self) -> list:
        """The edit log of the watched layer (``layer.metadata["aet"]["edits"]``)."""
        return self.layer.metadata["aet"].setdefault("edits", [])

    def watch(self, event=None):
        """Follow the layer chosen in the selector (called when it or the layer list changes)."""
        layer = self.atoms_input.layer()
        if layer == self.layer:  # == sees through napari's proxies of docked widgets, "is" does not
            return
        if self.layer is not None:
            for emitter, callback in self._connections():
                emitter.disconnect(callback)
        self.layer, self.current = layer, None
        if layer is not None:
            for emitter, callback in self._connections():
                emitter.connect(callback)
            self._log_kept = self.log
            self._before = atoms_from_layer(layer)
        self._make_label_buttons()
        self._show_status()

    def _connections(self):
        events = self.layer.events
        return ((events.data, self._on_data), (events.features, self._on_features),
                (events.metadata, self._on_metadata))

    def _make_label_buttons(self):
        """One button per element of the model, and "non-atom"."""
        while self.label_buttons.count():
            self.label_buttons.takeAt(0).widget().deleteLater()
        self._elements = model_elements(self._before) if self.layer is not None else None
        names = () if self._elements is None else (*self._elements, NON_ATOM)
        for k, name in enumerate(names):
            button = QPushButton(name)
            button.clicked.connect(lambda _=False, name=name: self.label_selected(name))
            self.label_buttons.addWidget(button, k // _ROW, k % _ROW)

    # --- napari's edits ------------------------------------------------------------------------
    def _on_data(self, event):
        """Snapshot before a change; after it, mark added and moved atoms and log everything.

        A change of the whole data with a different number of points (``layer.data = ...``, as a
        re-run of Trace does; napari's tools add and remove instead) replaces the model: it is
        logged as such, and its atoms are not marked as edits.
        """
        if event.action in _BEFORE:
            self._before = atoms_from_layer(self.layer)
            return
        after = atoms_from_layer(self.layer)
        removed = event.data_indices if event.action == "removed" else ()
        if len(removed) or len(after) != len(self._before):
            self.current = None  # indices have shifted
        if event.action == "changed" and len(after) != len(self._before):
            self._record([replacement(self._before, after)], after)
            self._before = after
            return
        entries = changes(self._before, after, removed)
        touched = [e["index"] for e in entries if e["action"] in ("add", "move")]
        if touched:
            after = mark_edited(after, touched)
            self._show_atoms(after)
        self._record(entries, after)
        self._before = after

    def _on_features(self, event=None):
        """Keep the snapshot and the label buttons current when the features change (e.g. Classify ran)."""
        if len(self.layer.features) == len(self.layer.data):
            self._before = atoms_from_layer(self.layer)
            if model_elements(self._before) != self._elements:
                self._make_label_buttons()

    def _on_metadata(self, event=None):
        """Put the edit log back if the layer's metadata was replaced (e.g. by a Classify re-run)."""
        meta = self.layer.metadata.get("aet")
        if meta is not None:
            meta.setdefault("edits", self._log_kept)
        self._log_kept = self.log

    def _record(self, entries, atoms):
        append_to_log(self.log, entries)
        self._show_status(atoms)

    def _show_atoms(self, atoms):
        """Write features and species colours of ``atoms`` to the layer (positions unchanged)."""
        meta = self.layer.metadata["aet"]
        _, kwargs, _ = atoms_layer(atoms, meta["volume_shape"], meta["voxel_size"])
        self.layer.features = kwargs["features"]
        self.layer.face_color = kwargs["face_color"]

    # --- labels and review ---------------------------------------------------------------------
    def label_selected(self, label):
        """Label the selected points ``label`` (an element or "non-atom"), lock and log them;
        if the atom under review was among them, go on to the next one."""
        if self.layer is None or not self.layer.selected_data:
            self.message.setText("⚠ select points first (napari's select tool), or press Next ambiguous")
            return
        index = sorted(self.layer.selected_data)
        before = atoms_from_layer(self.layer)
        after = relabel(before, index, label)
        self._show_atoms(after)
        self._record(changes(before, after), after)
        self.message.setText(f"labelled {len(index)} point(s) {label}")
        if self.current in index:
            self.review(0)

    def review(self, step):
        """Go ``step`` atoms along the review queue (0: the next after a just-labelled atom)."""
        if self.layer is None:
            self.message.setText("⚠ no atoms layer: trace atoms first")
            return
        atoms = atoms_from_layer(self.layer)
        self.current, _, _ = queue_step(atoms, self.current, step)
        if self.current is not None:
            world = self.layer.data_to_world(self.layer.data[self.current])
            camera = self.viewer.scene.camera if hasattr(self.viewer, "scene") else self.viewer.camera  # napari < 0.9
            camera.center = world
            self.viewer.dims.set_point(range(self.viewer.dims.ndim - 3, self.viewer.dims.ndim), world)
            self.viewer.layers.selection.active = self.layer
            self.layer.selected_data = {self.current}
        self._show_status(atoms)

    def _show_status(self, atoms=None):
        if self.layer is None:
            self.review_status.setText("")
            self.log_status.setText("")
            return
        atoms = atoms_from_layer(self.layer) if atoms is None else atoms
        atom, position, left = queue_step(atoms, self.current, 0)
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
