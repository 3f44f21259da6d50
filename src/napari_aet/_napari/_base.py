"""The frame every stage widget shares: input layers, parameters, Run / Cancel, progress, messages.

Every stage widget of a viewer works on the viewer's study (:func:`._study.session_for`): its
status line shows the current time point and each stage's status, its inputs default to the layers
that show the study's current results (tagged ``metadata["aet"]["study_point"]`` and
``["study_field"]``), and a layer chosen that is not the study's becomes the study's input,
recorded with its name as the source. A stage widget declares its inputs with
:meth:`StageWidget.add_input` (a layer list filtered by ``layer.metadata["aet"]["kind"]``) and its
parameters as magicgui widgets, then implements:

* ``prepare()`` — GUI thread: read the inputs into core types and return ``job(progress)``, a
  callable run in a :func:`napari.qt.threading.create_worker` thread. Bad input raises
  :class:`~napari_aet.model.InputError`, shown as a message.
* ``finish(result)`` — GUI thread: add or update the output layers and plots with ``job``'s result.
* optionally ``show_partial(value)`` — GUI thread: live view of what ``job`` sent with
  :meth:`StageWidget.publish` (e.g. the current iterate), and ``discard()`` — undo it on Cancel.

``job`` reports through ``progress(fraction, message)``, which raises
:class:`~napari_aet.progress.Cancelled` once Cancel is pressed; iterative jobs also poll
:attr:`StageWidget.stop_requested` ("Stop and keep current") and then return what they have.
Errors never reach the user as a traceback: they become a message in the widget and a napari
notification (unexpected ones are also logged with their traceback).
"""

from __future__ import annotations

import logging

import numpy as np
from magicgui.widgets import Container
from napari.layers import Image, Labels, Points
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (QComboBox, QFormLayout, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                            QScrollArea, QVBoxLayout, QWidget)

from .. import workflow
from ..model import InputError
from ..progress import Cancelled
from ._study import session_for

logger = logging.getLogger(__name__)

#: Steps of the progress bar.
_PROGRESS_STEPS = 1000


#: The napari layer types the widgets read or write, by napari's name for them.
_LAYER_TYPES = {"image": Image, "labels": Labels, "points": Points}


def layer_type(layer) -> str:
    """napari's name of a layer's type ("image", "labels", "points"; "other" for the rest).

    By ``isinstance``: docked plugin widgets see layers through napari's public-only proxy,
    whose ``type()`` is the proxy's.
    """
    return next((name for name, cls in _LAYER_TYPES.items() if isinstance(layer, cls)), "other")


def layer_kind(layer) -> str | None:
    """The napari-aet kind of a layer ("tilt_series", "volume", "atoms", ...) or None."""
    return layer.metadata.get("aet", {}).get("kind")


def is_tilt_series(layer) -> bool:
    return layer_kind(layer) == "tilt_series"


def is_data(layer) -> bool:
    """A tilt series that can be a study's data: one just opened (in no study) or a study's raw
    series — not a stage's output (an aligned series, a refinement's residual images)."""
    study_id, _, field = study_tag(layer)
    return is_tilt_series(layer) and (study_id is None or field == "raw")


def is_volume(layer) -> bool:
    """A napari-aet volume, or any 3D image without a napari-aet kind (e.g. opened by another reader)."""
    kind = layer_kind(layer)
    return layer_type(layer) == "image" and (kind == "volume" or (kind is None and layer.ndim == 3))


def is_atoms(layer) -> bool:
    return layer_kind(layer) == "atoms"


def is_support(layer) -> bool:
    """A particle mask: a 3D Labels layer made by napari-aet or drawn by the user."""
    return layer_type(layer) == "labels" and layer.ndim == 3 and layer_kind(layer) in ("support", None)


