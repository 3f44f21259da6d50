"""The AET workbench: one dock for a whole study — the study at the top, then the steps.

At the top: the study's file (or "unsaved"), its time points (choose one, or add one), each
stage's status on the current time point, and Open / Save / Save as. Below it a button per step —
Data, 1 Align … 6 Edit, 7 Analyse, 8 Time series, in two rows so all are in view — and the chosen
step's widget in a scroll area, so the dock fits a 1280×800 screen
whatever the steps hold. Every step works on the same study (:func:`._study.session_for`).
"""

from __future__ import annotations

from datetime import datetime

from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .hooks import time_point_layers
from ..model import InputError
from ..session import unsaved_autosave
from ._base import (VISIBLE_BEFORE, keep_with_time_point, name_by_time_point, show_layer, status_text, study_tag,
                    tag_as_study)
from ._study import session_for
from .align import AlignWidget
from .analyse import AnalyseWidget
from .classify import ClassifyWidget
from .data import DataWidget
from .edit import EditWidget
from .reconstruct import ReconstructWidget
from .refine import RefineWidget
from .timeseries import TimeSeriesWidget
from .trace import TraceWidget

#: The steps, in order: tab title and widget class.
STEPS = (("Data", DataWidget), ("1 Align", AlignWidget), ("2 Reconstruct", ReconstructWidget),
         ("3 Trace", TraceWidget), ("4 Classify", ClassifyWidget), ("5 Refine", RefineWidget), ("6 Edit", EditWidget),
         ("7 Analyse", AnalyseWidget), ("8 Time series", TimeSeriesWidget))
#: Step buttons per row.
STEPS_PER_ROW = 5
#: Width of the dock (pixels): the steps' plots and forms are laid out for it.
DOCK_WIDTH = 440


