"""Reconstruct an aligned tilt-series layer, watching the volume and its error curves live."""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from scipy import fft

from ..layers import tilt_series_from_layer, volume_layer
from ..model import Reconstruction
from ..reconstruct import METHODS, iterate, parameters, to_reconstruction, weighted_backprojection
from ..reconstruct.genfire import RESOLUTION_SCHEDULES
from ..trace import particle_support
from ._base import StageWidget, is_tilt_series
from ._plots import PlotCanvas

#: Shortest time (s) between two live updates of the viewer.
LIVE_INTERVAL = 0.25


def fourier_view(volume) -> np.ndarray:
    """``log(1 + |FFT|)`` of a volume, float32 ``(kz, ky, kx)``, zero frequency at index ``n // 2``."""
    spectrum = fft.fftshift(fft.fftn(np.asarray(volume, dtype=np.float32), workers=-1))
    return np.log1p(np.abs(spectrum)).astype(np.float32)


def fourier_layer(reconstruction: Reconstruction, name):
    """Layer data tuple of a volume's Fourier magnitude, placed beside the volume along x."""
    data = fourier_view(reconstruction.volume)
    _, kwargs, layer_type = volume_layer(reconstruction, name=name)
    translate = list(kwargs["translate"])
    translate[2] += 1.1 * data.shape[2] * reconstruction.voxel_size
    kwargs.update(translate=tuple(translate), colormap="viridis",
                  metadata={"aet": {"kind": "fourier", "voxel_size": reconstruction.voxel_size}})
    return data, kwargs, layer_type


class ReconstructWidget(StageWidget):
    """GENFIRE, RESIRE or WBP of an aligned tilt series (:func:`napari_aet.reconstruct.iterate`).

    While it runs, the layer "<series> <method> (running)" shows the current iterate and the plot
    the error curves; Cancel discards the run, "Stop and keep current" keeps the current iterate.
    The result is the volume layer "<series> <method>" and, if asked, its Fourier magnitude
    "<series> <method> |FFT|" beside it, where the missing wedge is the empty wedge seen when
    looking along the tilt axis (y).
    """

    def __init__(self, napari_viewer):
        super().__init__(napari_viewer, [
            ComboBox(name="method", choices=METHODS, value="genfire"),
            SpinBox(name="n_iterations", label="iterations", value=50, min=1, max=10_000),
            FloatSpinBox(name="oversampling", value=3.0, min=1.0, max=6.0, step=0.5),
            FloatSpinBox(name="cutoff", label="interpolation cutoff (voxels)", value=0.5, min=0.05, max=3.0,
                         step=0.05),
            ComboBox(name="resolution", label="resolution extension", choices=list(RESOLUTION_SCHEDULES),
                     value="full"),
            FloatSpinBox(name="r_free_fraction", label="R-free fraction", value=0.05, min=0.0, max=0.5,
                         step=0.01),
            FloatSpinBox(name="step", label="step (0-2)", value=1.8, min=0.05, max=1.99, step=0.05),
            ComboBox(name="support", choices=["none", "automatic (from WBP)"], value="none"),
            CheckBox(name="positivity", value=True),
            ComboBox(name="initial", label="start from", choices=["zeros", "wbp"], value="zeros"),
            SpinBox(name="thickness", label="thickness (voxels, 0 = nx)", value=0, min=0, max=4096),
            CheckBox(name="fourier", label="show Fourier magnitude", value=True),
        ], run_text="Reconstruct", stoppable=True)
        self.series_input = self.add_input("aligned tilt series", is_tilt_series)
        self.plot = PlotCanvas()
        self.extra.addWidget(self.plot)
        self.parameters.method.changed.connect(self._show_method_parameters)
        self._show_method_parameters()
        self._names = None

    def _show_method_parameters(self):
        accepted = set(parameters(self.parameters.method.value))
        for widget in self.parameters:
            if widget.name not in ("method", "fourier"):
                widget.visible = widget.name in accepted

    def method_parameters(self) -> dict:
        """The selected method's core parameters from the fields (support still as a choice)."""
        values = self.values()
        accepted = parameters(values["method"])
        params = {name: values[name] for name in accepted if name in values}
        if "thickness" in params:
            params["thickness"] = params["thickness"] or None
        return params

    def prepare(self):
        layer = self.selected(self.series_input, "tilt series")
        series = tilt_series_from_layer(layer)
        method = self.parameters.method.value
        params = self.method_parameters()
        automatic_support = params.pop("support", "none") != "none"
        iterate(series, method, **params)  # validates names now (runs nothing: a generator)
        base = f"{layer.name} {method}"
        self._names = {"result": base, "live": f"{base} (running)", "fourier": f"{base} |FFT|"}
        self._show_fourier = self.parameters.fourier.value

        def job(progress):
            if automatic_support:
                progress(0.0, "support: particle mask of a weighted back-projection")
                params["support"] = particle_support(weighted_backprojection(series, params.get("thickness")),
                                                     voxel_size=series.pixel_size)
            state, shown = None, 0.0
            for state in iterate(series, method, **params):
                errors = ", ".join(f"{k} {v[-1]:.4f}" for k, v in state.errors.items() if v)
                progress(state.iteration / state.n_iterations,
                         f"{method}: iteration {state.iteration}/{state.n_iterations} ({errors})")
                if time.monotonic() - shown >= LIVE_INTERVAL:
                    self.publish((state, series.pixel_size, method))
                    shown = time.monotonic()
                if self.stop_requested:
                    break
            return to_reconstruction(state, series, method, params), state.final

        return job

    def show_partial(self, value):
        state, pixel_size, method = value
        recon = Reconstruction(state.volume, pixel_size, method, errors=state.errors)
        self.show_output(volume_layer(recon, name=self._names["live"]))
        self.plot_errors(state.errors)

    def discard(self):
        if self._names and self._names["live"] in self.viewer.layers:
            self.viewer.layers.remove(self._names["live"])

    def finish(self, result):
        recon, completed = result
        self.discard()
        self.show_output(volume_layer(recon, name=self._names["result"]))
        if self._show_fourier:
            self.show_output(fourier_layer(recon, self._names["fourier"]))
        self.plot_errors(recon.errors)
        n_run = len(next(iter(recon.errors.values()), []))
        summary = ", ".join(f"{k} {v[-1]:.4f}" for k, v in recon.errors.items() if v)
        state = "done" if completed else "stopped early, current iterate kept"
        self.show_done(f"{recon.method}: {n_run} iteration(s), {state}; {summary}")

    def plot_errors(self, errors):
        """Error curves (R-factor, R-free, ...) against the iteration number."""
        (ax,) = self.plot.subplots()
        for name, curve in errors.items():
            if curve:
                ax.plot(np.arange(1, len(curve) + 1), curve, marker="o" if len(curve) == 1 else None,
                        label=name.replace("_", " "))
        ax.set_xlabel("iteration")
        ax.set_ylabel("relative error")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        self.plot.draw()