class LayerSelector(QComboBox):
    """A drop-down list of the viewer's layers accepted by ``accepts(layer)``, kept up to date.

    With ``follow_new``, a newly added matching layer becomes the selection, so the output of one
    stage is the default input of the next, unless its name is in ``own_outputs`` (the names
    the owning widget writes: a stage does not switch its input to its own output); a callable
    ``follow_new(layer)`` follows only the new layers it accepts.
    """

    def __init__(self, viewer, accepts, own_outputs=(), choices=(), follow_new=True, preferred=None, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.accepts = accepts
        self.own_outputs = own_outputs
        self.follow_new = follow_new
        self.choices = tuple(choices)  # entries before the layers that are not layers (e.g. "automatic")
        self._chosen = None  # the selected layer, followed through renames
        self._cleared = False  # emptied by refresh(clear=True), and kept empty until a layer is chosen
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self._on_renamed)
        self.refresh(select=preferred() if preferred is not None else None)

    def _on_renamed(self, event):
        """Re-list the layers; a renamed selected layer stays selected."""
        self.refresh(select=event.source.name if self._chosen is not None and self._chosen == event.source else None)

    def _on_inserted(self, event):
        event.value.events.name.connect(self._on_renamed)
        new = event.value
        follows = self.follow_new(new) if callable(self.follow_new) else self.follow_new
        follow = follows and self.accepts(new) and new.name not in self.own_outputs
        self.refresh(select=new.name if follow else None)

    def refresh(self, event=None, select=None, clear=False):
        """Re-list the accepted layers, keeping the selection (or selecting ``select``; none with
        ``clear``); ``currentTextChanged`` is emitted once if the selection changed."""
        before = self.currentText()
        current = select or before
        cleared = clear or (select is None and before == "" and self._cleared)  # stays empty until a choice
        names = [layer.name for layer in self.viewer.layers if self.accepts(layer)]
        self.blockSignals(True)
        self.clear()
        self.addItems([*self.choices, *names])
        if cleared:
            self.setCurrentIndex(-1)
        elif current in names:
            self.setCurrentText(current)
        self._cleared = cleared
        self.blockSignals(False)
        self._chosen = self.layer()
        if self.currentText() != before:
            self.currentTextChanged.emit(self.currentText())

    def select_study_result(self, name, session):
        """Select layer ``name`` (the study's current result); with none, select nothing rather
        than keep a layer of another time point or study (:func:`of_another_time_point`)."""
        self.refresh(select=name, clear=name is None and of_another_time_point(self.layer(), session))

    def layer(self):
        """The selected layer, or None."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (no LayerList.get)


def scrolled_layout(widget: QWidget) -> QVBoxLayout:
    """A vertical layout for ``widget``'s content, inside a scroll area that fills ``widget``: its
    dock is as tall as the window allows and the content scrolls (the Align step alone needed
    820 px, more than a 1280×800 screen gives a dock)."""
    content = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(content)


def show_layer(viewer, layer_data, **overrides):
    """Add a layer from a ``(data, kwargs, type)`` tuple, or update the layer of that name.

    Updating keeps what the user set on the layer (colormap, rendering, visibility) and
    replaces the data, placement, metadata, features and point colours.
    """
    data, kwargs, kind = layer_data
    kwargs = {**kwargs, **overrides}
    name = kwargs["name"]
    if name in viewer.layers and layer_type(viewer.layers[name]) == kind:
        layer = viewer.layers[name]
        layer.data = data
        for key in ("scale", "translate", "metadata", "features", "face_color", "size"):
            unchanged = key in ("scale", "translate") and np.array_equal(getattr(layer, key), kwargs.get(key))
            if key in kwargs and not unchanged:
                setattr(layer, key, kwargs[key])
        if kind == "image":
            if "contrast_limits" in kwargs:
                layer.contrast_limits = kwargs["contrast_limits"]
            else:
                layer.reset_contrast_limits()
        if kind == "points":
            layer.shown = np.ones(len(layer.data), dtype=bool)  # new points: no stale hiding
        return layer
    if name in viewer.layers:
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{kind}")(data, **kwargs)


def study_tag(layer) -> tuple[str | None, str | None, str | None]:
    """(study session id, time point, field) of the study result a layer shows, or Nones."""
    meta = layer.metadata.get("aet", {})
    return meta.get("study_id"), meta.get("study_point"), meta.get("study_field")


def of_another_time_point(layer, session) -> bool:
    """Whether ``layer`` shows a result of a time point other than ``session``'s current one (or
    of a study opened before): never the input of a step of this one."""
    study_id, point, _ = (None, None, None) if layer is None else study_tag(layer)
    return point is not None and (study_id != session.id or point != session.point.name)


def follows_study(session, field):
    """A :class:`LayerSelector` ``follow_new`` for an input that is the study's ``field``: a new
    layer is followed when it shows that result of the current time point, or while the time
    point has none; a layer opened beside it (a reference model, another volume) does not take
    its place."""
    def follows(layer) -> bool:
        return study_tag(layer) == (session.id, session.point.name, field) or getattr(session.point, field) is None

    return follows


def time_point_name(session, name: str, point_name=None) -> str:
    """The name of a layer of the session's time point ``point_name`` (default: the current one):
    ``name`` without any time point's prefix, then "<time point>: " before it when the study has
    more than one time point (napari 0.9 has no layer groups: the prefix groups them by name)."""
    for point in session.study.time_points:
        name = name.removeprefix(f"{point.name}: ")
    if len(session.study.time_points) < 2:
        return name
    return f"{point_name or session.point.name}: {name}"


def tag_as_study(layer_data, session, field: str | None, point_name=None):
    """The layer data tuple as a layer of the session's time point ``point_name`` (default: the
    current one): named by :func:`time_point_name`, its metadata tagged with the time point and
    the study result ``field`` it shows (None: another output of a stage run on that time point)."""
    data, kwargs, kind = layer_data
    point_name = point_name or session.point.name
    metadata = dict(kwargs.get("metadata", {}))
    metadata["aet"] = {**metadata.get("aet", {}), "study_id": session.id,
                       "study_point": point_name, "study_field": field}
    return data, {**kwargs, "name": time_point_name(session, kwargs["name"], point_name),
                  "metadata": metadata}, kind


#: Metadata key (in ``metadata["aet"]``) of a layer of a time point hidden while another time point
#: (or the time series) is shown: its visibility before, given back when its time point is shown.
VISIBLE_BEFORE = "visible_before_time_point_switch"


def keep_with_time_point(viewer, layer):
    """Move ``layer`` just above the other layers of its study time point, if it is not among
    them already, so that each time point's layers stay together in the layer list."""
    study_id, point, _ = study_tag(layer)
    if point is None:
        return
    index = viewer.layers.index(layer)
    same = [k for k, other in enumerate(viewer.layers) if k != index and study_tag(other)[:2] == (study_id, point)]
    if same and not min(same) - 1 <= index <= max(same) + 1:
        viewer.layers.move(index, max(same) + 1)


