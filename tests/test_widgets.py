"""The napari widgets under Xvfb: each stage run through its widget on small simulated data.

Every stage is run by calling the widget's ``run`` (as the Run button does) and waiting for the
worker thread; cancellation is tested mid-run by pausing the real core function at its first
progress report, pressing Cancel, then letting it continue.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer
from scipy.spatial import cKDTree

import napari_aet.align as align_module
import napari_aet.classify as classify_module
import napari_aet.reconstruct as reconstruct_core
import napari_aet.refine as refine_module
import napari_aet.trace as trace_module
from napari_aet._napari import reconstruct as reconstruct_module
from napari_aet._napari import screenshot
from napari_aet._napari._base import is_atoms, layer_kind, layer_type, show_layer
from napari_aet._napari.align import AlignWidget
from napari_aet._napari.classify import ClassifyWidget, class_boundaries
from napari_aet._napari.reconstruct import ReconstructWidget
from napari_aet._napari.refine import RefineWidget
from napari_aet._napari.trace import TraceWidget
from napari_aet.atom_labels import NON_ATOM, labels
from napari_aet.geometry import render_atoms
from napari_aet._napari.layers import (
    atoms_from_layer,
    atoms_layer,
    tilt_series_from_layer,
    tilt_series_layer,
    volume_layer,
)
from napari_aet.model import AtomModel, Reconstruction
from napari_aet.reconstruct import RECOMMENDED, lowest_r_free
from napari_aet.simulate import adf_amplitudes, fcc_particle, simulate_tilt_series

VOXEL = 0.4  # Å
SERIES_SIZE = 48  # pixels of the small tilt series, and voxels of its reconstructions
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def particle():
    """A small FePt particle (201 atoms) and a noisy ideal volume of it, 48³ voxels of 0.4 Å."""
    atoms = fcc_particle(radius=9.0, seed=1)
    volume = render_atoms(atoms.positions, adf_amplitudes(atoms.species, 1.0), 0.45, (48, 48, 48), VOXEL)
    rng = np.random.default_rng(1)
    volume += rng.normal(scale=0.003 * volume.max(), size=volume.shape).astype(np.float32)
    return atoms, Reconstruction(volume, VOXEL, "ideal")


@pytest.fixture(scope="module")
def tilt_series():
    """A small FePt particle (55 atoms) and its noisy tilt series: 31 tilts over ±70°, 48² pixels of 0.4 Å.

    Returns (truth atoms, aligned series, the same series misaligned and with a background of 5
    counts per pixel, the true aligning shifts).
    """
    atoms = fcc_particle(radius=6.0, seed=2)
    angles = np.linspace(-70, 70, 31)
    aligned = simulate_tilt_series(atoms, angles, shape=(SERIES_SIZE,) * 2, max_shift=0, seed=2).tilt_series
    shifted = simulate_tilt_series(atoms, angles, shape=(SERIES_SIZE,) * 2, max_shift=3, background=5.0, seed=2)
    return atoms, aligned, shifted.tilt_series, shifted.true_shifts


def run_and_wait(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return widget.last_outcome


def pause_at_first_progress(monkeypatch, module, name):
    """Wrap ``module.name`` so the job blocks at its first progress report until released."""
    reached, release = threading.Event(), threading.Event()
    real = getattr(module, name)

    def paused(*args, progress, **kwargs):
        def gate(fraction, message=""):
            if not reached.is_set():
                reached.set()
                release.wait(WAIT_MS / 1000)
            progress(fraction, message)

        return real(*args, progress=gate, **kwargs)

    monkeypatch.setattr(module, name, paused)
    return reached, release


def cancel_mid_run(qtbot, widget, reached, release):
    widget.run()
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    assert widget.running
    widget.cancel()
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "cancelled"
    assert widget.message.text().startswith("cancelled")


def docked(make_napari_viewer, qtbot, widget_class, *layers):
    """A viewer holding ``layers`` (layer data tuples) and a ``widget_class`` widget on it."""
    viewer = make_napari_viewer()
    for layer in layers:
        show_layer(viewer, layer)
    widget = widget_class(viewer)
    qtbot.addWidget(widget)
    return viewer, widget


def nearest_distances(found_xyz, true_xyz):
    """Distance (Å) from each true atom to the nearest found atom."""
    return cKDTree(found_xyz).query(true_xyz)[0]


def is_hidden(field):
    """Whether a parameter field is hidden (``visible`` is False for any widget not on screen)."""
    return field.native.isHidden()


def changed_fraction(image, background):
    return np.mean(np.any(image[..., :3] != background[..., :3], axis=-1))


# --- trace ----------------------------------------------------------------------------------------

def test_trace_widget_finds_the_atoms(make_napari_viewer, qtbot, particle):
    truth, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))
    assert widget.volume_input.currentText() == "volume"
    assert run_and_wait(qtbot, widget) == "done"
    layer = viewer.layers["atoms"]
    assert is_atoms(layer) and layer_type(layer) == "points"
    np.testing.assert_allclose(layer.scale, (VOXEL,) * 3)
    found = atoms_from_layer(layer)
    distances = nearest_distances(found.positions, truth.positions)
    assert np.mean(distances < 0.5) > 0.98  # recall
    assert np.sqrt(np.mean(distances[distances < 0.5] ** 2)) < 0.1  # Å
    assert len(found) <= 1.25 * len(truth)  # spurious noise peaks are the classifier's "non_atom" job
    assert {"peak", "fit_quality", "edited", "locked"} <= set(layer.features.columns)
    widget.parameters.min_distance.value = 4.0  # a re-run updates the layer (no manual edits in it)
    layer.shown = np.zeros(len(layer.data), bool)  # e.g. non-atoms hidden after a classification
    assert run_and_wait(qtbot, widget) == "done"
    assert layer.shown.all()
    assert viewer.layers["atoms"] is layer and "atoms 2" not in viewer.layers
    assert 0 < len(layer.data) < len(found) and len(layer.features) == len(layer.data)
    assert len(layer.face_color) == len(layer.data)


def test_trace_uses_an_edited_support(make_napari_viewer, qtbot, particle):
    truth, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))
    assert widget.support_input.currentText() == "automatic"
    widget.show_support()
    support = viewer.layers["volume support"]
    assert layer_type(support) == "labels" and support.data.shape == recon.volume.shape
    assert widget.support_input.currentText() == "volume support"
    assert support.data[24, 24, 24] == 1 and support.data[0, 0, 0] == 0  # particle inside, not outside
    edited = support.data.copy()
    edited[:, :, :24] = 0  # the user erases the half x < 0
    support.data = edited
    assert run_and_wait(qtbot, widget) == "done"
    found = atoms_from_layer(viewer.layers["atoms"])
    assert found.positions[:, 0].min() > -VOXEL  # x (Å): nothing where the support was erased
    assert len(found) > 0.3 * len(truth)


def test_trace_rerun_keeps_manual_edits(make_napari_viewer, qtbot, particle):
    _, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))
    assert run_and_wait(qtbot, widget) == "done"
    edited = viewer.layers["atoms"]
    edited.features.loc[0, "locked"] = True
    assert run_and_wait(qtbot, widget) == "done"
    assert viewer.layers["atoms"] is edited and bool(edited.features["locked"][0])
    assert is_atoms(viewer.layers["atoms 2"])


def test_trace_cancel_mid_run(make_napari_viewer, qtbot, particle, monkeypatch):
    _, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))
    reached, release = pause_at_first_progress(monkeypatch, trace_module, "trace_atoms")
    cancel_mid_run(qtbot, widget, reached, release)
    assert "atoms" not in viewer.layers


def test_closing_the_widget_cancels_its_job(make_napari_viewer, qtbot, particle, monkeypatch):
    _, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))
    reached, release = pause_at_first_progress(monkeypatch, trace_module, "trace_atoms")
    widget.run()
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    widget.close()
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "cancelled" and "atoms" not in viewer.layers


def test_trace_bad_input_shows_a_message(make_napari_viewer, qtbot):
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget)
    widget.run()  # no volume at all
    assert not widget.running and "no volume" in widget.message.text()
    viewer.add_image(np.zeros((16, 16, 16), np.float32), name="empty")
    assert run_and_wait(qtbot, widget) == "error"
    assert "empty" in widget.message.text() and "atoms" not in viewer.layers


def test_an_unexpected_failure_is_a_message_and_a_log_entry(make_napari_viewer, qtbot, particle, monkeypatch,
                                                            caplog):
    _, recon = particle
    viewer, widget = docked(make_napari_viewer, qtbot, TraceWidget, volume_layer(recon, name="volume"))

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(trace_module, "trace_atoms", broken)
    assert run_and_wait(qtbot, widget) == "failed"
    assert "RuntimeError: simulated bug" in widget.message.text() and "atoms" not in viewer.layers
    assert "simulated bug" in caplog.text  # the traceback is in the log
    assert widget.run_button.isEnabled()  # ready for another run


def test_trace_screenshot_shows_volume_and_atoms(make_napari_viewer, qtbot, particle, tmp_path):
    _, recon = particle
    viewer = make_napari_viewer()  # show=False: screenshot() shows the window, else the canvas is black
    volume = show_layer(viewer, volume_layer(recon, name="volume"))
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done"
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    both = screenshot(viewer, tmp_path / "both.png")
    assert (tmp_path / "both.png").stat().st_size > 1000
    volume.visible = False
    atoms_only = screenshot(viewer)
    viewer.layers["atoms"].visible = False
    empty = screenshot(viewer)
    assert changed_fraction(empty, empty[:1, :1]) == 0  # nothing drawn: uniform background
    assert changed_fraction(both, empty) > 0.02
    assert changed_fraction(atoms_only, empty) > 0.02
    assert changed_fraction(both, atoms_only) > 0.01


# --- align ----------------------------------------------------------------------------------------

def test_align_widget_adds_an_aligned_layer(make_napari_viewer, qtbot, tilt_series):
    _, _, misaligned, true_shifts = tilt_series
    viewer = make_napari_viewer()
    original = show_layer(viewer, tilt_series_layer(misaligned, name="series"))
    before = original.data.copy()
    widget = AlignWidget(viewer)
    qtbot.addWidget(widget)
    widget.parameters.iterations.value = 2  # projection matching: enough here, and faster
    assert run_and_wait(qtbot, widget) == "done"
    layer = viewer.layers["series aligned"]
    assert layer_kind(layer) == "tilt_series" and layer.data.shape == (31, 1, SERIES_SIZE, SERIES_SIZE)
    assert layer.contrast_limits == original.contrast_limits  # side by side on one scale
    np.testing.assert_allclose(layer.scale[-2:], (0.4, 0.4))
    np.testing.assert_array_equal(original.data, before)  # the original is untouched
    aligned = tilt_series_from_layer(layer)
    assert not np.any(aligned.shifts) and aligned.tilt_axis == 0
    applied = np.asarray(aligned.metadata["alignment"]["shifts"])
    error = applied - true_shifts
    error -= error.mean(axis=0)  # shifts are defined up to a common translation
    assert np.sqrt(np.mean(np.sum(error ** 2, axis=1))) < 0.5  # px
    assert viewer.grid.enabled and widget.plot.has_data()
    shifts_axes, axis_axes = widget.plot.figure.axes[:2]
    np.testing.assert_allclose(shifts_axes.lines[0].get_ydata(), applied[:, 1])  # dx per tilt
    coarse, fine, common_line, used = axis_axes.lines  # tilt-axis scores, then the two marked angles
    np.testing.assert_allclose(used.get_xdata(), aligned.metadata["alignment"]["tilt_axis"])
    assert abs(common_line.get_xdata()[0] - used.get_xdata()[0]) < 1.0  # degrees
    widget.apply()
    assert not viewer.grid.enabled and "series aligned" in viewer.layers
    widget.parameters.method.value = "cross-correlation"  # quick, for the Discard check
    assert run_and_wait(qtbot, widget) == "done"
    widget.discard_result()
    assert "series aligned" not in viewer.layers and "series" in viewer.layers


def test_align_single_step_method_with_preprocessing(make_napari_viewer, qtbot, tilt_series):
    atoms = tilt_series[0]
    series = simulate_tilt_series(atoms, np.linspace(-70, 70, 31), shape=(64, 64), background=5.0,
                                  seed=3).tilt_series
    projections = series.projections.copy()
    projections[5, 20, 30] = 10 * projections.max()  # an X-ray hit, replaced by default
    series = series.replace(projections=projections)
    viewer, widget = docked(make_napari_viewer, qtbot, AlignWidget, tilt_series_layer(series, name="series"))
    assert widget.parameters.spikes.value == "replace"
    widget.parameters.method.value = "cross-correlation"
    assert is_hidden(widget.parameters.projection_matching)
    widget.parameters.background.value = "constant"
    widget.parameters.subtract_background_from_result.value = True
    widget.parameters.normalise.value = True
    assert run_and_wait(qtbot, widget) == "done"
    layer = viewer.layers["series aligned"]
    assert layer_kind(layer) == "tilt_series"
    assert {"background", "normalisation", "alignment"} <= set(layer.metadata["aet"]["info"])
    assert "1 single-pixel spike(s) replaced" in widget.message.text()
    corner = layer.data[:, :8, :8].mean()
    assert abs(corner) < 0.2 * series.projections[:, :8, :8].mean()  # background removed


def test_align_cancel_mid_run(make_napari_viewer, qtbot, tilt_series, monkeypatch):
    _, _, misaligned, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, AlignWidget, tilt_series_layer(misaligned, name="series"))
    reached, release = pause_at_first_progress(monkeypatch, align_module, "align_auto")
    cancel_mid_run(qtbot, widget, reached, release)
    assert [layer.name for layer in viewer.layers] == ["series"] and not viewer.grid.enabled


def test_align_bad_input_shows_a_message(make_napari_viewer, qtbot, tilt_series):
    _, aligned, _, _ = tilt_series
    viewer = make_napari_viewer()
    data, kwargs, _ = tilt_series_layer(aligned, name="series")
    kwargs["metadata"]["aet"]["angles"] = kwargs["metadata"]["aet"]["angles"][:-1]  # one angle missing
    viewer.add_image(data, **kwargs)
    widget = AlignWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    assert not widget.running and "angle" in widget.message.text()
    assert "series aligned" not in viewer.layers


def test_align_keeps_a_series_with_euler_angles_and_says_why(make_napari_viewer, qtbot, tilt_series):
    _, aligned, _, _ = tilt_series
    euler = np.stack([np.full(31, 0.3), aligned.angles, np.full(31, -0.3)], axis=1)  # (φ, θ, ψ): aligned already
    series = aligned.replace(angles=euler)
    viewer, widget = docked(make_napari_viewer, qtbot, AlignWidget, tilt_series_layer(series, name="series"))
    qtbot.mouseClick(widget.run_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "done"
    assert widget.message.text().startswith("kept as it is: the series has Euler angles")
    assert "as given, no shifts" in widget.message.text() and "cannot tell" not in widget.message.text()
    dx, dy = widget.plot.figure.axes[0].lines  # the shifts plotted against the tilt θ, once each
    np.testing.assert_allclose(dx.get_xdata(), aligned.angles)
    kept = tilt_series_from_layer(viewer.layers["series aligned"])
    np.testing.assert_allclose(kept.projections, series.projections, atol=1e-3)  # no shift, no rotation
    np.testing.assert_allclose(kept.angles, euler)


# --- reconstruct ----------------------------------------------------------------------------------

def pause_after_first_iteration(monkeypatch):
    """Wrap the widget's ``iterate`` so the run blocks after its first iteration until released."""
    reached, release = threading.Event(), threading.Event()
    real = reconstruct_core.iterate

    def paused(*args, **kwargs):
        for k, state in enumerate(real(*args, **kwargs)):
            yield state
            if k == 0:
                reached.set()
                release.wait(WAIT_MS / 1000)

    monkeypatch.setattr(reconstruct_core, "iterate", paused)
    return reached, release


