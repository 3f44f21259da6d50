"""Align a tilt-series layer -> "<name> aligned" beside it, with the plots that check the alignment."""

from __future__ import annotations

import inspect

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from qtpy.QtWidgets import QHBoxLayout, QPushButton

from ..align import align_auto, apply_alignment, center_of_mass_shifts, common_line_shifts, cross_correlation_shifts
from ..layers import tilt_series_from_layer, tilt_series_layer
from ..preprocess import denoise, normalise_intensity, subtract_background
from ..progress import sub_progress
from ._base import StageWidget, is_tilt_series
from ._plots import PlotCanvas

#: Alignment methods offered: align_auto, or one shift-measuring function.
METHODS = ("automatic", "centre of mass + common line", "cross-correlation")
#: Background removed before measuring, by default: the core's default.
BACKGROUND_DEFAULT = inspect.signature(align_auto).parameters["background"].default


def _single_step_shifts(series, method, precision):
    if method == "cross-correlation":
        return cross_correlation_shifts(series)
    return center_of_mass_shifts(series) + common_line_shifts(series, precision=precision)


def preprocess(series, *, denoising="none", background="none", normalise=False, progress=None):
    """Optional pre-processing of the data, in the order the noise model needs: Poisson-aware
    denoising of the raw counts, then background subtraction, then intensity normalisation
    (:mod:`napari_aet.preprocess`)."""
    series = denoise(series, method=denoising, progress=progress)
    if background != "none":
        series = subtract_background(series, method=background)
    return normalise_intensity(series) if normalise else series


def align(series, method="automatic", *, estimate_axis=True, tilt_axis=0.0, projection_matching=True,
          iterations=6, precision=0.05, background=BACKGROUND_DEFAULT, subtract_background_from_result=False,
          denoising="none", normalise=False, progress=None):
    """Pre-process ``series``, measure its alignment and apply it.

    "automatic" is :func:`napari_aet.align.align_auto` (tilt axis, centre of mass, common line,
    projection matching); the other methods measure shifts with one function and keep the
    series' tilt axis. The measurements always use a copy with the ``background`` ("none",
    "constant", "smooth") removed; ``subtract_background_from_result`` removes it from the
    result too. Returns (pre-processed series with shifts and tilt axis set, report, aligned
    series).
    """
    from_result = background if subtract_background_from_result else "none"
    series = preprocess(series, denoising=denoising, background=from_result, normalise=normalise,
                        progress=sub_progress(progress, 0.0, 0.2))
    to_measure = "none" if subtract_background_from_result else background
    if method == "automatic":
        measured, report = align_auto(series, tilt_axis=None if estimate_axis else tilt_axis,
                                      projection_matching=projection_matching, iterations=iterations,
                                      precision=precision, background=to_measure,
                                      progress=sub_progress(progress, 0.2, 0.9))
    else:
        clean = series if to_measure == "none" else subtract_background(series, method=to_measure)
        measured = series.replace(shifts=_single_step_shifts(clean, method, precision))
        report = {"shifts": {method: measured.shifts}, "angles": series.angles.tolist()}
    if progress is not None:
        progress(0.9, "applying the shifts")
    return measured, report, apply_alignment(measured)


