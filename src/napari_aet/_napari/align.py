"""Align a tilt-series layer -> "<name> aligned" beside it, with the plots that check the alignment."""

from __future__ import annotations

import copy
import inspect

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QHBoxLayout, QPushButton

from ..align import align_auto, describe_tilt_axis
from .layers import tilt_series_from_layer, tilt_series_layer
from ..workflow import ALIGN_METHODS
from ._base import StageWidget, is_tilt_series
from ._plots import PlotCanvas

#: Background removed before measuring, by default: the core's default.
BACKGROUND_DEFAULT = inspect.signature(align_auto).parameters["background"].default


class AlignWidget(StageWidget):
    """Pre-process and align a tilt series (:mod:`napari_aet.align`); the original layer is never modified.

    The aligned series appears as "<name> aligned", side by side with the original (grid view)
    until Apply (keep it) or Discard (remove it and put the study back as it was). The plot shows the shifts per tilt, the
    common-line profiles before and after alignment and the tilt-axis score curve.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            ComboBox(name="method", choices=ALIGN_METHODS, value="automatic"),
            CheckBox(name="estimate_axis", label="estimate the tilt axis", value=True),
            FloatSpinBox(name="tilt_axis", label="tilt axis (°, if not estimated)", value=0.0, min=-180.0,
                         max=180.0, step=0.1),
            CheckBox(name="projection_matching", label="projection matching", value=True),
            SpinBox(name="iterations", label="matching iterations", value=6, min=1, max=50),
            FloatSpinBox(name="precision", label="precision (px)", value=0.05, min=0.01, max=1.0, step=0.01),
            ComboBox(name="spikes", label="single-pixel spikes", choices=["replace", "keep"], value="replace"),
            ComboBox(name="background", label="background", choices=["none", "constant", "smooth"],
                     value=BACKGROUND_DEFAULT),
            CheckBox(name="subtract_background_from_result", label="subtract the background from the result",
                     value=False),
            ComboBox(name="denoising", label="denoise (Poisson-aware)", choices=["none", "nlmeans", "wavelet"],
                     value="none"),
            CheckBox(name="normalise", label="normalise total intensity", value=False),
        ], run_text="Align")
        self.series_input = self.add_input("tilt series", is_tilt_series, field="raw")
        self.apply_button = QPushButton("Apply")
        self.discard_button = QPushButton("Discard")
        decision = QHBoxLayout()
        decision.addWidget(self.apply_button)
        decision.addWidget(self.discard_button)
        self.extra.addLayout(decision)
        self.plot = PlotCanvas(height=4.5)
        self.extra.addWidget(self.plot)
        self.apply_button.clicked.connect(self.apply)
        self.discard_button.clicked.connect(self.discard_result)
        self.parameters.method.changed.connect(self._show_method_parameters)
        self._show_method_parameters()
        self.session.changed.connect(self._follow_the_data_step)
        self.output_name = self.input_name = None
        self._before = None  # the time point's alignment before the run, for Discard
        self._set_pending(False)

    def _show_method_parameters(self):
        automatic = self.parameters.method.value == "automatic"
        for name in ("estimate_axis", "tilt_axis", "projection_matching", "iterations"):
            getattr(self.parameters, name).visible = automatic

    def _follow_the_data_step(self, what):
        """The tilt axis field shows the one the Data step gave the study's series (the search
        starts there, and a fixed axis is that one unless changed here)."""
        if what in ("raw", "study") and self.session.point.raw is not None:
            self.parameters.tilt_axis.value = self.session.point.raw.tilt_axis

    def _set_pending(self, pending):
        self.apply_button.setEnabled(pending)
        self.discard_button.setEnabled(pending)

    stage = "align"

    def alignment_options(self) -> dict:
        """:func:`napari_aet.workflow.align`'s keyword arguments from the fields."""
        values = self.values()
        estimate_axis = values.pop("estimate_axis")
        tilt_axis = values.pop("tilt_axis")
        if values["method"] == "automatic":
            values["tilt_axis"] = None if estimate_axis else tilt_axis
        else:
            for name in ("projection_matching", "iterations"):
                values.pop(name)
        return values

    def prepare(self):
        layer = self.selected(self.series_input, "tilt series")
        if not self.is_study_input(layer, "raw"):
            self.session.set_raw(tilt_series_from_layer(layer))
            self.tag_layer(layer, "raw")
        point = self.session.point
        self._before = (point.aligned, copy.deepcopy(point.stages), copy.deepcopy(point.report))
        options = self.alignment_options()
        self.output_name = f"{layer.name} aligned"
        self.input_name = layer.name
        return lambda progress: self.session.run("align", progress=progress, **options)

    def finish(self, result):
        measured, report, aligned = result.measured, result.report, result.aligned
        output = self.show_study_output(tilt_series_layer(aligned, name=self.output_name), "aligned")
        self.output_name = output.name
        values = self.values()
        if not (values["subtract_background_from_result"] or values["normalise"] or values["denoising"] != "none") \
                and self.input_name in self.viewer.layers:  # the same counts: the same contrast, side by side
            output.contrast_limits = self.viewer.layers[self.input_name].contrast_limits
        self.session.announce(self.stage)
        self.side_by_side(True)
        self._set_pending(True)
        self.plot_report(measured, report)
        rms = np.sqrt(np.mean(np.sum(measured.shifts ** 2, axis=1)))
        check = report.check
        verdict = f"{report.skipped}; " if report.skipped else "aligned: " if check is None else f"{check.reason}; "
        spikes = len(measured.metadata.get("spikes", []))
        replaced = f"{spikes} single-pixel spike(s) replaced; " if spikes else ""
        if report.skipped:  # nothing was measured: the series as it is
            self.show_done(f"{verdict}{replaced}tilt axis {measured.tilt_axis:.2f}° as given, no shifts; Apply or "
                           "Discard")
            return
        searched = report.tilt_axis.angles if report.tilt_axis is not None else None
        axis = (describe_tilt_axis(measured.tilt_axis, 2, choose="the Data step's tilt axis chooses", searched=searched)
                if self.values()["estimate_axis"] else f"tilt axis {measured.tilt_axis:.2f}°")
        self.show_done(f"{verdict}{replaced}{axis}, rms shift {rms:.2f} px; check the plots, then Apply or Discard")

    def side_by_side(self, on):
        """Show the input and the aligned series side by side (grid view), each labelled with its
        name, and the whole of both in view; or end that view."""
        for name in (self.input_name, self.output_name):
            if name in self.viewer.layers:
                self.viewer.layers[name].name_overlay.visible = on
        self.viewer.grid.enabled = on
        if on:
            self.viewer.reset_view()

    def apply(self):
        """Keep the aligned layer and end the side-by-side view."""
        self.side_by_side(False)
        self._set_pending(False)
        if self.output_name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[self.output_name]
            self.message.setText(f"kept {self.output_name!r}: reconstruct it next")

    def discard_result(self):
        """Remove the aligned layer, put the study's alignment back as it was, end the side-by-side view."""
        self.side_by_side(False)
        self._set_pending(False)
        point = self.session.point
        point.aligned, point.stages, point.report = self._before
        self.session.announce(self.stage)
        if self.output_name in self.viewer.layers:
            self.viewer.layers.remove(self.output_name)
        self.message.setText("alignment discarded")

    def plot_report(self, measured, report):
        """Shifts per tilt, tilt-axis score curves (coarse and fine search), common-line profiles
        before and after."""
        shifts_ax, axis_ax, raw_ax, aligned_ax = self.plot.subplots(2, 2)
        angles = np.asarray(report.angles)
        angles = angles if angles.ndim == 1 else angles[:, 1]  # Euler (φ, θ, ψ): against the tilt θ
        by_tilt = np.argsort(angles, kind="stable")  # a dose-symmetric series is stored out of order
        shifts_ax.plot(angles[by_tilt], measured.shifts[by_tilt, 1], ".-", label="dx")
        shifts_ax.plot(angles[by_tilt], measured.shifts[by_tilt, 0], ".-", label="dy")
        shifts_ax.set_xlabel("tilt (°)")
        shifts_ax.set_ylabel("shift (px)")
        shifts_ax.legend(fontsize=7, loc="best")
        if report.tilt_axis is not None:
            curve = report.tilt_axis
            axis_ax.plot(curve.angles, curve.scores, ".-", label="coarse")
            axis_ax.plot(curve.fine_angles, curve.fine_scores, ".-", label="fine")
            axis_ax.axvline(curve.common_line, color="0.5", lw=1, ls="--", label="common-line optimum")
            axis_ax.axvline(curve.used, color="tab:red", lw=1, label="used (refined by re-projection)"
                            if curve.reprojection is not None and curve.reprojection.accepted else "used")
            axis_ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
            axis_ax.set_xlabel("tilt-axis angle (°)")
            axis_ax.set_title("common-line consistency", fontsize=8)
            axis_ax.set_ylabel("score")
        else:
            axis_ax.set_visible(False)
        if report.common_line is not None:
            profiles, order = report.common_line, np.argsort(angles)
            extent = (profiles.v[0], profiles.v[-1], len(angles) - 0.5, -0.5)
            for ax, key, image in ((raw_ax, "raw", profiles.raw), (aligned_ax, "aligned", profiles.aligned)):
                ax.imshow(image[order], aspect="auto", extent=extent, cmap="gray")
                ax.set_xlabel("along the axis (px)")
                ax.set_ylabel("projection (by tilt)")
                ax.set_title(f"common line, {key}", fontsize=8)
        else:
            raw_ax.set_visible(False)
            aligned_ax.set_visible(False)
        self.plot.draw()