def correlation(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


@pytest.fixture(scope="module")
def truth_volume(tilt_series):
    atoms = tilt_series[0]
    return render_atoms(atoms.positions, adf_amplitudes(atoms.species, 1.0), 0.55, (SERIES_SIZE,) * 3, 0.4)


def test_reconstruct_widget_genfire(make_napari_viewer, qtbot, tilt_series, truth_volume, monkeypatch):
    _, aligned, _, _ = tilt_series
    monkeypatch.setattr(reconstruct_module, "LIVE_INTERVAL", 0.05)  # several live iterates
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    widget.parameters.n_iterations.value = 30
    ticks, live_updates = [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    widget.published.connect(lambda *_: live_updates.append(time.monotonic()))
    timer.start(20)
    assert run_and_wait(qtbot, widget) == "done"
    timer.stop()
    # the GUI showed several iterates and its timer ticked between them: the loop kept running
    assert len(live_updates) >= 2 and any(live_updates[0] < t < live_updates[-1] for t in ticks)
    print(f"GUI timer: {len(ticks)} ticks, largest gap {np.diff(ticks).max():.3f} s; "
          f"{len(live_updates)} live updates")
    layer = viewer.layers["series genfire"]
    assert layer_kind(layer) == "volume" and layer.data.shape == (SERIES_SIZE,) * 3
    np.testing.assert_allclose(layer.scale, (0.4,) * 3)
    np.testing.assert_allclose(layer.translate, (-SERIES_SIZE // 2 * VOXEL,) * 3)  # voxel n // 2 at 0 Å
    assert correlation(layer.data, truth_volume) > 0.85
    errors = layer.metadata["aet"]["errors"]
    assert len(errors["r_factor"]) == 30 and errors["r_factor"][-1] < errors["r_factor"][0]
    assert layer.metadata["aet"]["parameters"]["n_iterations"] == 30
    assert "series genfire (running)" not in viewer.layers
    fourier = viewer.layers["series genfire reconstruction |FFT|"]
    assert layer_kind(fourier) == "fourier" and fourier.data.shape == (SERIES_SIZE,) * 3
    half_view = np.array(viewer.canvas.size) / viewer.camera.zoom / 2  # (h, w) Å seen about the centre
    assert fourier.extent.world[1][-1] <= viewer.camera.center[-1] + half_view[-1]  # beside the volume, in view
    assert widget.plot.has_data()
    assert "scaled" not in widget.message.text()  # the projections as they are, by default
    assert "smooth background removed" in widget.message.text()  # auto, for a particle
    lowest = lowest_r_free(errors["r_free"])  # GENFIRE's R-free rises again in the last stages: named
    assert lowest is not None and f"({lowest})" in widget.message.text()
    totals = widget.plot.figure.axes[-1]  # each projection's total over the mean, against its tilt
    assert totals.get_ylabel() == "total intensity / mean" and len(totals.lines[0].get_xdata()) == aligned.n_angles


def test_reconstruct_wbp_hides_iterative_parameters(make_napari_viewer, qtbot, tilt_series, truth_volume):
    _, aligned, _, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    assert widget.parameters.n_iterations.value == RECOMMENDED["genfire"]["n_iterations"]  # as the pipeline
    assert widget.parameters.oversampling.value == RECOMMENDED["genfire"]["oversampling"]
    widget.parameters.method.value = "resire"
    assert widget.parameters.n_iterations.value == RECOMMENDED["resire"]["n_iterations"]
    widget.parameters.method.value = "wbp"
    assert is_hidden(widget.parameters.n_iterations) and not is_hidden(widget.parameters.thickness)
    widget.parameters.fourier.value = "measured coverage"
    widget.parameters.fsc.value = True
    box = widget.parameters.normalise
    assert not box.value and not is_hidden(box)
    qtbot.keyClick(box.native, Qt.Key.Key_Space)  # every projection scaled to one total intensity
    assert box.value
    assert run_and_wait(qtbot, widget) == "done"
    assert "projections scaled by" in widget.message.text()
    layer = viewer.layers["series wbp"]
    assert correlation(layer.data, truth_volume) > 0.8
    coverage = viewer.layers["series wbp measured coverage"].data  # (kz, ky, kx), zero frequency at c
    assert layer_kind(viewer.layers["series wbp measured coverage"]) == "fourier"
    c = SERIES_SIZE // 2
    assert np.all(coverage[c + 4:, c, c] == 0) and np.all(coverage[c, c, c + 1:] > 0)  # wedge about kz
    fsc = layer.metadata["aet"]["fsc"]
    assert fsc["fsc"][1] > 0.8 and 0.8 < fsc["resolution_A_at_0.143"] < 5  # Å; Nyquist is 0.8 Å
    assert "FSC" in widget.message.text() and len(widget.plot.figure.axes) == 3  # errors, FSC, totals


def test_reconstruct_live_update_then_cancel(make_napari_viewer, qtbot, tilt_series, monkeypatch):
    _, aligned, _, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    reached, release = pause_after_first_iteration(monkeypatch)
    widget.run()
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "series genfire (running)" in viewer.layers, timeout=WAIT_MS)
    live = viewer.layers["series genfire (running)"]
    assert live.data.shape == (SERIES_SIZE,) * 3 and np.any(live.data) and widget.plot.has_data()
    widget.cancel()
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "cancelled"
    assert not [layer.name for layer in viewer.layers if layer.name.startswith("series genfire")]


def test_reconstruct_stop_and_keep_current(make_napari_viewer, qtbot, tilt_series, monkeypatch):
    _, aligned, _, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    widget.parameters.method.value = "resire"
    widget.support_input.setCurrentText("automatic (from WBP)")
    reached, release = pause_after_first_iteration(monkeypatch)
    widget.run()
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    widget.stop_and_keep()
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "done" and "stopped early" in widget.message.text()
    layer = viewer.layers["series resire (stopped at 2)"]  # a new version: never replaces a finished run
    assert len(layer.metadata["aet"]["errors"]["r_factor"]) == 2  # the iteration running when asked
    parameters = layer.metadata["aet"]["parameters"]
    assert parameters["n_iterations"] == 2 and parameters["n_iterations_requested"] == 300  # truthful
    assert widget.session.point.stages["reconstruct"]["parameters"]["n_iterations"] == 2
    assert parameters["support"].startswith("array")
    assert np.count_nonzero(layer.data == 0) > 0.3 * layer.data.size  # outside the support
    assert "series resire (running)" not in viewer.layers


def test_after_reconstruct_the_view_shows_the_volume_centre(make_napari_viewer, qtbot, tilt_series):
    """After Reconstruct the series are hidden and the z slider sits at the volume's centre, so
    the canvas shows the particle's middle; the tilt slider stays where the user left it."""
    _, aligned, _, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    viewer.dims.set_point(0, aligned.n_angles - 1)  # where a user leaves it after browsing the tilts
    widget.parameters.method.value = "wbp"
    assert run_and_wait(qtbot, widget) == "done"
    assert not viewer.layers["series"].visible
    volume = viewer.layers["series wbp"]
    viewer.layers["series wbp reconstruction |FFT|"].visible = False
    viewer.reset_view()
    shown = screenshot(viewer)
    volume.visible = False
    empty = screenshot(viewer)
    assert changed_fraction(shown, empty) > 0.05  # the central slice of the particle, not an empty edge slice
    centre = volume.data.shape[0] // 2
    assert viewer.dims.axis_labels == ("tilt", "z", "y", "x")
    assert viewer.dims.point[1] == pytest.approx(volume.data_to_world([centre, 0, 0])[0], abs=volume.scale[0])
    assert viewer.dims.current_step[0] == aligned.n_angles - 1


def test_error_plot_puts_a_final_only_curve_at_the_last_iteration(make_napari_viewer, qtbot):
    widget = ReconstructWidget(make_napari_viewer())
    qtbot.addWidget(widget)
    widget.plot_errors({"fourier_error": [0.5, 0.4, 0.3], "r_factor": [0.2]})
    lines = {line.get_label(): line for line in widget.plot.figure.axes[0].lines}
    assert list(lines["fourier error"].get_xdata()) == [1, 2, 3] and list(lines["r factor"].get_xdata()) == [3]


def test_reconstruct_with_a_labels_support(make_napari_viewer, qtbot, tilt_series):
    _, aligned, _, _ = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(aligned, name="series"))
    widget.parameters.method.value = "resire"
    widget.parameters.n_iterations.value = 5
    widget.parameters.accelerate.value = True
    widget.parameters.step.value = 1.0
    z, y, x = np.indices((SERIES_SIZE,) * 3) - SERIES_SIZE // 2
    ball = (x ** 2 + y ** 2 + z ** 2 <= 16 ** 2).astype(np.uint8)  # radius 6.4 Å: holds the particle
    viewer.add_labels(ball, name="ball")
    assert widget.support_input.currentText() == "none"  # a new Labels layer is not chosen for the user
    widget.support_input.setCurrentText("ball")
    assert run_and_wait(qtbot, widget) == "done"
    volume = viewer.layers["series resire"].data
    assert not np.any(volume[ball == 0]) and np.count_nonzero(volume[ball == 1]) > 0.5 * ball.sum()
    viewer.add_labels(np.ones((8, 8, 8), np.uint8), name="small")
    widget.support_input.setCurrentText("small")
    assert run_and_wait(qtbot, widget) == "error" and "support" in widget.message.text()


def test_reconstruct_bad_input_shows_a_message(make_napari_viewer, qtbot, tilt_series):
    _, _, misaligned, true_shifts = tilt_series
    viewer, widget = docked(make_napari_viewer, qtbot, ReconstructWidget, tilt_series_layer(misaligned.replace(shifts=true_shifts), name="series"))
    assert run_and_wait(qtbot, widget) == "error"
    assert "not aligned" in widget.message.text()
    assert not [layer.name for layer in viewer.layers if layer.name.startswith("series genfire")]


# --- classify -------------------------------------------------------------------------------------

def test_class_boundaries_separate_two_classes():
    intensity = np.array([1.0, 1.2, 0.9, 5.0, 5.5, 6.0, 1.1])
    classes = np.array([1, 1, 1, 2, 2, 2, 1])
    ((lower, upper, threshold),) = class_boundaries(intensity, classes)
    assert (lower, upper) == (1, 2) and 1.2 < threshold < 5.0
    overlapping = np.array([1.0, 2.0, 3.0, 2.5, 4.0, 5.0])
    ((_, _, threshold),) = class_boundaries(overlapping, np.array([1, 1, 1, 2, 2, 2]))
    assert 2.0 < threshold < 3.0  # one misassignment either way; never 0


@pytest.fixture
def traced(make_napari_viewer, particle):
    """A viewer with the ideal volume and its traced atoms (via the core, not the widget)."""
    from napari_aet.trace import trace_atoms

    _, recon = particle
    viewer = make_napari_viewer()
    show_layer(viewer, volume_layer(recon, name="volume"))
    show_layer(viewer, atoms_layer(trace_atoms(recon), recon.volume.shape, recon.voxel_size))
    return viewer


def species_accuracy(found, truth):
    distance, index = cKDTree(truth.positions).query(found.positions)
    real = distance < 0.5
    return np.mean(found.species[real] == truth.species[index[real]])


def test_classify_widget_labels_species(qtbot, traced, particle):
    truth, _ = particle
    widget = ClassifyWidget(traced)
    qtbot.addWidget(widget)
    layer = traced.layers["atoms"]
    assert widget.atoms_input.currentText() == "atoms" and widget.volume_input.currentText() == "volume"
    assert widget.parameters.elements.value == ""  # no study elements: none guessed
    qtbot.keyClicks(widget.parameters.elements.native, "Fe,Pt")
    assert run_and_wait(qtbot, widget) == "done"
    assert traced.layers["atoms"] is layer  # updated in place, not replaced
    found = atoms_from_layer(layer)
    assert species_accuracy(found, truth) > 0.95
    assert {"intensity", "confidence", "ambiguous", "non_atom"} <= set(layer.features.columns)
    assert "ambiguous (between two labels: 6 Edit's review queue shows them" in widget.message.text()
    pt = found.species == "Pt"
    np.testing.assert_allclose(layer.face_color[pt], [[0.45, 0.65, 1.0, 1.0]] * pt.sum())
    assert widget.plot.has_data()
    non_atom = found.features["non_atom"].astype(bool)
    assert non_atom.any()  # the traced noise peaks
    np.testing.assert_array_equal(layer.shown, ~non_atom)  # noise peaks hidden, still in the data
    widget.show_non_atoms.setChecked(True)
    assert layer.shown.all()


def test_classify_colours_an_element_outside_the_table_in_the_layer_and_the_histogram(qtbot, traced):
    """Ta has no colour in the table: it gets one of its own, not the non-atoms' grey, on the
    points and on its histogram bars."""
    widget = ClassifyWidget(traced)
    qtbot.addWidget(widget)
    widget.parameters.elements.value = "Fe,Ta"  # the heavy atoms called Ta
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "done"
    layer = traced.layers["atoms"]
    names = labels(atoms_from_layer(layer))
    points = {name: layer.face_color[np.flatnonzero(names == name)[0]] for name in ("Fe", "Ta", NON_ATOM)}
    assert len({tuple(c) for c in points.values()}) == 3
    (ax,) = widget.plot.figure.axes
    bars = {bars.patches[0].get_label(): [bar.get_facecolor() for bar in bars] for bars in ax.containers}
    assert sorted(bars) == sorted(points)  # one stack of bars per label, labelled for the legend
    for name, colour in points.items():
        np.testing.assert_allclose(bars[name], [colour] * len(bars[name]))


def test_classify_never_relabels_locked_atoms(qtbot, traced):
    layer = traced.layers["atoms"]
    locked = np.arange(5)
    layer.features.loc[locked, "element"] = "Fe"
    layer.features.loc[locked, "locked"] = True
    widget = ClassifyWidget(traced)
    qtbot.addWidget(widget)
    widget.parameters.elements.value = "Fe,Pt"
    assert run_and_wait(qtbot, widget) == "done"
    assert list(layer.features["element"][locked]) == ["Fe"] * 5
    assert layer.features["locked"][locked].all()


def test_classify_cancel_mid_run(qtbot, traced, monkeypatch):
    layer = traced.layers["atoms"]
    before = layer.features.copy()
    widget = ClassifyWidget(traced)
    qtbot.addWidget(widget)
    widget.parameters.elements.value = "Fe,Pt"
    reached, release = pause_at_first_progress(monkeypatch, classify_module, "classify_atoms")
    cancel_mid_run(qtbot, widget, reached, release)
    assert layer.features.equals(before)  # nothing relabelled


def test_classify_bad_input_shows_a_message(qtbot, traced):
    widget = ClassifyWidget(traced)
    qtbot.addWidget(widget)
    widget.run()
    assert not widget.running and "the elements are unknown" in widget.message.text()
    widget.parameters.elements.value = "Fe,Xx"
    widget.run()
    assert not widget.running and "Xx" in widget.message.text()
    assert "element" in traced.layers["atoms"].features and not any(traced.layers["atoms"].features["element"])


# --- refine ---------------------------------------------------------------------------------------

@pytest.fixture
def to_refine(make_napari_viewer, qtbot, tilt_series):
    """A viewer with the aligned series and the true atoms displaced by 0.2 Å rms, and a RefineWidget."""
    truth, aligned, _, _ = tilt_series
    noise = np.random.default_rng(0).normal(scale=0.2, size=truth.positions.shape)
    start = AtomModel(truth.positions + noise, truth.species)
    viewer, widget = docked(make_napari_viewer, qtbot, RefineWidget, tilt_series_layer(aligned, "aligned"),
                            atoms_layer(start, (SERIES_SIZE,) * 3, VOXEL))
    return viewer, widget, truth, start


def test_refine_widget_adds_refined_atoms_model_and_residual(qtbot, to_refine, tmp_path):
    viewer, widget, truth, start = to_refine
    assert widget.series_input.currentText() == "aligned" and widget.atoms_input.currentText() == "atoms"
    assert run_and_wait(qtbot, widget) == "done"
    refined = atoms_from_layer(viewer.layers["atoms refined"])

    def rms(atoms):
        return np.sqrt(np.mean(np.sum((atoms.positions - truth.positions) ** 2, axis=1)))

    assert rms(refined) < 0.3 * rms(start)
    np.testing.assert_allclose(atoms_from_layer(viewer.layers["atoms"]).positions, start.positions)  # input kept
    assert {"refine_shift", "height_ratio"} <= set(viewer.layers["atoms refined"].features.columns)
    model, residual = viewer.layers["atoms model projections"], viewer.layers["atoms residual"]
    aligned = viewer.layers["aligned"].data
    np.testing.assert_allclose(np.asarray(model.data) + np.asarray(residual.data), aligned, atol=1e-3)
    assert not model.visible and widget.plot.has_data()
    assert "R-factor of the atom model against the projections (not the reconstruction's)" in widget.message.text()
    assert viewer.layers.selection.active is viewer.layers["atoms refined"]  # not the hidden residual
    assert "moves kept (checked on held-out projections): Fe" in widget.message.text()
    assert "precision (half sets, noise only) Fe" in widget.message.text()
    assert [ax.get_xlabel() for ax in widget.plot.figure.axes][-1] == "half-set error (pm)"
    passes, final = widget.plot.figure.axes[0].lines  # the iterations, and the final model on its own
    assert final.get_label() == "final (moves kept)" and final.get_xdata()[0] == len(passes.get_ydata())
    assert np.isfinite(viewer.layers["atoms refined"].features["half_set_error"]).all()

    for name in ("aligned", "atoms", "atoms model projections", "atoms residual"):
        viewer.layers[name].visible = False
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    shown = screenshot(viewer, tmp_path / "refined.png")
    viewer.layers["atoms refined"].visible = False
    empty = screenshot(viewer)
    assert changed_fraction(shown, empty) > 0.01  # the refined atoms really render


def test_refined_atoms_are_shown_in_place_of_their_input(qtbot, to_refine):
    """After Refine only the refined atoms show (not every marker twice); the input is hidden, not removed."""
    viewer, widget, _, _ = to_refine
    qtbot.keyClick(widget.parameters.precision.native, Qt.Key.Key_Space)  # no half-set refinements: quicker
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.last_outcome == "done"
    assert [layer.name for layer in viewer.layers if is_atoms(layer) and layer.visible] == ["atoms refined"]
    assert is_atoms(viewer.layers["atoms"])


def test_refine_check_box_keeps_every_move(qtbot, to_refine, monkeypatch):
    """Unticking "keep only moves held-out projections support" from the keyboard reaches the refinement."""
    viewer, widget, _, _ = to_refine
    original, received = refine_module.refine_atoms, []

    def recording(*args, **options):
        received.append(options.get("validate_moves", "default"))
        return original(*args, **options)

    monkeypatch.setattr(refine_module, "refine_atoms", recording)
    box = widget.parameters.validate_moves
    assert box.value
    qtbot.keyClick(box.native, Qt.Key.Key_Space)  # a person tabs to the box and presses space
    assert not box.value
    assert run_and_wait(qtbot, widget) == "done"
    assert received[0] is False  # the refinement's; the half-set estimate's two never check moves
    assert "R-factor" in widget.message.text() and "moves kept" not in widget.message.text()


def test_refine_precision_box_from_the_keyboard(qtbot, to_refine, monkeypatch):
    """Unticking "estimate precision from half sets" leaves one refinement, and no estimate."""
    viewer, widget, _, _ = to_refine
    original, calls = refine_module.refine_atoms, []

    def counting(*args, **options):
        calls.append(args[0].n_angles)
        return original(*args, **options)

    monkeypatch.setattr(refine_module, "refine_atoms", counting)
    box = widget.parameters.precision
    assert box.value
    qtbot.keyClick(box.native, Qt.Key.Key_Space)
    assert not box.value
    assert run_and_wait(qtbot, widget) == "done"
    assert len(calls) == 1 and "precision" not in widget.message.text()
    assert len(widget.plot.figure.axes) == 2  # R-factor and height ratios only
    assert "half_set_error" not in viewer.layers["atoms refined"].features.columns


def test_refine_min_distance_typed_in_reaches_the_refinement(qtbot, to_refine, monkeypatch):
    """A minimum distance typed into its box holds for the refined atoms; 0 means the physical table."""
    viewer, widget, _, _ = to_refine
    original, received = refine_module.refine_atoms, []

    def recording(*args, **options):
        received.append(options.get("min_distance"))
        return original(*args, **options)

    monkeypatch.setattr(refine_module, "refine_atoms", recording)
    field = widget.parameters.min_distance
    assert field.value == 0.0
    qtbot.keyClick(field.native, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(field.native, "3")
    qtbot.keyClick(field.native, Qt.Key.Key_Return)
    assert field.value == 3.0
    qtbot.keyClick(widget.parameters.precision.native, Qt.Key.Key_Space)
    assert run_and_wait(qtbot, widget) == "done"
    assert received == [3.0]
    refined = atoms_from_layer(viewer.layers["atoms refined"])
    positions = refined.positions[refined.species != ""]
    assert cKDTree(positions).query(positions, k=2)[0][:, 1].min() >= 3.0


def test_refine_names_the_projections_that_fit_worst(qtbot, to_refine):
    """Two sheared images (scan distortion) in the series: the status line names them."""
    from scipy import ndimage

    viewer, widget, _, _ = to_refine
    data = np.array(viewer.layers["aligned"].data)  # (projection, 1, y, x): the layer's axes
    for i in (4, 11):
        data[i, 0] = ndimage.affine_transform(data[i, 0], [[1, 0], [0.15, 1]], offset=[0, -5], order=1)
    viewer.layers["aligned"].data = data
    widget.parameters.precision.value = False
    assert run_and_wait(qtbot, widget) == "done"
    text = widget.message.text()
    assert "projections fitting worst: " in text
    named = {int(part.split(" (")[0]) for part in text.split("projections fitting worst: ")[1].split("), ")}
    assert named == {4, 11}


def test_refine_cancel_mid_run(qtbot, to_refine, monkeypatch):
    viewer, widget, _, _ = to_refine
    reached, release = pause_at_first_progress(monkeypatch, refine_module, "refine_atoms")
    cancel_mid_run(qtbot, widget, reached, release)
    assert [layer.name for layer in viewer.layers] == ["aligned", "atoms"]


def test_refine_bad_input_shows_a_message(qtbot, to_refine):
    viewer, widget, _, _ = to_refine
    viewer.layers["atoms"].features["element"] = ""
    widget.run()
    assert not widget.running and "classify the atoms first" in widget.message.text()
    viewer.layers.remove("atoms")
    widget.run()
    assert "no atoms layer" in widget.message.text()


# --- the whole workflow, as a user runs it --------------------------------------------------------

def test_widgets_docked_one_by_one_follow_the_study_and_match_the_cli(make_napari_viewer, qtbot, monkeypatch):
    """File > Open Sample, then each widget docked only when its stage comes (README order): each
    input is the study's current result, and the atoms equal the headless chain's with the same seed."""
    from napari_aet._napari import sample_data as _sample_data
    from napari_aet.analysis.atom_metrics import compare_atoms
    from napari_aet.pipeline import run_pipeline

    small = _sample_data.sample_fept(size=64, radius=8.0)  # the sample, smaller for speed
    monkeypatch.setattr(_sample_data, "sample_fept", lambda: small)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-aet", "fept")
    assert [layer.name for layer in viewer.layers] == ["FePt tilt series"]

    def dock(key):
        return viewer.window.add_plugin_dock_widget("napari-aet", key)[1]

    data = dock("0 Data")  # the study's elements: the physical minimum distance Trace uses comes from them
    data.elements.setText("Fe,Pt")
    assert data.apply() is not None
    align = dock("1 Align")
    # The simulated sample has no background at all: its border holds no noise from which
    # napari_aet.preprocess.particle_mask could tell the particle apart, so nothing is subtracted.
    align.parameters.background.value = "none"
    align.parameters.iterations.value = 3  # projection matching, shortened for the test
    assert run_and_wait(qtbot, align) == "done"
    align.apply()
    recon = dock("2 Reconstruct")
    assert recon.series_input.currentText() == "FePt tilt series aligned"  # not the raw series listed first
    recon.parameters.method.value = "resire"
    recon.parameters.n_iterations.value = 30
    assert run_and_wait(qtbot, recon) == "done"
    trace = dock("3 Trace atoms")
    assert trace.volume_input.currentText() == "FePt tilt series aligned resire"
    assert run_and_wait(qtbot, trace) == "done"
    classify = dock("4 Classify species")
    assert classify.atoms_input.currentText() == "atoms"
    assert run_and_wait(qtbot, classify) == "done"
    metrics = compare_atoms(atoms_from_layer(viewer.layers["atoms"]), small.atoms)
    assert metrics["recall"] > 0.8 and metrics["precision"] > 0.9 and metrics["species_accuracy"] > 0.9

    refine = dock("5 Refine atoms")
    assert (refine.series_input.currentText(), refine.atoms_input.currentText()) == ("FePt tilt series aligned", "atoms")
    assert run_and_wait(qtbot, refine) == "done"
    assert "stale" not in refine.status.text() and "refine ✓" in refine.status.text()
    gui = atoms_from_layer(viewer.layers["atoms refined"])
    refined = compare_atoms(gui, small.atoms)
    assert refined["rms_error_pm"] < metrics["rms_error_pm"] and refined["recall"] >= metrics["recall"] - 0.01

    edit = dock("6 Edit atoms")  # the editor docked last works on the refined atoms, the study's current ones
    assert edit.atoms_input.currentText() == "atoms refined" and edit.in_study()

    headless = run_pipeline(small.tilt_series, "Fe,Pt", align_options={"background": "none", "iterations": 3},
                            method="resire", reconstruct_options={"n_iterations": 30}, seed=0).atoms
    np.testing.assert_allclose(gui.positions, headless.positions, atol=1e-4)
    np.testing.assert_array_equal(gui.species, headless.species)
