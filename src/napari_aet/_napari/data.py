"""The Data step: what the file could not say — pixel size, tilt angles, tilt axis, elements —
entered and checked, then the tilt series becomes the study's data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from .. import workflow
from ..elements import check_pixel_size
from ..io import read_angles
from .layers import projections_of, tilt_series_layer
from ..model import InputError, TiltSeries, check_elements
from ..runs import exclude_projections
from ._base import (LayerSelector, is_data, is_tilt_series, keep_with_time_point, of_another_time_point,
                    scrolled_layout, show_layer, study_layer_name, tag_as_study)
from ._plots import PlotCanvas
from ._study import session_for


def parse_angle_range(text: str, n_angles: int) -> np.ndarray:
    """Tilt angles (degrees) from ``"start, stop"`` (``n_angles`` evenly spaced, both ends included)
    or ``"start, stop, step"``; InputError if the count is not ``n_angles``."""
    try:
        values = [float(v) for v in text.replace(":", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"tilt range {text!r}: expected 'start, stop' or 'start, stop, step' in degrees") from None
    if len(values) == 2:
        return np.linspace(values[0], values[1], n_angles)
    if len(values) == 3 and values[2] != 0:
        angles = np.arange(values[0], values[1] + values[2] / 2, values[2])
        if len(angles) != n_angles:
            raise InputError(f"tilt range {text!r} gives {len(angles)} angles but the series has "
                             f"{n_angles} projections")
        return angles
    raise InputError(f"tilt range {text!r}: expected 'start, stop' or 'start, stop, step' in degrees")


class DataWidget(QWidget):
    """Check and complete a tilt series, then make it the study's data.

    Shows the chosen tilt-series layer's pixel size (Å), angles (where they came from, and a plot
    of angle against projection), tilt axis (degrees from the image y axis) and the study's
    elements; projections to leave out (indices from 0, e.g. those the refinement names as fitting
    worst); "Use for the study" validates them, updates the layer and makes it the current time
    point's raw data (every stage that ran becomes stale; when only the elements changed, the
    tracing and the stages after it).
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.series_input = LayerSelector(napari_viewer, is_tilt_series, follow_new=is_data)  # never an output
        self.pixel_size = QDoubleSpinBox(decimals=5, minimum=0.001, maximum=100.0, singleStep=0.01, suffix=" Å")
        self.angle_range = QLineEdit(placeholderText="e.g. -70, 70  or  0, 177, 3")
        self.range_button = QPushButton("Set range")
        self.file_button = QPushButton("Load angle file…")
        self.angle_source = QLabel("")
        self.tilt_axis = QDoubleSpinBox(decimals=2, minimum=-180.0, maximum=180.0, singleStep=0.5, suffix=" °")
        self.elements = QLineEdit(placeholderText="e.g. Fe,Pt (any order)")
        self.exclude = QLineEdit(placeholderText="indices from 0, e.g. 4, 11 (bad images)")
        self.apply_button = QPushButton("Use for the study")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.plot = PlotCanvas(height=2.0)
        self._angles = None
        self._angles_from = "the layer"  # where the angles came from: a file, a range typed here

        form = QFormLayout()
        form.addRow("tilt series", self.series_input)
        form.addRow("pixel size", self.pixel_size)
        angle_buttons = QHBoxLayout()
        angle_buttons.addWidget(self.angle_range)
        angle_buttons.addWidget(self.range_button)
        angle_buttons.addWidget(self.file_button)
        form.addRow("tilt angles", angle_buttons)
        form.addRow("", self.angle_source)
        form.addRow("tilt axis (0 = image y)", self.tilt_axis)
        form.addRow("elements", self.elements)
        form.addRow("leave out projections", self.exclude)
        layout = scrolled_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.plot)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.message)
        layout.addStretch()

        self.series_input.currentTextChanged.connect(self.show_layer_values)
        self.range_button.clicked.connect(lambda: self.set_range(self.angle_range.text()))
        self.file_button.clicked.connect(self._choose_angle_file)
        self.apply_button.clicked.connect(self.apply)
        self.pixel_size.valueChanged.connect(self.show_warnings)
        self.session.changed.connect(self._on_study)
        self.show_layer_values()

    def _on_study(self, what):
        """Another time point (or study) became current: show its data, never another's."""
        if what == "study":
            self.series_input.select_study_result(study_layer_name(self.viewer, self.session, "raw"), self.session)

    # --- reading the layer ----------------------------------------------------------------------
    def _layer_meta(self):
        layer = self.series_input.layer()
        return (layer, layer.metadata["aet"]) if layer is not None else (None, None)

    def show_layer_values(self, _=None):
        """Fill the fields from the chosen layer (and the study's elements, else a simulation's)."""
        layer, meta = self._layer_meta()
        elements = self.session.point.parameters.get("elements")
        if not elements and layer is not None:
            elements = meta.get("info", {}).get("elements")
        self.elements.setText(",".join(elements) if elements else self.elements.text())
        if layer is None:
            self.message.setText("open a tilt series (File > Open, or File > Open Sample > napari-aet)")
            return
        self.pixel_size.setValue(meta["pixel_size"])
        self.tilt_axis.setValue(meta.get("tilt_axis", 0.0))
        unknown = meta.get("angles_unknown", False)
        self._angles = None if unknown else np.asarray(meta["angles"])
        source = self._angles_from = meta.get("info", {}).get("angles_from", "the layer")
        self.angle_source.setText("⚠ unknown: set a range or load a file" if unknown else
                                  f"{len(self._angles)} from {Path(source).name if '/' in source else source}")
        self.angle_source.setToolTip(source)
        self.plot_angles()
        self.show_warnings()

    def show_warnings(self):
        """What is still unknown about the chosen layer, or nothing."""
        _, meta = self._layer_meta()
        if meta is None:
            return
        info, unchanged = meta.get("info", {}), self.pixel_size.value() == meta["pixel_size"]
        warnings = [w for w, bad in (("the pixel size is unknown (1 Å shown): enter it",
                                      info.get("pixel_size_unknown") and unchanged),
                                     ("the MRC header's 1 Å per pixel is what many programs write when the pixel "
                                      "size is unset: check it", info.get("pixel_size_warning") and unchanged),
                                     ("the tilt angles are unknown" + (f": {meta['angles_unknown_why']}"
                                                                        if meta.get("angles_unknown_why") else ""),
                                      self._angles is None)) if bad]
        self.message.setText("⚠ " + "; ".join(warnings) if warnings else "")

    def plot_angles(self):
        """Angle against projection index (lines, so gaps and reversals show)."""
        (ax,) = self.plot.subplots()
        if self._angles is not None:
            tilt = self._angles if self._angles.ndim == 1 else self._angles[:, 1]
            ax.plot(np.arange(len(tilt)), tilt, lw=1)
            ax.set_xlabel("projection")
            ax.set_ylabel("tilt θ (°)")
        self.plot.draw()

    # --- entering angles ------------------------------------------------------------------------
    def _n_projections(self) -> int:
        layer, _ = self._layer_meta()
        if layer is None:
            raise InputError("no tilt series layer: open one first")
        return int(np.shape(layer.data)[0])

    def set_range(self, text):
        """Angles from a typed range (see :func:`parse_angle_range`)."""
        try:
            self._angles = parse_angle_range(text, self._n_projections())
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        self._angles_from = f"the range {text}"
        self.angle_source.setText(f"{len(self._angles)} from {self._angles_from}")
        self.plot_angles()
        self.show_warnings()

    def load_angle_file(self, path):
        """Angles from a file (``.tlt``, ``.rawtlt``, text, Euler tables; :func:`napari_aet.io.read_angles`)."""
        try:
            angles = read_angles(path)
            if len(angles) != self._n_projections():
                raise InputError(f"{len(angles)} angles in the file but the series has {self._n_projections()} "
                                 "projections")
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            return
        self._angles, self._angles_from = angles, str(path)
        self.angle_source.setText(f"{len(angles)} from {Path(path).name}")
        self.angle_source.setToolTip(str(path))
        self.plot_angles()
        self.show_warnings()

    def _choose_angle_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Tilt angles", "", "Angles (*.tlt *.rawtlt *.txt *.csv *.npy *.mat)")
        if path:
            self.load_angle_file(path)

    # --- applying -------------------------------------------------------------------------------
    def apply(self) -> TiltSeries | None:
        """Validate the fields, update the layer and make it the study's raw tilt series."""
        layer, meta = self._layer_meta()
        try:
            if layer is None:
                raise InputError("no tilt series layer: open one first")
            if of_another_time_point(layer, self.session):
                raise InputError(f"layer {layer.name!r} is the data of another time point: choose this one's, or "
                                 "open its file")
            if self._angles is None:
                raise InputError("the tilt angles are unknown: set a range or load an angle file")
            elements = check_elements(self.elements.text()) if self.elements.text().strip() else None
            check_pixel_size(self.pixel_size.value(), elements)  # without elements: any element's distances
            info = {**{k: v for k, v in meta.get("info", {}).items()
                       if k not in ("pixel_size_unknown", "pixel_size_warning")},  # the person has seen the value
                    "angles_from": self._angles_from}
            whole = TiltSeries(projections_of(layer), self._angles, self.pixel_size.value(), self.tilt_axis.value(),
                               np.asarray(meta["shifts"]) if "shifts" in meta else None, info)
            series = exclude_projections(whole, self.exclude.text()) if self.exclude.text().strip() else whole
        except InputError as error:
            self.message.setText(f"⚠ {error}")
            show_error(str(error))
            return None
        point = self.session.point
        unchanged = (point.raw is not None and point.raw.same_data(series)
                     and not point.raw.metadata.get("pixel_size_unknown"))  # else the placeholder is confirmed now
        if elements is not None:
            self.elements.setText(",".join(elements))
            if list(elements) != point.parameters.get("elements"):
                point.parameters["elements"] = list(elements)
                if unchanged:  # the elements set the tracing's minimum distance and the classes
                    workflow.mark_stale_from(point, "trace")
                    self.session.announce("raw")
        if unchanged:
            stale = workflow.status(point).get("trace") == "stale"
            self.message.setText("the study's series is unchanged"
                                 + (f"; elements {', '.join(elements)}" if elements else "")
                                 + ("; trace again (its minimum distance comes from the elements), then the steps "
                                    "after it" if stale else ""))
            return point.raw
        self.session.set_raw(series)
        # the layer keeps every projection, so the indices typed stay those of the layer (and of the
        # file): change them, or clear them, and Use for the study again
        data, kwargs, kind = tag_as_study(tilt_series_layer(whole, name=layer.name), self.session, "raw")
        show_layer(self.viewer, (data, {**kwargs, "name": layer.name}, kind))  # the same layer, updated
        layer.name = kwargs["name"]  # "<time point>: …" when the study has several
        keep_with_time_point(self.viewer, layer)
        self.viewer.reset_view()  # the new pixel size changed the layer's extent
        left_out = series.metadata.get("excluded_projections")
        tilts = whole.angles if whole.is_single_axis else whole.angles[:, 1]
        self.message.setText(f"{layer.name}: {series.n_angles} projections"
                             + (f" ({', '.join(f'{i} at {tilts[i]:+.1f}°' for i in left_out)} left out; clear the "
                                "field and Use for the study to take them back)" if left_out else "")
                             + f", {series.pixel_size:g} Å/px, "
                             f"tilts {np.min(series.angles):.1f}° to {np.max(series.angles):.1f}° — "
                             "the study's data now; align it next")
        return series