def show_only_these_atoms(viewer, layer):
    """Show the atoms layer ``layer`` of a study time point and hide that time point's other atoms
    layers (hidden, not removed: their eye in the layer list shows them again), so that one atom
    set shows at a time, not every marker twice."""
    study_id, point, _ = study_tag(layer)
    if point is None:
        return
    for other in viewer.layers:
        if other is not layer and is_atoms(other) and study_tag(other)[:2] == (study_id, point):
            other.visible = False
    layer.visible = True


def name_by_time_point(viewer, session):
    """Rename the session's layers as :func:`time_point_name` says (after a time point was added,
    the first one's layers take its prefix)."""
    for layer in viewer.layers:
        study_id, point, _ = study_tag(layer)
        if study_id == session.id and point is not None:
            layer.name = time_point_name(session, layer.name, point)


def study_layer_name(viewer, session, field) -> str | None:
    """The name of the newest layer of ``viewer`` showing ``field`` of ``session``'s current time point."""
    names = [layer.name for layer in viewer.layers if study_tag(layer) == (session.id, session.point.name, field)]
    return names[-1] if names else None


def status_text(session) -> str:
    """One line: the current time point and each stage's status (✓ done, ! stale, · not run)."""
    marks = {"done": "✓", "stale": "! stale", "not run": "·"}
    states = workflow.status(session.point)
    return f"study: {session.point.name} — " + ", ".join(f"{stage} {marks[state]}" for stage, state in states.items())


