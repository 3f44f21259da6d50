"""Reconstruct an aligned tilt-series layer, watching the volume and its error curves live."""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from scipy import fft

from .. import workflow
from .layers import tilt_series_from_layer, volume_layer
from ..background import BACKGROUNDS
from ..geometry import euler_angles
from ..model import InputError, Reconstruction
from ..preprocess import relative_totals
from ..reconstruct import METHODS, lowest_r_free, parameters, recommended_parameters
from ..reconstruct.extended import FILM_ITERATIONS, GEOMETRIES, resolve_geometry
from ..reconstruct.genfire import RESOLUTION_SCHEDULES
from ..reconstruct.gridding import fourier_coverage
from ._base import StageWidget, is_support, is_tilt_series, time_point_name
from ._plots import PlotCanvas

#: Shortest time (s) between two live updates of the viewer.
LIVE_INTERVAL = 0.5


#: Supports offered besides Labels layers (non-zero = object), e.g. from Trace's "Show support".
SUPPORT_CHOICES = ("none", "automatic (from WBP)")
#: Fourier-space views offered: none, the result's |FFT|, or where the data sample Fourier space.
FOURIER_VIEWS = ("none", "reconstruction |FFT|", "measured coverage")


def fourier_view(volume) -> np.ndarray:
    """``log(1 + |FFT|)`` of a volume, float32 ``(kz, ky, kx)``, zero frequency at index ``n // 2``."""
    spectrum = fft.fftshift(fft.fftn(np.asarray(volume, dtype=np.float32), workers=-1))
    return np.log1p(np.abs(spectrum)).astype(np.float32)