class Workbench(QWidget):
    """The study and its steps in one dock (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.study_label = QLabel()
        self.time_points = QComboBox()
        self.new_time_point = QLineEdit(placeholderText="new time point, e.g. 16 min")
        self.add_button = QPushButton("Add")
        self.open_button = QPushButton("Open…")
        self.save_button = QPushButton("Save")
        self.save_as_button = QPushButton("Save as…")
        self.status = QLabel()
        self.message = QLabel()
        for label in (self.study_label, self.status, self.message):
            label.setWordWrap(True)

        self.stack = QStackedWidget()  # takes the dock's height: napari then adds no stretch below it
        self.stack.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.step_buttons = QButtonGroup(self)
        buttons = QGridLayout()
        buttons.setSpacing(2)
        self.steps = {}
        for index, (title, widget_class) in enumerate(STEPS):
            button = QPushButton(title)
            button.setCheckable(True)
            self.step_buttons.addButton(button, index)
            buttons.addWidget(button, index // STEPS_PER_ROW, index % STEPS_PER_ROW)
            widget = widget_class(napari_viewer)
            if hasattr(widget, "status"):  # the header shows the study's status once for all steps
                widget.status.hide()
            self.stack.addWidget(widget)  # each step scrolls its own content
            self.steps[title] = widget
        self.step_buttons.idClicked.connect(self.show_step)
        self.show_step(0)

        files = QHBoxLayout()
        for button in (self.open_button, self.save_button, self.save_as_button):
            files.addWidget(button)
        points = QHBoxLayout()
        points.addWidget(QLabel("time point"))
        points.addWidget(self.time_points, 1)
        points.addWidget(self.new_time_point, 1)
        points.addWidget(self.add_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.study_label)
        layout.addLayout(files)
        layout.addLayout(points)
        layout.addWidget(self.status)
        layout.addWidget(self.message)
        layout.addLayout(buttons)
        layout.addWidget(self.stack, 1)
        self.setMinimumWidth(DOCK_WIDTH)

        self.open_button.clicked.connect(self._choose_study)
        self.save_button.clicked.connect(lambda: self.save_study(None))
        self.save_as_button.clicked.connect(self._choose_save_path)
        self.add_button.clicked.connect(lambda: self.add_time_point(self.new_time_point.text()))
        self.time_points.activated.connect(self.select_time_point)
        self.session.changed.connect(self._show_study)
        self._show_study()
        self._offer_unsaved_work()

    def _offer_unsaved_work(self):
        """Say so when an unsaved study's autosave from the last days exists (napari closed or
        crashed before the study was saved): Open… on it recovers the work."""
        session = self.session
        if session.path is not None:
            return
        found = unsaved_autosave(besides=(session.autosave_path, session.edits_path))
        if found is not None:
            when = datetime.fromtimestamp(found.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
            self.message.setText(f"an unsaved study was autosaved at {when}: Open… {found} to recover that work")

    def show_step(self, index):
        """Show step ``index`` of :data:`STEPS` (its button pressed)."""
        self.step_buttons.button(index).setChecked(True)
        self.stack.setCurrentIndex(index)

    # --- the study header -----------------------------------------------------------------------
    def _show_study(self, _what=None):
        session = self.session
        where = session.path.name if session.path is not None else "unsaved (autosaved)"
        self.study_label.setText(f"<b>Study</b>: {where}")
        self.time_points.blockSignals(True)
        self.time_points.clear()
        self.time_points.addItems([p.name for p in session.study.time_points])
        self.time_points.setCurrentIndex(session.index)
        self.time_points.blockSignals(False)
        self.status.setText(status_text(session))

    def add_time_point(self, name):
        """Add an empty time point named ``name`` and make it current (its data come next); the
        layers of the others take their time point's prefix and are hidden."""
        try:
            if not name.strip():
                raise InputError("give the new time point a name, e.g. '16 min'")
            self.session.add_time_point(name.strip())
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        self.new_time_point.clear()
        name_by_time_point(self.viewer, self.session)
        self.show_time_point()
        self.message.setText(f"time point {name.strip()!r} added: open its tilt series, then the Data step")

    def select_time_point(self, index):
        """Make time point ``index`` current and show its layers (hiding the other time points')."""
        self.session.select(index)
        self.show_time_point()

    def show_time_point(self):
        """Show the current time point's layers (its results added where missing) as they were
        before another time point hid them, and hide the other time points' layers; the steps
        then take them as their inputs (announced as "study" again: a layer updated in place
        under the same name is no new layer to follow)."""
        session = self.session
        for layer in self.viewer.layers:
            study_id, point, _ = study_tag(layer)
            if study_id != session.id:
                continue
            if point is None:  # a result of the whole study (the time series), in time 0's frame
                layer.visible = False
                continue
            meta = layer.metadata["aet"]
            if point == session.point.name:
                layer.visible = meta.pop(VISIBLE_BEFORE, layer.visible)
            elif VISIBLE_BEFORE not in meta:
                meta[VISIBLE_BEFORE] = layer.visible
                layer.visible = False
        for data in time_point_layers(session.point):
            field = data[1]["metadata"]["aet"]["study_field"]
            if not any(study_tag(layer) == (session.id, session.point.name, field) for layer in self.viewer.layers):
                keep_with_time_point(self.viewer, show_layer(self.viewer, tag_as_study(data, session, field)))
        session.announce("study")

    # --- files ----------------------------------------------------------------------------------
    def open_study(self, path):
        """Open a study file (``.aet``, or the autosave of a study never saved, which recovers it):
        the steps work on it from now on. The layers of the study before are removed (that study
        is in its file and autosaves; batch studies share layer names, and a kept layer took the
        new study's data hidden); the user's own layers stay."""
        before = self.session.id
        try:
            self.session.load(path)
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        for layer in [layer for layer in self.viewer.layers if study_tag(layer)[0] == before]:
            self.viewer.layers.remove(layer)
        self.show_time_point()
        session = self.session
        points = f"{len(session.study.time_points)} time point(s)"
        if session.path is None:
            self.message.setText(f"recovered an unsaved study from its autosave {session.autosave_path.name}: "
                                 f"{points}. It was never saved: Save it under a name to keep it")
            return
        recovered = "; unsaved work restored from its autosave" if session.recovered else ""
        self.message.setText(f"opened {session.path.name}: {points}{recovered}")

    def save_study(self, path=None):
        """Save the whole study (to ``path``, or its file); asks for a file when it has none."""
        if path is None and self.session.path is None:
            self._choose_save_path()
            return
        try:
            saved = self.session.save(path)
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        self.message.setText(f"saved {saved}")
        self._show_study()

    def _choose_study(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a study", "", "napari-aet study (*.aet)")
        if path:
            self.open_study(path)

    def _choose_save_path(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save the study", "study.aet", "napari-aet study (*.aet)")
        if path:
            self.save_study(path)