class StageWidget(QWidget):
    """Base of the stage widgets: inputs, parameters, Run / Cancel (/ Stop and keep), progress, message.

    Parameters
    ----------
    napari_viewer : the viewer.
    parameters : magicgui value widgets, each with a ``name``; read with :meth:`values`.
    run_text : label of the Run button.
    stoppable : add "Stop and keep current" (for iterative jobs that poll :attr:`stop_requested`).
    """

    progressed = Signal(float, str)
    published = Signal(object)
    #: The workflow stage this widget runs (one of :data:`napari_aet.workflow.STAGES`).
    stage = ""
    #: Whether the outputs belong to the current time point (named and grouped with it).
    per_time_point = True

    def __init__(self, napari_viewer, parameters=(), run_text="Run", stoppable=False):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.status = QLabel(status_text(self.session))
        self.status.setWordWrap(True)
        self.session.changed.connect(self._show_status)
        self.stop_requested = False
        self._cancel_requested = False
        self._worker = None
        self._outputs = set()
        self._study_inputs = []  # (selector, the name of the layer showing its study result, a callable)
        self.last_outcome = None

        self.inputs = QFormLayout()
        self.parameters = Container(widgets=list(parameters), labels=True)
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.stop_button = QPushButton("Stop and keep current") if stoppable else None
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, _PROGRESS_STEPS)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setMinimumHeight(3 * self.message.fontMetrics().height())  # never clipped to a line

        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button, self.stop_button):
            if button is not None:
                buttons.addWidget(button)
        layout = scrolled_layout(self)
        layout.addWidget(self.status)
        layout.addLayout(self.inputs)
        layout.addWidget(self.parameters.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.message)
        self.extra = QVBoxLayout()  # stage-specific controls and plots go here
        layout.addLayout(self.extra)
        layout.addStretch()

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        if self.stop_button is not None:
            self.stop_button.clicked.connect(self.stop_and_keep)
        self.progressed.connect(self._show_progress)
        self.published.connect(self.show_partial)
        self._set_running(False)

    # --- declared by subclasses -------------------------------------------------------------
    def prepare(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, result):  # pragma: no cover - abstract
        raise NotImplementedError

    def show_partial(self, value):
        """Show an intermediate result sent with :meth:`publish` (GUI thread)."""

    def discard(self):
        """Remove what :meth:`show_partial` showed, after a Cancel or a failure (GUI thread)."""

    # --- helpers for subclasses -------------------------------------------------------------
    def add_input(self, label, accepts, choices=(), follow_new=True, field=None) -> LayerSelector:
        """Add a layer selector listing the layers for which ``accepts(layer)`` is true, after
        ``choices``: entries that are not layers (e.g. "automatic"), for which it returns None.
        ``follow_new``: select a newly added matching layer (see :class:`LayerSelector`; for a
        ``field``, only as :func:`follows_study` says).
        ``field``: the study result (a TimePoint field) this input is; the layer showing the
        study's current one is selected first."""
        preferred = None if field is None else (lambda: self.study_layer_name(field))
        if field is not None and follow_new is True:
            follow_new = follows_study(self.session, field)
        selector = LayerSelector(self.viewer, accepts, own_outputs=self._outputs, choices=choices,
                                 follow_new=follow_new, preferred=preferred)
        if preferred is not None:
            self._study_inputs.append((selector, preferred))
        self.inputs.addRow(label, selector)
        return selector

    # --- the study --------------------------------------------------------------------------
    def study_layer_name(self, field) -> str | None:
        """The name of the newest layer showing ``field`` of the study's current time point."""
        return study_layer_name(self.viewer, self.session, field)

    def is_study_input(self, layer, field) -> bool:
        """Whether ``layer`` shows the study's current ``field`` (and that result exists)."""
        return study_tag(layer) == self._tag(field) and getattr(self.session.point, field) is not None

    def _tag(self, field):
        return self.session.id, self.session.point.name, field

    def use_as_study_input(self, layer, field, stage, data):
        """Make ``layer`` (holding ``data``) the study's ``field``, as the result of ``stage`` taken
        from that layer, unless it already shows it. An atoms layer brings its edit log along, and
        the study takes the current content of its own atoms layer (hand edits included). Another
        layer never replaces atoms that hold hand edits (InputError)."""
        point = self.session.point
        edits = list(layer.metadata.get("aet", {}).get("edits", []))
        if self.is_study_input(layer, field):
            if field == "atoms":  # the layer is the truth: edits made in it included
                point.atoms, point.edits = data, edits
            return
        if field == "atoms" and workflow.has_hand_edits(point):
            own = self.study_layer_name("atoms")
            raise InputError(f"layer {layer.name!r} is not the study's atoms, and running on it would replace them "
                             f"and their hand edits: choose {own or 'the study atoms layer'!r} as the atoms input "
                             f"(to work on {layer.name!r} itself, open it in a new napari window)")
        replaced = getattr(point, field) is not None
        workflow.adopt(point, stage, data, f"layer {layer.name!r}")
        if field == "atoms":
            point.edits = edits
        self.tag_layer(layer, field)
        self.session.announce(stage)
        if replaced:  # the person chose another layer: say what the study holds now
            show_info(f"{point.name}: the study now takes its {field} from layer {layer.name!r} (the layer of "
                      f"the {field} before is kept)")

    def tag_layer(self, layer, field):
        """Mark ``layer`` as showing the study's current ``field``."""
        session_id, point, _ = self._tag(field)
        self.viewer.layers[layer.name].metadata.setdefault("aet", {}).update(
            study_id=session_id, study_point=point, study_field=field)

    def show_study_output(self, layer_data, field, **overrides):
        """:meth:`show_output` of a layer that shows the study's current ``field``."""
        return self.show_output(layer_data, field=field, **overrides)

    def _show_status(self, what=None):
        """Show the study's status; when another time point became current, select its results as
        inputs; when the study's data changed, drop a warning about the data before."""
        self.status.setText(status_text(self.session))
        if what == "raw" and self.message.text().startswith("⚠") and not self.running:
            self.message.setText("")
        if what == "study":
            for selector, preferred in self._study_inputs:
                point_layers = [layer.name for layer in self.viewer.layers if selector.accepts(layer)
                                and study_tag(layer)[:2] == (self.session.id, self.session.point.name)]
                selector.select_study_result(preferred() or (point_layers[-1] if point_layers else None), self.session)

    def show_output(self, layer_data, field=None, **overrides):
        """:func:`show_layer` for this stage's outputs (which its own inputs do not switch to), as
        layers of the current time point (:func:`tag_as_study`; ``field``: the study result it
        shows, if any), kept together with that time point's other layers; an atoms output is
        shown in place of the time point's other atoms layers (:func:`show_only_these_atoms`)."""
        data, kwargs, kind = layer_data
        layer_data = (data, {**kwargs, **overrides}, kind)
        if self.per_time_point:
            layer_data = tag_as_study(layer_data, self.session, field)
        else:  # a result of the whole study (e.g. the time series): tagged with the study only
            metadata = dict(layer_data[1].get("metadata", {}))
            metadata["aet"] = {**metadata.get("aet", {}), "study_id": self.session.id}
            layer_data = (layer_data[0], {**layer_data[1], "metadata": metadata}, layer_data[2])
        self._outputs.add(layer_data[1]["name"])
        layer = show_layer(self.viewer, layer_data)
        keep_with_time_point(self.viewer, layer)
        if is_atoms(layer):
            show_only_these_atoms(self.viewer, layer)
        return layer

    @staticmethod
    def selected(selector: LayerSelector, what: str):
        """The layer chosen in ``selector``; InputError naming ``what`` is needed if none."""
        layer = selector.layer()
        if layer is None:
            raise InputError(f"no {what} layer to work on: open or compute one first "
                             "(File > Open Sample > napari-aet gives a tilt series)")
        return layer

    def values(self) -> dict:
        """Current parameter values by name."""
        return self.parameters.asdict()

    def publish(self, value):
        """Send an intermediate result to :meth:`show_partial` (call from the job; honours Cancel)."""
        self._check_cancel()
        self.published.emit(value)

    # --- running ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._worker is not None

    def run(self):
        """Read the inputs and start the job in a worker thread (returns at once)."""
        if self.running:
            return
        try:
            job = self.prepare()
        except InputError as err:
            self.show_error(str(err))
            return
        self._cancel_requested = False
        self.stop_requested = False
        self.last_outcome = None
        self.progress_bar.setValue(0)
        self.message.setText("running…")
        worker = create_worker(self._guarded, job, _start_thread=False)
        worker.returned.connect(self._done)
        worker.finished.connect(lambda: self._set_running(False))
        self._worker = worker
        self._set_running(True)
        worker.start()

    def cancel(self):
        """Stop the running job and discard its result."""
        if self.running:
            self._cancel_requested = True
            self.message.setText("cancelling…")

    def closeEvent(self, event):
        """Closing the widget cancels its running job."""
        self.cancel()
        super().closeEvent(event)

    def stop_and_keep(self):
        """Ask an iterative job to stop after the current iteration and keep its result."""
        if self.running:
            self.stop_requested = True
            self.message.setText("stopping after this iteration…")

    def _check_cancel(self):
        if self._cancel_requested:
            raise Cancelled("cancelled by the user")

    def _progress(self, fraction, message=""):
        """The progress callback given to the job (worker thread)."""
        self._check_cancel()
        self.progressed.emit(float(fraction), str(message))

    def _guarded(self, job):
        """Run ``job`` in the worker thread; return (outcome, value) instead of raising."""
        try:
            return "done", job(self._progress)
        except Cancelled:
            return "cancelled", None
        except InputError as err:
            return "error", err
        except Exception as err:  # a bug: keep the traceback in the log, show a message
            logger.exception("napari-aet job failed")
            return "failed", err

    def _done(self, outcome):
        status, value = outcome
        if status == "done":
            try:
                self.finish(value)
            except InputError as err:
                status, value = "error", err
            except Exception as err:  # a bug while showing the result
                logger.exception("napari-aet could not show the result")
                status, value = "failed", err
            else:
                self.progress_bar.setValue(_PROGRESS_STEPS)
        self.last_outcome = status
        if status == "cancelled":
            self.discard()
            self.progress_bar.setValue(0)
            self.message.setText("cancelled: nothing was changed")
        elif status == "error":
            self.discard()
            self.show_error(str(value))
        elif status == "failed":
            self.discard()
            self.show_error(f"failed with an unexpected {type(value).__name__}: {value} "
                            "(details in the log)")

    def _set_running(self, running):
        if not running:
            self._worker = None
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if self.stop_button is not None:
            self.stop_button.setEnabled(running)

    def _show_progress(self, fraction, message):
        self.progress_bar.setValue(round(fraction * _PROGRESS_STEPS))
        if message and not (self._cancel_requested or self.stop_requested):
            self.message.setText(message)

    # --- messages ---------------------------------------------------------------------------
    def show_error(self, text):
        """Show a problem in the widget and as a napari notification."""
        self.message.setText(f"⚠ {text}")
        show_error(text)

    def show_done(self, text):
        """Show a result summary in the widget and as a napari notification."""
        self.message.setText(text)
        show_info(text)