def fourier_layer(data, voxel_size, volume_nx, name):
    """Layer data tuple of a Fourier-space view ``(kz, ky, kx)`` (zero frequency at ``n // 2``),
    drawn with the volume's voxel size beside the volume (``volume_nx`` voxels wide) along +x.
    The lower half of the values is drawn black and the layer is blended additively, so in 3D
    the view is a see-through cloud, not an opaque block."""
    shape = np.array(data.shape)
    translate = -(shape // 2) * voxel_size
    translate[2] += 1.1 * max(volume_nx, shape[2]) * voxel_size
    low, high = float(np.median(data)), float(np.max(data))
    return data, {"name": name, "scale": (voxel_size,) * 3, "translate": tuple(translate),
                  "rendering": "mip", "colormap": "viridis", "blending": "additive",
                  "contrast_limits": (low, high if high > low else low + 1.0),
                  "metadata": {"aet": {"kind": "fourier", "voxel_size": voxel_size}}}, "image"


class ReconstructWidget(StageWidget):
    """GENFIRE, RESIRE or WBP of an aligned tilt series (:func:`napari_aet.reconstruct.iterate`).

    While it runs, the layer "<series> <method> (running)" shows the current iterate and the plot
    the error curves; Cancel discards the run, "Stop and keep current" keeps the current iterate.
    The result is the volume layer "<series> <method>" and, if asked, a Fourier-space view beside
    it: the result's ``log(1 + |FFT|)`` ("<series> <method> reconstruction |FFT|") or where the
    measured projections sample Fourier space ("... measured coverage", 0 where unmeasured).
    The missing wedge is the empty wedge seen when looking along the tilt axis (y).
    Geometry "film" (or "auto" when the high-tilt views carry signal at their edges) reconstructs
    an extended object: RESIRE over a region wider than the box (:mod:`napari_aet.reconstruct.extended`).
    """

    def __init__(self, napari_viewer):
        default = {**recommended_parameters("resire"), **recommended_parameters("genfire")}
        super().__init__(napari_viewer, [
            ComboBox(name="geometry", choices=GEOMETRIES, value="auto"),
            ComboBox(name="method", choices=METHODS, value="genfire"),
            ComboBox(name="background", label="background removed first",
                     choices=["auto", *BACKGROUNDS], value="auto"),
            CheckBox(name="normalise", label="scale each projection to one total intensity (beam drift)",
                     value=False),
            SpinBox(name="n_iterations", label="iterations", value=default["n_iterations"], min=1, max=10_000),
            FloatSpinBox(name="oversampling", value=default["oversampling"], min=1.0, max=6.0, step=0.5),
            FloatSpinBox(name="cutoff", label="interpolation cutoff (voxels)", value=default["cutoff"], min=0.05,
                         max=3.0, step=0.05),
            ComboBox(name="resolution", label="resolution extension", choices=list(RESOLUTION_SCHEDULES),
                     value=default["resolution"]),
            FloatSpinBox(name="r_free_fraction", label="R-free fraction", value=default["r_free_fraction"],
                         min=0.0, max=0.5, step=0.01),
            FloatSpinBox(name="step", label="step (0-2; ≤ 1 accelerated)", value=default["step"], min=0.05,
                         max=1.99, step=0.05),
            CheckBox(name="accelerate", label="Nesterov acceleration", value=default["accelerate"]),
            CheckBox(name="positivity", value=default["positivity"]),
            ComboBox(name="initial", label="start from", choices=["zeros", "wbp"], value=default["initial"]),
            SpinBox(name="thickness", label="thickness (voxels, 0 = nx)", value=0, min=0, max=4096),
            ComboBox(name="fourier", label="Fourier view", choices=FOURIER_VIEWS, value=FOURIER_VIEWS[1]),
            CheckBox(name="fsc", label="half-set FSC (2 more runs)", value=False),
        ], run_text="Reconstruct", stoppable=True)
        self.series_input = self.add_input("aligned tilt series", is_tilt_series, field="aligned")
        self.support_input = self.add_input("support", is_support, choices=SUPPORT_CHOICES, follow_new=False)
        self.plot = PlotCanvas()
        self.extra.addWidget(self.plot)
        self.parameters.method.changed.connect(self._show_method_parameters)
        self.parameters.geometry.changed.connect(self._show_film_parameters)
        self.series_input.currentTextChanged.connect(self._show_detected_geometry)
        self._show_method_parameters()
        self._show_detected_geometry()
        self._names = None
        self._lines = {}
        self._geometry = None

    def _show_method_parameters(self):
        recommended = recommended_parameters(self.parameters.method.value)
        for widget in self.parameters:
            if widget.name in ("geometry", "method", "background", "normalise", "fourier", "fsc"):
                continue
            widget.visible = widget.name in recommended
            if widget.name in recommended:  # each method starts from its own recommended values, as the CLI does
                value = recommended[widget.name]
                widget.value = 0 if value is None else value  # thickness None: 0 = the box width
        self.support_input.setEnabled("support" in recommended)

    def _show_film_parameters(self):
        """A film is reconstructed by RESIRE: show it with the film's iteration settings."""
        if self.parameters.geometry.value == "film":
            self._show_film_method()

    def _show_detected_geometry(self, _=None):
        """On "auto", a film found in the chosen series shows at once as the RESIRE it will run."""
        layer = self.series_input.layer()
        if layer is None or self.parameters.geometry.value != "auto" or self.parameters.method.value == "resire":
            return
        try:
            geometry = resolve_geometry(tilt_series_from_layer(layer))[0]
        except InputError:  # angles or pixel size not entered yet: Run will say so
            return
        if geometry == "film":
            self._show_film_method()
            self.message.setText(f"{layer.name}: object at the image edges (a film) — RESIRE over a region wider "
                                 "than the box will run, with the film's settings")

    def _show_film_method(self):
        self.parameters.method.value = "resire"
        for name, value in FILM_ITERATIONS.items():
            getattr(self.parameters, name).value = value

    def method_parameters(self) -> dict:
        """The selected method's core parameters from the fields (without the support)."""
        values = self.values()
        accepted = parameters(values["method"])
        params = {name: values[name] for name in accepted if name in values}
        if "thickness" in params:
            params["thickness"] = params["thickness"] or None
        return params

    stage = "reconstruct"

    def prepare(self):
        layer = self.selected(self.series_input, "tilt series")
        raw_is_aligned = self.session.point.aligned is None and self.is_study_input(layer, "raw")
        if not raw_is_aligned:  # never aligned: the study reconstructs its raw series
            self.use_as_study_input(layer, "aligned", "align", tilt_series_from_layer(layer))
        series = workflow.tilt_series_of(self.session.point)
        self._geometry, _ = resolve_geometry(series, self.parameters.geometry.value)
        if self._geometry == "film" and self.parameters.method.value != "resire":
            self._show_film_method()  # "auto" found a film: the form shows what runs
        method, geometry = self.parameters.method.value, self.parameters.geometry.value
        params = self.method_parameters()  # a film: the workflow runs RESIRE over a region wider than the box
        normalise, background = self.parameters.normalise.value, self.parameters.background.value
        takes_support = "support" in parameters(method)
        automatic_support = takes_support and self.support_input.currentText() == SUPPORT_CHOICES[1]
        support_layer = self.support_input.layer()
        if takes_support and support_layer is not None:
            params["support"] = np.asarray(support_layer.data) > 0
        base = time_point_name(self.session, f"{layer.name} {method}")
        fourier, with_fsc = self.parameters.fourier.value, self.parameters.fsc.value
        self._names = {"result": base, "live": f"{base} (running)", "fourier": f"{base} {fourier}"}
        self._lines = {}
        pixel_size = workflow.tilt_series_of(self.session.point).pixel_size
        shown = [0.0]

        def live(state):
            if time.monotonic() - shown[0] >= LIVE_INTERVAL:
                self.publish((state, pixel_size, method))
                shown[0] = time.monotonic()

        def job(progress):
            recon = self.session.run("reconstruct", method=method, geometry=geometry, background=background,
                                     normalise=normalise,
                                     automatic_support=automatic_support, fsc=with_fsc,
                                     stop=lambda: self.stop_requested, on_iteration=live, progress=progress, **params)
            series = workflow.tilt_series_of(self.session.point)
            views = {"none": lambda: None, "measured coverage": lambda: fourier_coverage(series),
                     "reconstruction |FFT|": lambda: fourier_view(recon.volume)}
            totals = euler_angles(series.angles)[:, 1], relative_totals(series)
            return recon, views[fourier](), totals

        return job

    def show_partial(self, value):
        state, pixel_size, method = value
        recon = Reconstruction(state.volume, pixel_size, method, errors=state.errors)
        first = self._names["live"] not in self.viewer.layers
        self.show_output(volume_layer(recon, name=self._names["live"]))
        if first:
            self.show_volume_centre()
        self.plot_errors(state.errors)

    def discard(self):
        if self._names and self._names["live"] in self.viewer.layers:
            self.viewer.layers.remove(self._names["live"])

    def finish(self, result):
        recon, fourier, totals = result
        self.discard()
        completed = recon.metadata["completed"]
        name = self._names["result"] if completed else \
            f"{self._names['result']} (stopped at {recon.metadata['iterations_run']})"
        output = volume_layer(recon, name=name)
        summary = ", ".join(f"{k} {v[-1]:.4f}" for k, v in recon.errors.items() if v)
        lowest = lowest_r_free(recon.errors.get("r_free"))
        if lowest:
            summary += f" ({lowest})"
        fsc = recon.metadata.get("fsc")
        if fsc is not None:
            output[1]["metadata"]["aet"]["fsc"] = fsc
            summary += f"; half-set FSC 0.143 at {fsc['resolution_A_at_0.143']:.2f} Å"
        self.show_study_output(output, "reconstruction")
        self.show_volume_centre()
        if fourier is not None:
            self.show_output(fourier_layer(fourier, recon.voxel_size, recon.volume.shape[2],
                                           self._names["fourier"]))
            self.viewer.reset_view()  # the volume and its Fourier view beside it, both whole in view
        self.plot_errors(recon.errors, None if fsc is None else (np.asarray(fsc["frequency_per_A"]),
                                                                  np.asarray(fsc["fsc"])), totals)
        state = "done" if completed else "stopped early, current iterate kept as a new layer"
        self.session.announce(self.stage)
        removed = recon.metadata.get("background", {})
        if removed.get("mean_level") is not None:
            summary += f"; {removed['method']} background removed (mean {removed['mean_level']:.3g})"
        factors = recon.metadata.get("normalisation", {}).get("factors")
        scaled = f"; projections scaled by {min(factors):.3f}–{max(factors):.3f} to one total" if factors else ""
        self.show_done(f"{recon.method} ({self._geometry} geometry): {recon.metadata['iterations_run']} "
                       f"iteration(s), {state}; {summary}{scaled}")

    def show_volume_centre(self):
        """Show the volume's central slice (z = 0 Å, the rotation centre), the tilt series hidden
        (in 3D their current projection is a plane through the volume)."""
        for layer in self.viewer.layers:
            if is_tilt_series(layer):
                layer.visible = False
        if self.viewer.dims.ndisplay == 2:
            self.viewer.dims.set_point(self.viewer.dims.ndim - 3, 0.0)  # z: the third axis from the last

    def plot_errors(self, errors, fsc=None, totals=None):
        """Error curves (R-factor, R-free, ...) against the iteration number, the FSC if given
        (frequencies 1/Å, correlations) and, if given, each projection's total intensity over the
        mean against its tilt (tilts °, ratios; :func:`napari_aet.preprocess.relative_totals`).

        A curve shorter than the others (e.g. an R-factor computed for the final volume only)
        is drawn at the last iterations. During a run the curves are updated in place (cheap),
        not redrawn from scratch.
        """
        curves = {name: curve for name, curve in errors.items() if curve}
        last = max((len(curve) for curve in curves.values()), default=0)

        def iterations(curve):
            return np.arange(last - len(curve), last) + 1

        if fsc is None and totals is None and curves and curves.keys() == self._lines.keys():
            for name, curve in curves.items():
                self._lines[name].set_data(iterations(curve), curve)
            self._lines[name].axes.relim()
            self._lines[name].axes.autoscale_view()
            self.plot.draw(relayout=False)
            return
        axes = self.plot.subplots(1, 1 + (fsc is not None) + (totals is not None))
        if fsc is not None:
            frequency, correlation = fsc
            axes[1].plot(frequency, correlation, ".-")
            axes[1].axhline(0.143, color="tab:red", lw=1, ls="--")
            axes[1].set_xlabel("spatial frequency (1/Å)")
            axes[1].set_ylabel("half-set FSC")
        if totals is not None:  # drift, channelling near a zone axis, or a film: see reconstruction.md
            tilts, ratios = totals
            axes[-1].plot(tilts, ratios, "o", ms=3)
            axes[-1].axhline(1.0, color="white", lw=1, ls="--")
            axes[-1].set_xlabel("tilt (°)")
            axes[-1].set_ylabel("total intensity / mean")
        self._lines = {name: axes[0].plot(iterations(curve), curve, marker="o" if len(curve) == 1 else None,
                                          label=name.replace("_", " "))[0]
                       for name, curve in curves.items()}
        axes[0].set_xlabel("iteration")
        axes[0].set_ylabel("relative error")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
        self.plot.draw()
