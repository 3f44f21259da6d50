"""The napari widgets under Xvfb: each stage run through its widget on small simulated data.

Every stage is run by calling the widget's ``run`` (as the Run button does) and waiting for the
worker thread; cancellation is tested mid-run by pausing the real core function at its first
progress report, pressing Cancel, then letting it continue.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_aet.geometry import render_atoms
from napari_aet.layers import atoms_from_layer, volume_layer
from napari_aet.model import Reconstruction
from napari_aet.simulate import adf_amplitudes, fcc_particle
from napari_aet._widgets import trace as trace_module
from napari_aet._widgets._base import is_atoms, show_layer
from napari_aet._widgets.trace import TraceWidget

VOXEL = 0.4  # Å
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def particle():
    """A small FePt particle (~170 atoms) and a noisy ideal volume of it, 48³ voxels of 0.4 Å."""
    atoms = fcc_particle(radius=9.0, seed=1)
    volume = render_atoms(atoms.positions, adf_amplitudes(atoms.species, 1.0), 0.45, (48, 48, 48), VOXEL)
    rng = np.random.default_rng(1)
    volume += rng.normal(scale=0.003 * volume.max(), size=volume.shape).astype(np.float32)
    return atoms, Reconstruction(volume, VOXEL, "ideal")


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


def nearest_distances(found_xyz, true_xyz):
    """Distance (Å) from each true atom to the nearest found atom."""
    return cKDTree(found_xyz).query(true_xyz)[0]


def changed_fraction(image, background):
    return np.mean(np.any(image[..., :3] != background[..., :3], axis=-1))


# --- trace ----------------------------------------------------------------------------------------

def test_trace_widget_finds_the_atoms(make_napari_viewer, qtbot, particle):
    truth, recon = particle
    viewer = make_napari_viewer()
    show_layer(viewer, volume_layer(recon, name="volume"))
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.volume_input.currentText() == "volume"
    assert run_and_wait(qtbot, widget) == "done"
    layer = viewer.layers["atoms"]
    assert is_atoms(layer) and layer._type_string == "points"
    np.testing.assert_allclose(layer.scale, (VOXEL,) * 3)
    found = atoms_from_layer(layer)
    distances = nearest_distances(found.positions, truth.positions)
    assert np.mean(distances < 0.5) > 0.98  # recall
    assert np.sqrt(np.mean(distances[distances < 0.5] ** 2)) < 0.1  # Å
    assert len(found) <= 1.25 * len(truth)  # spurious noise peaks are the classifier's "non_atom" job
    assert {"peak", "fit_quality", "edited", "locked"} <= set(layer.features.columns)


def test_trace_rerun_keeps_manual_edits(make_napari_viewer, qtbot, particle):
    _, recon = particle
    viewer = make_napari_viewer()
    show_layer(viewer, volume_layer(recon, name="volume"))
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done"
    edited = viewer.layers["atoms"]
    edited.features.loc[0, "locked"] = True
    assert run_and_wait(qtbot, widget) == "done"
    assert viewer.layers["atoms"] is edited and bool(edited.features["locked"][0])
    assert is_atoms(viewer.layers["atoms 2"])


def test_trace_cancel_mid_run(make_napari_viewer, qtbot, particle, monkeypatch):
    _, recon = particle
    viewer = make_napari_viewer()
    show_layer(viewer, volume_layer(recon, name="volume"))
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    reached, release = pause_at_first_progress(monkeypatch, trace_module, "trace_atoms")
    cancel_mid_run(qtbot, widget, reached, release)
    assert "atoms" not in viewer.layers


def test_trace_bad_input_shows_a_message(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()  # no volume at all
    assert not widget.running and "no volume" in widget.message.text()
    viewer.add_image(np.zeros((16, 16, 16), np.float32), name="empty")
    assert run_and_wait(qtbot, widget) == "error"
    assert "empty" in widget.message.text() and "atoms" not in viewer.layers


def test_trace_screenshot_shows_volume_and_atoms(make_napari_viewer, qtbot, particle):
    _, recon = particle
    viewer = make_napari_viewer(show=True)  # the canvas renders only when shown (under Xvfb)
    volume = show_layer(viewer, volume_layer(recon, name="volume"))
    widget = TraceWidget(viewer)
    qtbot.addWidget(widget)
    assert run_and_wait(qtbot, widget) == "done"
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    both = viewer.screenshot(canvas_only=True, flash=False)
    volume.visible = False
    atoms_only = viewer.screenshot(canvas_only=True, flash=False)
    viewer.layers["atoms"].visible = False
    empty = viewer.screenshot(canvas_only=True, flash=False)
    assert changed_fraction(empty, empty[:1, :1]) == 0  # nothing drawn: uniform background
    assert changed_fraction(both, empty) > 0.02
    assert changed_fraction(atoms_only, empty) > 0.02
    assert changed_fraction(both, atoms_only) > 0.01