class AlignWidget(StageWidget):
    """Pre-process and align a tilt series (:mod:`napari_aet.align`); the original layer is never modified.

    The aligned series appears as "<name> aligned", side by side with the original (grid view)
    until Apply (keep it) or Discard (remove it). The plot shows the shifts per tilt, the
    common-line profiles before and after alignment and the tilt-axis score curve.
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            ComboBox(name="method", choices=METHODS, value="automatic"),
            CheckBox(name="estimate_axis", label="estimate the tilt axis", value=True),
            FloatSpinBox(name="tilt_axis", label="tilt axis (°, if not estimated)", value=0.0, min=-180.0,
                         max=180.0, step=0.1),
            CheckBox(name="projection_matching", label="projection matching", value=True),
            SpinBox(name="iterations", label="matching iterations", value=6, min=1, max=50),
            FloatSpinBox(name="precision", label="precision (px)", value=0.05, min=0.01, max=1.0, step=0.01),
            ComboBox(name="background", label="background", choices=["none", "constant", "smooth"],
                     value=BACKGROUND_DEFAULT),
            CheckBox(name="subtract_background_from_result", label="subtract the background from the result",
                     value=False),
            ComboBox(name="denoising", label="denoise (Poisson-aware)", choices=["none", "nlmeans", "wavelet"],
                     value="none"),
            CheckBox(name="normalise", label="normalise total intensity", value=False),
        ], run_text="Align")
        self.series_input = self.add_input("tilt series", is_tilt_series)
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
        self.output_name = None
        self._set_pending(False)

    def _show_method_parameters(self):
        automatic = self.parameters.method.value == "automatic"
        for name in ("estimate_axis", "tilt_axis", "projection_matching", "iterations"):
            getattr(self.parameters, name).visible = automatic

    def _set_pending(self, pending):
        self.apply_button.setEnabled(pending)
        self.discard_button.setEnabled(pending)

    def prepare(self):
        layer = self.selected(self.series_input, "tilt series")
        series = tilt_series_from_layer(layer)
        options = self.values()
        self.output_name = f"{layer.name} aligned"
        return lambda progress: align(series, progress=progress, **options)

    def finish(self, result):
        measured, report, aligned = result
        self.show_output(tilt_series_layer(aligned, name=self.output_name))
        self.viewer.grid.enabled = True
        self._set_pending(True)
        self.plot_report(measured, report)
        rms = np.sqrt(np.mean(np.sum(measured.shifts ** 2, axis=1)))
        self.show_done(f"aligned: tilt axis {measured.tilt_axis:.2f}°, rms shift {rms:.2f} px; "
                       f"check the plots, then Apply or Discard")

    def apply(self):
        """Keep the aligned layer and end the side-by-side view."""
        self.viewer.grid.enabled = False
        self._set_pending(False)
        if self.output_name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[self.output_name]
            self.message.setText(f"kept {self.output_name!r}: reconstruct it next")

    def discard_result(self):
        """Remove the aligned layer and end the side-by-side view."""
        self.viewer.grid.enabled = False
        self._set_pending(False)
        if self.output_name in self.viewer.layers:
            self.viewer.layers.remove(self.output_name)
        self.message.setText("alignment discarded")

    def plot_report(self, measured, report):
        """Shifts per tilt, tilt-axis score curves (coarse and fine search), common-line profiles
        before and after."""
        shifts_ax, axis_ax, raw_ax, aligned_ax = self.plot.subplots(2, 2)
        angles = np.asarray(report["angles"])
        shifts_ax.plot(angles, measured.shifts[:, 1], ".-", label="dx")
        shifts_ax.plot(angles, measured.shifts[:, 0], ".-", label="dy")
        shifts_ax.set_xlabel("tilt (°)")
        shifts_ax.set_ylabel("shift (px)")
        shifts_ax.legend(fontsize=7)
        if "tilt_axis" in report:
            curve = report["tilt_axis"]
            axis_ax.plot(curve["angles"], curve["scores"], ".-", label="coarse")
            if "fine_angles" in curve:
                axis_ax.plot(curve["fine_angles"], curve["fine_scores"], ".-", label="fine")
            axis_ax.axvline(curve.get("common_line", curve["used"]), color="0.5", lw=1, ls="--",
                            label="common-line optimum")
            axis_ax.axvline(curve["used"], color="tab:red", lw=1, label="used (refined by re-projection)"
                            if curve.get("reprojection", {}).get("accepted") else "used")
            axis_ax.legend(fontsize=7)
            axis_ax.set_xlabel("tilt-axis angle (°)")
            axis_ax.set_title("common-line consistency", fontsize=8)
            axis_ax.set_ylabel("score")
        else:
            axis_ax.set_visible(False)
        if "common_line" in report:
            profiles, order = report["common_line"], np.argsort(angles)
            extent = (profiles["v"][0], profiles["v"][-1], len(angles) - 0.5, -0.5)
            for ax, key in ((raw_ax, "raw"), (aligned_ax, "aligned")):
                ax.imshow(np.asarray(profiles[key])[order], aspect="auto", extent=extent, cmap="gray")
                ax.set_xlabel("along the axis (px)")
                ax.set_ylabel("projection (by tilt)")
                ax.set_title(f"common line, {key}", fontsize=8)
        else:
            raw_ax.set_visible(False)
            aligned_ax.set_visible(False)
        self.plot.draw()
